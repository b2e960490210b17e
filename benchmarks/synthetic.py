"""Synthetic models whose cost is known exactly, for the scheduler benchmarks.

Owns ``LinearLatencyModel`` (entry point ``benchmarks.synthetic:LinearLatencyModel``): a batch
of n rows takes a + b·n seconds of wall time (a sleep, so it uses no CPU) and is answered with
the row sums. With an SLO the analytic batch size AIMD should settle at is known in advance
(``analytic_batch_size``), and with a large a and a tiny b the benefit of delayed batching is
as large as it can be. Same contract as ``benchmarks.workloads``: ``predict(batch)`` with
``batch`` of shape (n, ...) returns shape (n,).
"""

from __future__ import annotations

import math
import time

import numpy as np


class LinearLatencyModel:
    """Sleeps ``a_s + b_s * n`` seconds for a batch of n rows; answers the row sums."""

    def __init__(self, a_s: float, b_s: float) -> None:
        if a_s < 0 or b_s < 0:
            raise ValueError(f"a_s and b_s must be >= 0, not {a_s}, {b_s}")
        self.a_s = a_s
        self.b_s = b_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.a_s + self.b_s * len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1)


def analytic_batch_size(a_s: float, b_s: float, slo_s: float, target_fraction: float = 0.9) -> int:
    """n* = floor((target_fraction · SLO − a) / b): the largest batch whose model latency stays
    within the AIMD target (Schooner's default target is 90% of the SLO). Round trip and sleep
    overshoot are not counted, so the limit AIMD measures may settle a little below."""
    if b_s <= 0:
        raise ValueError("b_s must be > 0 for a finite n*")
    # the epsilon keeps float rounding (34.999999...) from costing an exact n* one
    return math.floor((target_fraction * slo_s - a_s) / b_s + 1e-9)
