"""A latency histogram with HDR's bucket layout, in numpy: 3 significant digits from 1 ns to 100 s.

Owns the bucketing and the percentile arithmetic, nothing else (pure; no clocks). Chosen over
the ``hdrhistogram`` package so the layout is written down here and recording a whole worker's
samples is one vectorised call.

Layout (HDR's log-linear scheme, lowest discernible value 1 ns, 11 sub-bucket bits): values
0..2047 ns have one bucket each; above that, each power-of-two band [2^(b+10), 2^(b+11)) is cut
into 1,024 equal buckets of width 2^b. A bucket is therefore never wider than 1/1024 of the
values it holds (< 0.1%: three significant digits). Values above ``HIGHEST_NS`` (100 s) go into
the top bucket; the exact minimum, maximum, count and sum are kept beside the buckets, so ``max``
and ``mean`` are exact. A percentile is reported as the highest value its bucket can hold (as
HDR does), capped at the exact maximum, so it never understates.

Histograms of the same layout merge by adding counts: each worker process records its own and
the driver merges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SUB_BITS = 11  # 2^11 = 2048 sub-buckets: 2 × 10^3, enough for 3 significant digits
SUB_COUNT = 1 << SUB_BITS
HALF_COUNT = SUB_COUNT // 2
HIGHEST_NS = 100 * 10**9
TOP_BAND = int(HIGHEST_NS).bit_length() - SUB_BITS
BUCKETS = SUB_COUNT + TOP_BAND * HALF_COUNT

REPORT_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_index(values_ns: np.ndarray) -> np.ndarray:
    """The bucket of each value (int64 ns, clipped to [0, HIGHEST_NS])."""
    v = np.clip(np.asarray(values_ns, dtype=np.int64), 0, HIGHEST_NS)
    _, exponent = np.frexp(v.astype(np.float64))  # exponent == bit_length for 0 <= v < 2^53
    band = np.maximum(exponent.astype(np.int64) - SUB_BITS, 0)
    in_band = (v >> band) - HALF_COUNT  # 0..1023 above band 0
    return np.where(band == 0, v, SUB_COUNT + (band - 1) * HALF_COUNT + in_band)


def bucket_bounds(index: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) value in ns that bucket ``index`` holds."""
    idx = np.asarray(index, dtype=np.int64)
    band = np.where(idx < SUB_COUNT, 0, (idx - SUB_COUNT) // HALF_COUNT + 1)
    sub = np.where(idx < SUB_COUNT, idx, (idx - SUB_COUNT) % HALF_COUNT + HALF_COUNT)
    low = sub << band
    return low, low + (np.int64(1) << band) - 1


@dataclass(slots=True)
class LatencyHistogram:
    counts: np.ndarray
    total: int = 0
    sum_ns: int = 0
    min_ns: int | None = None
    max_ns: int | None = None

    @classmethod
    def empty(cls) -> LatencyHistogram:
        return cls(np.zeros(BUCKETS, dtype=np.int64))

    @classmethod
    def of(cls, values_ns: Sequence[int] | np.ndarray) -> LatencyHistogram:
        h = cls.empty()
        h.record(values_ns)
        return h

    def record(self, values_ns: Sequence[int] | np.ndarray) -> None:
        v = np.asarray(values_ns, dtype=np.int64)
        if v.size == 0:
            return
        self.counts += np.bincount(bucket_index(v), minlength=BUCKETS)
        self.total += int(v.size)
        self.sum_ns += int(v.sum())
        lo, hi = int(v.min()), int(v.max())
        self.min_ns = lo if self.min_ns is None else min(self.min_ns, lo)
        self.max_ns = hi if self.max_ns is None else max(self.max_ns, hi)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        self.total += other.total
        self.sum_ns += other.sum_ns
        for name, pick in (("min_ns", min), ("max_ns", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(
                self,
                name,
                theirs if mine is None else mine if theirs is None else pick(mine, theirs),
            )

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram]) -> LatencyHistogram:
        h = cls.empty()
        for part in parts:
            h.merge(part)
        return h

    def percentile_ns(self, percent: float) -> int | None:
        """The value at or below which ``percent`` % of the recorded values lie (bucket top)."""
        if self.total == 0:
            return None
        if percent >= 100.0:
            return self.max_ns
        rank = max(1, int(np.ceil(percent / 100.0 * self.total)))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        _, high = bucket_bounds(index)
        return int(min(int(high), self.max_ns or 0))

    def mean_ns(self) -> float | None:
        return self.sum_ns / self.total if self.total else None

    def fraction_at_or_below(self, value_ns: int) -> float | None:
        """Share of values in buckets whose top is <= value_ns (exact to the bucket width)."""
        if self.total == 0:
            return None
        top = int(bucket_index(np.array([value_ns]))[0])
        _, high = bucket_bounds(top)
        upto = top + 1 if int(high) <= value_ns else top
        return float(self.counts[:upto].sum()) / self.total

    def summary_ms(self) -> dict[str, float | None]:
        """p50/p90/p99/p99.9/max/mean in ms, the figures every report prints."""
        out: dict[str, float | None] = {}
        for p in REPORT_PERCENTILES:
            v = self.percentile_ns(p)
            out[f"p{p:g}_ms".replace(".", "_")] = None if v is None else v / 1e6
        out["max_ms"] = None if self.max_ns is None else self.max_ns / 1e6
        mean = self.mean_ns()
        out["mean_ms"] = None if mean is None else mean / 1e6
        return out

    def cdf_ms(self, points: int = 120) -> list[tuple[float, float]]:
        """(latency ms, fraction ≤ it) at quantiles spaced evenly in log(1/(1−q)), up to 1 − 1e-5,
        plus the maximum: enough to draw a CDF and its tail."""
        if self.total == 0:
            return []
        nines = np.linspace(0.0, 5.0, points)
        quantiles = 1.0 - 10.0**-nines
        out = [(self.percentile_ns(100.0 * q) / 1e6, float(q)) for q in quantiles]
        out.append((self.max_ns / 1e6, 1.0))
        return out

    def nonzero(self) -> dict[str, list[int]]:
        """The occupied buckets (index, count): a compact form for JSON."""
        idx = np.flatnonzero(self.counts)
        return {"index": idx.tolist(), "count": self.counts[idx].tolist()}
