"""Progress of a run: what point, how many are left, and the time left.

Owns the lines a suite prints while it runs. One line per finished point, prefixed with
``[k/N elapsed, ~left]`` (time left from the mean time per point so far). On a terminal a point
that runs longer than a moment also gets a ticking status line on stderr, rewritten in place;
when stderr is not a terminal, or ``CI`` is set, there is no ticking line (quiet in CI logs).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator


def fmt_s(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, total: int, label: str = "") -> None:
        self.total = max(1, total)
        self.label = label
        self.done = 0
        self.started = time.monotonic()
        self._live = sys.stderr.isatty() and not os.environ.get("CI")

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def left_s(self) -> float | None:
        if self.done == 0:
            return None
        return self.elapsed_s() / self.done * max(0, self.total - self.done)

    def prefix(self) -> str:
        left = self.left_s()
        eta = f", ~{fmt_s(left)} left" if left is not None else ""
        return f"[{self.done}/{self.total} {fmt_s(self.elapsed_s())}{eta}]"

    def add(self, extra: int) -> None:
        """More points than planned (a bisection that needs another probe)."""
        self.total += extra

    def point(self, text: str) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        self._clear()
        print(f"{self.prefix()} {text}", flush=True)

    def note(self, text: str) -> None:
        self._clear()
        print(f"[{fmt_s(self.elapsed_s())}] {text}", flush=True)

    def _clear(self) -> None:
        if self._live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    @contextlib.contextmanager
    def running(self, what: str, expected_s: float) -> Iterator[None]:
        """A ticking line while one point runs (terminal only)."""
        if not self._live:
            yield
            return
        stop = threading.Event()
        t0 = time.monotonic()

        def tick() -> None:
            while not stop.wait(0.25):
                sys.stderr.write(
                    f"\r\033[K{self.prefix()} point {self.done + 1}: {what} "
                    f"{time.monotonic() - t0:4.1f}/{expected_s:.1f} s"
                )
                sys.stderr.flush()

        thread = threading.Thread(target=tick, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._clear()
