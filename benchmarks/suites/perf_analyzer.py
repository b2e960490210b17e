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

Order: per model, one fresh server, a warm-up (perf_analyzer at the highest concurrency, binary,
short windows, not recorded), then for each concurrency every format back to back, so a change
in the machine's load between points hits a format pair alike.

Each point also reads ``GET /metrics`` before and after: answers that were the app's default
output (SLO missed; perf_analyzer cannot tell them from model answers) and non-200 answers are
flagged.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson

from benchmarks.drivers.perf_analyzer import (
    PaPointConfig,
    PaResult,
    PaUnstableError,
    PerfAnalyzer,
    PerfAnalyzerError,
    ensure_perf_analyzer,
    worst_case_s,
)
from benchmarks.drivers.perf_analyzer import run_perf_analyzer as run_pa
from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.machine import wait_until_idle
from benchmarks.harness.metrics import MetricsClient, total
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.servers import (
    LOOPBACK,
    STOP_GRACE_S,
    ServerStartError,
    StopReport,
    is_ready,
    log_tail,
)
from benchmarks.systems import StartContext
from benchmarks.systems.schooner import ModelEntry, schooner_toml, start_schooner
from benchmarks.workloads import WORKLOADS, Workload

DEFAULT_CONCURRENCIES = (1, 4, 16, 64)
QUICK_CONCURRENCIES = (1, 16)
FORMATS = ("binary", "json")
SHM_FORMAT = "binary+shm"
MEASUREMENT_INTERVAL_MS = 2000
QUICK_MEASUREMENT_INTERVAL_MS = 1000
MAX_TRIALS = 6
STABILITY_PERCENT = 30
RETRY_STABILITY_PERCENT = 60  # one retry of a point that found no stable windows at 30%
MAX_BATCH_SIZE = 64
INPUT_SEED = 2000
METRICS_TIMEOUT_S = 5.0
WARMUP_INTERVAL_MS = 500


class ServerStoppedError(RuntimeError):
    """The server under test stopped answering in the middle of a target's points."""


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """A workload of the registry as perf_analyzer drives it: its SLO, output size, input rows."""

    workload: Workload
    output_nbytes: int  # one row's output: Schooner wants output shm regions of exactly this size
    latency_slo_micros: int
    rows: int  # input rows in perf_analyzer's input-data file

    @property
    def name(self) -> str:
        return self.workload.name

    def make_rows(self) -> np.ndarray:
        return self.workload.make_inputs(self.rows, INPUT_SEED)


TARGETS = {
    "w2": ModelTarget(WORKLOADS["w2"], 10 * 4, 100_000, 256),
    "image": ModelTarget(WORKLOADS["image"], 4, 5_000_000, 4),
}


@dataclass(frozen=True, slots=True)
class PaBenchConfig:
    concurrencies: tuple[int, ...]
    formats: tuple[str, ...]
    models: tuple[str, ...]
    measurement_interval_ms: int
    max_trials: int
    stability_percent: int
    retry_stability_percent: int
    client_cpus: str | None  # taskset CPU list for perf_analyzer; None: unpinned
    server_cpus: str | None = None
    max_wait_idle_s: float = 60.0
    idle_threshold_percent: float = 15.0
    max_batch_size: int = MAX_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class ServerCounts:
    """Deltas of Schooner's own counters over one point, from GET /metrics."""

    queries: int
    defaults: int
    non_200: int


@dataclass(slots=True)
class Point:
    model: str
    tensor_format: str
    concurrency: int
    result: PaResult | None = None
    stability_percent: int = STABILITY_PERCENT
    counts: ServerCounts | None = None
    error: str | None = None


@dataclass(slots=True)
class TargetOutcome:
    target: str
    cpu_busy_percent_before: float
    points: list[Point] = field(default_factory=list)
    stop: StopReport | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Server, inputs, metrics


