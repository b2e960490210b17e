"""What counting costs on the hot path: the scheduler core and the frontend's per-request calls.

``python -m benchmarks scheduler-core [--quick]`` prints, from one run:

1. **Scheduler core, in-process, fake clock.** ``SchedulerCore`` is driven the way the
   scheduler process drives it and the unit tests do (``tests/unit/test_scheduler_rules.py``):
   per batch, submit N queries at ``now``, ``poll(now)`` (one ``SendBatch`` of N), then
   ``batch_done`` 200 µs later and ``poll`` again (N answers). One app, one model with one
   replica and a fixed ``batch_size = N`` (N = 1, 8, 64), with the prediction cache off and on
   (on: every query carries a distinct digest, so every lookup misses and fills the cache;
   1 MiB cache, so it evicts from the first round on, as a long-running server does). Variants:

   real      the core as it is in this working tree.
   noop      the same class; after construction every counters record it holds
             (``ModelCounters``, ``AppCounters``, ``CacheCounters``, found by walking its
             attributes, models, lists and dicts) is replaced by a ``NullCounters`` whose reads
             give zeros and whose writes do nothing. The attribute lookups are still paid for,
             through ``__getattr__``, which costs more than the real slot add: real − noop
             comes out negative, and only says that the counting is cheaper than a call.
   stripped  ``SchedulerCore`` compiled from ``engine/core/scheduler.py`` with every statement
             of its methods (``__init__`` aside) that touches a metric removed: attributes
             named ``m_*``, ``counters`` or ``app_counters``, the local names bound from them, and the dead
             stores left behind. real − stripped is what the metrics cost.
   nostats   (only when the core keeps Triton statistics, ``_Model.stats``) ``stripped`` with
             every statement touching ``stats`` removed too: stripped − nostats is what the
             statistics cost.

   Before timing, each variant is driven through the same sequence as ``real`` and must give
   the same actions (batches, answers, outputs), and ``noop``/``stripped`` must leave every
   metric at zero (proof that every metric the core touches was replaced or removed). Timing
   interleaves the variants in rotating order, several rounds, garbage collection off inside a
   timed segment (a segment is ~10-30 ms, so many of them run undisturbed). The machine is
   shared and other work only ever adds time, so a variant's per-query time is its fastest
   round and the headline ratio is of fastest rounds; the median of the per-round (paired)
   ratios and their interquartile range are printed beside it.

2. **Frontend, micro-benchmark.** The two metric calls a frontend makes per request:
   ``FrontendProc.count_response(status)`` (on a stand-in object holding the same fields) and
   ``m_duration.observe((time.monotonic_ns() - start_ns) / 1e9)``, against a loop of the same
   shape calling empty functions.

3. **Publishing.** ``render_scheduler_metrics(core.counters)`` (the core's counters as
   Prometheus text) and a frontend's ``MetricSet.render()``: paid once per
   publish (the scheduler at most every 100 ms under load, a frontend every 250 s when
   changed), not per query, so it is reported per call only.

4. **In context (live server).** Schooner serving W1 (``benchmarks.workloads:SumModel``,
   cache off) under wrk at concurrency 16 for a few seconds: the CPU time the scheduler
   process and the frontend process spent per request (psutil, user+system), so that the
   per-query metric costs above can be read as a share of what those processes really spend.
   Skipped with ``--no-live``; a server that does not start is reported, not fatal.

Writes ``benchmarks/results/metrics-overhead-<UTC>.json`` (git sha, host, versions, config,
every round). Reused from the harness: git/host/version records (``benchmarks.harness.results``), server
start/stop (``benchmarks.systems.schooner``), wrk (``benchmarks.drivers.wrk``), inputs
(``benchmarks.workloads``). Nothing here judges a figure: there are no thresholds.
"""


from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import psutil

