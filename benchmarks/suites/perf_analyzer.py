"""Schooner's Open Inference Protocol endpoint under Triton's perf_analyzer: JSON vs binary tensors.

``python -m benchmarks perf-analyzer [--quick] [--shm]`` starts Schooner serving one model
at a time (``benchmarks.systems.schooner``), drives ``POST /v2/models/<m>/infer`` with perf_analyzer
(``benchmarks.perf_analyzer_driver``, installed into ``benchmarks/.venv-perf`` on first use) at
each concurrency, once with binary tensors and once with JSON tensors (inputs and outputs alike),
stops it, and prints one table, then writes one JSON file under ``benchmarks/results/``.
Nothing here judges a figure: there are no thresholds.

Models (one Schooner model and one app of the same name each, ``max_batch_size = 64``, one
replica, adaptive batching, prediction cache off so that every request reaches the model):
  w2     ``benchmarks.workloads:MLPModel``, 16 FP32 per request (64 bytes binary), 100 ms SLO.
  image  ``benchmarks.image_models:ImageMeanModel``, 3×224×224 FP32 per request (602,112 bytes
         binary, about 3 MB as JSON text), the mean of each image, so transport dominates; 5 s SLO.
Inputs: a perf_analyzer ``--input-data`` JSON file per model with 256 rows of
``benchmarks.workloads.make_inputs`` (w2) or 4 images uniform in [0, 1) (image); perf_analyzer
cycles through them. The same file feeds both formats.

``--shm`` adds a third format, binary with perf_analyzer's ``--shared-memory system`` (inputs and
outputs in /dev/shm regions the client registers), and starts Schooner with
``--allow-client-shm``, without which Schooner refuses the extension. Off by default.

Order: ``--repeats`` (default 3) passes, interleaved; in each, per model, one fresh server, a warm-up (perf_analyzer at the highest concurrency, binary,
short windows, not recorded), then for each concurrency every format back to back, so a change
in the machine's load between points hits a format pair alike. Report: per model, format and
concurrency the median with min–max over the repeats; "vs binary" is the median of the ratios of
repeat i to repeat i. Targets and measurement: ``benchmarks.suites.perf_analyzer_points``.

Each point also reads ``GET /metrics`` before and after: answers that were the app's default
output (SLO missed; perf_analyzer cannot tell them from model answers) and non-200 answers are
flagged.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.drivers.perf_analyzer import PerfAnalyzerError, ensure_perf_analyzer, worst_case_s
from benchmarks.harness.cli import add_common_flags, common_config, csv_ints, csv_names
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.servers import LOOPBACK, STOP_GRACE_S
from benchmarks.harness.stats import paired_ratio_by, ratio_text, spread_text
from benchmarks.suites.perf_analyzer_points import (
    DEFAULT_CONCURRENCIES,
    FORMATS,
    MAX_TRIALS,
    MEASUREMENT_INTERVAL_MS,
    QUICK_CONCURRENCIES,
    QUICK_MEASUREMENT_INTERVAL_MS,
    RETRY_STABILITY_PERCENT,
    SHM_FORMAT,
    STABILITY_PERCENT,
    TARGETS,
    PaBenchConfig,
    Point,
    TargetOutcome,
    drive_target,
    error_summary,
    point_config,
    schooner_config_toml,
)

# ---------------------------------------------------------------------------------------------
# Report


def point_flags(point: Point, config: PaBenchConfig) -> list[str]:
    flags = []
    if point.error:
        flags.append("failed: " + error_summary(point.error))
    if point.stability_percent != config.stability_percent:
        flags.append(f"stable only within {point.stability_percent}%")
    c = point.counts
    if c is not None and c.defaults:
        flags.append(f"{c.defaults:,} of {c.queries:,} answers were the default (SLO missed)")
    if c is not None and c.non_200:
        flags.append(f"{c.non_200:,} non-200 answers")
    return flags


def outcome_flags(outcome: TargetOutcome) -> list[str]:
    flags = []
    if outcome.error:
        flags.append("failed: " + outcome.error.splitlines()[0])
    if outcome.stop and outcome.stop.killed:
        flags.append(f"did not exit within {STOP_GRACE_S:g} s of SIGTERM: killed")
    if outcome.stop and outcome.stop.leftover_pids:
        flags.append(f"left processes behind after exit (killed): {outcome.stop.leftover_pids}")
    return flags


def binary_rate(outcomes: Sequence[TargetOutcome]) -> dict[tuple[str, int, int], float]:
    """(model, concurrency, repeat) -> binary tensors' infer/s: what the other formats divide by."""
    return {
        (p.model, p.concurrency, p.repeat): p.result.infer_per_s
        for o in outcomes
        for p in o.points
        if p.result is not None and p.tensor_format == "binary"
    }


def rows_of(outcomes: Sequence[TargetOutcome]) -> dict[tuple[str, str, int], list[Point]]:
    """One row per model, format and concurrency: its points across repeats, in run order."""
    rows: dict[tuple[str, str, int], list[Point]] = {}
    for o in outcomes:
        for p in o.points:
            rows.setdefault((p.model, p.tensor_format, p.concurrency), []).append(p)
    return dict(sorted(rows.items(), key=lambda kv: (list(TARGETS).index(kv[0][0]), kv[0][2])))


