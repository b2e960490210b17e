"""What the frontend's per-request metric calls and a metrics snapshot cost, micro-benchmarked.

Owns ``time_frontend`` (``FrontendProc.count_response`` + the duration ``observe`` of ``FrontendCore.complete`` against a loop
of the same shape calling empty functions, median of rounds) and ``time_render``
(a render function per call: the core's ``render_scheduler_metrics``, a frontend's ``MetricSet.render``), for ``python -m benchmarks scheduler-core``.
"""

from __future__ import annotations

import gc
import statistics
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.micro.core_variants import NULL_METRIC
from schooner.engine.core.metrics import MetricSet

FRONTEND_CALLS = 200_000
QUICK_FRONTEND_CALLS = 50_000
RENDER_CALLS = 200


# ---------------------------------------------------------------------------------------------
# Frontend and publishing


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str
    ns_per_call: float  # median over rounds
    baseline_ns_per_call: float
    rounds: list[tuple[float, float]]

    @property
    def added_ns(self) -> float:
        return self.ns_per_call - self.baseline_ns_per_call


def frontend_stand_in() -> types.SimpleNamespace:
    """The fields FrontendProc.count_response and FrontendCore.complete's observe use, nothing else."""
    metrics = MetricSet()
    return types.SimpleNamespace(
        metrics=metrics,
        m_status={},
        metrics_changed=False,
        _fe_label="0",
        m_duration=metrics.histogram(
            "schooner_http_request_duration_seconds", "Predict requests", frontend="0"
        ),
    )


def time_frontend(calls: int, rounds: int) -> MicroResult:
    from schooner.frontend.server import FrontendProc  # the frontend's own method, not a copy

    count_response = FrontendProc.count_response
    fe = frontend_stand_in()
    monotonic_ns = time.monotonic_ns

    def with_metrics(n: int, start_ns: int) -> None:
        for _ in range(n):
            count_response(fe, 200)
            fe.m_duration.observe((monotonic_ns() - start_ns) / 1e9)

    def empty(self: object, status: int) -> None:
        pass

    null = types.SimpleNamespace(m_duration=NULL_METRIC)

    def without(n: int, start_ns: int) -> None:
        for _ in range(n):
            empty(null, 200)
            null.m_duration.observe(0.0)

    pairs = []
    for _ in range(rounds):
        timed = []
        for fn in (with_metrics, without):
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter_ns()
                fn(calls, monotonic_ns())
                timed.append((time.perf_counter_ns() - t0) / calls)
            finally:
                gc.enable()
        pairs.append((timed[0], timed[1]))
    return MicroResult(
        "frontend count_response + duration observe",
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
        pairs,
    )


def time_render(render: Callable[[], str], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        render()
    return (time.perf_counter_ns() - t0) / calls
