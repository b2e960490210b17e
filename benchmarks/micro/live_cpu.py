"""Schooner serving W1 under wrk: the CPU time each process role spends per request (psutil).

Owns ``measure_live`` for ``python -m benchmarks scheduler-core``: the context in which the
per-query metric costs are read (a share of what the scheduler and frontend processes really
spend). A server that does not start is reported in the result, never raised. The process tree
and its roles are read by ``benchmarks.harness.server_cpu``, as the serving suite's CPU per query.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.drivers.wrk import WrkError, ensure_wrk, run_wrk, write_bodies
from benchmarks.harness.machine import default_client_cpus
from benchmarks.harness.server_cpu import cpu_delta_s, snapshot
from benchmarks.harness.servers import ServerStartError
from benchmarks.systems import StartContext
from benchmarks.systems.schooner import SchoonerSystem
from benchmarks.workloads import WORKLOADS, make_inputs, request_body

LIVE_WORKLOAD = "w1"
LIVE_CONCURRENCY = 16
LIVE_DURATION_S = 4
QUICK_LIVE_DURATION_S = 2
LIVE_WARMUP_S = 1
LIVE_INPUT_SEED = 7000
WRK_CPUS_NOTE = "wrk pinned to the first CPU when there are several, as the serving suite does"


# ---------------------------------------------------------------------------------------------
# The live server, for context


@dataclass(slots=True)
class LiveResult:
    workload: str
    concurrency: int
    duration_s: float
    requests: int | None = None
    req_per_s: float | None = None
    scheduler_cpu_ns_per_request: float | None = None
    frontend_cpu_ns_per_request: float | None = None
    model_cpu_ns_per_request: float | None = None
    error: str | None = None


def measure_live(duration_s: int, work_dir: Path) -> LiveResult:
    """Schooner serving W1 (cache off) under wrk; psutil's CPU time per request of each role."""
    result = LiveResult(LIVE_WORKLOAD, LIVE_CONCURRENCY, duration_s)
    running = None
    try:
        wrk = ensure_wrk()
        bodies = work_dir / "live-bodies.jsonl"
        write_bodies(bodies, (request_body(row) for row in make_inputs(200_000, LIVE_INPUT_SEED)))
        running = SchoonerSystem().start(WORKLOADS[LIVE_WORKLOAD], StartContext(work_dir, None, 100.0))
        url = running.url(WORKLOADS[LIVE_WORKLOAD])
        if running.pid is None:
            result.error = "the server's pid is unknown"
            return result
        roles = {p.role for p in snapshot(running.pid).values()}
        if "scheduler" not in roles or "frontend" not in roles:
            result.error = f"could not find the scheduler/frontend processes among the server's (roles {sorted(roles)})"
            return result
        cpus = default_client_cpus()
        run_wrk(wrk, url, LIVE_CONCURRENCY, LIVE_WARMUP_S, bodies, cpus)
        before = snapshot(running.pid)
        wrk_result = run_wrk(wrk, url, LIVE_CONCURRENCY, duration_s, bodies, cpus)
        spent = cpu_delta_s(before, snapshot(running.pid)).seconds
        if wrk_result.error_count:
            result.error = f"wrk saw {wrk_result.error_count} errors"
        n = wrk_result.requests
        result.requests = n
        result.req_per_s = wrk_result.req_per_s
        if n:
            result.scheduler_cpu_ns_per_request = 1e9 * spent["scheduler"] / n
            result.frontend_cpu_ns_per_request = 1e9 * spent["frontend"] / n
            result.model_cpu_ns_per_request = 1e9 * spent["model"] / n
    except (ServerStartError, WrkError, psutil.Error) as exc:
        result.error = str(exc)
    finally:
        if running is not None:
            running.stop()
    return result
