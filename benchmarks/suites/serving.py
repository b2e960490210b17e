"""``make bench``: Schooner against the inline server and the model limit, closed loop with wrk.

Plan: the model limit of each workload (in a child process); then, ``--repeats`` times (default
3), interleaved so that repeat i of every system runs close in time: for each system (inline,
schooner, demo) and workload (W1, W2; the demo serves digits), a fresh server, a 1 s warm-up at the
highest concurrency, one wrk run per concurrency (1, 16, 64), stop. Every system gets the same
request bodies; W1/W2 are served with Schooner's cache off. Report: req/s and p50/p99 as medians
with min-max over the repeats, and Schooner / inline as the median of the paired ratios (repeat i
over repeat i) with their min-max. ``--config FILE --app NAME`` runs the same plan on your app.
From the same runs (``serving_costs``): Schooner's CPU per query by process role at every c, the
p50 it adds to the inline server's at c=1, and its time per stage at c=1 (from /metrics).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.drivers.closed_loop import BodiesFiles, TargetRun, drive
from benchmarks.drivers.wrk import ensure_wrk, whole_seconds, wrk_version
from benchmarks.harness.cli import add_common_flags, common_config, csv_ints, csv_names
from benchmarks.harness.machine import wait_until_idle
from benchmarks.harness.progress import Progress
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.stats import paired_ratio, ratio_text, spread
from benchmarks.suites.serving_costs import cost_report, observing
from benchmarks.systems import Batching, StartContext
from benchmarks.systems.registry import SYSTEMS
from benchmarks.workloads import DIGITS, WORKLOADS, Workload, workload_from_config
from benchmarks.workloads.limit import measure_in_child

SUITE = "serving"
SYSTEM_NAMES = ("inline", "schooner", "demo")
DEFAULT_CONCURRENCIES = (1, 16, 64)
SLO_MS = 100.0
BODIES_PER_FILE = 20_000


def plan(systems: tuple[str, ...], workloads: list[Workload]) -> list[tuple[str, Workload]]:
    out = [(s, w) for w in workloads for s in systems if s != "demo" and SYSTEMS[s].serves(w)]
    if "demo" in systems:
        out.append(("demo", DIGITS))
    return out


def report(runs: list[TargetRun], concurrencies: tuple[int, ...], base: str = "inline", subject: str = "schooner") -> str:
    """One row per workload and concurrency: the two systems side by side, and their ratio."""
    rows = []
    workloads = [w for w in dict.fromkeys(r.workload for r in runs)
                 if any(r.system == base and r.workload == w for r in runs)
                 and any(r.system == subject and r.workload == w for r in runs)]
    for w in workloads:
        for c in concurrencies:
            a = [r for r in runs if r.system == subject and r.workload == w]
            b = [r for r in runs if r.system == base and r.workload == w]
            cells = [w, c]
            for group in (b, a):
                rate = spread([r.rate(c) for r in group])
                p50 = spread([r.latency(c, "p50_ms") for r in group])
                p99 = spread([r.latency(c, "p99_ms") for r in group])
                cells += [rate.text() if rate else "-", f"{p50.median:.3f} / {p99.median:.3f}" if p50 and p99 else "-"]
            ratio = paired_ratio([r.rate(c) for r in sorted(a, key=lambda r: r.repeat)], [r.rate(c) for r in sorted(b, key=lambda r: r.repeat)])
            cells.append(ratio_text(ratio) if ratio else "-")
            rows.append(cells)
    head = ["workload", "c", f"{base} req/s", f"{base} p50 / p99 ms", f"{subject} req/s", f"{subject} p50 / p99 ms", f"{subject} / {base}"]
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serving", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per point (default 3; --quick 1)")
    parser.add_argument("--concurrency", default="1,16,64", help="wrk connections per point (default 1,16,64)")
    parser.add_argument("--systems", default=",".join(SYSTEM_NAMES), help=f"subset of {','.join(SYSTEM_NAMES)}")
    parser.add_argument("--workloads", default="w1,w2", help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--config", help="benchmark your own model: a Schooner config file ...")
    parser.add_argument("--app", help="... and the app of it to drive (its first model)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    concurrencies = csv_ints(args.concurrency, parser, "--concurrency")
    systems = csv_names(args.systems, SYSTEM_NAMES, parser, "--systems")
    if args.config:
        if not args.app:
            parser.error("--config needs --app")
        workloads = [workload_from_config(args.config, args.app)]
        systems = tuple(s for s in systems if s != "demo")
    else:
        workloads = [WORKLOADS[w] for w in csv_names(args.workloads, WORKLOADS, parser, "--workloads")]
    duration_s = float(whole_seconds(args.duration or (1.0 if common.quick else 3.0)))
    targets = plan(systems, workloads)
    wrk = ensure_wrk()
    config = {
        "systems": systems, "workloads": [w.name for w in workloads], "concurrencies": concurrencies,
        "duration_s": duration_s, "warmup_s": 1.0, "repeats": common.repeats, "slo_ms": SLO_MS,
        "client_cpus": common.client_cpus, "server_cpus": common.server_cpus, "load": "wrk -t1, closed loop",
    }
    writer = ResultWriter(SUITE, config, {"wrk": wrk_version(wrk)})
    print(f"serving: {', '.join(f'{s} {w.name}' for s, w in targets)}; c {concurrencies}; {duration_s:g} s per point; "
          f"{common.repeats} repeats, interleaved; wrk on CPU {common.client_cpus or 'any'}, servers on {common.server_cpus or 'any'}")
    limits = []
    model_workloads = [w for w in workloads if any(s != "demo" for s, t in targets if t is w)]
    if model_workloads:
        writer.check("model limit", wait_until_idle(common.max_wait_idle_s, common.idle_threshold_percent))
        limits = measure_in_child(model_workloads, 0.3 if common.quick else 1.0)
        for w in model_workloads:
            row = ", ".join(f"b{p.batch_size} {p.rows_per_s:,.0f}" for p in limits if p.workload == w.name)
            print(f"model limit {w.name} (rows/s): {row}")
    progress = Progress(common.repeats * len(targets) * len(concurrencies), SUITE)
    runs: list[TargetRun] = []
    with tempfile.TemporaryDirectory(prefix="schooner-bench-") as tmp:
        work = Path(tmp)
        bodies = BodiesFiles(work, BODIES_PER_FILE)
        ctx = StartContext(work, common.server_cpus, SLO_MS, Batching(), schooner_server=common.schooner_server)
        for repeat in range(common.repeats):
            for system, workload in targets:
                runs.append(drive(SYSTEMS[system], workload, ctx, concurrencies, duration_s, wrk, common.client_cpus,
                                  bodies, progress, writer, repeat, common.max_wait_idle_s, common.idle_threshold_percent,
                                  observe=observing(workload)))
    table = report(runs, concurrencies)
    demo = [r for r in runs if r.system == "demo"]
    print("\n" + table)
    if demo:
        print("\ndemo (digits, inputs repeat): " + ", ".join(
            f"c={c} {s.text()} req/s" for c in concurrencies if (s := spread([r.rate(c) for r in demo]))))
    costs_text, costs = cost_report(runs, concurrencies)
    if costs_text:
        print("\n" + costs_text)
    paths = writer.write({
        "model_limits": [asdict(p) for p in limits], "runs": [asdict(r) for r in runs], "table": table,
        "schooner_costs": costs,
    }, publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 1 if any(r.error for r in runs) else 0
