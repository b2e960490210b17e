"""The scheduler's policies measured over HTTP: AIMD vs fixed batch sizes, delayed batching, cache.

``python -m benchmarks scheduler [--quick]`` runs three sections, each comparing settings
side by side on one server started for the purpose (one model and one app per setting, driven
one at a time), and prints one table per section with ratios, then writes one JSON file and PNG
plots under ``benchmarks/results/``:

  batching  AIMD (``batch_size = -1``) vs fixed batch sizes 1, 8, 32, 64 under saturating
            closed-loop load (wrk, c=64), on (a) ``benchmarks.workloads.models:LinearLatencyModel``
            taking a + b·n seconds per batch, whose analytic AIMD batch size n* is known, and
            (b) W2, the torch MLP. The fraction of answers that were the app's default (SLO
            missed) comes from ``schooner_app_defaults_total`` in ``/metrics``, because wrk does
            not read bodies. During every AIMD run ``/metrics`` is sampled every 100 ms and the
            batch limit is plotted over time, with n* drawn for the synthetic model.
  delay     delayed batching: a model with 1 ms per batch and 5 µs per row, AIMD on,
            ``batch_wait_timeout_micros`` 0, 1000, 2000, at c=16 and c=64.
  cache     W2 with 0%, 50%, 90% of requests repeating inputs drawn Zipf-distributed from a
            small hot set (the rest distinct), an app with the cache on vs one with
            ``cache = false``, same load (c=64); the hit rate comes from ``/metrics``.

Shared, not duplicated here: the config builder and server start (``benchmarks.systems.schooner``),
``/metrics`` (``benchmarks.harness.metrics``), wrk (``benchmarks.drivers.wrk``, whose
``wrk_post.lua`` sends a file's bodies in file order, so the Zipf order generated here is the
order the server sees), the result document and busy checks (``benchmarks.harness``).

Repeats: ``--repeats`` (default 3) passes over every section, interleaved (batching, delay, cache,
then again), each on a fresh server; every figure is the median with min–max of its repeats and a
ratio the median of the paired ratios (``benchmarks.suites.scheduler_report``). The settings,
bodies and measurement live in ``benchmarks.suites.scheduler_runs``. Nothing here judges a
figure: there are no thresholds.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.drivers.wrk import ensure_wrk, whole_seconds, wrk_version
from benchmarks.harness.cli import add_common_flags, common_config, csv_ints
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.servers import LOOPBACK
from benchmarks.plots.scheduler import plot_results
from benchmarks.suites.scheduler_report import format_report, results_document
from benchmarks.suites.scheduler_runs import (
    BATCHING_CONCURRENCIES,
    DEFAULT_DURATION_S,
    DISTINCT_INPUTS_PER_S,
    QUICK_DURATION_S,
    SECTIONS,
    SMALL_BODIES,
    WARMUP_BODIES,
    WARMUP_S,
    BodiesFile,
    SchedulerBenchConfig,
    ServerOutcome,
    ServerSession,
    Setting,
    describe_run,
    plain_bodies,
    run_server,
    zipf_bodies,
)
from benchmarks.workloads import WORKLOADS

# ---------------------------------------------------------------------------------------------
# Plan


def batching_settings(config: SchedulerBenchConfig) -> dict[str, list[Setting]]:
    """One server per subject: AIMD first, then each fixed batch size."""
    synthetic = dict(
        entry_point=WORKLOADS["synthetic"].entry_point,
        slo_micros=config.synthetic_slo_micros,
        init_args=(("a_s", config.synthetic_a_s), ("b_s", config.synthetic_b_s)),
    )
    w2 = dict(entry_point=WORKLOADS["w2"].entry_point, slo_micros=config.w2_slo_micros)
    servers = {}
    for subject, prefix, model in (("synthetic", "lin", synthetic), ("w2", "mlp", w2)):
        settings = [Setting(f"{prefix}-aimd", "batching", subject, "AIMD", **model)]
        settings += [
            Setting(f"{prefix}-b{n}", "batching", subject, f"fixed {n}", batch_size=n, **model)
            for n in config.fixed_batch_sizes
        ]
        servers[f"batching-{subject}"] = settings
    return servers


def delay_settings(config: SchedulerBenchConfig) -> list[Setting]:
    return [
        Setting(
            f"wait-{us}",
            "delay",
            "synthetic",
            f"wait {us} µs",
            entry_point=WORKLOADS["synthetic"].entry_point,
            slo_micros=config.delay_slo_micros,
            init_args=(("a_s", config.delay_a_s), ("b_s", config.delay_b_s)),
            batch_wait_micros=us,
        )
        for us in config.batch_waits_micros
    ]


def cache_settings(config: SchedulerBenchConfig) -> list[Setting]:
    w2 = dict(entry_point=WORKLOADS["w2"].entry_point, slo_micros=config.cache_slo_micros)
    return [
        Setting("w2-cache", "cache", "w2", "cache on", cache=True, **w2),
        Setting("w2-nocache", "cache", "w2", "cache off", cache=False, **w2),
    ]


# ---------------------------------------------------------------------------------------------
# Run: one pass over a section, on fresh servers (``repeat`` counts the passes)


def run_batching(
    config: SchedulerBenchConfig, wrk: str, work_dir: Path, bodies: BodiesFile, warmup: BodiesFile,
    writer: ResultWriter, repeat: int,
) -> list[ServerOutcome]:
    outcomes = []
    for name, settings in batching_settings(config).items():

        def drive(session: ServerSession, settings: list[Setting] = settings) -> None:
            for c in config.batching_concurrencies:
                for s in settings:
                    run = session.measure(s, c, bodies, warmup, sample=s.adaptive)
                    session.outcome.runs.append(run)
                    print("  " + describe_run(run), flush=True)

        outcomes.append(run_server(name, settings, config, wrk, work_dir, drive, writer, repeat))
    return outcomes


def run_delay(
    config: SchedulerBenchConfig, wrk: str, work_dir: Path, bodies: BodiesFile, warmup: BodiesFile,
    writer: ResultWriter, repeat: int,
) -> list[ServerOutcome]:
    settings = delay_settings(config)

    def drive(session: ServerSession) -> None:
        for s in settings:
            for c in config.delay_concurrencies:
                run = session.measure(s, c, bodies, warmup)
                session.outcome.runs.append(run)
                print("  " + describe_run(run), flush=True)

    return [run_server("delay", settings, config, wrk, work_dir, drive, writer, repeat)]


def run_cache(
    config: SchedulerBenchConfig, wrk: str, work_dir: Path, warmup: BodiesFile, writer: ResultWriter, repeat: int
) -> list[ServerOutcome]:
    settings = cache_settings(config)

    def drive(session: ServerSession) -> None:
        for k, fraction in enumerate(config.repeat_fractions):
            # a seed per fraction: no input of one file is in another, so runs cannot share hits
            path = work_dir / f"bodies-zipf-{round(100 * fraction)}.jsonl"
            seed = config.input_seed + 100 * (k + 1)
            bodies = zipf_bodies(path, config.cache_bodies_per_run, fraction, config, seed)
            for s in settings:  # the same file for cache on and cache off
                run = session.measure(s, config.cache_concurrency, bodies, warmup)
                session.outcome.runs.append(run)
                print(f"  {round(100 * fraction)}% repeats: " + describe_run(run), flush=True)
            path.unlink()

    return [run_server("cache", settings, config, wrk, work_dir, drive, writer, repeat)]


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_config(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scheduler", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds per measured point (default {DEFAULT_DURATION_S:g}, --quick {QUICK_DURATION_S:g})",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated subset of batching,delay,cache (default: all)",
    )
    parser.add_argument(
        "--batching-concurrency",
        default=",".join(map(str, BATCHING_CONCURRENCIES)),
        help="comma-separated wrk connection counts for the batching section (default 64)",
    )
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    sections = tuple(s for s in args.sections.split(",") if s)
    if not sections or set(sections) - set(SECTIONS):
        parser.error(f"--sections takes a subset of {','.join(SECTIONS)}")
    batching_concurrencies = csv_ints(args.batching_concurrency, parser, "--batching-concurrency")
    duration_s = float(
        whole_seconds(args.duration or (QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S))
    )
    return SchedulerBenchConfig(
        duration_s=duration_s,
        warmup_s=WARMUP_S,
        sections=sections,
        wrk_cpus=common.client_cpus,
        server_cpus=common.server_cpus,
        max_wait_idle_s=common.max_wait_idle_s,
        idle_threshold_percent=common.idle_threshold_percent,
        batching_concurrencies=batching_concurrencies,
        cache_bodies_per_run=int(duration_s * DISTINCT_INPUTS_PER_S),
        repeats=common.repeats,
    ), common


def main(argv: list[str] | None = None) -> int:
    config, common = parse_config(argv)
    wrk = ensure_wrk()
    writer = ResultWriter("scheduler", asdict(config), {"wrk": wrk_version(wrk)})
    print(
        f"Schooner scheduler benchmark: sections {', '.join(config.sections)}; {config.duration_s:g} s "
        f"per point after a {config.warmup_s:g} s warm-up at the same concurrency; one server per "
        f"section (per model for batching), its settings driven one after the other; "
        f"{config.repeats} repeats, interleaved, each on fresh servers"
    )
    print(
        f"load: closed loop, wrk -t1 --latency on CPU {config.wrk_cpus or 'any'}; servers on "
        f"{LOOPBACK}, CPU {config.server_cpus or 'any'}. The machine may be shared: compare the "
        "ratios within one run rather than figures across runs.",
        flush=True,
    )
    outcomes: list[ServerOutcome] = []
    with tempfile.TemporaryDirectory(prefix="schooner-sched-bench-") as tmp:
        work_dir = Path(tmp)
        small = plain_bodies(work_dir / "bodies-small.jsonl", SMALL_BODIES, config.input_seed)
        warmup = plain_bodies(
            work_dir / "bodies-warmup.jsonl", WARMUP_BODIES, config.input_seed + 1
        )
        for repeat in range(config.repeats):
            if "batching" in config.sections:
                outcomes += run_batching(config, wrk, work_dir, small, warmup, writer, repeat)
            if "delay" in config.sections:
                outcomes += run_delay(config, wrk, work_dir, small, warmup, writer, repeat)
            if "cache" in config.sections:
                outcomes += run_cache(config, wrk, work_dir, warmup, writer, repeat)
    report = format_report(outcomes, config, config.repeats)
    print()
    print(report)
    paths = writer.write(results_document(outcomes, report), publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    for line in plot_results(writer.document(results_document(outcomes, report)), paths[0].with_suffix("")):
        print(line)
    return 1 if any(o.error for o in outcomes) else 0
