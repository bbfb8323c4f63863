"""`npm run export -- ...`: the exporter's command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import templates as T
from .presets import PRESETS


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="npm run export --",
        description="Export a TinyLLaVA checkpoint (or a random-init model of a named shape) to an ONNX "
                    "model package, checked against PyTorch before it is written.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, metavar="DIR",
                     help="a local checkpoint directory: TinyLLaVA_Factory (model_type tinyllava), TinyLLaVABench "
                          "(the paper's releases: tiny_llava_phi, tiny_llava_stablelm, tiny_llava) or transformers "
                          "Llava (llava)")
    src.add_argument("--random-init", metavar="PRESET", choices=sorted(PRESETS),
                     help="a random-init model of a named shape: " + ", ".join(PRESETS))
    src.add_argument("--make-fixtures", action="store_true",
                     help="regenerate every test fixture, golden file and the default package")
    src.add_argument("--list-presets", action="store_true", help="list the random-init presets and exit")
    ap.add_argument("--out", type=Path, metavar="DIR", help="the package directory to write")
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--quantize", choices=["int4"], default=None, help="int4 weights (MatMulNBits), fp32 compute")
    ap.add_argument("--block-size", type=int, choices=[16, 32, 64, 128, 256], default=32,
                    help="int4: weights per quantisation block (default 32, as llama.cpp's Q4_0; "
                         "128 runs faster on CPUs, with a coarser scale per block)")
    ap.add_argument("--decoder-form", choices=["standard", "shared_kv"], default="standard",
                    help="standard (default; the fastest on CPU): attention over a past and presents of the new "
                         "positions; shared_kv (for --execution-provider cuda): GroupQueryAttention over one KV "
                         "buffer that is both past and present, fp16 at the graph boundary with --dtype fp16 "
                         "(docs/model-package.md)")
    ap.add_argument("--vision-tower", type=Path, metavar="DIR",
                    help="the local directory of the vision tower the checkpoint names (its hub id in "
                         "vision_model_name_or_path / mm_vision_tower): its preprocessor_config.json, and for "
                         "TinyLLaVABench checkpoints its weights and config, as the original loader reads them")
    ap.add_argument("--template", choices=T.TEMPLATE_NAMES,
                    help="the prompt template, when it is not the one the LLM family implies "
                         "(e.g. qwen2_instruct for a model trained on an instruct Qwen2)")
    ap.add_argument("--seed", type=int, default=0, help="random-init seed (default 0)")
    ap.add_argument("--name", help="the package's model name (default: from the source)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    if (args.checkpoint or args.random_init) and not args.out:
        ap.error("--out DIR is required")
    if args.block_size != 32 and not args.quantize:
        ap.error("--block-size applies to --quantize int4")
    if args.vision_tower and not args.checkpoint:
        ap.error("--vision-tower applies to --checkpoint")
    return args


def quiet_library_warnings() -> None:
    """Tracing warnings about Python-level shape checks are expected and drown the progress lines."""
    import warnings
    warnings.filterwarnings("ignore", module=r"torch\.onnx|transformers|onnxconverter_common")
    warnings.filterwarnings("ignore", message=r".*(TracerWarning|Converting a tensor to a Python).*")
    import torch.jit
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    from transformers.utils import logging
    logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quiet_library_warnings()
    if args.list_presets:
        for p in PRESETS.values():
            kind = "tiny (tests)" if p.tiny else f"real shape of {p.source_checkpoint}"
            print(f"{p.name:24s} {p.family}+{p.vision} {kind}")
        return 0
    from .model_parts import ExportError
    try:
        if args.make_fixtures:
            from .fixtures.make import make_all
            make_all()
            return 0
        from .export import run_export
        result = run_export(args.out, preset=args.random_init, checkpoint=args.checkpoint, seed=args.seed,
                            dtype=args.dtype, quantize=args.quantize, block_size=args.block_size, force=args.force, quiet=args.quiet,
                            name=args.name, keep_parts=False, vision_tower=args.vision_tower,
                            template=args.template, decoder_form=args.decoder_form)
    except ExportError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {result.out_dir} ({result.parity.verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
