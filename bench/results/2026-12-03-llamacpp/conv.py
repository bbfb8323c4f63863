# torch 1.13 lacks the float8 dtypes convert_hf_to_gguf.py names in a table; give it placeholders.
import runpy, sys, torch
for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64"):
    if not hasattr(torch, n):
        setattr(torch, n, object())
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
