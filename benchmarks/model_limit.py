"""The model limit: how many rows per second each workload's model computes in-process.

Owns the in-process throughput measurement of ``benchmarks.workloads`` models at batch sizes
1, 8, 32 and 64: no HTTP, no IPC, the same batch passed to ``predict`` again and again on one
thread. No server can beat these figures with one replica; the gap between them and a server's
req/s is what serving costs.

Run alone (``python -m benchmarks.model_limit``) it prints a table; ``--json`` prints the points
as JSON, which is how ``benchmarks.run`` calls it (in a child process, so that torch's thread
settings and memory stay out of the harness).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import orjson

from benchmarks.workloads import WORKLOADS, BatchModel, load_model, make_inputs

DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
INPUT_SEED = 7
CALLS_PER_CLOCK_READ = 16  # keeps clock reads well under 1% of a 2 µs predict call


@dataclass(frozen=True, slots=True)
class ModelLimitPoint:
    workload: str
    batch_size: int
    calls: int
    elapsed_s: float
    rows_per_s: float
    us_per_call: float


def time_predict(
    model: BatchModel,
    batch_size: int,
    duration_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float]:
    """Calls ``model.predict`` on one fixed batch for about ``duration_s``; returns (calls, elapsed_s)."""
    batch = make_inputs(batch_size, INPUT_SEED)
    for _ in range(CALLS_PER_CLOCK_READ):  # warm caches and allocator before timing
        model.predict(batch)
    calls = 0
    start = clock()
    elapsed = 0.0
    while elapsed < duration_s:
        for _ in range(CALLS_PER_CLOCK_READ):
            model.predict(batch)
        calls += CALLS_PER_CLOCK_READ
        elapsed = clock() - start
    return calls, elapsed


def measure_model_limits(
    workloads: Sequence[str], batch_sizes: Sequence[int], duration_s: float
) -> list[ModelLimitPoint]:
    points = []
    for workload in workloads:
        model = load_model(workload)
        for batch_size in batch_sizes:
            calls, elapsed_s = time_predict(model, batch_size, duration_s)
            points.append(
                ModelLimitPoint(
                    workload=workload,
                    batch_size=batch_size,
                    calls=calls,
                    elapsed_s=elapsed_s,
                    rows_per_s=calls * batch_size / elapsed_s,
                    us_per_call=elapsed_s / calls * 1e6,
                )
            )
    return points


def format_table(points: Sequence[ModelLimitPoint]) -> str:
    lines = [f"{'workload':<9}{'batch':>6}{'rows/s':>14}{'us/call':>10}"]
    lines += [
        f"{p.workload:<9}{p.batch_size:>6}{p.rows_per_s:>14,.0f}{p.us_per_call:>10.1f}"
        for p in points
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_limit", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated (default: all)"
    )
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per point (default 1)")
    parser.add_argument("--json", action="store_true", help="print the points as JSON")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    points = measure_model_limits(
        workloads, [int(b) for b in args.batch_sizes.split(",")], args.duration
    )
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([asdict(p) for p in points]) + b"\n")
    else:
        print(format_table(points))


if __name__ == "__main__":
    main()
