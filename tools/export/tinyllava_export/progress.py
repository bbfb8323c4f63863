"""Progress lines for long exports: numbered steps with elapsed time, sub-step lines (per layer,
per greedy step, per file), and a heartbeat that speaks up whenever a step has printed nothing
for a few seconds.

The heartbeat runs in a small child process, not a thread: torch.onnx.export's graph passes and
protobuf serialisation hold Python's GIL for 10-15 s at a time on a real-size model, and a thread
would stay silent with them. The parent tells the child the current step and when it printed."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

HEARTBEAT_S = 5.0  # the longest silence while a step runs
SUB_STEP_MIN_S = 1.0  # sub-step lines closer together than this are skipped (tiny models)

# The child: reads "S<step>" (a new step, just printed) and "P" (the parent printed) lines; after
# `heartbeat` seconds without either, prints "... <step> (t+Ns)" itself. Ends at end of input.
_HEARTBEAT_CHILD = r"""
import os, select, sys, time
t0, beat = float(sys.argv[1]), float(sys.argv[2])
step, last, buf = "", time.time(), b""
while True:
    ready, _, _ = select.select([0], [], [], 0.25)
    if ready:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.startswith(b"S"):
                step = line[1:].decode("utf-8", "replace")
            last = time.time()
    elif step and time.time() - last >= beat:
        sys.stderr.write(f"      ... {step} (t+{time.time() - t0:.1f}s)\n")
        sys.stderr.flush()
        last = time.time()
"""


class Progress:
    def __init__(self, total: int, quiet: bool = False, heartbeat_s: float = HEARTBEAT_S):
        self.total, self.n, self.quiet, self.t0 = total, 0, quiet, time.time()
        self.last_print = self.t0
        self.child: subprocess.Popen | None = None
        if not quiet:
            try:
                self.child = subprocess.Popen([sys.executable, "-c", _HEARTBEAT_CHILD, repr(self.t0), repr(heartbeat_s)],
                                              stdin=subprocess.PIPE)
            except OSError:  # no heartbeat then; the step lines still come
                self.child = None

    def elapsed(self) -> str:
        return f"t+{time.time() - self.t0:.1f}s"

    def _tell(self, message: str) -> None:
        if self.child is not None and self.child.stdin is not None:
            try:
                self.child.stdin.write((message.replace("\n", " ") + "\n").encode())
                self.child.stdin.flush()
            except (BrokenPipeError, OSError):
                self.child = None

    def _print(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        self.last_print = time.time()
        self._tell("P")

    def step(self, what: str) -> None:
        self.n += 1
        if not self.quiet:
            self._print(f"[{self.n}/{self.total}] {what} ({self.elapsed()})")
            self._tell("S" + what)

    def note(self, what: str) -> None:
        if not self.quiet:
            self._print(f"      {what}")

    def sub(self, what: str, force: bool = False) -> None:
        """A line within the current step (rate-limited unless `force`)."""
        if self.quiet or (not force and time.time() - self.last_print < SUB_STEP_MIN_S):
            return
        self._print(f"      {what} ({self.elapsed()})")

    @contextmanager
    def layers(self, modules, label: str):
        """Prints `label: layer i/n` as each module in `modules` runs forward."""
        modules = list(modules)
        handles = []
        for i, m in enumerate(modules):
            def hook(_m, _inp, _out, i=i):
                self.sub(f"{label}: layer {i + 1}/{len(modules)}", force=i + 1 == len(modules))
            handles.append(m.register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def close(self) -> None:
        if self.child is not None:
            try:
                self.child.stdin.close()
                self.child.wait(timeout=5)
            except Exception:
                self.child.kill()
            self.child = None
