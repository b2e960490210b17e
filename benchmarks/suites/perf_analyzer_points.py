"""The perf-analyzer suite's targets and measurement: one fresh server, every format × concurrency.

Owns the suite's constants and frozen config (``PaBenchConfig``), the models perf_analyzer drives
(``TARGETS``), one measured point (``Point``: perf_analyzer's result and what Schooner's
``/metrics`` counted over it) and one server's pass over its points (``drive_target``). Used by
``benchmarks.suites.perf_analyzer`` (plan, run, record); never run itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson

from benchmarks.drivers.perf_analyzer import (
    PaPointConfig,
    PaResult,
    PaUnstableError,
    PerfAnalyzer,
    PerfAnalyzerError,
)
from benchmarks.drivers.perf_analyzer import run_perf_analyzer as run_pa
from benchmarks.harness.machine import wait_until_idle
from benchmarks.harness.metrics import MetricsClient, total
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.servers import LOOPBACK, ServerStartError, StopReport, is_ready, log_tail
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
    repeats: int = 1  # passes over every model, each on a fresh server


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
    repeat: int = 0


@dataclass(slots=True)
class TargetOutcome:
    target: str
    cpu_busy_percent_before: float
    repeat: int = 0
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
    csv_path = work_dir / f"{target.name}-{point.tensor_format}-c{point.concurrency}-{point.repeat}.csv"
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
    pa: PerfAnalyzer, target: ModelTarget, config: PaBenchConfig, work_dir: Path, writer: ResultWriter,
    repeat: int = 0,
) -> TargetOutcome:
    """Fresh server, every format × concurrency, stop; failures are recorded, not raised."""
    check = wait_until_idle(config.max_wait_idle_s, config.idle_threshold_percent)
    server = f"schooner {target.name} #{repeat + 1}"
    writer.check(server, check)
    outcome = TargetOutcome(target.name, check.others_cpu_percent, repeat)
    data = work_dir / f"input-data-{target.name}.json"
    steps = write_input_data(target, data)
    ctx = StartContext(work_dir, config.server_cpus, target.latency_slo_micros / 1e3,
                       allow_client_shm=SHM_FORMAT in config.formats)
    running = None
    try:
        running = start_schooner(server, schooner_config_toml(target, config), None, ctx, target.name)
        port = running.port
        print(f"{server}: ready on port {port} ({check.text()}); {steps} input rows, "
              f"{data.stat().st_size:,} bytes of input-data JSON; settings {running.settings}", flush=True)
        warm_up(pa, port, target, data, config, work_dir)
        for concurrency in config.concurrencies:
            for tensor_format in config.formats:
                point = Point(target.name, tensor_format, concurrency, repeat=repeat)
                point.stability_percent = config.stability_percent
                outcome.points.append(point)
                measure_point(pa, port, target, point, data, config, work_dir)
                label = f"{target.name} {tensor_format} c={concurrency} #{repeat + 1}"
                if point.result is not None:
                    print(f"{label}: {describe(point.result)}", flush=True)
                    continue
                print(f"{label}: FAILED: {first_lines(point.error)}", flush=True)
                if not is_ready(port):
                    raise ServerStoppedError(
                        f"{server} stopped answering GET /v2/health/ready after {label} "
                        f"failed; remaining points skipped\n--- server log tail ---\n{log_tail(running.log_path)}"
                    )
    except (ServerStartError, ServerStoppedError, OSError) as exc:
        outcome.error = str(exc)
        print(f"{server}: FAILED: {exc}", flush=True)
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


def error_summary(error: str) -> str:
    """The line of perf_analyzer's output that says what went wrong, else its last line."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    for line in lines[1:]:
        if "error" in line.lower() or "failed" in line.lower() or "unable" in line.lower():
            return line
    return lines[-1] if lines else error
