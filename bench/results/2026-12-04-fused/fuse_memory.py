"""Peak extra RSS of fuse_decoder_projections over a traced TinyLlama-1.1B fp32 decoder, with the
PyTorch model still loaded (as in export_decoder). argv[1]: 'new' (this tree's pass) or 'old'
(41c0a75's, which held every fused weight in memory). Run from the repository root:
  git show 41c0a75:tools/export/tinyllava_export/fuse_projections.py > /tmp/fuse_projections_old.py
  PYTHONPATH=tools/export:/tmp .venv/bin/python bench/results/2026-12-04-fused/fuse_memory.py new|old"""
import sys, threading, time, os, shutil, tempfile
from pathlib import Path
import tinyllava_export.onnx_export as X
from tinyllava_export.model_parts import from_preset
from tinyllava_export.presets import PRESETS

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def old_fuse(path):
    import onnx
    from fuse_projections_old import fuse_projections
    model = onnx.load(str(path), load_external_data=False)
    if fuse_projections(model, path.parent):
        X.repack_weights(model, path, path.parent)
        onnx.checker.check_model(str(path))

which = sys.argv[1]
real = X.fuse_decoder_projections
X.fuse_decoder_projections = lambda p: None  # trace only
parts = from_preset(PRESETS["tinyllama-siglip-1.5b"], 32000, seed=0)
out = Path(tempfile.mkdtemp(dir="/tmp")) / "decoder.onnx"
t = time.time(); X.export_decoder(parts, out); print(f"traced in {time.time()-t:.0f}s", flush=True)
base = rss(); peak = [base]; done = [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.02)
th = threading.Thread(target=sample); th.start()
t = time.time()
(real if which == "new" else old_fuse)(out)
done[0] = True; th.join()
print(f"{which}: pass {time.time()-t:.0f}s, RSS before {base/1e9:.2f} GB, peak extra during the pass {(peak[0]-base)/1e9:.2f} GB")
print(sorted((p.name, p.stat().st_size) for p in out.parent.iterdir()))
shutil.rmtree(out.parent)
