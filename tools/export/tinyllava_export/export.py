"""One export, start to finish: model -> staging directory -> parity check -> package.

Everything is written into a hidden staging directory beside the output; only a package that
passed its parity check is renamed into place, so a failed export leaves nothing half-written.
"""
from __future__ import annotations

import gc
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
import transformers
from transformers import AutoTokenizer

from . import __version__, manifest as M, onnx_export as X, preprocessing as P, templates as T
from .model_parts import ExportError, ModelParts, from_checkpoint, from_preset
from .parity import ParityReport, check_parity, compute_reference
from .presets import get_preset

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PARITY_QUESTION = "What is in this image?"


class Progress:
    """Numbered steps with elapsed time on stderr: long exports show where they are."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.n, self.quiet, self.t0 = total, 0, quiet, time.time()

    def step(self, what: str) -> None:
        self.n += 1
        if not self.quiet:
            print(f"[{self.n}/{self.total}] {what} (t+{time.time() - self.t0:.1f}s)", file=sys.stderr, flush=True)

    def note(self, what: str) -> None:
        if not self.quiet:
            print(f"      {what}", file=sys.stderr, flush=True)


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    parity: ParityReport
    parts: ModelParts  # the PyTorch model that was exported (the reference for golden files)
    tokenizer: object  # its transformers fast tokenizer


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
    fields["stop_token_ids"] = _stop_ids(tokenizer, fields["eos_text"])
    fields["image_token_mode"] = parts.image_token_mode
    fields["image_token_id"] = parts.image_token_id
    return fields


def parity_prompt_ids(fields: dict, tokenizer) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PARITY_QUESTION}]}]
    prompt = T.render_prompt(fields, messages)
    return T.tokenize_prompt(prompt, tokenizer, fields["image_placeholder"], fields["image_token_mode"],
                             fields.get("image_token_id"))


def check_tokenizer(tokenizer_dir: Path, fields: dict):
    """Factory checkpoints are trained with the slow tokenizer; the package ships the fast one.
    Refuse when they tokenize the template's prompts differently."""
    from .tokenizer_check import check_slow_fast, template_prompts
    result = check_slow_fast(tokenizer_dir, template_prompts(fields), fields["image_placeholder"],
                             fields["image_token_mode"], fields.get("image_token_id"))
    if not result.agree:
        first = result.mismatches[0]
        raise ExportError(f"the fast tokenizer disagrees with the slow one ({result.slow_class}) on "
                          f"{len(result.mismatches)} of {result.checked} template prompts; first: {first.prompt!r} "
                          f"slow {first.slow_ids} vs fast {first.fast_ids} (from index {first.first_difference})")
    return result


def build_manifest(parts: ModelParts, name: str, tokenizer, fields: dict, proc, dtype: str,
                   quantize: str | None, files: dict, block_size: int = 32) -> dict:
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
        "image_preprocessing": P.manifest_fields(proc, parts.pad_to_square),
        "prompt": fields,
    }


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a").input_ids
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def _write_graphs(parts: ModelParts, stage: Path, files: dict, progress: Progress) -> None:
    """The four graphs in fp32 (precision is converted afterwards, from these files)."""
    progress.step("exporting the vision encoder")
    X.export_vision(parts, stage / files["vision_encoder"])
    progress.step("exporting the connector and token embedding")
    X.export_connector(parts, stage / files["connector"])
    X.export_embed_tokens(parts, stage / files["embed_tokens"])
    progress.step("exporting the decoder with KV cache")
    X.export_decoder(parts, stage / files["decoder"])


def _convert_precision(stage: Path, files: dict, quantize: str | None, block_size: int) -> None:
    for key in ("vision_encoder", "connector", "embed_tokens", "decoder"):
        path = stage / files[key]
        if quantize == "int4":
            if key in ("decoder", "vision_encoder"):  # the MatMul-heavy graphs
                X.quantize_int4(path, block_size)
        else:
            X.to_fp16(path)


def run_export(out: Path, *, preset: str | None = None, checkpoint: Path | None = None, seed: int = 0,
               dtype: str = "fp32", quantize: str | None = None, block_size: int = 32, force: bool = False,
               quiet: bool = False, name: str | None = None, keep_parts: bool = True) -> ExportResult:
    """Exports a preset or checkpoint to `out`. keep_parts=False frees the PyTorch model before
    the parity check (the command line does, so real-size models fit in memory); the result's
    `parts` is then None."""
    out = out.resolve()
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if quantize and dtype != "fp32":
        raise ExportError("--quantize int4 keeps fp32 activations; use it with --dtype fp32")
    progress = Progress(9 if (dtype == "fp16" or quantize) else 8, quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tok_dir = stage / "_tokenizer"
        progress.step("building the PyTorch model" + (f" from preset {preset}" if preset else f" from {checkpoint}"))
        if preset:
            p = get_preset(preset)
            from .fixtures.tokenizers import train_tokenizer
            tokenizer = train_tokenizer(p.tokenizer_style, tok_dir)
            parts = from_preset(p, len(tokenizer), seed)
            precision = "int4" if quantize == "int4" else dtype
            name = name or f"random-{preset}" + ("" if precision == "fp32" else f"-{precision}")
        else:
            parts = from_checkpoint(checkpoint)
            tokenizer = _checkpoint_tokenizer(checkpoint, tok_dir)
            name = name or checkpoint.name
        fields = _prompt_fields(parts, tokenizer)
        progress.step("checking the fast tokenizer against the slow one")
        check_tokenizer(tok_dir, fields)
        files = M.file_names(dtype, quantize)
        proc = P.image_processor(parts)
        pixels = P.pixel_values(proc, P.parity_image(), parts.pad_to_square)
        prompt_ids = parity_prompt_ids(fields, tokenizer)
        progress.step("computing the PyTorch reference (32 greedy steps)")
        ref = compute_reference(parts, pixels, prompt_ids)
        _write_graphs(parts, stage, files, progress)
        progress.step("writing tokenizer and manifest")
        for f in TOKENIZER_FILES:
            if (tok_dir / f).exists():
                shutil.copy(tok_dir / f, stage / f)
        manifest = build_manifest(parts, name, tokenizer, fields, proc, dtype, quantize, files, block_size)
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
            _convert_precision(stage, files, quantize, block_size)
        progress.step("parity check: onnxruntime against the PyTorch reference")
        report = check_parity(ref, stage, files, num_layers, pixels.numpy(), prompt_ids,
                              "int4" if quantize == "int4" else dtype)
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
        return ExportResult(out, manifest, report, parts, tokenizer)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _checkpoint_tokenizer(ckpt: Path, tok_dir: Path):
    """The checkpoint's tokenizer as a fast tokenizer (converted from the slow files when the
    checkpoint has no tokenizer.json), saved with its slow files for the agreement check."""
    try:
        fast = AutoTokenizer.from_pretrained(str(ckpt), use_fast=True)
    except Exception as e:
        raise ExportError(f"{ckpt}: cannot load the tokenizer ({type(e).__name__}: {e}); "
                          "the checkpoint must contain its tokenizer files") from e
    fast.save_pretrained(str(tok_dir))
    for f in ("tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json"):
        if (ckpt / f).exists() and not (tok_dir / f).exists():
            shutil.copy(ckpt / f, tok_dir / f)
    return fast
