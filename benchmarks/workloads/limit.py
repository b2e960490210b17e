"""The model limit: rows per second of a workload's model alone, in-process, on one thread.

Owns the one model-limit measurement: the same batch passed to ``predict`` again and again at
batch sizes 1, 8, 32 and 64, no HTTP, no IPC. No one-replica server can pass the best of these
figures, and no batch-1 server the batch-1 one; the gap is what serving costs.
``measure_in_child`` runs it in a spawned process, so torch's threads and memory stay out of
the harness; a workload with ``limit_of`` (W4) reports the limit of that workload's model.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from benchmarks.workloads import WORKLOADS, Workload, load_model

DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
INPUT_SEED = 7
CALLS_PER_CLOCK_READ = 16  # keeps clock reads well under 1 % of a 2 µs predict call


@dataclass(frozen=True, slots=True)
class ModelLimitPoint:
    workload: str
    batch_size: int
    calls: int
    elapsed_s: float
    rows_per_s: float
    us_per_call: float


def time_predict(model, batch, duration_s: float, clock: Callable[[], float] = time.perf_counter) -> tuple[int, float]:
    """Calls ``predict(batch)`` for about ``duration_s`` after a warm-up; (calls, elapsed_s)."""
    for _ in range(CALLS_PER_CLOCK_READ):
        model.predict(batch)
    calls, start, elapsed = 0, clock(), 0.0
    while elapsed < duration_s:
        for _ in range(CALLS_PER_CLOCK_READ):
            model.predict(batch)
        calls += CALLS_PER_CLOCK_READ
        elapsed = clock() - start
    return calls, elapsed


def measure(workloads: Sequence[Workload], batch_sizes: Sequence[int], duration_s: float) -> list[ModelLimitPoint]:
    points: dict[tuple[str, int], ModelLimitPoint] = {}
    out = []
    for w in workloads:
        source = WORKLOADS[w.limit_of] if w.limit_of else w
        if (source.name, batch_sizes[0]) not in points:
            model = load_model(source)
            for b in batch_sizes:
                calls, elapsed = time_predict(model, source.make_inputs(b, INPUT_SEED), duration_s)
                points[(source.name, b)] = ModelLimitPoint(source.name, b, calls, elapsed, calls * b / elapsed, elapsed / calls * 1e6)
        out += [dataclasses.replace(points[(source.name, b)], workload=w.name) for b in batch_sizes]
    return out


def measure_in_child(workloads: Sequence[Workload], duration_s: float, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> list[ModelLimitPoint]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, list(workloads), list(batch_sizes), duration_s).result()


def best(limits: Sequence[ModelLimitPoint], workload: str) -> ModelLimitPoint | None:
    mine = [p for p in limits if p.workload == workload]
    return max(mine, key=lambda p: p.rows_per_s) if mine else None
