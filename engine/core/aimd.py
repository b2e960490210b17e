"""Adaptive batch sizing for one model replica: Clipper's AIMD controller (pure).

Owns: the batch-size limit of one replica and the latency target it steers by. The scheduler
core asks `limit` before it forms a batch for the replica and reports each finished batch with
`observe(batch_size, latency_ns)`; latency is measured by the shell and passed in as integer
nanoseconds. No clock, no I/O.

Rule (additive increase, multiplicative decrease), with target_ns = floor(target_fraction *
slo_ns), where slo_ns is the tightest SLO among the apps linked to the model (`set_slo`):

* latency_ns > target_ns: cut, limit = max(1, min(floor(limit * backoff_factor), limit - 1)).
  Every cut from a limit above 1 bites: limit * backoff_factor < limit, so its floor is at most
  limit - 1 (5 -> 4, 2 -> 1, and with a factor of 0.99 still 50 -> 49); the `min` with
  limit - 1 only spells that out against float rounding. floor(1 * 0.9) = 0 is clamped: a limit
  of 1 stays 1, as a single query is never refused.
* latency_ns <= target_ns and batch_size >= limit: grow, limit = min(max_batch_size, limit +
  additive_step). Only a batch that used the whole limit is evidence that the limit can grow: a
  fast batch of 3 under a limit of 40 says nothing about batches of 42, and growing on it would
  ratchet the limit up whenever load is light, then blow the SLO with one oversized batch when
  load returns.
* latency_ns <= target_ns and batch_size < limit: no change.

Invariants: 1 <= limit <= max_batch_size at all times. With `fixed_batch_size > 0` (Clipper's
setting; -1 means adaptive) the limit is min(fixed_batch_size, max_batch_size) and `observe`
changes nothing.

Under saturating load against a model whose latency is a + b * n, the limit saw-tooths around
n* (the largest n with a + b * n <= target_ns): it climbs by `additive_step` up to at most
n* + additive_step, then is cut once or more to no less than min(n*, floor(backoff_factor *
(n* + 1))). The overshoot is absolute, so relative to n* it is large when n* is small (n* = 2,
step 2: the cycle is 4, 3, 2, averaging 1.5 n*); see tests/property/test_aimd_bounds.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ADAPTIVE = -1


@dataclass(frozen=True, slots=True)
class AimdConfig:
    """AIMD parameters, shared by every replica (Clipper's defaults: +2, x0.9)."""

    additive_step: int = 2
    backoff_factor: float = 0.9
    target_fraction: float = 0.9  # of the SLO, leaving room for queueing and the round trip
    initial: int = 1

    def __post_init__(self) -> None:
        if self.additive_step < 1:
            raise ValueError(f"additive_step must be >= 1, not {self.additive_step}")
        if not 0.0 < self.backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), not {self.backoff_factor}")
        if not 0.0 < self.target_fraction <= 1.0:
            raise ValueError(f"target_fraction must be in (0, 1], not {self.target_fraction}")
        if self.initial < 1:
            raise ValueError(f"initial must be >= 1, not {self.initial}")


def _target_ns(target_fraction: float, slo_ns: int) -> int:
    if slo_ns <= 0:
        raise ValueError(f"slo_ns must be > 0, not {slo_ns}")
    return math.floor(target_fraction * slo_ns)


class AimdController:
    """The batch-size limit of one replica. See the module docstring."""

    __slots__ = ("config", "max_batch_size", "fixed_batch_size", "slo_ns", "target_ns", "_limit")

    def __init__(
        self,
        config: AimdConfig,
        max_batch_size: int,
        slo_ns: int,
        fixed_batch_size: int = ADAPTIVE,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, not {max_batch_size}")
        if fixed_batch_size != ADAPTIVE and fixed_batch_size < 1:
            raise ValueError(
                f"fixed_batch_size must be >= 1 or -1 (adaptive), not {fixed_batch_size}"
            )
        self.config = config
        self.max_batch_size = max_batch_size
        self.fixed_batch_size = fixed_batch_size
        self.slo_ns = slo_ns
        self.target_ns = _target_ns(config.target_fraction, slo_ns)
        if fixed_batch_size > 0:
            self._limit = min(fixed_batch_size, max_batch_size)
        else:
            self._limit = min(config.initial, max_batch_size)

    @property
    def limit(self) -> int:
        """The largest batch to send this replica now; always in [1, max_batch_size]."""
        return self._limit

    @property
    def adaptive(self) -> bool:
        return self.fixed_batch_size <= 0

    def observe(self, batch_size: int, latency_ns: int) -> None:
        """A batch of `batch_size` queries took `latency_ns` on this replica."""
        if self.fixed_batch_size > 0:
            return
        limit = self._limit
        if latency_ns > self.target_ns:
            cut = min(math.floor(limit * self.config.backoff_factor), limit - 1)
            self._limit = max(1, cut)
        elif batch_size >= limit:
            self._limit = min(self.max_batch_size, limit + self.config.additive_step)

    def take_over(self, limit: int) -> None:
        """Start from `limit` instead of probing up from the initial one: this replica takes
        over the load another (version or replica) was sized for. A fixed batch size stays."""
        if self.fixed_batch_size <= 0:
            self._limit = max(1, min(self.max_batch_size, limit))

    def set_slo(self, slo_ns: int) -> None:
        """Steer by a new SLO (the tightest among the apps now linked); the limit is kept and
        the next observations move it."""
        self.target_ns = _target_ns(self.config.target_fraction, slo_ns)
        self.slo_ns = slo_ns
