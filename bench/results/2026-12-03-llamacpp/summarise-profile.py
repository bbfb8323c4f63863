"""Kernel time per op type in an onnxruntime profile written by profile-decoder.mjs, over the runs
after the first 3 (the warm-up): python3 summarise-profile.py PROFILE.json"""
import collections
import json
import sys

ev = json.load(open(sys.argv[1]))
runs = [e for e in ev if e.get("name") == "model_run"]
timed = runs[3:]
start = timed[0]["ts"]
by, calls, total = collections.Counter(), collections.Counter(), 0
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
        op = e["args"].get("op_name", "?")
        by[op] += e["dur"]
        calls[op] += 1
        total += e["dur"]
n = len(timed)
print("kernels %.1f ms/step, runs %.1f ms/step (profiled), %d kernels/step"
      % (total / n / 1000, sum(e["dur"] for e in timed) / n / 1000, sum(calls.values()) // n))
for op, d in by.most_common(14):
    print("%-30s %6.2f ms/step %5.1f%%  %d calls/step" % (op, d / n / 1000, 100 * d / total, calls[op] // n))
