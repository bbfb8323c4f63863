"""Builds manifest.json and validates it against the project's one schema,
src/model/manifest.schema.json (the server validates with the same file)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema

FORMAT = "tinyllava-onnx"
FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "src" / "model" / "manifest.schema.json"


def validate(manifest: dict) -> None:
    """Raises ValueError naming the first field that breaks the schema."""
    schema = json.loads(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "(root)"
        raise ValueError(f"manifest.json: {where}: {e.message}")


def file_names(dtype: str, quantize: str | None) -> dict:
    """transformers.js-style suffixes: none for fp32, _fp16, _q4 (int4 weights, fp32 compute)."""
    suffix = "_q4" if quantize == "int4" else ("_fp16" if dtype == "fp16" else "")
    return {
        "vision_encoder": f"onnx/vision_encoder{suffix}.onnx",
        "connector": f"onnx/connector{suffix}.onnx",
        "embed_tokens": f"onnx/embed_tokens{suffix}.onnx",
        "decoder": f"onnx/decoder_model_merged{suffix}.onnx",
        "tokenizer": "tokenizer.json",
    }
