"""One export, start to finish: model -> staging directory -> parity check -> package.

Everything is written into a hidden staging directory beside the output; only a package that
passed its parity check is renamed into place, so a failed export leaves nothing half-written.
"""
from __future__ import annotations

import gc
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from . import __version__, manifest as M, onnx_export as X, preprocessing as P, templates as T
from . import tokenizer_settings as S
from .checkpoints import from_checkpoint
from .decoder import FORMS, DecoderSpec
from .model_parts import ExportError, ModelParts, from_preset
from .parity import ParityReport, check_parity, compute_reference
from .presets import get_preset
from .progress import Progress
from .tied_embedding import share_tied_embedding
from .tokenizer_check import template_prompts

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_CHECK = "tokenizer_check.json"
PARITY_QUESTION = "What is in this image?"


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    parity: ParityReport
    parts: ModelParts  # the PyTorch model that was exported (the reference for golden files)
    tokenizer: object  # its transformers fast tokenizer (tokenizer.json)
    reference_tokenizer: object = None  # the tokenizer the original code runs (slow, usually)


def _stop_ids(tokenizer, eos_text: str) -> list[int]:
    # phi-2 and stablelm-2 use <|endoftext|> as bos, eos and unk at once: look it up in the
    # vocabulary rather than comparing with unk_token_id.
    vocab = tokenizer.get_vocab()
    if eos_text not in vocab:
        raise ExportError(f"the template's EOS text {eos_text!r} is not a token of this tokenizer")
    ids = [int(vocab[eos_text])]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def _prompt_fields(parts: ModelParts, tokenizer) -> dict:
    fields = T.template_fields(parts.template)
    if parts.template == "llava_hf" and tokenizer.eos_token:
        fields["eos_text"] = tokenizer.eos_token  # Llava's text is the LLM's own: its EOS
    fields["stop_token_ids"] = _stop_ids(tokenizer, fields["eos_text"])
    fields["image_token_mode"] = parts.image_token_mode
    fields["image_token_id"] = parts.image_token_id
    return fields


def parity_prompt_ids(fields: dict, tokenizer) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PARITY_QUESTION}]}]
    prompt = T.render_prompt(fields, messages)
    return T.tokenize_prompt(prompt, tokenizer, fields["image_placeholder"], fields["image_token_mode"],
                             fields.get("image_token_id"))


def check_tokenizer(toks: S.Tokenizers, server: S.ServerTokenizer, fields: dict):
    """The reference tokenizes prompts chunk-wise with its own (usually slow) tokenizer; the server
    runs tokenizer.json. Refuse when they tokenize the template's prompts differently."""
    from .tokenizer_check import compare_tokenizers, template_prompts
    result = compare_tokenizers(toks.reference, server, template_prompts(fields), fields["image_placeholder"],
                                fields["image_token_mode"], fields.get("image_token_id"))
    if not result.agree:
        first = result.mismatches[0]
        raise ExportError(f"the package's tokenizer disagrees with the reference ({result.slow_class}) on "
                          f"{len(result.mismatches)} of {result.checked} template prompts; first: {first.prompt!r} "
                          f"reference {first.slow_ids} vs server {first.fast_ids} (from index {first.first_difference})")
    return result


def build_manifest(parts: ModelParts, name: str, tokenizer, fields: dict, preprocessing: dict, tokenization: dict,
                   dtype: str, quantize: str | None, files: dict, block_size: int = 32) -> dict:
    cfg, vcfg = parts.llm.config, parts.vision.config
    spec = X.build_export_decoder(parts.family, parts.llm).spec
    bos = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) or _adds_bos(tokenizer) else None
    return {
        "format": M.FORMAT,
        "format_version": M.FORMAT_VERSION,
        "name": name,
        "source": {**{"kind": None, "checkpoint": None, "preset": None, "seed": None}, **parts.source,
                   "exporter_version": __version__, "transformers_version": transformers.__version__,
                   "torch_version": torch.__version__.split("a")[0]},
        "dtype": dtype,
        "quantization": ({"method": "int4", "format": "MatMulNBits", "block_size": block_size, "symmetric": True}
                         if quantize == "int4" else None),
        "max_context": int(min(parts.max_context, cfg.max_position_embeddings)),
        "files": files,
        "text": {
            "family": parts.family, "num_layers": spec.num_layers, "hidden_size": spec.hidden_size,
            "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_kv_heads,
            "head_dim": spec.head_dim, "vocab_size": spec.vocab_size,
            "bos_token_id": bos, "eos_token_ids": fields["stop_token_ids"],
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fields["stop_token_ids"][0],
        },
        "vision": {
            "family": parts.vision_family, "image_size": vcfg.image_size, "patch_size": vcfg.patch_size,
            "hidden_size": vcfg.hidden_size, "feature_layer": parts.feature_layer,
            "feature_select": parts.feature_select, "num_image_tokens": parts.num_image_tokens,
        },
        "connector": {"type": parts.connector_type, "input_size": vcfg.hidden_size, "output_size": cfg.hidden_size},
        "image_preprocessing": preprocessing,
        "prompt": fields,
        "tokenizer": tokenization,
    }


