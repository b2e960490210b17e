"""Arrival schedules: when each request of an open-loop run is due, fixed before the run starts.

Owns the arrival processes and nothing else: no clocks, no sockets; randomness comes from a
seeded ``numpy.random.Generator`` passed in. A schedule is a sorted float64 array of offsets in
seconds from the run's start (t0). The worker processes turn offsets into absolute times.

  poisson     exponential gaps at a fixed rate (the textbook open-loop arrival process).
  on_off      bursts: Poisson at ``on_rate`` for ``on_s``, then at ``off_rate`` (0: silence) for
              ``off_s``, repeated; the mean rate is (on_rate·on_s + off_rate·off_s)/(on_s + off_s).
  trace       offsets read from a file (one number per line, seconds; ``#`` comments), sorted,
              optionally scaled in time, cut at the duration.

``split_round_robin`` deals arrival i to worker i mod W, so the workers' schedules interleave
into exactly the planned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """How arrivals are drawn; ``describe`` gives it in words for reports."""

    kind: str  # "poisson" | "onoff" | "trace"
    rate_per_s: float = 0.0  # poisson: the rate; onoff: the mean rate (on/off rates derive from it)
    burst_factor: float = 4.0  # onoff: on_rate = burst_factor · mean rate while on
    on_s: float = 0.25
    off_s: float = 0.75
    trace_path: str | None = None
    trace_time_scale: float = 1.0  # trace offsets are multiplied by this

    def describe(self) -> str:
        if self.kind == "poisson":
            return f"Poisson {self.rate_per_s:,.0f}/s"
        if self.kind == "onoff":
            on, off = on_off_rates(self.rate_per_s, self.burst_factor, self.on_s, self.off_s)
            return (
                f"on/off mean {self.rate_per_s:,.0f}/s: Poisson {on:,.0f}/s for {self.on_s:g} s, "
                f"{off:,.0f}/s for {self.off_s:g} s"
            )
        return f"trace {self.trace_path} (time ×{self.trace_time_scale:g})"


def poisson(rate_per_s: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Offsets in [0, duration_s) of a Poisson process of ``rate_per_s``."""
    if rate_per_s <= 0 or duration_s <= 0:
        return np.empty(0)
    # draw a little more than the expected count, then top up in the rare case it fell short
    n = int(rate_per_s * duration_s + 6 * np.sqrt(rate_per_s * duration_s) + 16)
    gaps = rng.exponential(1.0 / rate_per_s, size=n)
    offsets = np.cumsum(gaps)
    while offsets[-1] < duration_s:
        more = np.cumsum(rng.exponential(1.0 / rate_per_s, size=n)) + offsets[-1]
        offsets = np.concatenate([offsets, more])
    return offsets[offsets < duration_s]


def on_off_rates(
    mean_rate_per_s: float, burst_factor: float, on_s: float, off_s: float
) -> tuple[float, float]:
    """(on_rate, off_rate) with on_rate = burst_factor · mean and the given mean overall.

    When the burst alone carries more than the mean (burst_factor ≥ (on+off)/on), off is silent
    and the on rate is raised to keep the mean.
    """
    period = on_s + off_s
    on_rate = burst_factor * mean_rate_per_s
    off_rate = (mean_rate_per_s * period - on_rate * on_s) / off_s if off_s > 0 else 0.0
    if off_rate < 0:
        return mean_rate_per_s * period / on_s, 0.0
    return on_rate, off_rate


def on_off(
    mean_rate_per_s: float,
    burst_factor: float,
    on_s: float,
    off_s: float,
    duration_s: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Offsets in [0, duration_s): Poisson bursts at the on rate, Poisson at the off rate between."""
    on_rate, off_rate = on_off_rates(mean_rate_per_s, burst_factor, on_s, off_s)
    parts = []
    start = 0.0
    while start < duration_s:
        for rate, length in ((on_rate, on_s), (off_rate, off_s)):
            span = min(length, duration_s - start)
            if span > 0:
                parts.append(start + poisson(rate, span, rng))
            start += length
    return np.concatenate(parts) if parts else np.empty(0)


def read_trace(path: Path, time_scale: float = 1.0, duration_s: float | None = None) -> np.ndarray:
    """Offsets from a text file of arrival times in seconds (any origin: the first becomes 0)."""
    values = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            values.append(float(text))
    offsets = np.sort(np.asarray(values, dtype=np.float64))
    if len(offsets):
        offsets = (offsets - offsets[0]) * time_scale
    if duration_s is not None:
        offsets = offsets[offsets < duration_s]
    return offsets


def arrivals(spec: ArrivalSpec, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    if spec.kind == "poisson":
        return poisson(spec.rate_per_s, duration_s, rng)
    if spec.kind == "onoff":
        return on_off(spec.rate_per_s, spec.burst_factor, spec.on_s, spec.off_s, duration_s, rng)
    if spec.kind == "trace":
        if spec.trace_path is None:
            raise ValueError("a trace schedule needs trace_path")
        return read_trace(Path(spec.trace_path), spec.trace_time_scale, duration_s)
    raise ValueError(f"unknown arrival kind {spec.kind!r}: poisson, onoff or trace")


def split_round_robin(n: int, workers: int) -> list[np.ndarray]:
    """Indices of arrivals per worker: worker k gets k, k + W, k + 2W, ..."""
    return [np.arange(k, n, workers) for k in range(workers)]


def rates_in_windows(
    offsets: Sequence[float] | np.ndarray, window_s: float, end_s: float
) -> np.ndarray:
    """Arrivals per second in consecutive windows of ``window_s`` over [0, end_s)."""
    bins = np.arange(0.0, end_s + window_s, window_s)
    counts, _ = np.histogram(np.asarray(offsets), bins=bins)
    return counts / window_s