def schooner_config_toml(target: ModelTarget, config: PaBenchConfig) -> str:
    return schooner_toml([ModelEntry(target.name, target.workload, target.latency_slo_micros, config.max_batch_size, cache=False)])


def write_input_data(target: ModelTarget, path: Path) -> int:
    """perf_analyzer's input-data JSON: one step per row, the row flat; returns the step count."""
    rows = target.make_rows()
    steps = [{"input": row.reshape(-1)} for row in rows]
    path.write_bytes(orjson.dumps({"data": steps}, option=orjson.OPT_SERIALIZE_NUMPY))
    return len(steps)


def server_counts(port: int, app: str) -> ServerCounts:
    """Sums of schooner_app_queries_total / _defaults_total for ``app`` and of non-200 answers."""
    client = MetricsClient(port)
    try:
        m = client.scrape()
    finally:
        client.close()
    all_codes = total(m, "schooner_http_requests_total")
    ok = total(m, "schooner_http_requests_total", code="200")
    return ServerCounts(int(total(m, "schooner_app_queries_total", app=app)),
                        int(total(m, "schooner_app_defaults_total", app=app)), int(all_codes - ok))


def counts_delta(before: ServerCounts, after: ServerCounts) -> ServerCounts:
    return ServerCounts(
        after.queries - before.queries,
        after.defaults - before.defaults,
        after.non_200 - before.non_200,
    )


# ---------------------------------------------------------------------------------------------
# Measuring


def point_config(
    target: ModelTarget, tensor_format: str, concurrency: int, data: Path, config: PaBenchConfig
) -> PaPointConfig:
    return PaPointConfig(
        model=target.name,
        concurrency=concurrency,
        tensor_format="binary" if tensor_format == SHM_FORMAT else tensor_format,
        input_data=data,
        measurement_interval_ms=config.measurement_interval_ms,
        max_trials=config.max_trials,
        stability_percent=config.stability_percent,
        shared_memory="system" if tensor_format == SHM_FORMAT else "none",
        output_shm_nbytes=target.output_nbytes,
    )


def describe(r: PaResult) -> str:
    return (
        f"{r.infer_per_s:,.1f} infer/s, p50 {r.p50_us / 1e3:.3f} ms, p99 {r.p99_us / 1e3:.3f} ms, "
        f"client CPU {r.client_cpu_s:.1f} s"
    )


def measure_point(
    pa: PerfAnalyzer,
    port: int,
    target: ModelTarget,
    point: Point,
    data: Path,
    config: PaBenchConfig,
    work_dir: Path,
) -> None:
    """One perf_analyzer run (and one retry at a looser stability if it found no stable windows)."""
    url = f"{LOOPBACK}:{port}"
    pc = point_config(target, point.tensor_format, point.concurrency, data, config)
    csv_path = work_dir / f"{target.name}-{point.tensor_format}-c{point.concurrency}.csv"
    before = server_counts(port, target.name)
    try:
        try:
            point.result = run_pa(pa, url, pc, csv_path, config.client_cpus)
        except PaUnstableError:
            pc = replace(pc, stability_percent=config.retry_stability_percent)
            point.stability_percent = pc.stability_percent
            print(
                f"  {target.name} {point.tensor_format} c={point.concurrency}: no stable windows "
                f"at {config.stability_percent}%, retrying at {pc.stability_percent}%",
                flush=True,
            )
            point.result = run_pa(pa, url, pc, csv_path, config.client_cpus)
    except PerfAnalyzerError as exc:
        point.error = str(exc)
    point.counts = counts_delta(before, server_counts(port, target.name))


def warm_up(
    pa: PerfAnalyzer,
    port: int,
    target: ModelTarget,
    data: Path,
    config: PaBenchConfig,
    work_dir: Path,
) -> None:
    """First requests (model set-up, first batches) land here, not in the first point."""
    pc = point_config(target, "binary", max(config.concurrencies), data, config)
    pc = replace(
        pc, measurement_interval_ms=WARMUP_INTERVAL_MS, max_trials=3, stability_percent=100
    )
    try:
        run_pa(pa, f"{LOOPBACK}:{port}", pc, work_dir / "warmup.csv", config.client_cpus)
    except PerfAnalyzerError as exc:
        print(f"  {target.name}: warm-up failed (not recorded): {error_summary(str(exc))}")


