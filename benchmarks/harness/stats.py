"""Pure statistics of the harness: capacity bisection, median with min-max, ratio spread.

Owns the decisions that turn repeated measurements into the figures a table prints. No clock,
no I/O, no randomness: every function takes plain numbers, so the unit tests drive them directly.

* ``Spread``: median with min and max over repeats (never a mean: one noisy repeat on a shared
  machine must not move the figure, and the min-max range shows it).
* ``paired_ratio``: repeats of two systems run interleaved (A1 B1 A2 B2 ...), so repeat i of A
  is divided by repeat i of B and the spread of those ratios is reported beside their median;
  ``paired_difference`` the same with a_i − b_i (what one system adds to the other's latency).
* ``CapacitySearch``: the highest rate that passes a test, found by doubling until a failure
  (or halving until a pass) and then bisecting in log space until the failing rate is within
  ``tolerance`` of the passing one (5 %: the bound a capacity ratio is known to).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Spread:
    """Median, min and max of ``n`` repeats."""

    median: float
    lo: float
    hi: float
    n: int

    def text(self, spec: str = ",.0f", unit: str = "") -> str:
        """``median (lo–hi)``, or just the median for one repeat."""
        if self.n <= 1:
            return f"{self.median:{spec}}{unit}"
        return f"{self.median:{spec}}{unit} ({self.lo:{spec}}–{self.hi:{spec}})"


def ratio_text(s: Spread | None) -> str:
    """A ratio's median with its min-max, to two decimals (three below 0.1)."""
    if s is None:
        return "-"
    return s.text(".2f" if s.median >= 0.1 else ".3f", "×")


def spread(values: Sequence[float | None]) -> Spread | None:
    """Median with min-max of the values that were measured; None when none was."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    return Spread(statistics.median(xs), min(xs), max(xs), len(xs))


def spread_text(values: Sequence[float | None], spec: str = ",.0f", unit: str = "") -> str:
    """``median (lo–hi)`` of the values that were measured, "-" when none was."""
    s = spread(values)
    return "-" if s is None else s.text(spec, unit)


def paired_ratio_by(numerators: Mapping[object, float | None], denominators: Mapping[object, float | None]) -> Spread | None:
    """``paired_ratio`` of two measurements keyed by repeat: only repeats both have are paired."""
    keys = [k for k in numerators if k in denominators]
    return paired_ratio([numerators[k] for k in keys], [denominators[k] for k in keys])


def paired_ratio(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> Spread | None:
    """Spread of a_i / b_i over the repeats where both were measured and b_i > 0."""
    ratios = [
        a / b
        for a, b in zip(numerators, denominators, strict=False)
        if a is not None and b is not None and b > 0
    ]
    return spread(ratios)


def paired_difference_by(minuends: Mapping[object, float | None], subtrahends: Mapping[object, float | None]) -> Spread | None:
    """``paired_difference`` of two measurements keyed by repeat: only repeats both have are paired."""
    keys = [k for k in minuends if k in subtrahends]
    return paired_difference([minuends[k] for k in keys], [subtrahends[k] for k in keys])


def paired_difference(minuends: Sequence[float | None], subtrahends: Sequence[float | None]) -> Spread | None:
    """Spread of a_i − b_i over the repeats where both were measured."""
    return spread([a - b for a, b in zip(minuends, subtrahends, strict=False) if a is not None and b is not None])


@dataclass(slots=True)
class CapacitySearch:
    """Bisection for the highest passing rate, to within ``tolerance`` (relative).

    Use: ``while (rate := s.next_rate()) is not None: s.record(rate, passed(rate))``. Then
    ``s.passed_rate`` is the highest rate that passed (None: even ``min_rate`` failed) and
    ``s.failed_rate`` the lowest that failed above it (None: ``max_rate`` passed). The search
    assumes a rate passes iff every lower rate does; a noisy answer only moves the bracket.
    """

    start_rate: float
    min_rate: float
    max_rate: float
    tolerance: float = 0.05
    growth: float = 2.0
    max_probes: int = 16
    passed_rate: float | None = None
    failed_rate: float | None = None
    probes: list[tuple[float, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError("need 0 < min_rate <= start_rate <= max_rate")
        if self.tolerance <= 0 or self.growth <= 1:
            raise ValueError("need tolerance > 0 and growth > 1")

    def next_rate(self) -> float | None:
        lo, hi = self.passed_rate, self.failed_rate
        if len(self.probes) >= self.max_probes:
            return None
        if lo is None and hi is None:
            return self.start_rate
        if hi is None:  # only passes so far: grow
            assert lo is not None
            return None if lo >= self.max_rate else min(lo * self.growth, self.max_rate)
        if lo is None:  # only failures so far: shrink
            return None if hi <= self.min_rate else max(hi / self.growth, self.min_rate)
        if hi <= lo * (1 + self.tolerance):
            return None
        return math.sqrt(lo * hi)

    def record(self, rate: float, passed: bool) -> None:
        self.probes.append((rate, passed))
        if passed:
            if self.passed_rate is None or rate > self.passed_rate:
                self.passed_rate = rate
            if self.failed_rate is not None and self.failed_rate <= rate:
                self.failed_rate = None  # noise: a higher rate passed after a lower one failed
        else:
            if self.failed_rate is None or rate < self.failed_rate:
                self.failed_rate = rate
            if self.passed_rate is not None and self.passed_rate >= rate:
                self.passed_rate = None

    @property
    def resolution(self) -> float | None:
        """failed / passed − 1: how well the capacity is known (None: not bracketed)."""
        if self.passed_rate is None or self.failed_rate is None:
            return None
        return self.failed_rate / self.passed_rate - 1
