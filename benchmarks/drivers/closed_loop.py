"""A closed-loop session with wrk: a fresh system, a warm-up, one point per concurrency, stop.

Owns ``BodiesFiles`` (request-body files per workload and seed, written once per run, so every
system gets the same bodies) and ``drive`` (what every closed-loop suite does to one system on
one workload: busy check, start, warm-up at the highest concurrency, one wrk run per
concurrency, stop and leak check). Failures are recorded in the ``TargetRun``, never raised.
A suite may pass ``observe``: it gets the running system and may return a ``PointObserver``,
called just before and just after each measured wrk run (not the warm-up); what ``after``
returns is stored in the point's ``observed`` (e.g. the server's CPU time, its /metrics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benchmarks.drivers.wrk import WrkError, WrkResult, run_wrk, write_bodies
from benchmarks.harness.machine import DEFAULT_THRESHOLD_PERCENT, OthersMeter, wait_until_idle
from benchmarks.harness.progress import Progress
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.servers import ServerStartError, StopReport
from benchmarks.systems import RunningSystem, StartContext, System
from benchmarks.workloads import Workload, request_stream

WARMUP_S = 1.0


class BodiesFiles:
    """``(workload, seed)`` → a file of ``count`` JSON bodies (cycled by wrk), written on first use."""

    def __init__(self, directory: Path, count: int) -> None:
        self._directory = directory
        self._count = count
        self._files: dict[tuple[str, int], tuple[Path, int]] = {}

    def get(self, workload: Workload, seed: int) -> tuple[Path, int]:
        key = (workload.name, seed)
        if key not in self._files:
            count = self._count if workload.zipf_repeats else workload.distinct_bodies
            bodies, index = request_stream(workload, count, seed)
            path = self._directory / f"bodies-{workload.name}-{seed}.jsonl"
            write_bodies(path, (bodies[i] for i in index))
            self._files[key] = (path, len(set(index.tolist())))
        return self._files[key]


class PointObserver(Protocol):
    """Reads a running system around each measured point; never raises (records its errors)."""

    def before(self, concurrency: int) -> None: ...

    def after(self, concurrency: int, result: WrkResult | None) -> dict[str, object]: ...


@dataclass(slots=True)
class ClosedPoint:
    concurrency: int
    distinct_inputs: int
    result: WrkResult | None = None
    error: str | None = None
    others_cpu_percent: float | None = None  # other processes during the point, % of one CPU
    others_busiest: list[str] = field(default_factory=list)
    observed: dict[str, object] = field(default_factory=dict)  # what the suite's PointObserver read

    def flags(self, busy_percent: float = DEFAULT_THRESHOLD_PERCENT) -> list[str]:
        if self.result is None:
            return [f"wrk failed: {(self.error or '').splitlines()[0]}"]
        r, flags = self.result, []
        if self.others_cpu_percent is not None and self.others_cpu_percent >= busy_percent:
            flags.append(f"BUSY during the point: others {self.others_cpu_percent:.0f}% of a CPU ({'; '.join(self.others_busiest)})")
        if r.non_2xx:
            flags.append(f"{r.non_2xx} non-2xx")
        errs = {k: v for k, v in r.socket_errors.items() if v}
        if errs:
            flags.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errs.items()))
        return flags


@dataclass(slots=True)
class TargetRun:
    system: str
    workload: str
    repeat: int
    settings: dict[str, object] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    points: list[ClosedPoint] = field(default_factory=list)
    stop: StopReport | None = None
    error: str | None = None

    def rate(self, concurrency: int) -> float | None:
        return next((p.result.req_per_s for p in self.points if p.concurrency == concurrency and p.result), None)

    def latency(self, concurrency: int, key: str) -> float | None:
        return next((getattr(p.result, key) for p in self.points if p.concurrency == concurrency and p.result), None)


def drive(
    system: System, workload: Workload, ctx: StartContext, concurrencies: tuple[int, ...], duration_s: float,
    wrk: str, client_cpus: str | None, bodies: BodiesFiles, progress: Progress, writer: ResultWriter,
    repeat: int, max_wait_idle_s: float, idle_threshold: float, check=None,
    observe: Callable[[RunningSystem], PointObserver | None] | None = None,
) -> TargetRun:
    """One repeat of ``system`` on ``workload``; ``check(running)`` may vet it first (a contract),
    ``observe(running)`` may give a ``PointObserver`` for its points."""
    label = f"{system.name} {workload.name} #{repeat + 1}"
    run = TargetRun(system.name, workload.name, repeat)
    busy = wait_until_idle(max_wait_idle_s, idle_threshold, on_wait=lambda c: progress.note(f"{label}: waiting, {c.text()}"))
    writer.check(label, busy)
    try:
        running: RunningSystem = system.start(workload, ctx)
    except (ServerStartError, OSError, RuntimeError) as exc:
        run.error = str(exc)
        progress.note(f"{label}: FAILED to start: {str(exc).splitlines()[0]}")
        for _ in concurrencies:
            progress.point(f"{label}: skipped")
        return run
    run.settings, run.versions = running.settings, running.versions
    progress.note(f"{label}: ready ({busy.text()}); settings {running.settings}")
    try:
        if check is not None:
            problem = check(running)
            if problem:
                raise RuntimeError(f"contract check failed: {problem}")
        url, prefix = running.load_url(workload), running.load_prefix
        observer = observe(running) if observe is not None else None
        path, _ = bodies.get(workload, 0)
        run_wrk(wrk, url, max(concurrencies), WARMUP_S, path, client_cpus, prefix)
        for i, c in enumerate(concurrencies, start=1):
            path, distinct = bodies.get(workload, i)
            point = ClosedPoint(c, distinct)
            meter = OthersMeter()
            with progress.running(f"{label} c={c}", duration_s):
                if observer is not None:
                    observer.before(c)
                try:
                    point.result = run_wrk(wrk, url, c, duration_s, path, client_cpus, prefix)
                except WrkError as exc:
                    point.error = str(exc)
                if observer is not None:
                    point.observed = observer.after(c, point.result)
            point.others_cpu_percent, point.others_busiest = meter.stop()
            run.points.append(point)
            r = point.result
            text = f"{r.req_per_s:,.0f} req/s, p50 {r.p50_ms:.3f} p99 {r.p99_ms:.3f} ms" if r else "FAILED"
            flags = "; ".join(point.flags(idle_threshold))
            progress.point(f"{label} c={c}: {text}{'; ' + flags if flags else ''}")
    except (WrkError, RuntimeError, OSError) as exc:
        run.error = str(exc)
        progress.note(f"{label}: FAILED: {str(exc).splitlines()[0]}")
        for _ in range(len(concurrencies) - len(run.points)):
            progress.point(f"{label}: skipped")
    finally:
        run.stop = running.stop()
        if run.stop.killed or run.stop.leftover_pids:
            progress.note(f"{label}: stop: killed {run.stop.killed}, leftovers {run.stop.leftover_pids}")
    return run


def as_dict(run: TargetRun) -> dict[str, object]:
    return dataclasses.asdict(run)
