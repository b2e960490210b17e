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

``--variant NAME:KEY=VALUE[;KEY=VALUE...]`` (repeatable) adds the system ``schooner-NAME``:
``schooner`` with those ``[server]`` lines on top of any ``--schooner-set`` (e.g. ``spin300:spin_us=300``),
run in every repeat like the others and reported like ``schooner`` in every table (its own ratio to
inline, paired by repeat), so that one run compares server settings; rows are then labelled by system.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.drivers.closed_loop import BodiesFiles, TargetRun, drive
from benchmarks.drivers.wrk import ensure_wrk, whole_seconds, wrk_version
from benchmarks.harness.cli import (
    VARIANT_FORM,
    add_common_flags,
    common_config,
    csv_ints,
    csv_names,
    variant_arg,
)
from benchmarks.harness.machine import wait_until_idle
from benchmarks.harness.progress import Progress
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.stats import paired_ratio_by, ratio_text, spread
from benchmarks.suites.serving_costs import (
    SCHOONER,
    cost_report,
    labelled,
    observing,
    schooner_configs,
)
from benchmarks.systems import Batching, StartContext, System
from benchmarks.systems.registry import SYSTEMS
from benchmarks.systems.schooner import SchoonerVariant
from benchmarks.workloads import DIGITS, WORKLOADS, Workload, workload_from_config
from benchmarks.workloads.limit import measure_in_child

SUITE = "serving"
SYSTEM_NAMES = ("inline", "schooner", "demo")
DEFAULT_CONCURRENCIES = (1, 16, 64)
SLO_MS = 100.0
BODIES_PER_FILE = 20_000


def plan(systems: tuple[str, ...], workloads: list[Workload], registry: Mapping[str, System] = SYSTEMS) -> list[tuple[str, Workload]]:
    out = [(s, w) for w in workloads for s in systems if s != "demo" and registry[s].serves(w)]
    if "demo" in systems:
        out.append(("demo", DIGITS))
    return out


def report(runs: list[TargetRun], concurrencies: tuple[int, ...], base: str = "inline",
           subjects: Sequence[str] | None = None) -> str:
    """One row per workload, subject and concurrency: ``base`` and the subject side by side, and the
    subject / base ratio paired by repeat. Subjects: the run's Schooner configurations by default;
    with more than plain ``schooner``, each is a row group labelled "w1 (schooner-NAME)"."""
    subjects = tuple(subjects or schooner_configs(runs) or (SCHOONER,))
    named = labelled(subjects)
    rows = []
    for w in dict.fromkeys(r.workload for r in runs):
        b = [r for r in runs if r.system == base and r.workload == w]
        for subject in subjects:
            a = [r for r in runs if r.system == subject and r.workload == w]
            if not a or not b:
                continue
            for c in concurrencies:
                cells = [f"{w} ({subject})" if named else w, c]
                for group in (b, a):
                    rate = spread([r.rate(c) for r in group])
                    p50 = spread([r.latency(c, "p50_ms") for r in group])
                    p99 = spread([r.latency(c, "p99_ms") for r in group])
                    cells += [rate.text() if rate else "-", f"{p50.median:.3f} / {p99.median:.3f}" if p50 and p99 else "-"]
                ratio = paired_ratio_by({r.repeat: r.rate(c) for r in a}, {r.repeat: r.rate(c) for r in b})
                cells.append(ratio_text(ratio) if ratio else "-")
                rows.append(cells)
    who = "system" if named else subjects[0]
    head = ["workload", "c", f"{base} req/s", f"{base} p50 / p99 ms", f"{who} req/s", f"{who} p50 / p99 ms", f"{who} / {base}"]
    return markdown_table(head, rows)