from benchmarks.harness.cli import MIN_REPEATS
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.stats import spread, spread_text
from benchmarks.micro.core_timing import (
    BATCH_SIZES,
    CACHE_NBYTES,
    CHECK_BATCHES,
    GAP_NS,
    MODEL_LATENCY_NS,
    QUERIES_PER_SEGMENT,
    QUICK_QUERIES_PER_SEGMENT,
    QUICK_ROUNDS,
    ROUNDS,
    SLO_NS,
    Comparison,
    Scenario,
    build_core,
    check_variants,
    compare,
    drive,
    make_queries,
    make_variants,
    time_core,
)
from benchmarks.micro.core_variants import (
    null_out_metrics,
)
from benchmarks.micro.frontend_cost import (
    FRONTEND_CALLS,
    QUICK_FRONTEND_CALLS,
    RENDER_CALLS,
    frontend_stand_in,
    time_frontend,
    time_render,
)
from benchmarks.micro.live_cpu import (
    LIVE_DURATION_S,
    QUICK_LIVE_DURATION_S,
    WRK_CPUS_NOTE,
    measure_live,
)
from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.scheduler import SchedulerCore

# ---------------------------------------------------------------------------------------------
# Report: every figure a median (min–max) over the repeats, each repeat a full set of rounds

Comparisons = dict[tuple[Scenario, str], Comparison]


def over_repeats(repeats: Sequence[Comparisons], key: tuple[Scenario, str], figure: str, spec: str, unit: str = "") -> str:
    return spread_text([getattr(c[key], figure) for c in repeats], spec, unit)


