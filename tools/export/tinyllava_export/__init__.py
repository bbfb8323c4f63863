"""TinyLLaVA -> ONNX model package exporter (see docs/model-package.md)."""
__version__ = "0.1.0"