def summary(runs: list[TargetRun], concurrencies: tuple[int, ...]) -> tuple[str, str, dict[str, object]]:
    """What the suite prints after its runs (main table, demo line, cost tables), the main table,
    and the costs' JSON."""
    table = report(runs, concurrencies)
    parts = ["\n" + table]
    demo = [r for r in runs if r.system == "demo"]
    if demo:
        parts.append("\ndemo (digits, inputs repeat): " + ", ".join(
            f"c={c} {s.text()} req/s" for c in concurrencies if (s := spread([r.rate(c) for r in demo]))))
    costs_text, costs = cost_report(runs, concurrencies)
    if costs_text:
        parts.append("\n" + costs_text)
    return "\n".join(parts), table, costs


def variant_systems(variants: Sequence[tuple[str, tuple[str, ...]]], parser: argparse.ArgumentParser) -> dict[str, System]:
    """``--variant``'s systems by name (``schooner-NAME``), in the order given; a NAME at most once."""
    out: dict[str, System] = {}
    for name, lines in variants:
        system = SchoonerVariant(name, lines)
        if system.name in out:
            parser.error(f"--variant: NAME {name!r} given twice (each {VARIANT_FORM} needs its own NAME)")
        out[system.name] = system
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serving", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per point (default 3; --quick 1)")
    parser.add_argument("--concurrency", default="1,16,64", help="wrk connections per point (default 1,16,64)")
    parser.add_argument("--systems", default=",".join(SYSTEM_NAMES), help=f"subset of {','.join(SYSTEM_NAMES)}")
    parser.add_argument("--workloads", default="w1,w2", help=f"subset of {','.join(WORKLOADS)}")
    parser.add_argument("--config", help="benchmark your own model: a Schooner config file ...")
    parser.add_argument("--app", help="... and the app of it to drive (its first model)")
    parser.add_argument("--variant", action="append", default=[], type=variant_arg, metavar="NAME:KEY=VALUE;...",
                        help=f"{VARIANT_FORM}: one more system, schooner-NAME: schooner with these [server] settings "
                             "(VALUE in TOML) on top of any --schooner-set, e.g. 'spin300:spin_us=300' or "
                             "'onecore:frontend_cpus=[1];scheduler_cpus=[1];model_cpus=[1]'; repeatable")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    concurrencies = csv_ints(args.concurrency, parser, "--concurrency")
    systems = csv_names(args.systems, SYSTEM_NAMES, parser, "--systems")
    variants = variant_systems(args.variant, parser)
    registry = {**SYSTEMS, **variants}
    systems = (*systems, *variants)
    if args.config:
        if not args.app:
            parser.error("--config needs --app")
        if variants or args.schooner_set:
            parser.error("--variant and --schooner-set need Schooner's generated config: with --config your file "
                         "is served unchanged (put the settings in its [server] table)")
        workloads = [workload_from_config(args.config, args.app)]
        systems = tuple(s for s in systems if s != "demo")
    else:
        workloads = [WORKLOADS[w] for w in csv_names(args.workloads, WORKLOADS, parser, "--workloads")]
    duration_s = float(whole_seconds(args.duration or (1.0 if common.quick else 3.0)))
    targets = plan(systems, workloads, registry)
    wrk = ensure_wrk()
    config = {
        "systems": systems, "workloads": [w.name for w in workloads], "concurrencies": concurrencies,
        "duration_s": duration_s, "warmup_s": 1.0, "repeats": common.repeats, "slo_ms": SLO_MS,
        "client_cpus": common.client_cpus, "server_cpus": common.server_cpus, "load": "wrk -t1, closed loop",
        "schooner_server": list(common.schooner_server), "variants": {n: list(v.server) for n, v in variants.items()},
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
                runs.append(drive(registry[system], workload, ctx, concurrencies, duration_s, wrk, common.client_cpus,
                                  bodies, progress, writer, repeat, common.max_wait_idle_s, common.idle_threshold_percent,
                                  observe=observing(workload)))
    text, table, costs = summary(runs, concurrencies)
    print(text)
    paths = writer.write({
        "model_limits": [asdict(p) for p in limits], "runs": [asdict(r) for r in runs], "table": table,
        "schooner_costs": costs,
    }, publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 1 if any(r.error for r in runs) else 0