def core_table(repeats: Sequence[Comparisons], scenarios: Sequence[Scenario], has_stats: bool) -> str:
    kinds = [("noop", "real/noop"), ("stripped", "real/stripped")] + ([("stats", "stripped/nostats")] if has_stats else [])
    head = ["scenario", "real", "noop", "stripped"] + (["nostats"] if has_stats else [])
    head += [f"{label} (median of rounds)" for _, label in kinds] + ["metrics %"] + (["stats %"] if has_stats else [])
    rows = []
    for s in scenarios:
        row = [s.label, over_repeats(repeats, (s, "stripped"), "ns_per_query", ".0f")]
        row += [over_repeats(repeats, (s, kind), "baseline_ns_per_query", ".0f") for kind, _ in kinds]
        row += [f"{over_repeats(repeats, (s, kind), 'ratio_best', '.3f', 'x')} "
                f"({over_repeats(repeats, (s, kind), 'ratio_median', '.3f', 'x')})" for kind, _ in kinds]
        row += [over_repeats(repeats, (s, kind), "cost_percent", ".1f") for kind in ("stripped", "stats")[: 1 + has_stats]]
        rows.append(" | ".join(row))
    lines = [
        f"scheduler core, ns per query in the fastest round of each repeat, median (min–max) of {len(repeats)} "
        "repeats; ratios: of the fastest rounds (in brackets: the median of the per-round ratios); "
        "% from the fastest rounds:",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    return "\n".join(lines + [f"| {r} |" for r in rows])


def live_line(lives: Sequence) -> str:
    ok = [x for x in lives if x.scheduler_cpu_ns_per_request is not None]
    if not ok:
        return f"live, for context: FAILED: {'; '.join(str(x.error) for x in lives)}"
    first = ok[0]
    errors = "; ".join(x.error for x in lives if x.error)
    return (
        f"live, for context: Schooner W1 (cache off) under wrk c={first.concurrency} for {first.duration_s} s, "
        f"{len(ok)} of {len(lives)} repeats on fresh servers ({WRK_CPUS_NOTE}): "
        f"{spread_text([x.req_per_s for x in ok])} req/s; CPU per request: scheduler process "
        f"{spread_text([x.scheduler_cpu_ns_per_request / 1e3 for x in ok], '.1f')} µs, frontend "
        f"{spread_text([x.frontend_cpu_ns_per_request / 1e3 for x in ok], '.1f')} µs, model "
        f"{spread_text([(x.model_cpu_ns_per_request or 0) / 1e3 for x in ok], '.1f')} µs"
        + (f" ({errors})" if errors else "")
    )


def summary_spread(repeats: Sequence[Comparisons], key: tuple[Scenario, str]) -> dict[str, object]:
    out: dict[str, object] = {"batch_size": key[0].batch_size, "cache": key[0].cache, "kind": key[1]}
    for figure in ("cost_percent", "cost_percent_median", "ratio_best", "ns_per_query", "baseline_ns_per_query"):
        sp = spread([getattr(c[key], figure) for c in repeats])
        out[figure] = asdict(sp) if sp else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scheduler-core", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter rounds, for a smoke run"
    )
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"full sets of timed rounds, and live runs (default {MIN_REPEATS}); figures are medians with min-max")
    parser.add_argument("--no-live", action="store_true", help="skip the live-server context")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/published/scheduler-core.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    writer = ResultWriter("scheduler-core", vars(args))
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    per_segment = QUICK_QUERIES_PER_SEGMENT if args.quick else QUERIES_PER_SEGMENT
    frontend_calls = QUICK_FRONTEND_CALLS if args.quick else FRONTEND_CALLS
    scenarios = [Scenario(b, c) for c in (False, True) for b in BATCH_SIZES]
    variants, metrics_stripper, stats_stripper = make_variants()
    has_stats = stats_stripper is not None

    replaced = null_out_metrics(build_core(SchedulerCore, scenarios[0]))
    print(
        f"Metrics overhead: {psutil.cpu_count()} CPUs, machine {psutil.cpu_percent(interval=0.5):.0f}% busy "
        f"just before; the machine is shared, so figures are noisy: read the ratios and their spread over repeats."
    )
    print(
        f"scheduler core driven in-process with a fake clock: {args.repeats} repeats of {rounds} rounds x "
        f"{per_segment:,} queries per variant and scenario, variants interleaved in rotating order, gc off in timed segments"
    )
    print(f"noop: {replaced} metric objects replaced per core (one app, one model, one replica)")
    print(
        f"stripped: {len(metrics_stripper.removed)} statements removed from SchedulerCore's methods:"
    )
    for r in metrics_stripper.removed:
        print(f"  {r.method}:{r.line}: {r.source}")
    if stats_stripper is not None:
        extra = [r for r in stats_stripper.removed if r not in metrics_stripper.removed]
        print(
            f"nostats: the core keeps Triton statistics (_Model.stats); {len(extra)} more statements removed:"
        )
        for r in extra:
            print(f"  {r.method}:{r.line}: {r.source}")

    problems = check_variants(variants, scenarios)
    for p in problems:
        print(f"CHECK FAILED: {p}", flush=True)
    if problems:
        print("variants do not do the same work; not timing them")
        return 1
    print(
        f"check: every variant gave the same {CHECK_BATCHES} batches of actions as real, and counted nothing where counting was removed",
        flush=True,
    )

    kinds = [("noop", "real", "noop"), ("stripped", "real", "stripped")]
    kinds += [("stats", "stripped", "nostats")] if has_stats else []
    core_rounds = []
    repeats: list[Comparisons] = []
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
        timed = time_core(variants, scenarios, rounds, per_segment)
        core_rounds += [(repeat, r) for r in timed]
        repeats.append({(s, kind): compare(timed, s, a, b) for s in scenarios for kind, a, b in kinds})
    print()
    print(core_table(repeats, scenarios, has_stats))

    frontend = time_frontend(frontend_calls, rounds)
    core_for_render = build_core(SchedulerCore, scenarios[-1])
    drive(
        core_for_render, make_queries(scenarios[-1], 1, 640, 0), scenarios[-1].batch_size, 0, None
    )
    render_core_ns = time_render(lambda: render_scheduler_metrics(core_for_render.counters), RENDER_CALLS)
    fe = frontend_stand_in()
    from schooner.frontend.server import FrontendProc

    FrontendProc.count_response(fe, 200)
    fe.m_duration.observe(0.001)
    render_fe_ns = time_render(fe.metrics.render, RENDER_CALLS)
    print()
    print(
        f"frontend per request: count_response(200) + m_duration.observe(...) "
        f"{frontend.ns_per_call:.0f} ns vs {frontend.baseline_ns_per_call:.0f} ns for the same calls to "
        f"empty functions: {frontend.added_ns:+.0f} ns per request "
        f"(median of {rounds} rounds of {frontend_calls:,} calls)"
    )
    print(
        f"publishing (per snapshot, not per query): scheduler core render_scheduler_metrics() {render_core_ns / 1e3:.1f} µs "
        f"(every <= 100 ms under load), frontend {render_fe_ns / 1e3:.1f} µs (every 250 ms when changed)"
    )

    lives = []
    if not args.no_live:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="schooner-metrics-overhead-") as tmp:
                lives.append(measure_live(QUICK_LIVE_DURATION_S if args.quick else LIVE_DURATION_S, Path(tmp)))
        print(live_line(lives))

    def per_batch(kind: str, cache: bool, figure: str = "cost_percent") -> str:
        return ", ".join(
            f"{over_repeats(repeats, (s, kind), figure, '.0f')}% at batch {s.batch_size}"
            for s in scenarios if s.cache == cache
        )

    print()
    print(
        f"metrics cost {per_batch('stripped', True)} of the scheduler core's per-query time "
        "(cache on, the default; fastest rounds, real vs metric statements removed; median (min–max) of repeats)"
    )
    print(
        f"  same from the median of paired rounds: {per_batch('stripped', True, 'cost_percent_median')}; "
        f"cache off: {per_batch('stripped', False)}; "
        f"against no-op stand-ins (which still pay for the calls): {per_batch('noop', True)}"
    )
    added_ns = {
        s.batch_size: spread([c[(s, "stripped")].ns_per_query - c[(s, "stripped")].baseline_ns_per_query for c in repeats]).median
        for s in scenarios
        if s.cache
    }
    sched = spread([x.scheduler_cpu_ns_per_request for x in lives])
    front = spread([x.frontend_cpu_ns_per_request for x in lives])
    if sched and front:
        print(
            "in context (live run, medians): the core's metrics add "
            + ", ".join(
                f"{ns:.0f} ns ({ns / sched.median * 100:.1f}%) at batch {b}" for b, ns in added_ns.items()
            )
            + f" of the scheduler process's {sched.median / 1e3:.1f} µs CPU per request; the frontend's "
            f"metric calls {frontend.added_ns:.0f} ns, {frontend.added_ns / front.median * 100:.1f}% of "
            f"its {front.median / 1e3:.1f} µs"
        )
    if has_stats:
        print(
            f"Triton statistics (ModelStats) cost {per_batch('stats', True)} of the metric-free "
            f"core's per-query time (cache on; cache off: {per_batch('stats', False)})"
        )

    document = {
        "settings": {
            "rounds": rounds,
            "repeats": args.repeats,
            "queries_per_segment": per_segment,
            "batch_sizes": BATCH_SIZES,
            "slo_ns": SLO_NS,
            "model_latency_ns": MODEL_LATENCY_NS,
            "gap_ns": GAP_NS,
            "cache_nbytes": CACHE_NBYTES,
            "check_batches": CHECK_BATCHES,
            "frontend_calls": frontend_calls,
        },
        "variants": {v.name: v.description for v in variants},
        "noop_metric_objects_replaced": replaced,
        "stripped_statements": [asdict(r) for r in metrics_stripper.removed],
        "nostats_statements": [asdict(r) for r in stats_stripper.removed]
        if stats_stripper
        else None,
        "core_rounds": [
            {"repeat": k, "scenario": asdict(r.scenario), "round": r.round_index, "ns_per_query": r.ns_per_query}
            for k, r in core_rounds
        ],
        "core_comparisons": [
            {
                **asdict(c),
                "repeat": k,
                "ratio_best": c.ratio_best,
                "cost_percent": c.cost_percent,
                "cost_percent_median": c.cost_percent_median,
            }
            for k, comparisons in enumerate(repeats)
            for c in comparisons.values()
        ],
        "core_spread": [summary_spread(repeats, key) for key in repeats[0]],
        "frontend": asdict(frontend) | {"added_ns": frontend.added_ns},
        "render_ns": {"scheduler_core": render_core_ns, "frontend": render_fe_ns},
        "live": asdict(lives[0]) if lives else None,
        "live_repeats": [asdict(x) for x in lives],
    }
    paths = writer.write(document, publish=getattr(args, "publish", False))
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 0