def format_report(outcomes: Sequence[TargetOutcome], config: PaBenchConfig) -> str:
    binary = binary_rate(outcomes)
    table = []
    for (model, fmt, c), points in rows_of(outcomes).items():
        ok = [p for p in points if p.result is not None]
        base = {k[2]: v for k, v in binary.items() if k[:2] == (model, c)}
        ratio = paired_ratio_by({p.repeat: p.result.infer_per_s for p in ok}, base)
        many = len(points) > 1
        flags = [f"#{p.repeat + 1} {f}" if many else f for p in points for f in point_flags(p, config)]
        table.append([model, fmt, c, spread_text([p.result.infer_per_s for p in ok], ",.1f"),
                      spread_text([p.result.p50_us / 1e3 for p in ok], ".3f"),
                      spread_text([p.result.p99_us / 1e3 for p in ok], ".3f"),
                      ratio_text(ratio) if fmt != "binary" else "-",
                      spread_text([p.result.client_cpu_s for p in ok], ".1f"), "; ".join(flags)])
    head = ["model", "format", "conc", "infer/s", "p50 ms", "p99 ms", "vs binary", "client CPU s", "flags"]
    lines = [f"median (min–max) of {config.repeats} repeats, each on a fresh server; "
             "vs binary: paired by repeat", markdown_table(head, table)]
    for o in outcomes:
        lines += [f"  schooner {o.target} #{o.repeat + 1}: {flag}" for flag in outcome_flags(o)]
    return "\n".join(lines)


def results_body(config: PaBenchConfig, outcomes: Sequence[TargetOutcome]) -> dict[str, object]:
    binary = binary_rate(outcomes)
    points = []
    for o in outcomes:
        for p in o.points:
            base = binary.get((p.model, p.concurrency, p.repeat))
            rate = p.result.infer_per_s / base if p.result is not None and base else None
            points.append({**asdict(p), "throughput_vs_binary": rate, "flags": point_flags(p, config)})
    return {
        "schooner_configs": {name: schooner_config_toml(TARGETS[name], config) for name in config.models},
        "targets": [
            {"target": o.target, "repeat": o.repeat, "others_cpu_percent_before": o.cpu_busy_percent_before,
             "error": o.error, "stop": asdict(o.stop) if o.stop else None, "flags": outcome_flags(o)}
            for o in outcomes
        ],
        "points": points,
        "report": format_report(outcomes, config),
    }


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_config(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks perf-analyzer", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--shm",
        action="store_true",
        help="also binary tensors through system shared memory (serves with --allow-client-shm)",
    )
    parser.add_argument("--concurrency", help="comma-separated, default 1,4,16,64 (--quick 1,16)")
    parser.add_argument("--models", default=",".join(TARGETS), help="subset of w2,image")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    models = csv_names(args.models, TARGETS, parser, "--models")
    if args.concurrency:
        concurrencies = csv_ints(args.concurrency, parser, "--concurrency")
    else:
        concurrencies = QUICK_CONCURRENCIES if args.quick else DEFAULT_CONCURRENCIES
    return PaBenchConfig(
        concurrencies=concurrencies,
        formats=FORMATS + ((SHM_FORMAT,) if args.shm else ()),
        models=models,
        measurement_interval_ms=QUICK_MEASUREMENT_INTERVAL_MS
        if args.quick
        else MEASUREMENT_INTERVAL_MS,
        max_trials=MAX_TRIALS,
        stability_percent=STABILITY_PERCENT,
        retry_stability_percent=RETRY_STABILITY_PERCENT,
        client_cpus=common.client_cpus,
        server_cpus=common.server_cpus,
        max_wait_idle_s=common.max_wait_idle_s,
        idle_threshold_percent=common.idle_threshold_percent,
        repeats=common.repeats,
    ), common


def main(argv: list[str] | None = None) -> int:
    config, common = parse_config(argv)
    try:
        pa = ensure_perf_analyzer()
    except PerfAnalyzerError as exc:
        print(f"perf_analyzer unavailable: {exc}")
        return 1
    writer = ResultWriter("perf-analyzer", asdict(config), {"perf_analyzer": pa.version})
    npoints = config.repeats * len(config.models) * len(config.formats) * len(config.concurrencies)
    example = point_config(TARGETS[config.models[0]], "binary", 1, Path("x"), config)
    print(
        f"perf_analyzer benchmark ({pa.version}): models {', '.join(config.models)}; formats "
        f"{', '.join(config.formats)}; concurrency {config.concurrencies}; {config.repeats} repeats, interleaved, "
        f"each on a fresh server; {npoints} points"
    )
    print(
        f"each point: perf_analyzer -a, {config.measurement_interval_ms} ms windows until three agree "
        f"within {config.stability_percent}% (at most {config.max_trials} windows; "
        f"at most {worst_case_s(example):.0f} s), on CPU {config.client_cpus or 'any'}; "
        f"Schooner on {LOOPBACK}, CPU any, cache off"
        + (", --allow-client-shm" if SHM_FORMAT in config.formats else "")
    )
    with tempfile.TemporaryDirectory(prefix="schooner-perf-analyzer-") as tmp:
        work_dir = Path(tmp)
        outcomes = [drive_target(pa, TARGETS[m], config, work_dir, writer, repeat)
                    for repeat in range(config.repeats) for m in config.models]
    print()
    print(format_report(outcomes, config))
    paths = writer.write(results_body(config, outcomes), publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    failed = any(o.error for o in outcomes) or any(
        p.error for o in outcomes for p in o.points if p.tensor_format != SHM_FORMAT
    )
    return 1 if failed else 0
