"""Capacity at the SLO, open loop: the highest Poisson rate each system serves within its SLO.

Plan, per workload, ``--repeats`` times (interleaved), per system: a fresh server; a capacity
search (``harness.stats.CapacitySearch``): Poisson arrivals from ``benchmarks.drivers.loadgen``
at the workload's start rate, doubled until a probe fails, then bisected in log space until the
failing rate is within 5 % of the passing one. A probe passes when ≥ 99 % of its arrivals are
answered 2xx, not with the default, within the SLO, and the generator was not saturated
(latency counts from each request's *scheduled* send time, so queueing is never hidden). The
capacity is the achieved rate of the highest passing probe. Then, on the same server, a recovery
probe (the start rate again, right after the overload); then, on a fresh server, one bursty run
(on/off: 3× the mean for 0.25 s of every 1 s, at half the median capacity of the first system).
Report: capacity median (min-max), its ratio to the inline server's paired by repeat, to the
model limit, recovery and burst SLO attainment. ``--config FILE --app NAME``: your app.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.drivers.loadgen.driver import (
    LoadGenConfig,
    LoadGenError,
    OpenLoopPlan,
    run_open_loop,
)
from benchmarks.drivers.loadgen.schedule import ArrivalSpec, arrivals
from benchmarks.harness.cli import add_common_flags, common_config, csv_names
from benchmarks.harness.machine import (
    DEFAULT_THRESHOLD_PERCENT,
    OthersMeter,
    cpu_list,
    wait_until_idle,
)
from benchmarks.harness.metrics import MetricsClient, counts_of, settled, stage_breakdown_ms
from benchmarks.harness.progress import Progress
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.servers import LOOPBACK, ServerStartError
from benchmarks.harness.stats import CapacitySearch, paired_ratio, ratio_text, spread
from benchmarks.plots.capacity import plot_capacity
from benchmarks.systems import Batching, RunningSystem, StartContext
from benchmarks.systems.registry import SYSTEMS
from benchmarks.workloads import (
    WORKLOADS,
    Workload,
    ideal_hit_rate,
    request_stream,
    workload_from_config,
)
from benchmarks.workloads.limit import best, measure_in_child

SUITE = "capacity"
SLO_MS = 20.0
PASS_ATTAINMENT = 0.99
TOLERANCE = 0.05
BURST = {"burst_factor": 3.0, "on_s": 0.25, "off_s": 0.75}
SEED = 20261129


@dataclass(slots=True)
class Probe:
    kind: str  # "search" | "recovery" | "bursty"
    rate_per_s: float
    passed: bool
    summary: dict[str, object]
    stages_ms: dict[str, float | None] | None = None
    mean_batch: float | None = None
    hit_rate: float | None = None
    ideal_hit_rate: float | None = None
    error: str | None = None
    others_cpu_percent: float | None = None  # other processes during the probe, % of one CPU


@dataclass(slots=True)
class SearchRun:
    system: str
    workload: str
    repeat: int
    settings: dict[str, object] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    capacity_per_s: float | None = None
    resolution: float | None = None  # failed / passed - 1 at the end of the search
    error: str | None = None

    def first(self, kind: str) -> Probe | None:
        return next((p for p in self.probes if p.kind == kind), None)


@dataclass(frozen=True, slots=True)
class Timing:
    warmup_s: float
    window_s: float
    drain_s: float
    slo_ms: float


def probe(running: RunningSystem, workload: Workload, spec: ArrivalSpec, t: Timing, seed: int, gen: LoadGenConfig) -> Probe:
    end_s = t.warmup_s + t.window_s
    offsets = arrivals(spec, end_s, np.random.default_rng(seed))
    bodies, index = request_stream(workload, len(offsets), seed)
    plan = OpenLoopPlan(host=LOOPBACK, port=running.port, path=f"/{workload.app_name}/predict", offsets_s=offsets,
                        body_index=index, bodies=bodies, warmup_s=t.warmup_s, end_s=end_s, slo_s=t.slo_ms / 1e3,
                        description=spec.describe())
    client = MetricsClient(running.metrics_port) if running.metrics_port else None
    meter = OthersMeter()
    try:
        before = settled(client, workload.app_name) if client else None
        result = run_open_loop(plan, gen)
        after = settled(client, workload.app_name) if client else None
    except (LoadGenError, OSError, RuntimeError) as exc:
        return Probe("", spec.rate_per_s, False, {}, error=str(exc))
    finally:
        if client:
            client.close()
    s = asdict(result.summary)
    passed = (s.get("slo_attainment") or 0) >= PASS_ATTAINMENT and not s.get("generator_saturated")
    p = Probe("", spec.rate_per_s, passed, s, others_cpu_percent=meter.stop()[0])
    if before is not None and after is not None:
        d = counts_of(after, workload.app_name).minus(counts_of(before, workload.app_name))
        p.stages_ms = stage_breakdown_ms(d, (s.get("latency") or {}).get("mean_ms"))
        p.mean_batch, p.hit_rate = d.mean_batch, d.hit_rate
    if workload.zipf_repeats:
        p.ideal_hit_rate = ideal_hit_rate(index)
    return p


def describe(p: Probe) -> str:
    if p.error:
        return f"{p.kind} {p.rate_per_s:,.0f}/s: FAILED {p.error.splitlines()[0]}"
    s, lat = p.summary, p.summary.get("latency") or {}
    att = s.get("slo_attainment")
    busy = f" BUSY (others {p.others_cpu_percent:.0f}% of a CPU)" if (p.others_cpu_percent or 0) >= DEFAULT_THRESHOLD_PERCENT else ""
    extra = busy + (" GENERATOR-SATURATED" if s.get("generator_saturated") else (" generator-limited" if s.get("generator_limited") else ""))
    return (f"{p.kind} {p.rate_per_s:,.0f}/s: achieved {s.get('achieved_per_s', 0):,.0f}/s, p99 {lat.get('p99_ms') or 0:.1f} ms, "
            f"SLO {'-' if att is None else f'{100 * att:.1f}%'} -> {'pass' if p.passed else 'fail'}{extra}")


def search(system: str, workload: Workload, ctx: StartContext, t: Timing, gen: LoadGenConfig, repeat: int,
           progress: Progress, writer: ResultWriter, common) -> SearchRun:
    run = SearchRun(system, workload.name, repeat)
    label = f"{workload.name} {system} #{repeat + 1}"
    writer.check(label, wait_until_idle(common.max_wait_idle_s, common.idle_threshold_percent,
                                        on_wait=lambda c: progress.note(f"{label}: waiting, {c.text()}")))
    try:
        running = SYSTEMS[system].start(workload, ctx)
    except (ServerStartError, OSError, RuntimeError) as exc:
        run.error = str(exc)
        progress.note(f"{label}: FAILED to start: {str(exc).splitlines()[0]}")
        return run
    run.settings = running.settings
    start = workload.start_rate_per_s
    s = CapacitySearch(start, start / 16, start * 256, TOLERANCE)
    try:
        k = 0
        while (rate := s.next_rate()) is not None:
            with progress.running(f"{label} {rate:,.0f}/s", t.warmup_s + t.window_s + t.drain_s):
                p = probe(running, workload, ArrivalSpec("poisson", rate), t, SEED + 100 * repeat + k, gen)
            p.kind, k = "search", k + 1
            run.probes.append(p)
            progress.point(f"{label} {describe(p)}")
            if p.error:
                break
            s.record(rate, p.passed)
        passed = [p for p in run.probes if p.passed and p.rate_per_s == s.passed_rate]
        run.capacity_per_s = passed[0].summary["achieved_per_s"] if passed else None
        run.resolution = s.resolution
        rec = probe(running, workload, ArrivalSpec("poisson", start), Timing(0.0, t.window_s, t.drain_s, t.slo_ms), SEED + 7, gen)
        rec.kind = "recovery"
        run.probes.append(rec)
        progress.point(f"{label} {describe(rec)}")
    finally:
        running.stop()
    return run


def bursty(system: str, workload: Workload, ctx: StartContext, t: Timing, gen: LoadGenConfig, mean: float, progress: Progress, seed: int) -> Probe:
    running = SYSTEMS[system].start(workload, ctx)
    try:
        p = probe(running, workload, ArrivalSpec("onoff", mean, **BURST), Timing(t.warmup_s, 2 * t.window_s, t.drain_s, t.slo_ms), seed, gen)
    finally:
        running.stop()
    p.kind = "bursty"
    progress.point(f"{workload.name} {system} {describe(p)}")
    return p


def report(runs: list[SearchRun], bursts: dict[tuple[str, str], list[Probe]], limits, systems) -> str:
    rows = []
    for w in dict.fromkeys(r.workload for r in runs):
        base = sorted((r for r in runs if r.workload == w and r.system == systems[0]), key=lambda r: r.repeat)
        lim = best(limits, w)
        for name in systems:
            mine = sorted((r for r in runs if r.workload == w and r.system == name), key=lambda r: r.repeat)
            cap = spread([r.capacity_per_s for r in mine])
            ratio = paired_ratio([r.capacity_per_s for r in mine], [r.capacity_per_s for r in base])
            res = spread([r.resolution for r in mine])
            rec = spread([(r.first("recovery").summary.get("slo_attainment") if r.first("recovery") else None) for r in mine])
            b = spread([p.summary.get("slo_attainment") for p in bursts.get((w, name), []) if not p.error])
            rows.append([
                w, name, cap.text() if cap else "none at ≥ 99%",
                f"≤ {100 * res.hi:.1f}%" if res else "-",
                ratio_text(ratio) if name != systems[0] else "1",
                f"{cap.median / lim.rows_per_s:.3f}" if cap and lim else "-",
                f"{100 * rec.median:.0f}%" if rec else "-", f"{100 * b.median:.1f}%" if b else "-",
            ])
    head = ["workload", "system", "capacity /s, median (min–max)", "bracket", f"× {systems[0]} (paired)", "× model limit", "recovery SLO", "bursts SLO"]
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default="inline,schooner", help="the first is the base of the ratios (any of the registry)")
    parser.add_argument("--workloads", default="w1,w2,w3,w4", help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--slo-ms", type=float, help=f"SLO and Schooner's latency_slo_micros (default {SLO_MS:g}; with --config: the app's)")
    parser.add_argument("--window-s", type=float, help="measured seconds per probe (default 2; --quick 1)")
    parser.add_argument("--no-bursts", action="store_true", help="skip the bursty runs")
    parser.add_argument("--config", help="benchmark your own model: a Schooner config file ...")
    parser.add_argument("--app", help="... and the app of it to drive (its first model)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    systems = csv_names(args.systems, SYSTEMS, parser, "--systems")
    if args.config:
        if not args.app:
            parser.error("--config needs --app")
        workloads = [workload_from_config(args.config, args.app)]
    else:
        workloads = [WORKLOADS[w] for w in csv_names(args.workloads, WORKLOADS, parser, "--workloads")]
    slo_ms = args.slo_ms or (workloads[0].slo_ms if args.config else None) or SLO_MS
    window = args.window_s or (1.0 if common.quick else 2.0)
    t = Timing(0.5 if common.quick else 1.0, window, 1.0, slo_ms)
    gen = LoadGenConfig(workers=1, cpus=cpu_list(common.client_cpus), max_connections=1024, drain_s=t.drain_s)
    config = {"systems": systems, "workloads": [w.name for w in workloads], "slo_ms": slo_ms, "timing": asdict(t),
              "pass_attainment": PASS_ATTAINMENT, "tolerance": TOLERANCE, "repeats": common.repeats,
              "client_cpus": common.client_cpus, "server_cpus": common.server_cpus, "burst": BURST}
    writer = ResultWriter(SUITE, config)
    per_search = 9
    progress = Progress(len(workloads) * len(systems) * common.repeats * (per_search + 1 + (0 if args.no_bursts else 1)), SUITE)
    print(f"capacity: {', '.join(systems)} on {', '.join(w.name for w in workloads)}; SLO {slo_ms:g} ms; pass = ≥ {PASS_ATTAINMENT:.0%} "
          f"in SLO; bisection to {TOLERANCE:.0%}; {common.repeats} repeats; probes {t.warmup_s:g} s warm-up + {t.window_s:g} s")
    limits = measure_in_child([w for w in workloads if w.config_path is None] or workloads, 0.3)
    runs: list[SearchRun] = []
    bursts: dict[tuple[str, str], list[Probe]] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="schooner-capacity-") as tmp:
        ctx = StartContext(Path(tmp), common.server_cpus, slo_ms, Batching())
        for w in workloads:
            for repeat in range(common.repeats):
                for name in systems:
                    if SYSTEMS[name].serves(w):
                        runs.append(search(name, w, ctx, t, gen, repeat, progress, writer, common))
            ref = spread([r.capacity_per_s for r in runs if r.workload == w.name and r.system == systems[0]])
            if args.no_bursts or ref is None:
                continue
            for repeat in range(common.repeats):
                for name in systems:
                    try:
                        bursts.setdefault((w.name, name), []).append(bursty(name, w, ctx, t, gen, 0.5 * ref.median, progress, SEED + 9 + repeat))
                    except (ServerStartError, OSError, RuntimeError) as exc:
                        progress.note(f"{w.name} {name} bursty: FAILED {str(exc).splitlines()[0]}")
    table = report(runs, bursts, limits, systems)
    print(f"\nSLO {slo_ms:g} ms; {common.repeats} repeats; {time.monotonic() - began:.0f} s\n{table}")
    paths = writer.write({"table": table, "model_limits": [asdict(p) for p in limits], "runs": [asdict(r) for r in runs],
                          "bursts": {f"{w}/{s}": [asdict(p) for p in ps] for (w, s), ps in bursts.items()}}, publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    import orjson

    print("\n".join(plot_capacity(orjson.loads(paths[0].read_bytes()), paths[0].with_suffix(""))))
    return 1 if any(r.error for r in runs) else 0
