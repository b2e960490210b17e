"""``make bench``: Schooner end to end over HTTP, against the inline baseline and the model limit.

Owns the benchmark plan and its report. For each system and workload it starts a fresh server
(``benchmarks.server_proc``), warms it up, drives it with wrk at each concurrency
(``benchmarks.wrk_driver``), stops it, and finally prints one table and writes one JSON file
under ``benchmarks/results/``. Nothing here judges a figure: there are no thresholds.

Systems:
  inline    ``benchmarks.inline_server``: one Python process, model run inline, batch of 1 —
            the Python HTTP limit.
  schooner  ``schooner serve --config`` with one app and one model (W1 or W2).
  demo      ``schooner serve`` with no config: the built-in ``digits`` app, 64 floats per query.
Workloads (``benchmarks.workloads``): W1 sums 16 floats; W2 is a torch MLP 16-256-256-10.
The model limit (``benchmarks.model_limit``) is the model alone, in-process, at batch 1..64.

Every system gets the same request bodies: run k at concurrency c sends the rows of
``make_inputs(n, seed)`` for a seed that depends on k only, so a result cache meets no repeat
until a server exceeds ``DISTINCT_INPUTS_PER_S`` req/s (the demo cycles through digits' 1,797 rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import psutil

from benchmarks.model_limit import ModelLimitPoint
from benchmarks.server_proc import (
    LOOPBACK,
    STOP_GRACE_S,
    ServerProc,
    ServerStartError,
    StopReport,
    free_port,
)
from benchmarks.workloads import WORKLOADS, Workload, make_inputs, request_body
from benchmarks.wrk_driver import (
    WrkError,
    WrkResult,
    ensure_wrk,
    run_wrk,
    whole_seconds,
    write_bodies,
    wrk_version,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

SYSTEMS = ("inline", "schooner", "demo")
DEFAULT_CONCURRENCIES = (1, 16, 64)
DEFAULT_DURATION_S = 5.0
QUICK_DURATION_S = 2.0
WARMUP_S = 1.0
MODEL_LIMIT_DURATION_S = 1.0
QUICK_MODEL_LIMIT_DURATION_S = 0.3
DISTINCT_INPUTS_PER_S = 80_000  # request bodies per second of run: more than any system here serves
INPUT_SEED = 1000
MAX_BATCH_SIZE = 64
LATENCY_SLO_MICROS = 100_000
DEMO_APP = "digits"
DIGITS_FAMILY = "digits"
FLOATS_FAMILY = "floats16"
BUSY_SAMPLE_S = 0.5


@dataclass(frozen=True, slots=True)
class BenchConfig:
    duration_s: float
    warmup_s: float
    concurrencies: tuple[int, ...]
    systems: tuple[str, ...]
    model_limit_duration_s: float
    distinct_inputs_per_run: int
    wrk_cpus: str | None  # taskset CPU list for wrk; None: unpinned
    server_cpus: str | None  # taskset CPU list for every server under test; None: unpinned
    wrk_threads: int = 1
    max_batch_size: int = MAX_BATCH_SIZE
    latency_slo_micros: int = LATENCY_SLO_MICROS


@dataclass(frozen=True, slots=True)
class Target:
    """One server to drive: which system, serving which workload under which app name."""

    system: str
    workload: str
    app: str
    input_family: str


@dataclass(frozen=True, slots=True)
class BodiesFile:
    path: Path
    count: int


@dataclass(frozen=True, slots=True)
class Point:
    system: str
    workload: str
    concurrency: int
    distinct_inputs: int
    result: WrkResult | None
    error: str | None = None


@dataclass(slots=True)
class TargetOutcome:
    target: Target
    cpu_busy_percent_before: float  # all CPUs, sampled just before the server starts
    points: list[Point] = field(default_factory=list)
    warmup: WrkResult | None = None
    stop: StopReport | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Plan and inputs


def plan_targets(systems: Sequence[str]) -> list[Target]:
    targets = []
    if "inline" in systems:
        targets += [Target("inline", w, w, FLOATS_FAMILY) for w in WORKLOADS]
    if "schooner" in systems:
        targets += [Target("schooner", w, w, FLOATS_FAMILY) for w in WORKLOADS]
    if "demo" in systems:
        targets.append(Target("demo", DEMO_APP, DEMO_APP, DIGITS_FAMILY))
    return targets


def digits_rows() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data


class RequestInputs:
    """Request-body files in ``directory``, one per (input family, run index), written on first use.

    Run index 0 is the warm-up; measured runs are 1, 2, ... in concurrency order. The same run
    index gives every system the same bodies.
    """

    def __init__(self, directory: Path, rows_per_run: int) -> None:
        self._directory = directory
        self._rows_per_run = rows_per_run
        self._files: dict[tuple[str, int], BodiesFile] = {}

    def bodies(self, family: str, run_index: int) -> BodiesFile:
        key = (family, 0 if family == DIGITS_FAMILY else run_index)
        if key not in self._files:
            path = self._directory / f"bodies-{key[0]}-{key[1]}.jsonl"
            if family == DIGITS_FAMILY:
                rows = digits_rows()
            else:
                rows = make_inputs(self._rows_per_run, INPUT_SEED + run_index)
            count = write_bodies(path, (request_body(row) for row in rows))
            self._files[key] = BodiesFile(path, count)
        return self._files[key]


def schooner_config_toml(workload: Workload, config: BenchConfig) -> str:
    """A Schooner config serving ``workload`` as one model linked to one app of the same name."""
    return f"""\
