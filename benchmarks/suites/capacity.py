"""Latency study: open-loop rate sweeps of each system on each workload, until the SLO collapses.

``python -m benchmarks.study [--quick] [--systems inline,schooner] [--workloads w1,w2,w3,w4]``

For each workload, and for each system on it (a fresh server each, ``benchmarks.study_systems``),
the open-loop generator (``benchmarks.drivers.loadgen``) sends Poisson arrivals at rates r0, r0·f,
r0·f², ... (f = 2 with ``--quick``, √2 otherwise; r0 per workload), each point a warm-up then a
measured window, until a point collapses: SLO attainment below 50% or achieved rate below 80% of
offered (or the generator itself is saturated, or ``--max-points`` is reached). Then, on the
same server, a recovery probe: the first rate again, right after the collapse (does the system
serve normally once the overload is over?). Then, on a fresh server, one bursty run: on/off
arrivals (3× the mean for 0.25 s of every second) at a mean of half the reference capacity
(the first system's capacity at SLO on that workload, so every system gets the same bursts).
Every system of a workload gets the same arrivals and bodies at the same rates (seeds depend
on workload, kind and rate index only).

Latency is measured from each request's *scheduled* send time, so queueing in the client is
never hidden. The SLO (``--slo-ms``, default 20 ms) is also Schooner's ``latency_slo_micros``: a
request counts toward SLO attainment only if answered 2xx, not with the app's default, within
the SLO; dropped (no connection), failed and unanswered requests count against it.

Reference figures: the model limit (``benchmarks.workloads_extra``: the model alone in-process,
one thread, best of batch 1/8/32/64 rows/s), and the inline server. "Capacity at SLO" is the
highest achieved rate of a point with ≥ 99% SLO attainment whose generator was not saturated; a
system's capacity is reported as a ratio to the model limit and to the inline server's.
Generator-limited points (send lag p99 > 1 ms, usually other processes on the generator's CPU)
are kept and flagged: latency is measured from the scheduled time, so the generator's delay
can only make a point look worse, never better. A *saturated* generator (a worker ≥ 85% busy
while sending) ends the sweep.

Schooner runs also read ``GET /metrics``: before and after each point (once the counters
settle) for the per-stage latency breakdown, cache hits and batch sizes; every 100 ms through
the whole session for the AIMD batch limit over time.

Output: a progress line per point; tables; ``benchmarks/results/study-<UTC>.json`` (git sha,
host, versions, config, CPU pinning, model limits, every point) and PNG plots beside it
(``benchmarks.study_plots``). Nothing here judges a figure: no thresholds, only the stop rule.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import psutil

from benchmarks.drivers.loadgen.__main__ import parse_cpus
from benchmarks.drivers.loadgen.driver import (
    LoadGenConfig,
    LoadGenError,
    OpenLoopPlan,
    OpenLoopResult,
    fmt_ms,
    run_open_loop,
    timeline,
)
from benchmarks.drivers.loadgen.schedule import ArrivalSpec, arrivals
from benchmarks.model_limit import ModelLimitPoint
from benchmarks.run import (
    BUSY_SAMPLE_S,
    REPO_ROOT,
    RESULTS_DIR,
    git_info,
    host_info,
    package_version,
)
from benchmarks.scheduler_bench import LimitSampler, MetricsClient, settled
from benchmarks.server_proc import LOOPBACK, ServerStartError
from benchmarks.study_systems import (
    SYSTEMS,
    RunningSystem,
    System,
    SystemContext,
    metrics_setting,
    stage_breakdown_ms,
    stage_counters,
)
from benchmarks.workloads_extra import (
    STUDY_WORKLOADS,
    StudyWorkload,
    ideal_hit_rate,
    request_stream,
)

SLO_MS = 20.0
ATTAINMENT_STOP = 0.5
ACHIEVED_STOP = 0.8
SUSTAINED_ATTAINMENT = 0.99
BURSTY_FRACTION = 0.5
BURST_FACTOR = 3.0
BURST_ON_S = 0.25
BURST_OFF_S = 0.75
SAMPLE_INTERVAL_S = 0.1
SEED = 20261129


@dataclass(frozen=True, slots=True)
class StudyConfig:
    quick: bool
    systems: tuple[str, ...]
    workloads: tuple[str, ...]
    slo_ms: float
    point_s: float  # measured window per point
    warmup_s: float  # sent before the window, not counted
    drain_s: float  # wait for answers after the last arrival
    rate_factor: float
    max_points: int
    bursty_s: float
    recovery_s: float
    bursty_fraction: float
    burst_factor: float
    burst_on_s: float
    burst_off_s: float
    loadgen_workers: int
    loadgen_cpus: tuple[int, ...] | None
    server_cpus: str | None
    max_connections: int
    lag_limit_ms: float
    model_limit_duration_s: float
    seed: int = SEED
    attainment_stop: float = ATTAINMENT_STOP
    achieved_stop: float = ACHIEVED_STOP
    sustained_attainment: float = SUSTAINED_ATTAINMENT
    sample_interval_s: float = SAMPLE_INTERVAL_S
    plugins: tuple[str, ...] = ()
    start_rate_per_s: float | None = None  # overrides every workload's first rate
    budget_min: float = 11.0  # no new sweep point after this many minutes

    def base_rate(self, workload: StudyWorkload) -> float:
        return self.start_rate_per_s or workload.sweep_start_per_s

    def grid(
        self, workload: StudyWorkload, system_start_per_s: float | None = None
    ) -> list[tuple[int, float]]:
        """(index, rate) of a sweep: base · factor^k. A system that starts lower (a slow peer)
        starts at the grid rate nearest its start (k < 0), so shared rates are identical."""
        base = self.base_rate(workload)
        k0 = 0
        if system_start_per_s:
            k0 = round(math.log(system_start_per_s / base) / math.log(self.rate_factor))
        return [(k, base * self.rate_factor**k) for k in range(k0, k0 + self.max_points)]


@dataclass(slots=True)
class PointRecord:
    workload: str
    system: str
    kind: str  # "sweep" | "recovery" | "bursty"
    index: int
    rate_per_s: float
    arrivals: str
    summary: dict[str, object]
    cdf_ms: list[tuple[float, float]]
    wall_s: float
    t_start_s: float | None = None  # on the session's clock (the limit sampler's)
    t_end_s: float | None = None
    stages_ms: dict[str, float | None] | None = None
    counters: dict[str, float] | None = None
    mean_batch: float | None = None
    hit_rate: float | None = None
    ideal_hit_rate: float | None = None
    timeline: dict[str, list[float | None]] | None = None
    error: str | None = None

    def s(self, key: str) -> object:
        return self.summary.get(key)

    def latency(self, key: str) -> float | None:
        lat = self.summary.get("latency") or {}
        return lat.get(key)  # type: ignore[union-attr]


@dataclass(slots=True)
class SystemRun:
    workload: str
    system: str
    cpu_busy_percent_before: float
    points: list[PointRecord] = field(default_factory=list)
    recovery: PointRecord | None = None  # the first rate again, right after the collapse
    bursty: PointRecord | None = None  # on a fresh server
    stop_reason: str | None = None
    error: str | None = None
    stops: list[dict[str, object]] = field(default_factory=list)
    config_text: str | None = None
    limit_samples: list[dict[str, float]] | None = None
    wall_s: float = 0.0

    def capacity(self, config: StudyConfig) -> float | None:
        ok = [
            p.s("achieved_per_s")
            for p in self.points
            if (p.s("slo_attainment") or 0) >= config.sustained_attainment
            and not p.s("generator_saturated")
        ]
        return max(ok) if ok else None  # type: ignore[type-var]

    def peak(self) -> float | None:
        rates = [p.s("achieved_per_s") for p in self.points if p.error is None]
        return max(rates) if rates else None  # type: ignore[type-var]


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """One line per point; while a point runs, a ticking line on a terminal."""

    def __init__(self, total_estimate: int) -> None:
        self.started = time.monotonic()
        self.done = 0
        self.total_estimate = total_estimate
        self._tty = sys.stderr.isatty()

    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60}m{s % 60:02d}s"

    def point(self, text: str) -> None:
        self.done += 1
        if self._tty:
            sys.stderr.write("\r\033[K")
        print(f"[{self.done:>3}/~{self.total_estimate} {self.elapsed()}] {text}", flush=True)

    def note(self, text: str) -> None:
        if self._tty:
            sys.stderr.write("\r\033[K")
        print(f"[    {self.elapsed()}] {text}", flush=True)

    @contextlib.contextmanager
    def ticking(self, label: str, seconds: float):
        if not self._tty:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            t0 = time.monotonic()
            while not stop.wait(0.25):
                sys.stderr.write(
                    f"\r\033[K  {self.elapsed()} {label}: {time.monotonic() - t0:4.1f}/{seconds:.1f} s"
                )
                sys.stderr.flush()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            sys.stderr.write("\r\033[K")


# ---------------------------------------------------------------------------------------------
# Measuring


def measure_model_limits(config: StudyConfig) -> list[ModelLimitPoint]:
    """In a child process, so torch stays out of the harness (as ``benchmarks.run`` does)."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.workloads_extra",
        "--json",
        "--duration",
        str(config.model_limit_duration_s),
    ]
    argv += ["--workloads", ",".join(config.workloads)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return [ModelLimitPoint(**raw) for raw in orjson.loads(proc.stdout)]


def loadgen_config(config: StudyConfig) -> LoadGenConfig:
    return LoadGenConfig(
        workers=config.loadgen_workers,
        cpus=config.loadgen_cpus,
        max_connections=config.max_connections,
        drain_s=config.drain_s,
        lag_limit_ms=config.lag_limit_ms,
    )


def point_seed(config: StudyConfig, workload: StudyWorkload, kind: str, index: int) -> int:
    """Same for every system: the arrivals and bodies depend on workload, kind and index only."""
    w = sorted(STUDY_WORKLOADS).index(workload.name)
    return config.seed + 10_000 * w + {"sweep": 0, "recovery": 3_000, "bursty": 5_000}[kind] + index


class Session:
    """One started system serving one workload: runs points against it."""

    def __init__(
        self,
        running: RunningSystem,
        workload: StudyWorkload,
        config: StudyConfig,
        progress: Progress,
        system: str,
    ) -> None:
        self.running = running
        self.workload = workload
        self.config = config
        self.progress = progress
        self.system = system
        self.port = int(running.base_url.rsplit(":", 1)[1])
        self.setting = metrics_setting(workload, int(config.slo_ms * 1000))
        self.client = MetricsClient(running.metrics_port) if running.metrics_port else None
        self.sampler = (
            LimitSampler(running.metrics_port, self.setting, config.sample_interval_s)
            if running.metrics_port
            else None
        )

    def now_s(self) -> float | None:
        return self.sampler.now_s() if self.sampler else None

    def run_point(self, kind: str, index: int, spec: ArrivalSpec, window_s: float) -> PointRecord:
        config, workload = self.config, self.workload
        end_s = config.warmup_s + window_s
        seed = point_seed(config, workload, kind, index)
        offsets = arrivals(spec, end_s, np.random.default_rng(seed))
        bodies, body_index = request_stream(workload, len(offsets), seed)
        plan = OpenLoopPlan(
            host=LOOPBACK,
            port=self.port,
            path=f"/{workload.name}/predict",
            offsets_s=offsets,
            body_index=body_index,
            bodies=bodies,
            warmup_s=config.warmup_s,
            end_s=end_s,
            slo_s=config.slo_ms / 1e3,
            description=spec.describe(),
        )
        began = time.monotonic()
        record = PointRecord(
            workload.name, self.system, kind, index, spec.rate_per_s, spec.describe(), {}, [], 0.0
        )
        try:
            before = settled(self.client, self.setting) if self.client else None
            record.t_start_s = self.now_s()
            with self.progress.ticking(
                f"{workload.name} {self.system} {spec.describe()}", end_s + config.drain_s
            ):
                result = run_open_loop(plan, loadgen_config(config))
            record.t_end_s = self.now_s()
            after = settled(self.client, self.setting) if self.client else None
        except (LoadGenError, OSError, RuntimeError, http.client.HTTPException) as exc:
            record.error = str(exc)
            record.wall_s = time.monotonic() - began
            return record
        self._fill(record, result, before, after, body_index if workload.zipf_repeats else None)
        if kind == "bursty":
            record.timeline = timeline(result.records, end_s)
        record.wall_s = time.monotonic() - began
        return record

    def _fill(
        self,
        record: PointRecord,
        result: OpenLoopResult,
        before,
        after,
        body_index: np.ndarray | None,
    ) -> None:
        record.summary = asdict(result.summary)
        record.cdf_ms = result.latency_hist.cdf_ms()
        if before is not None and after is not None:
            delta = stage_counters(after, self.setting).minus(stage_counters(before, self.setting))
            record.counters = asdict(delta)
            record.stages_ms = stage_breakdown_ms(delta, mean_latency_all_ms(result))
            record.mean_batch = delta.model_queries / delta.batches if delta.batches else None
            looked_up = delta.cache_hits + delta.cache_misses
            record.hit_rate = delta.cache_hits / looked_up if looked_up else None
        if body_index is not None:
            record.ideal_hit_rate = ideal_hit_rate(body_index)

    def close(self) -> None:
        if self.client:
            self.client.close()


def mean_latency_all_ms(result: OpenLoopResult) -> float | None:
    """Mean latency of every answered request, warm-up included: the span /metrics covers."""
    r = result.records
    answered = r.status > 0
    return float((r.done_ns - r.due_ns)[answered].mean()) / 1e6 if answered.any() else None


def stop_reason(point: PointRecord, config: StudyConfig) -> str | None:
    """Why the sweep stops after this point (None: go on)."""
    if point.error:
        return f"load generator failed: {point.error.splitlines()[0]}"
    s = point.summary
    if s["generator_saturated"]:
        return "generator saturated (the load generator, not the server, was the bottleneck)"
    att = s["slo_attainment"]
    if att is not None and att < config.attainment_stop:
        return f"SLO attainment {att:.0%} < {config.attainment_stop:.0%}"
    if s["achieved_per_s"] < config.achieved_stop * s["offered_per_s"]:
        return f"achieved {s['achieved_per_s']:,.0f}/s < {config.achieved_stop:.0%} of offered {s['offered_per_s']:,.0f}/s"
    return None


def point_line(p: PointRecord) -> str:
    if p.error:
        return f"{p.workload} {p.system} {p.arrivals}: FAILED: {p.error.splitlines()[0]}"
    s = p.summary
    lat = s["latency"]
    att = s["slo_attainment"]
    text = (
        f"{p.workload} {p.system} {p.arrivals}: achieved {s['achieved_per_s']:,.0f}/s, "
        f"p50 {fmt_ms(lat['p50_ms'])} p99 {fmt_ms(lat['p99_ms'])} ms, "
        f"SLO {'-' if att is None else f'{100 * att:.1f}%'}"
    )
    extra = []
    if s["defaults"]:
        extra.append(f"{s['defaults']} defaults")
    errors = s["non_2xx"] + s["connect_errors"] + s["connection_lost"] + s["bad_responses"]
    if errors:
        extra.append(f"{errors} errors")
    if s["dropped_no_connection"]:
        extra.append(f"{s['dropped_no_connection']} dropped")
    if s["unanswered"]:
        extra.append(f"{s['unanswered']} unanswered")
    if p.mean_batch:
        extra.append(f"batch {p.mean_batch:.1f}")
    if p.hit_rate is not None:
        extra.append(f"hits {100 * p.hit_rate:.0f}%")
    extra.append(f"lag p99 {fmt_ms(s['send_lag']['p99_ms'])} ms")
    if s["generator_saturated"]:
        extra.append("GENERATOR-SATURATED")
    elif s["generator_limited"]:
        extra.append("generator-limited")
    return text + ", " + ", ".join(extra) + f" [{p.wall_s:.1f} s]"


def start_system(
    system: System, workload: StudyWorkload, ctx: SystemContext, progress: Progress, what: str
) -> tuple[RunningSystem | None, float, str | None]:
    """(running system or None, machine busy % just before, error)."""
    busy = psutil.cpu_percent(interval=BUSY_SAMPLE_S)
    try:
        running = system.start(workload, ctx)
    except (ServerStartError, OSError, RuntimeError) as exc:
        progress.note(f"{workload.name} {system.name}: FAILED to start: {str(exc).splitlines()[0]}")
        return None, busy, str(exc)
    progress.note(
        f"{workload.name} {system.name}: ready for {what} at {running.base_url} "
        f"(machine {busy:.0f}% busy just before start)"
    )
    return running, busy, None


def stop_system(running: RunningSystem, run: SystemRun, progress: Progress) -> None:
    report = running.stop()
    if report is None:
        return
    run.stops.append(asdict(report))
    if report.killed or report.leftover_pids:
        progress.note(
            f"{run.workload} {run.system}: stop: "
            + ("killed after SIGTERM grace; " if report.killed else "")
            + (f"left processes {report.leftover_pids}" if report.leftover_pids else "")
        )


def run_system(
    system: System,
    workload: StudyWorkload,
    config: StudyConfig,
    ctx: SystemContext,
    progress: Progress,
    reference_capacity: float | None,
) -> SystemRun:
    """Sweep and recovery probe on one fresh server, then the bursty run on another.

    The recovery probe (the sweep's first rate, right after the collapse point) shows whether
    the system serves normally again once overload ends; the bursty run gets a fresh server so
    that it measures bursts, not the aftermath of the collapse.
    """
    began = time.monotonic()
    running, busy, error = start_system(system, workload, ctx, progress, "the sweep")
    run = SystemRun(workload.name, system.name, busy)
    if running is None:
        run.error = error
        return run
    run.config_text = running.config_text
    session = Session(running, workload, config, progress, system.name)
    try:
        with session.sampler or contextlib.nullcontext():
            grid = config.grid(workload, system.start_rate_per_s)
            for k, rate in grid:
                if progress.minutes() > config.budget_min:
                    run.stop_reason = (
                        f"time budget of {config.budget_min:g} min reached (--budget-min)"
                    )
                    break
                point = session.run_point("sweep", k, ArrivalSpec("poisson", rate), config.point_s)
                run.points.append(point)
                progress.point(point_line(point))
                reason = stop_reason(point, config)
                if reason:
                    run.stop_reason = reason
                    break
            else:
                run.stop_reason = f"--max-points {config.max_points} reached"
            first_k, first_rate = grid[0]
            first = ArrivalSpec("poisson", first_rate)
            run.recovery = session.run_point("recovery", first_k, first, config.recovery_s)
            progress.point(point_line(run.recovery))
        if session.sampler:
            run.limit_samples = session.sampler.samples
    finally:
        session.close()
        stop_system(running, run, progress)
    base = reference_capacity or run.capacity(config) or config.base_rate(workload)
    spec = ArrivalSpec(
        "onoff",
        config.bursty_fraction * base,
        burst_factor=config.burst_factor,
        on_s=config.burst_on_s,
        off_s=config.burst_off_s,
    )
    running, _, error = start_system(system, workload, ctx, progress, "the bursty run")
    if running is None:
        run.error = error
    else:
        session = Session(running, workload, config, progress, system.name)
        try:
            run.bursty = session.run_point("bursty", 0, spec, config.bursty_s)
            progress.point(point_line(run.bursty))
        finally:
            session.close()
            stop_system(running, run, progress)
    run.wall_s = time.monotonic() - began
    progress.note(f"{workload.name} {system.name}: done ({run.stop_reason}); {run.wall_s:.0f} s")
    return run


# ---------------------------------------------------------------------------------------------
# Report


def best_model_limit(limits: Sequence[ModelLimitPoint], workload: str) -> tuple[float, int] | None:
    mine = [p for p in limits if p.workload == workload]
    if not mine:
        return None
    best = max(mine, key=lambda p: p.rows_per_s)
    return best.rows_per_s, best.batch_size


def summary_rows(
    runs: Sequence[SystemRun], limits: Sequence[ModelLimitPoint], config: StudyConfig
) -> list[dict[str, object]]:
    rows = []
    inline_capacity = {r.workload: r.capacity(config) for r in runs if r.system == "inline"}
    for r in runs:
        cap = r.capacity(config)
        limit = best_model_limit(limits, r.workload)
        first = next((p for p in r.points if not p.error), None)
        at_cap = max(
            (p for p in r.points if p.s("achieved_per_s") == cap and cap is not None),
            key=lambda p: p.rate_per_s,
            default=None,
        )
        inline = inline_capacity.get(r.workload)
        b = r.bursty
        rec = r.recovery
        rows.append(
            {
                "workload": r.workload,
                "system": r.system,
                "capacity_per_s": cap,
                "peak_per_s": r.peak(),
                "low_rate_per_s": first.rate_per_s if first else None,
                "low_p50_ms": first.latency("p50_ms") if first else None,
                "low_p99_ms": first.latency("p99_ms") if first else None,
                "cap_p99_ms": at_cap.latency("p99_ms") if at_cap else None,
                "model_limit_per_s": limit[0] if limit else None,
                "model_limit_batch": limit[1] if limit else None,
                "vs_model_limit": cap / limit[0] if cap and limit else None,
                "vs_inline": cap / inline if cap and inline else None,
                "recovery_attainment": rec.s("slo_attainment") if rec and not rec.error else None,
                "recovery_p99_ms": rec.latency("p99_ms") if rec and not rec.error else None,
                "bursty_mean_per_s": b.rate_per_s if b else None,
                "bursty_attainment": b.s("slo_attainment") if b and not b.error else None,
                "bursty_p99_ms": b.latency("p99_ms") if b and not b.error else None,
                "stop_reason": r.stop_reason or r.error,
            }
        )
    return rows


def _n(v: object, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def format_summary(rows: Sequence[dict[str, object]], slo_ms: float) -> str:
    header = (
        f"{'wl':<4}{'system':<10}{'cap@SLO/s':>11}{'peak/s':>9}{'p50@low':>9}{'p99@low':>9}{'p99@cap':>9}"
        f"{'model lim/s':>17}{'vs model':>10}{'vs inline':>10}{'recov SLO':>10}{'burst mean/s':>13}{'burst SLO':>10}"
        f"{'burst p99':>10}  sweep stopped"
    )
    lines = [
        f"capacity at SLO = highest achieved rate with >= {SUSTAINED_ATTAINMENT:.0%} of requests answered, "
        f"not default, within {slo_ms:g} ms; latencies in ms",
        header,
        "-" * len(header),
    ]
    for r in rows:
        att = r["bursty_attainment"]
        rec = r["recovery_attainment"]
        lim = (
            f"{_n(r['model_limit_per_s'])} b{r['model_limit_batch']}"
            if r["model_limit_per_s"]
            else "-"
        )
        lines.append(
            f"{r['workload']:<4}{r['system']:<10}{_n(r['capacity_per_s']):>11}{_n(r['peak_per_s']):>9}"
            f"{fmt_ms(r['low_p50_ms']):>9}{fmt_ms(r['low_p99_ms']):>9}{fmt_ms(r['cap_p99_ms']):>9}{lim:>17}"
            f"{_n(r['vs_model_limit'], '.3g'):>10}{_n(r['vs_inline'], '.2f'):>10}"
            f"{'-' if rec is None else f'{100 * rec:.1f}%':>10}{_n(r['bursty_mean_per_s']):>13}"
            f"{'-' if att is None else f'{100 * att:.1f}%':>10}{fmt_ms(r['bursty_p99_ms']):>10}  {r['stop_reason'] or ''}"
        )
    return "\n".join(lines)


def format_points(runs: Sequence[SystemRun]) -> str:
    header = (
        f"{'wl':<4}{'system':<10}{'offered':>9}{'achieved':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}"
        f"{'SLO %':>7}{'dflt':>6}{'err':>5}{'drop':>7}{'lag99':>7}{'batch':>6}{'hit%':>6}"
        f"{'queue':>7}{'model':>7}{'fe+back':>8}{'client':>7}"
    )
    lines = [
        "per point (latency ms; queue/model/fe+back/client: mean ms per request from /metrics)",
        header,
        "-" * len(header),
    ]
    for r in runs:
        for p in [*r.points, *(x for x in (r.recovery, r.bursty) if x is not None)]:
            if p.error:
                lines.append(f"{p.workload:<4}{p.system:<10}{p.rate_per_s:>9,.0f}  FAILED")
                continue
            s = p.summary
            lat = s["latency"]
            st = p.stages_ms or {}
            errors = s["non_2xx"] + s["connect_errors"] + s["connection_lost"] + s["bad_responses"]
            att = s["slo_attainment"]
            name = p.system + {"sweep": "", "recovery": "+", "bursty": "*"}[p.kind]
            lines.append(
                f"{p.workload:<4}{name:<10}{s['offered_per_s']:>9,.0f}{s['achieved_per_s']:>9,.0f}"
                f"{fmt_ms(lat['p50_ms']):>8}{fmt_ms(lat['p90_ms']):>8}{fmt_ms(lat['p99_ms']):>8}{fmt_ms(lat['p99_9_ms']):>8}"
                f"{fmt_ms(lat['max_ms']):>8}{'-' if att is None else f'{100 * att:.1f}':>7}{s['defaults']:>6}{errors:>5}"
                f"{s['dropped_no_connection'] + s['unanswered']:>7}{fmt_ms(s['send_lag']['p99_ms']):>7}"
                f"{_n(p.mean_batch, '.1f'):>6}{_n(None if p.hit_rate is None else 100 * p.hit_rate, '.0f'):>6}"
                f"{fmt_ms(st.get('queue')):>7}{fmt_ms(st.get('model')):>7}{fmt_ms(st.get('frontend_back')):>8}"
                f"{fmt_ms(st.get('client_network')):>7}"
                + (
                    "  GEN-SATURATED"
                    if s["generator_saturated"]
                    else "  gen-limited"
                    if s["generator_limited"]
                    else ""
                )
            )
    lines.append(
        "+ recovery probe (first rate again, same server, right after the collapse); "
        "* bursty run (on/off arrivals, fresh server); drop = dropped (no connection) + unanswered"
    )
    return "\n".join(lines)


def versions() -> dict[str, str | None]:
    names = ("numpy", "torch", "uvloop", "httptools", "orjson", "schooner", "matplotlib", "psutil")
    return {"python": platform.python_version(), **{n: package_version(n) for n in names}}


def latest_ceiling() -> dict[str, object] | None:
    """The newest ``benchmarks.drivers.loadgen.ceiling`` result, to quote the generator's ceiling."""
    found = sorted(RESULTS_DIR.glob("loadgen-ceiling-*.json"))
    if not found:
        return None
    doc = orjson.loads(found[-1].read_bytes())
    return {"file": found[-1].name, "ceilings": doc.get("ceilings")}


def write_results(
    config: StudyConfig,
    runs: Sequence[SystemRun],
    limits: Sequence[ModelLimitPoint],
    rows: Sequence[dict[str, object]],
    started: datetime,
    wall_s: float,
) -> Path:
    document = {
        "kind": "study",
        "started_utc": started.isoformat(),
        "wall_s": wall_s,
        "git": git_info(),
        "host": host_info(),
        "versions": versions(),
        "config": asdict(config),
        "cpu_pinning": {
            "loadgen_cpus": config.loadgen_cpus,
            "server_cpus": config.server_cpus,
            "harness_affinity": sorted(os.sched_getaffinity(0)),
            "note": "server_cpus None: unpinned (taskset not used); loadgen worker k on loadgen_cpus[k % n]",
        },
        "generator_ceiling": latest_ceiling(),
        "model_limits": [asdict(p) for p in limits],
        "workloads": {n: STUDY_WORKLOADS[n].description for n in config.workloads},
        "systems": {n: SYSTEMS[n].description for n in config.systems},
        "summary": list(rows),
        "runs": [asdict(r) for r in runs],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"study-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    return path


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_config(argv: list[str] | None) -> StudyConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.study", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="rate factor 2, 1.5 s points (about 4 minutes)"
    )
    parser.add_argument("--systems", default="inline,schooner")
    parser.add_argument("--workloads", default="w1,w2,w3,w4")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="module that calls register_system (repeatable)",
    )
    parser.add_argument("--slo-ms", type=float, default=SLO_MS)
    parser.add_argument(
        "--start-rate",
        type=float,
        help="first rate of every sweep, per second (default per workload: 1000; W3 250)",
    )
    parser.add_argument(
        "--point-s", type=float, help="measured seconds per point (default 3, --quick 1.5)"
    )
    parser.add_argument(
        "--warmup-s", type=float, help="seconds sent before each window (default 1, --quick 0.5)"
    )
    parser.add_argument(
        "--rate-factor", type=float, help="ratio of successive rates (default 1.414, --quick 2)"
    )
    parser.add_argument(
        "--max-points", type=int, help="rates per sweep at most (default 12, --quick 8)"
    )
    parser.add_argument(
        "--budget-min",
        type=float,
        help="start no sweep point after this many minutes (default 10, --quick 3.3)",
    )
    parser.add_argument("--loadgen-workers", type=int, default=1)
    parser.add_argument(
        "--loadgen-cpus",
        help="CPU list for the generator's workers (default: the first allowed CPU)",
    )
    parser.add_argument(
        "--server-cpus", help="taskset CPU list for the servers (default: unpinned)"
    )
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--lag-limit-ms", type=float, default=1.0)
    args = parser.parse_args(argv)
    for module in args.plugin:
        importlib.import_module(module)
    systems = tuple(s for s in args.systems.split(",") if s)
    workloads = tuple(w for w in args.workloads.split(",") if w)
    if not systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems takes names of {', '.join(SYSTEMS)}")
    if not workloads or set(workloads) - set(STUDY_WORKLOADS):
        parser.error(f"--workloads takes names of {', '.join(STUDY_WORKLOADS)}")
    allowed = sorted(os.sched_getaffinity(0))
    loadgen_cpus = parse_cpus(args.loadgen_cpus) or ((allowed[0],) if len(allowed) > 1 else None)
    q = args.quick
    return StudyConfig(
        quick=q,
        systems=systems,
        workloads=workloads,
        slo_ms=args.slo_ms,
        point_s=args.point_s or (1.5 if q else 3.0),
        warmup_s=args.warmup_s if args.warmup_s is not None else (0.5 if q else 1.0),
        drain_s=1.0 if q else 2.0,
        rate_factor=args.rate_factor or (2.0 if q else math.sqrt(2)),
        max_points=args.max_points or (8 if q else 12),
        bursty_s=2.0 if q else 6.0,
        recovery_s=1.0 if q else 2.0,
        bursty_fraction=BURSTY_FRACTION,
        burst_factor=BURST_FACTOR,
        burst_on_s=BURST_ON_S,
        burst_off_s=BURST_OFF_S,
        loadgen_workers=args.loadgen_workers,
        loadgen_cpus=loadgen_cpus,
        server_cpus=args.server_cpus,
        max_connections=args.max_connections,
        lag_limit_ms=args.lag_limit_ms,
        model_limit_duration_s=0.2 if q else 0.5,
        plugins=tuple(args.plugin),
        start_rate_per_s=args.start_rate,
        budget_min=args.budget_min or (3.3 if q else 10.0),
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    started = datetime.now(UTC)
    began = time.monotonic()
    print(
        f"Latency study: systems {', '.join(config.systems)}; workloads {', '.join(config.workloads)}; "
        f"SLO {config.slo_ms:g} ms; Poisson sweeps x{config.rate_factor:.3g} per point, "
        f"{config.warmup_s:g} s warm-up + {config.point_s:g} s measured, until SLO attainment < "
        f"{config.attainment_stop:.0%} or achieved < {config.achieved_stop:.0%} of offered; then on/off bursts "
        f"({config.burst_factor:g}x the mean for {config.burst_on_s:g} s of every {config.burst_on_s + config.burst_off_s:g} s) "
        f"at {config.bursty_fraction:.0%} of the reference capacity"
    )
    print(
        f"load: open loop, {config.loadgen_workers} worker(s) on CPU "
        f"{','.join(map(str, config.loadgen_cpus)) if config.loadgen_cpus else 'any'}, up to {config.max_connections} "
        f"connections; servers on {LOOPBACK}, CPU {config.server_cpus or 'any (unpinned)'}; "
        f"send lag p99 > {config.lag_limit_ms:g} ms flags a point generator-limited"
    )
    ceiling = latest_ceiling()
    if ceiling:
        print(f"generator ceiling (last measured, {ceiling['file']}): {ceiling['ceilings']}")
    else:
        print("generator ceiling: not measured yet (python -m benchmarks.drivers.loadgen.ceiling)")
    estimate = len(config.systems) * len(config.workloads) * (8 if config.quick else 13)
    progress = Progress(estimate)  # its clock is the time budget's
    busy = psutil.cpu_percent(interval=BUSY_SAMPLE_S)
    limits = measure_model_limits(config)
    print(f"model limit (in-process, one thread; machine {busy:.0f}% busy just before):")
    for w in config.workloads:
        row = ", ".join(f"b{p.batch_size} {p.rows_per_s:,.0f}" for p in limits if p.workload == w)
        print(f"  {w}: {row} rows/s")
    runs: list[SystemRun] = []
    with tempfile.TemporaryDirectory(prefix="schooner-study-") as tmp:
        ctx = SystemContext(Path(tmp), config.server_cpus, int(config.slo_ms * 1000))
        for w in config.workloads:
            workload = STUDY_WORKLOADS[w]
            reference: float | None = None
            for name in config.systems:
                system = SYSTEMS[name]
                if system.workloads is not None and w not in system.workloads:
                    continue
                run = run_system(system, workload, config, ctx, progress, reference)
                runs.append(run)
                if reference is None:
                    reference = run.capacity(config)
    wall_s = time.monotonic() - began
    rows = summary_rows(runs, limits, config)
    print()
    print(format_summary(rows, config.slo_ms))
    print()
    print(format_points(runs))
    path = write_results(config, runs, limits, rows, started, wall_s)
    print(f"\nresults: {path}")
    try:
        from benchmarks.study_plots import plot_all

        for png in plot_all(orjson.loads(path.read_bytes()), path):
            print(f"plot: {png}")
    except ImportError as exc:
        print(f"plots skipped: {exc}")
    print(f"wall time {wall_s / 60:.1f} min")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