def drive_target(
    pa: PerfAnalyzer, target: ModelTarget, config: PaBenchConfig, work_dir: Path, writer: ResultWriter
) -> TargetOutcome:
    """Fresh server, every format × concurrency, stop; failures are recorded, not raised."""
    check = wait_until_idle(config.max_wait_idle_s, config.idle_threshold_percent)
    writer.check(f"schooner {target.name}", check)
    outcome = TargetOutcome(target.name, check.others_cpu_percent)
    data = work_dir / f"input-data-{target.name}.json"
    steps = write_input_data(target, data)
    ctx = StartContext(work_dir, config.server_cpus, target.latency_slo_micros / 1e3,
                       allow_client_shm=SHM_FORMAT in config.formats)
    running = None
    try:
        running = start_schooner(f"schooner {target.name}", schooner_config_toml(target, config), None, ctx, target.name)
        port = running.port
        print(f"schooner {target.name}: ready on port {port} ({check.text()}); {steps} input rows, "
              f"{data.stat().st_size:,} bytes of input-data JSON; settings {running.settings}", flush=True)
        warm_up(pa, port, target, data, config, work_dir)
        for concurrency in config.concurrencies:
            for tensor_format in config.formats:
                point = Point(target.name, tensor_format, concurrency)
                point.stability_percent = config.stability_percent
                outcome.points.append(point)
                measure_point(pa, port, target, point, data, config, work_dir)
                label = f"{target.name} {tensor_format} c={concurrency}"
                if point.result is not None:
                    print(f"{label}: {describe(point.result)}", flush=True)
                    continue
                print(f"{label}: FAILED: {first_lines(point.error)}", flush=True)
                if not is_ready(port):
                    raise ServerStoppedError(
                        f"schooner {target.name} stopped answering GET /v2/health/ready after {label} "
                        f"failed; remaining points skipped\n--- server log tail ---\n{log_tail(running.log_path)}"
                    )
    except (ServerStartError, ServerStoppedError, OSError) as exc:
        outcome.error = str(exc)
        print(f"schooner {target.name}: FAILED: {exc}", flush=True)
    finally:
        if running is not None:
            outcome.stop = running.stop()
    return outcome


def first_lines(text: str | None, n: int = 6) -> str:
    """The command line and the last lines of perf_analyzer's output, for the console."""
    if not text:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n    ".join(lines[:1] + lines[-n:]) if len(lines) > n + 1 else "\n    ".join(lines)


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


