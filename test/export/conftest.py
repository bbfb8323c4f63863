import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "export"))

warnings.filterwarnings("ignore", module=r"torch\.onnx|transformers|onnxconverter_common")