[[models]]
name = "{workload.name}"
version = "1"
entry_point = "{workload.entry_point}"
input_type = "floats"
input_shape = [16]
max_batch_size = {config.max_batch_size}
replicas = 1
device = "cpu"

[[apps]]
name = "{workload.name}"
input_type = "floats"
input_shape = [16]
latency_slo_micros = {config.latency_slo_micros}
default_output = "-1"
models = ["{workload.name}"]
"""


def server_argv(target: Target, port: int, work_dir: Path, config: BenchConfig) -> list[str]:
    if target.system == "inline":
        inline = [sys.executable, "-m", "benchmarks.inline_server", "--workload", target.workload]
        return inline + ["--port", str(port), "--host", LOOPBACK]
    serve = [sys.executable, "-m", "schooner.engine.cli", "serve"]
    if target.system == "demo":
        return serve + ["--port", str(port)]
    config_path = work_dir / f"schooner-{target.workload}.toml"
    config_path.write_text(schooner_config_toml(WORKLOADS[target.workload], config))
    return serve + ["--config", str(config_path), "--port", str(port)]


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """``argv`` under ``taskset -c cpus`` when given; taskset execs, so the pid stays the server's."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


# ---------------------------------------------------------------------------------------------
# Measuring


def measure_model_limits(config: BenchConfig) -> list[ModelLimitPoint]:
    """Runs benchmarks.model_limit in a child process, so torch stays out of the harness."""
    argv = [sys.executable, "-m", "benchmarks.model_limit", "--json"]
    argv += ["--duration", str(config.model_limit_duration_s)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return [ModelLimitPoint(**raw) for raw in orjson.loads(proc.stdout)]


def describe(result: WrkResult) -> str:
    errors = f", {result.error_count} errors" if result.error_count else ""
    return f"{result.req_per_s:,.0f} req/s, p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms{errors}"


def drive_target(
    target: Target, config: BenchConfig, wrk: str, inputs: RequestInputs, work_dir: Path
) -> TargetOutcome:
    """Fresh server, one warm-up, one wrk run per concurrency, stop; failures are recorded, not raised."""
    # Other work on the machine (a test suite, a build) is the usual cause of noisy figures.
    outcome = TargetOutcome(target, psutil.cpu_percent(interval=BUSY_SAMPLE_S))
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/{target.app}/predict"
    label = f"{target.system} {target.workload}"
    pin = config.wrk_cpus
    server = ServerProc(
        label,
        pinned(server_argv(target, port, work_dir, config), config.server_cpus),
        port,
        REPO_ROOT,
        work_dir / f"{target.system}-{target.workload}.log",
    )
    try:
        with server:
            print(
                f"{label}: ready on port {port} "
                f"(machine {outcome.cpu_busy_percent_before:.0f}% busy just before start)",
                flush=True,
            )
            warmup_bodies = inputs.bodies(target.input_family, 0)
            outcome.warmup = run_wrk(
                wrk, url, max(config.concurrencies), config.warmup_s, warmup_bodies.path, pin
            )
            for run_index, concurrency in enumerate(config.concurrencies, start=1):
                bodies = inputs.bodies(target.input_family, run_index)
                point = Point(target.system, target.workload, concurrency, bodies.count, None)
                try:
                    result = run_wrk(wrk, url, concurrency, config.duration_s, bodies.path, pin)
                except WrkError as exc:
                    outcome.points.append(dataclasses.replace(point, error=str(exc)))
                    print(f"{label} c={concurrency}: wrk failed: {exc}", flush=True)
                    continue
                outcome.points.append(dataclasses.replace(point, result=result))
                print(f"{label} c={concurrency}: {describe(result)}", flush=True)
    except (ServerStartError, WrkError) as exc:
        outcome.error = str(exc)
        print(f"{label}: FAILED: {exc}", flush=True)
    outcome.stop = server.stop_report
    return outcome


# ---------------------------------------------------------------------------------------------
# Report


def inline_rates(outcomes: Iterable[TargetOutcome]) -> dict[tuple[str, int], float]:
    return {
        (p.workload, p.concurrency): p.result.req_per_s
        for o in outcomes
        if o.target.system == "inline"
        for p in o.points
        if p.result is not None
    }


def ratio_to_inline(point: Point, inline: dict[tuple[str, int], float]) -> float | None:
    base = inline.get((point.workload, point.concurrency))
    return point.result.req_per_s / base if point.result is not None and base else None


def point_flags(point: Point) -> list[str]:
    if point.result is None:
        return [f"wrk failed: {point.error}"]
    r = point.result
    flags = []
    if r.non_2xx:
        flags.append(f"{r.non_2xx} non-2xx")
    socket_errors = {k: v for k, v in r.socket_errors.items() if v}
    if socket_errors:
        flags.append("socket errors " + ", ".join(f"{k} {v}" for k, v in socket_errors.items()))
    if r.requests > point.distinct_inputs:
        flags.append(
            f"inputs repeated ({r.requests:,} requests, {point.distinct_inputs:,} distinct)"
        )
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


def added_p50_us(outcomes: Sequence[TargetOutcome]) -> dict[str, float]:
    """Schooner's p50 minus the inline server's p50 at concurrency 1, per workload, in µs."""
    p50 = {
        (o.target.system, p.workload): p.result.p50_ms
        for o in outcomes
        for p in o.points
        if p.result is not None and p.concurrency == 1
    }
    return {
        w: (p50[("schooner", w)] - p50[("inline", w)]) * 1e3
        for w in WORKLOADS
        if ("schooner", w) in p50 and ("inline", w) in p50
    }


TABLE_HEADER = (
    f"{'workload':<9}{'system':<10}{'conc':>5}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
    f"{'vs inline':>10}{'model b1 rows/s':>17}{'model b64 rows/s':>18}  flags"
)


def table_row(
    target: Target,
    point: Point | None,
    ratio: float | None,
    limits: dict[tuple[str, int], float],
    flags: Sequence[str],
) -> str:
    b1, b64 = limits.get((target.workload, 1)), limits.get((target.workload, 64))
    model = f"{b1:>17,.0f}{b64:>18,.0f}" if b1 and b64 else f"{'-':>17}{'-':>18}"
    conc = f"{point.concurrency:>5}" if point else f"{'-':>5}"
    r = point.result if point else None
    if r is None:
        figures = f"{'-':>11}{'-':>9}{'-':>9}{'-':>10}"
    else:
        ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
        figures = f"{r.req_per_s:>11,.0f}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{ratio_text:>10}"
    row = f"{target.workload:<9}{target.system:<10}{conc}{figures}{model}  {'; '.join(flags)}"
    return row.rstrip()


def format_report(outcomes: Sequence[TargetOutcome], limits: Sequence[ModelLimitPoint]) -> str:
    limit = {(p.workload, p.batch_size): p.rows_per_s for p in limits}
    inline = inline_rates(outcomes)
    lines = [TABLE_HEADER, "-" * len(TABLE_HEADER)]
    for outcome in outcomes:
        t = outcome.target
        if not outcome.points:
            lines.append(table_row(t, None, None, limit, outcome_flags(outcome)))
            continue
        for point in outcome.points:
            lines.append(
                table_row(t, point, ratio_to_inline(point, inline), limit, point_flags(point))
            )
        lines += [f"  {t.system} {t.workload}: {flag}" for flag in outcome_flags(outcome)]
    added = added_p50_us(outcomes)
    if added:
        lines.append("")
        lines.append(
            "added p50 latency at concurrency 1, Schooner over inline: "
            + ", ".join(f"{w} {us:+.0f} µs" for w, us in added.items())
        )
    return "\n".join(lines)


def format_model_limits(limits: Sequence[ModelLimitPoint]) -> str:
    lines = ["model limit (in-process, one thread, rows/s by batch size):"]
    for workload in dict.fromkeys(p.workload for p in limits):
        row = ", ".join(
            f"b{p.batch_size} {p.rows_per_s:,.0f}" for p in limits if p.workload == workload
        )
        lines.append(f"  {workload}: {row}")
    return "\n".join(lines)


def git_info() -> dict[str, object]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return proc.stdout.strip()

    status = git("status", "--porcelain")
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def host_info() -> dict[str, object]:
    cpu_model = None
    try:
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            None,
        )
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "memory_bytes": psutil.virtual_memory().total,
        "loadavg_at_end": os.getloadavg(),
    }


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(wrk: str) -> dict[str, str | None]:
    found = {
        name: package_version(name)
        for name in ("numpy", "torch", "uvloop", "httptools", "orjson", "schooner")
    }
    return {"python": platform.python_version(), **found, "wrk": wrk_version(wrk)}


