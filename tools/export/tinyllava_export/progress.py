"""Progress lines for long exports: numbered steps with elapsed time, sub-step lines (per layer,
per greedy step, per file), and a heartbeat that speaks up whenever a step has printed nothing
for a few seconds (inside torch.onnx.export or a protobuf write there is nothing to hook)."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

HEARTBEAT_S = 5.0  # the longest silence while a step runs
SUB_STEP_MIN_S = 1.0  # sub-step lines closer together than this are skipped (tiny models)


class Progress:
    def __init__(self, total: int, quiet: bool = False, heartbeat_s: float = HEARTBEAT_S):
        self.total, self.n, self.quiet, self.t0 = total, 0, quiet, time.time()
        self.heartbeat_s = heartbeat_s
        self.current = ""
        self.last_print = self.t0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        if not quiet:
            self.thread = threading.Thread(target=self._beat, name="export-progress", daemon=True)
            self.thread.start()

    def elapsed(self) -> str:
        return f"t+{time.time() - self.t0:.1f}s"

    def _print(self, line: str) -> None:
        with self.lock:
            print(line, file=sys.stderr, flush=True)
            self.last_print = time.time()

    def step(self, what: str) -> None:
        self.n += 1
        self.current = what
        if not self.quiet:
            self._print(f"[{self.n}/{self.total}] {what} ({self.elapsed()})")

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
        """Prints `label layer i/n` as each module in `modules` runs forward."""
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

    def _beat(self) -> None:
        while not self.stop.wait(0.5):
            if self.current and time.time() - self.last_print >= self.heartbeat_s:
                self._print(f"      ... {self.current} ({self.elapsed()})")

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