def error_summary(error: str) -> str:
    """The line of perf_analyzer's output that says what went wrong, else its last line."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    for line in lines[1:]:
        if "error" in line.lower() or "failed" in line.lower() or "unable" in line.lower():
            return line
    return lines[-1] if lines else error


def outcome_flags(outcome: TargetOutcome) -> list[str]:
    flags = []
    if outcome.error:
        flags.append("failed: " + outcome.error.splitlines()[0])
    if outcome.stop and outcome.stop.killed:
        flags.append(f"did not exit within {STOP_GRACE_S:g} s of SIGTERM: killed")
    if outcome.stop and outcome.stop.leftover_pids:
        flags.append(f"left processes behind after exit (killed): {outcome.stop.leftover_pids}")
    return flags


def binary_rate(outcomes: Sequence[TargetOutcome]) -> dict[tuple[str, int], float]:
    return {
        (p.model, p.concurrency): p.result.infer_per_s
        for o in outcomes
        for p in o.points
        if p.result is not None and p.tensor_format == "binary"
    }


TABLE_HEADER = (
    f"{'model':<7}{'format':<12}{'conc':>5}{'infer/s':>11}{'p50 ms':>10}{'p99 ms':>10}"
    f"{'vs binary':>10}{'client CPU s':>14}  flags"
)


def format_report(outcomes: Sequence[TargetOutcome], config: PaBenchConfig) -> str:
    binary = binary_rate(outcomes)
    lines = [TABLE_HEADER, "-" * len(TABLE_HEADER)]
    for o in outcomes:
        for p in o.points:
            r = p.result
            flags = "; ".join(point_flags(p, config))
            if r is None:
                figures = f"{'-':>11}{'-':>10}{'-':>10}{'-':>10}{'-':>14}"
            else:
                base = binary.get((p.model, p.concurrency))
                ratio = f"{r.infer_per_s / base:.2f}x" if base else "-"
                figures = (
                    f"{r.infer_per_s:>11,.1f}{r.p50_us / 1e3:>10.3f}{r.p99_us / 1e3:>10.3f}"
                    f"{ratio:>10}{r.client_cpu_s:>14.1f}"
                )
            row = f"{p.model:<7}{p.tensor_format:<12}{p.concurrency:>5}{figures}  {flags}"
            lines.append(row.rstrip())
        lines += [f"  schooner {o.target}: {flag}" for flag in outcome_flags(o)]
    return "\n".join(lines)


def results_body(config: PaBenchConfig, outcomes: Sequence[TargetOutcome]) -> dict[str, object]:
    binary = binary_rate(outcomes)
    points = []
    for o in outcomes:
        for p in o.points:
            base = binary.get((p.model, p.concurrency))
            rate = p.result.infer_per_s / base if p.result is not None and base else None
            points.append({**asdict(p), "throughput_vs_binary": rate, "flags": point_flags(p, config)})
    return {
        "schooner_configs": {name: schooner_config_toml(TARGETS[name], config) for name in config.models},
        "targets": [
            {"target": o.target, "others_cpu_percent_before": o.cpu_busy_percent_before, "error": o.error,
             "stop": asdict(o.stop) if o.stop else None, "flags": outcome_flags(o)}
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
    add_common_flags(parser, repeats=1)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    models = tuple(m for m in args.models.split(",") if m)
    if not models or set(models) - set(TARGETS):
        parser.error(f"--models takes a subset of {','.join(TARGETS)}")
    if args.concurrency:
        try:
            concurrencies = tuple(int(c) for c in args.concurrency.split(","))
        except ValueError:
            parser.error("--concurrency takes comma-separated integers")
    else:
        concurrencies = QUICK_CONCURRENCIES if args.quick else DEFAULT_CONCURRENCIES
    if any(c < 1 for c in concurrencies):
        parser.error("--concurrency values must be at least 1")
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
    ), common


def main(argv: list[str] | None = None) -> int:
    config, common = parse_config(argv)
    try:
        pa = ensure_perf_analyzer()
    except PerfAnalyzerError as exc:
        print(f"perf_analyzer unavailable: {exc}")
        return 1
    writer = ResultWriter("perf-analyzer", asdict(config), {"perf_analyzer": pa.version})
    npoints = len(config.models) * len(config.formats) * len(config.concurrencies)
    example = point_config(TARGETS[config.models[0]], "binary", 1, Path("x"), config)
    print(
        f"perf_analyzer benchmark ({pa.version}): models {', '.join(config.models)}; formats "
        f"{', '.join(config.formats)}; concurrency {config.concurrencies}; {npoints} points"
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
        outcomes = [drive_target(pa, TARGETS[m], config, work_dir, writer) for m in config.models]
    print()
    print(format_report(outcomes, config))
    paths = writer.write(results_body(config, outcomes), publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    failed = any(o.error for o in outcomes) or any(
        p.error for o in outcomes for p in o.points if p.tensor_format != SHM_FORMAT
    )
    return 1 if failed else 0