def check_shared_kv(spec: DecoderSpec) -> None:
    """What onnxruntime's GroupQueryAttention refuses at run time, refused before the export."""
    if spec.head_dim % 8:
        raise ExportError(f"--decoder-form shared_kv: onnxruntime's GroupQueryAttention needs a head dim that is "
                          f"a multiple of 8; this model's is {spec.head_dim} (export it in the standard form)")


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a").input_ids
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def _write_graphs(parts: ModelParts, stage: Path, files: dict, progress: Progress, decoder_form: str) -> None:
    """The four graphs in fp32 (precision is converted afterwards, from these files)."""
    progress.step("exporting the vision encoder")
    with progress.layers(parts.vision.vision_model.encoder.layers, "tracing the vision encoder"):
        X.export_vision(parts, stage / files["vision_encoder"])
    progress.step("exporting the connector and token embedding")
    X.export_connector(parts, stage / files["connector"])
    X.export_embed_tokens(parts, stage / files["embed_tokens"])
    progress.step("exporting the decoder with KV cache")
    X.export_decoder(parts, stage / files["decoder"], progress, decoder_form)


def _convert_precision(stage: Path, files: dict, quantize: str | None, block_size: int, progress: Progress) -> None:
    for key in ("vision_encoder", "connector", "embed_tokens", "decoder"):
        path = stage / files[key]
        progress.sub(f"{'quantising' if quantize else 'converting'} {files[key]}", force=True)
        if quantize == "int4":
            if key in ("decoder", "vision_encoder"):  # the MatMul-heavy graphs
                X.quantize_int4(path, block_size)
        else:
            X.to_fp16(path)