def write_results(
    config: BenchConfig,
    outcomes: Sequence[TargetOutcome],
    limits: Sequence[ModelLimitPoint],
    limits_busy_percent: float | None,
    wrk: str,
    started: datetime,
) -> Path:
    inline = inline_rates(outcomes)
    points = [
        {**asdict(p), "ratio_to_inline": ratio_to_inline(p, inline), "flags": point_flags(p)}
        for o in outcomes
        for p in o.points
    ]
    document = {
        "started_utc": started.isoformat(),
        "git": git_info(),
        "host": host_info(),
        "versions": versions(wrk),
        "config": asdict(config),
        "schooner_configs": {w.name: schooner_config_toml(w, config) for w in WORKLOADS.values()},
        "model_limits": [asdict(p) for p in limits],
        "model_limits_cpu_busy_percent_before": limits_busy_percent,
        "targets": [
            {
                "target": asdict(o.target),
                "cpu_busy_percent_before": o.cpu_busy_percent_before,
                "error": o.error,
                "stop": asdict(o.stop) if o.stop else None,
                "warmup": asdict(o.warmup) if o.warmup else None,
                "flags": outcome_flags(o),
            }
            for o in outcomes
        ],
        "points": points,
        "added_p50_us_at_c1": added_p50_us(outcomes),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return path


# ---------------------------------------------------------------------------------------------
# Entry point


def default_wrk_cpus() -> str | None:
    """The first allowed CPU when there are several, so wrk does not hop between cores."""
    allowed = sorted(os.sched_getaffinity(0))
    return str(allowed[0]) if len(allowed) > 1 else None


def parse_config(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds per point (default {DEFAULT_DURATION_S:g}, --quick {QUICK_DURATION_S:g})",
    )
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, DEFAULT_CONCURRENCIES)),
        help="comma-separated connection counts (default 1,16,64)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of inline,schooner,demo",
    )
    parser.add_argument(
        "--server-cpus",
        help="taskset CPU list for the servers under test, e.g. 1 (default: unpinned)",
    )
    parser.add_argument("--quick", action="store_true", help="short points, for a smoke run")
    args = parser.parse_args(argv)
    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        parser.error(f"--systems takes a subset of {','.join(SYSTEMS)}")
    try:
        concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    except ValueError:
        parser.error("--concurrency takes comma-separated integers")
    if any(c < 1 for c in concurrencies):
        parser.error("--concurrency values must be at least 1 (wrk runs one thread)")
    duration_s = args.duration or (QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S)
    return BenchConfig(
        duration_s=float(whole_seconds(duration_s)),
        warmup_s=WARMUP_S,
        concurrencies=concurrencies,
        systems=systems,
        model_limit_duration_s=QUICK_MODEL_LIMIT_DURATION_S
        if args.quick
        else MODEL_LIMIT_DURATION_S,
        distinct_inputs_per_run=int(whole_seconds(duration_s) * DISTINCT_INPUTS_PER_S),
        wrk_cpus=default_wrk_cpus(),
        server_cpus=args.server_cpus,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    started = datetime.now(UTC)
    wrk = ensure_wrk()
    print(
        f"Schooner benchmark: systems {', '.join(config.systems)}; concurrency "
        f"{config.concurrencies}; {config.duration_s:g} s per point after a {config.warmup_s:g} s "
        f"warm-up; {config.distinct_inputs_per_run:,} distinct request bodies per run, the same "
        f"for every system"
    )
    print(
        f"load: closed loop, wrk -t1 -c<C> --latency on CPU {config.wrk_cpus or 'any'}; "
        f"servers on {LOOPBACK}, CPU {config.server_cpus or 'any'}"
    )
    limits: list[ModelLimitPoint] = []
    limits_busy_percent = None
    if {"inline", "schooner"} & set(config.systems):
        limits_busy_percent = psutil.cpu_percent(interval=BUSY_SAMPLE_S)
        limits = measure_model_limits(config)
        print(format_model_limits(limits), flush=True)
        print(f"  (machine {limits_busy_percent:.0f}% busy just before)", flush=True)
    with tempfile.TemporaryDirectory(prefix="schooner-bench-") as tmp:
        work_dir = Path(tmp)
        inputs = RequestInputs(work_dir, config.distinct_inputs_per_run)
        outcomes = [
            drive_target(t, config, wrk, inputs, work_dir) for t in plan_targets(config.systems)
        ]
        print()
        print(format_report(outcomes, limits))
    path = write_results(config, outcomes, limits, limits_busy_percent, wrk, started)
    print(f"\nresults: {path}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