def run_export(out: Path, *, preset: str | None = None, checkpoint: Path | None = None, seed: int = 0,
               dtype: str = "fp32", quantize: str | None = None, block_size: int = 32, force: bool = False,
               quiet: bool = False, name: str | None = None, keep_parts: bool = True,
               vision_tower: Path | None = None, template: str | None = None,
               decoder_form: str = "standard") -> ExportResult:
    """Exports a preset or checkpoint to `out`. keep_parts=False frees the PyTorch model before
    the parity check (the command line does, so real-size models fit in memory); the result's
    `parts` is then None. `vision_tower` and `template`: see checkpoints.from_checkpoint.
    `decoder_form`: "standard" or "shared_kv" (decoder.py, docs/model-package.md)."""
    out = out.resolve()
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if quantize and dtype != "fp32":
        raise ExportError("--quantize int4 keeps fp32 activations; use it with --dtype fp32")
    if decoder_form not in FORMS:
        raise ExportError(f"unknown decoder form {decoder_form!r}; known: {', '.join(FORMS)}")
    if template is not None and template not in T.TEMPLATE_NAMES:
        raise ExportError(f"unknown template {template!r}; known: {', '.join(T.TEMPLATE_NAMES)}")
    progress = Progress(9 if (dtype == "fp16" or quantize) else 8, quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tok_dir = stage / "_tokenizer"
        progress.step("building the PyTorch model" + (f" from preset {preset}" if preset else f" from {checkpoint}"))
        if preset:
            p = get_preset(preset)
            from .fixtures.tokenizers import train_tokenizer
            from .tokenizer_check import load_slow
            fast = train_tokenizer(p.tokenizer_style, tok_dir)
            slow, why = load_slow(tok_dir)
            toks = S.Tokenizers(fast, slow or fast, "slow" if slow is not None else "fast", why)
            parts = from_preset(p, len(fast), seed)
            if template is not None:
                parts.template = template
            precision = "int4" if quantize == "int4" else dtype
            name = name or f"random-{preset}" + ("" if precision == "fp32" else f"-{precision}")
        else:
            parts = from_checkpoint(checkpoint, vision_tower, template)
            toks = S.load_tokenizers(parts.tokenizer_dir, tok_dir, parts.added_tokens, parts.reference_tokenizer_fast)
            name = name or Path(checkpoint).name
        if decoder_form == "shared_kv":
            check_shared_kv(DecoderSpec.from_hf_config(parts.family, parts.llm.config))
        for line in parts.notes + ([f"tokenizer: {toks.note}"] if toks.note else []):
            progress.note(line)
        tokenizer = toks.fast
        fields = _prompt_fields(parts, tokenizer)
        progress.step(f"checking the server's tokenization against the reference ({type(toks.reference).__name__})")
        tokenization = S.decode_settings(toks, parts.strip_answer)
        server = S.ServerTokenizer(tok_dir / "tokenizer.json", tokenization["prefix_space"], tokenizer.bos_token_id)
        check_tokenizer(toks, server, fields)
        files = {**M.file_names(dtype, quantize), "tokenizer_check": TOKENIZER_CHECK}
        proc = parts.processor
        try:
            preprocessing = P.manifest_fields(proc, parts.pad_to_square)
            P.check_manifest_pixels(proc, preprocessing, parts.pad_to_square)
        except P.UnsupportedPreprocessing as e:
            raise ExportError(f"image preprocessing: {e}") from e
        pixels = P.pixel_values(proc, P.parity_image(), parts.pad_to_square)
        prompt_ids = parity_prompt_ids(fields, tokenizer)
        progress.step("computing the PyTorch reference (32 greedy steps)")
        ref = compute_reference(parts, pixels, prompt_ids, progress=progress)
        _write_graphs(parts, stage, files, progress, decoder_form)
        progress.step("writing tokenizer and manifest")
        for f in TOKENIZER_FILES:
            if (tok_dir / f).exists():
                shutil.copy(tok_dir / f, stage / f)
        check = S.tokenizer_check(toks, tokenization, template_prompts(fields), fields["image_placeholder"])
        (stage / TOKENIZER_CHECK).write_text(json.dumps(check, indent=1, ensure_ascii=False) + "\n")
        manifest = build_manifest(parts, name, tokenizer, fields, preprocessing, tokenization, dtype, quantize,
                                  files, block_size)
        try:
            M.validate(manifest)
        except ValueError as e:  # a bug of ours or an unusual checkpoint: say which field
            raise ExportError(str(e)) from e
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        num_layers = manifest["text"]["num_layers"]
        if not keep_parts:  # free the PyTorch weights before onnxruntime loads its copy
            parts = None
            gc.collect()
        if dtype == "fp16" or quantize:
            progress.step(f"converting precision ({'int4 weights' if quantize else 'fp16'})")
            _convert_precision(stage, files, quantize, block_size, progress)
        if share_tied_embedding((stage / files["decoder"]).parent, Path(files["embed_tokens"]).name,
                                Path(files["decoder"]).name):
            progress.note("tied LM head: the decoder reads embed_tokens' table from its data file (stored once)")
        progress.step("parity check: onnxruntime against the PyTorch reference")
        # The ONNX side gets the pixels the manifest's settings make (what the server computes);
        # check_manifest_pixels has proved them equal to the reference processor's.
        onnx_pixels = P.manifest_pixels(preprocessing, P.parity_image())
        report = check_parity(ref, stage, files, num_layers, onnx_pixels, prompt_ids,
                              "int4" if quantize == "int4" else dtype, progress=progress)
        (stage / "parity.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        if not report.passed:
            raise ExportError(f"parity check {report.verdict}; nothing was written to {out}")
        progress.note(f"parity {report.verdict}: max |logit diff| {report.max_abs_logit_diff:.2e} "
                      f"({report.rel_logit_diff:.2e} of max |logit|), greedy {report.greedy_agreement}/{report.steps}")
        shutil.rmtree(tok_dir)
        stage.chmod(0o755)  # mkdtemp makes it private; a package is an ordinary directory
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
        return ExportResult(out, manifest, report, parts, tokenizer, toks.reference)
    finally:
        progress.close()
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
