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
order the server sees), the result document and busy checks (``benchmarks.harness``). One run per
point (``--repeats`` is not used yet). Nothing here judges a figure: there are no thresholds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.drivers.closed_loop import ClosedPoint
from benchmarks.drivers.wrk import (
    WrkError,
    WrkResult,
    ensure_wrk,
    run_wrk,
    whole_seconds,
    write_bodies,
    wrk_version,
)
from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.machine import wait_until_idle
from benchmarks.harness.metrics import (
    Counts,
    LimitSampler,
    MetricsClient,
    batch_limit,
    counts_of,
    settled,
    time_mean_limit,
)
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.servers import LOOPBACK, ServerStartError
from benchmarks.plots.scheduler import plot_results
from benchmarks.systems import StartContext
from benchmarks.systems.schooner import ModelEntry, schooner_toml, start_schooner
from benchmarks.workloads import WORKLOADS, Workload, make_inputs, request_body, zipf_input_ids
from benchmarks.workloads.models import analytic_batch_size

DEFAULT_DURATION_S = 5.0
QUICK_DURATION_S = 2.0
WARMUP_S = 1.0
DISTINCT_INPUTS_PER_S = 80_000
LATENCY_SLO_MICROS = 100_000
SECTIONS = ("batching", "delay", "cache")
MAX_BATCH_SIZE = 64
INPUT_SHAPE = 16

# batching: a + b·n with n* = floor((0.9·SLO − a) / b) = floor((22.5 − 5) / 0.5) = 35
SYNTHETIC_A_S = 0.005
SYNTHETIC_B_S = 0.0005
SYNTHETIC_SLO_MICROS = 25_000
FIXED_BATCH_SIZES = (1, 8, 32, MAX_BATCH_SIZE)
BATCHING_CONCURRENCIES = (64,)  # saturating: more connections than max_batch_size
SAMPLE_INTERVAL_S = 0.1

# delay: high per-batch overhead, tiny per-row cost
DELAY_A_S = 0.001
DELAY_B_S = 0.000005
BATCH_WAITS_MICROS = (0, 1000, 2000)
DELAY_CONCURRENCIES = (16, 64)

# cache
REPEAT_FRACTIONS = (0.0, 0.5, 0.9)
HOT_INPUTS = 1000  # the inputs that repeat; rank k is drawn with probability ∝ k^-ZIPF_EXPONENT
ZIPF_EXPONENT = 1.1
CACHE_CONCURRENCY = 64

SMALL_BODIES = 20_000  # cache-off apps: inputs cannot matter, so a short file is cycled
WARMUP_BODIES = 20_000
INPUT_SEED = 7000  # every body file's seed is derived from this, so every run sends the same
SETTLE_INTERVAL_S = 0.15
SETTLE_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class SchedulerBenchConfig:
    duration_s: float
    warmup_s: float
    sections: tuple[str, ...]
    wrk_cpus: str | None
    server_cpus: str | None
    sample_interval_s: float = SAMPLE_INTERVAL_S
    max_batch_size: int = MAX_BATCH_SIZE
    synthetic_a_s: float = SYNTHETIC_A_S
    synthetic_b_s: float = SYNTHETIC_B_S
    synthetic_slo_micros: int = SYNTHETIC_SLO_MICROS
    synthetic_n_star: int = analytic_batch_size(
        SYNTHETIC_A_S, SYNTHETIC_B_S, SYNTHETIC_SLO_MICROS / 1e6
    )
    fixed_batch_sizes: tuple[int, ...] = FIXED_BATCH_SIZES
    batching_concurrencies: tuple[int, ...] = BATCHING_CONCURRENCIES
    w2_slo_micros: int = LATENCY_SLO_MICROS
    delay_a_s: float = DELAY_A_S
    delay_b_s: float = DELAY_B_S
    delay_slo_micros: int = LATENCY_SLO_MICROS
    batch_waits_micros: tuple[int, ...] = BATCH_WAITS_MICROS
    delay_concurrencies: tuple[int, ...] = DELAY_CONCURRENCIES
    repeat_fractions: tuple[float, ...] = REPEAT_FRACTIONS
    hot_inputs: int = HOT_INPUTS
    zipf_exponent: float = ZIPF_EXPONENT
    cache_concurrency: int = CACHE_CONCURRENCY
    cache_slo_micros: int = LATENCY_SLO_MICROS
    cache_bodies_per_run: int = 0  # set from the duration: DISTINCT_INPUTS_PER_S per second
    max_wait_idle_s: float = 60.0
    idle_threshold_percent: float = 15.0
    input_seed: int = INPUT_SEED


@dataclass(frozen=True, slots=True)
class Setting:
    """One model linked to one app of the same name: what a row of a table measures."""

    name: str  # model and app name
    section: str
    subject: str  # the model, in words: "synthetic", "w2"
    label: str  # the setting, in words: "AIMD", "fixed 8", "wait 1000 µs", "cache on"
    entry_point: str
    slo_micros: int
    init_args: tuple[tuple[str, float], ...] = ()
    batch_size: int = -1
    batch_wait_micros: int = 0
    cache: bool = False
    max_batch_size: int = MAX_BATCH_SIZE

    @property
    def adaptive(self) -> bool:
        return self.batch_size < 1


@dataclass(frozen=True, slots=True)
class BodiesFile:
    path: Path
    count: int
    repeat_fraction: float | None = None  # None: inputs cannot matter (cache off)
    input_ids: np.ndarray | None = None  # cache section: which input each line carries


@dataclass(slots=True)
class Run:
    """One wrk point against one setting, with what /metrics counted over it."""

    section: str
    setting: str
    subject: str
    label: str
    concurrency: int
    body_count: int
    repeat_fraction: float | None
    result: WrkResult | None = None
    error: str | None = None
    counts: Counts | None = None
    limit_end: float | None = None  # AIMD limit of replica 0 after the run
    limit_mean: float | None = None  # time-average of the sampled limit over the measured run
    # repeats among the bodies wrk sent: the hit rate of a cache that never evicts
    ideal_hit_rate: float | None = None
    samples: list[dict[str, float]] | None = None  # AIMD runs: /metrics every sample_interval_s
    measured_from_s: float | None = None  # sample time at which the measured run started
    measured_to_s: float | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def default_fraction(self) -> float | None:
        c = self.counts
        return c.defaults / c.queries if c and c.queries else None

    @property
    def answered_per_s(self) -> float | None:
        """Requests per second answered by the model (or the cache): not a default."""
        if self.result is None or self.default_fraction is None:
            return None
        return self.result.req_per_s * (1.0 - self.default_fraction)

    @property
    def model_queries_per_s(self) -> float | None:
        """Queries sent to the model per second, answered in time or not."""
        c, r = self.counts, self.result
        return c.model_queries / r.duration_s if c and r and r.duration_s else None

    @property
    def mean_batch_ms(self) -> float | None:
        """Mean batch round trip as the scheduler timed it (what AIMD compares with its target)."""
        c = self.counts
        return 1e3 * c.model_latency_sum_s / c.batches if c and c.batches else None

    @property
    def mean_batch(self) -> float | None:
        c = self.counts
        return c.batch_size_sum / c.batches if c and c.batches else None

    @property
    def hit_rate(self) -> float | None:
        c = self.counts
        looked_up = c.cache_hits + c.cache_misses if c else 0
        return c.cache_hits / looked_up if c and looked_up else None

    def to_json(self) -> dict[str, object]:
        doc = {f: getattr(self, f) for f in self.__slots__}
        doc["result"] = asdict(self.result) if self.result else None
        doc["counts"] = asdict(self.counts) if self.counts else None
        derived = ("default_fraction", "answered_per_s", "model_queries_per_s", "mean_batch_ms")
        for name in (*derived, "mean_batch", "hit_rate"):
            doc[name] = getattr(self, name)
        return doc


@dataclass(slots=True)
class ServerOutcome:
    name: str
    config_toml: str
    cpu_busy_percent_before: float
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # start to stopped, runs included


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


def config_toml(settings: Sequence[Setting]) -> str:
    """A Schooner config with one model and one app per setting, named after it (the one builder)."""
    entries = []
    for st in settings:
        w = Workload(st.name, st.subject, st.entry_point, (INPUT_SHAPE,), make_inputs, init_args=dict(st.init_args))
        entries.append(ModelEntry(st.name, w, st.slo_micros, st.max_batch_size, st.batch_size, st.batch_wait_micros, st.cache))
    return schooner_toml(entries)


# ---------------------------------------------------------------------------------------------
# Request bodies


def plain_bodies(path: Path, count: int, seed: int) -> BodiesFile:
    rows = make_inputs(count, seed)
    return BodiesFile(path, write_bodies(path, (request_body(r) for r in rows)))


def zipf_bodies(
    path: Path, count: int, repeat_fraction: float, config: SchedulerBenchConfig, seed: int
) -> BodiesFile:
    ids = zipf_input_ids(count, repeat_fraction, config.hot_inputs, config.zipf_exponent, seed)
    rows = make_inputs(config.hot_inputs + int((ids >= config.hot_inputs).sum()), seed + 1)
    written = write_bodies(path, (request_body(rows[i]) for i in ids))
    return BodiesFile(path, written, repeat_fraction, ids)


def ideal_hit_rate(ids: np.ndarray, sent: int) -> float | None:
    """Share of the first ``sent`` requests (wrk cycles through the file) that repeat an earlier
    one: the hit rate of a cache that never evicts and answers a repeat only after its first
    occurrence was computed."""
    if sent <= 0:
        return None
    sent_ids = np.resize(ids, sent)  # np.resize repeats the file when wrk wrapped around
    return 1.0 - len(np.unique(sent_ids)) / sent


# ---------------------------------------------------------------------------------------------
# Measuring


class ServerSession:
    """One started server: drives its settings with wrk and reads /metrics around each run."""

    def __init__(
        self, port: int, config: SchedulerBenchConfig, wrk: str, outcome: ServerOutcome
    ) -> None:
        self.port = port
        self.config = config
        self.wrk = wrk
        self.outcome = outcome
        self.client = MetricsClient(port)

    def url(self, setting: Setting) -> str:
        return f"http://{LOOPBACK}:{self.port}/{setting.name}/predict"

    def measure(
        self,
        setting: Setting,
        concurrency: int,
        bodies: BodiesFile,
        warmup: BodiesFile,
        sample: bool = False,
    ) -> Run:
        """Warm-up at ``concurrency``, then one measured wrk run between two settled scrapes."""
        config = self.config
        run = Run(
            setting.section,
            setting.name,
            setting.subject,
            setting.label,
            concurrency,
            bodies.count,
            bodies.repeat_fraction,
        )
        sampler = LimitSampler(self.port, setting.name, config.sample_interval_s) if sample else None
        url = self.url(setting)
        try:
            with sampler or contextlib.nullcontext():
                run_wrk(self.wrk, url, concurrency, config.warmup_s, warmup.path, config.wrk_cpus)
                before = settled(self.client, setting.name)
                run.measured_from_s = sampler.now_s() if sampler else None
                run.result = run_wrk(
                    self.wrk, url, concurrency, config.duration_s, bodies.path, config.wrk_cpus
                )
                run.measured_to_s = sampler.now_s() if sampler else None
                after = settled(self.client, setting.name)
        except WrkError as exc:
            run.error = str(exc)
            run.flags.append(f"wrk failed: {exc}".splitlines()[0])
            return run
        run.counts = counts_of(after, setting.name).minus(counts_of(before, setting.name))
        run.limit_end = batch_limit(after, setting.name)
        if sampler:
            run.samples = sampler.samples
            run.limit_mean = time_mean_limit(
                sampler.samples, run.measured_from_s or 0.0, run.measured_to_s or 0.0
            )
            if sampler.errors:
                run.flags.append(f"{sampler.errors} /metrics samples failed")
        if bodies.input_ids is not None:
            run.ideal_hit_rate = ideal_hit_rate(bodies.input_ids, run.result.requests)
        # Repeats only matter where a cache could answer them.
        distinct = bodies.count if bodies.repeat_fraction is not None else run.result.requests
        run.flags += ClosedPoint(concurrency, distinct, run.result).flags()
        if run.result.requests > distinct:
            run.flags.append(f"inputs repeated ({run.result.requests:,} requests, {distinct:,} distinct)")
        return run

    def close(self) -> None:
        self.client.close()


def run_server(
    name: str,
    settings: Sequence[Setting],
    config: SchedulerBenchConfig,
    wrk: str,
    work_dir: Path,
    drive,
    writer: ResultWriter,
) -> ServerOutcome:
    """Starts a fresh server for ``settings``, calls ``drive(session)``, stops it; failures are
    recorded in the outcome, not raised."""
    began = time.monotonic()
    toml = config_toml(settings)
    check = wait_until_idle(config.max_wait_idle_s, config.idle_threshold_percent)
    writer.check(name, check)
    outcome = ServerOutcome(name, toml, check.others_cpu_percent)
    ctx = StartContext(work_dir, config.server_cpus, LATENCY_SLO_MICROS / 1e3)
    running = None
    try:
        running = start_schooner(name, toml, None, ctx, settings[0].name)
        print(f"{name}: ready on port {running.port} ({check.text()})", flush=True)
        session = ServerSession(running.port, config, wrk, outcome)
        try:
            drive(session)
        finally:
            session.close()
    except (ServerStartError, WrkError, OSError, RuntimeError, http.client.HTTPException) as exc:
        outcome.error = str(exc)
        print(f"{name}: FAILED: {exc}", flush=True)
    finally:
        if running is not None:
            stop = running.stop()
            if stop.killed or stop.leftover_pids:
                outcome.flags.append(f"stop: killed {stop.killed}, leftovers {stop.leftover_pids}")
    outcome.wall_s = time.monotonic() - began
    print(f"{name}: stopped, {outcome.wall_s:.0f} s from start to stopped", flush=True)
    return outcome


def describe_run(run: Run) -> str:
    if run.result is None:
        return f"{run.setting} c={run.concurrency}: FAILED"
    r = run.result
    text = f"{run.setting} c={run.concurrency}: {r.req_per_s:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms"
    if run.default_fraction:
        text += f", {100 * run.default_fraction:.1f}% defaults"
    if run.mean_batch:
        text += f", mean batch {run.mean_batch:.1f}"
    if run.hit_rate is not None:
        text += f", hit rate {100 * run.hit_rate:.1f}%"
    return text


def run_batching(
    config: SchedulerBenchConfig, wrk: str, work_dir: Path, bodies: BodiesFile, warmup: BodiesFile, writer: ResultWriter
) -> list[ServerOutcome]:
    outcomes = []
    for name, settings in batching_settings(config).items():

        def drive(session: ServerSession, settings: list[Setting] = settings) -> None:
            for c in config.batching_concurrencies:
                for s in settings:
                    run = session.measure(s, c, bodies, warmup, sample=s.adaptive)
                    session.outcome.runs.append(run)
                    print("  " + describe_run(run), flush=True)

        outcomes.append(run_server(name, settings, config, wrk, work_dir, drive, writer))
    return outcomes


def run_delay(
    config: SchedulerBenchConfig, wrk: str, work_dir: Path, bodies: BodiesFile, warmup: BodiesFile, writer: ResultWriter
) -> list[ServerOutcome]:
    settings = delay_settings(config)

    def drive(session: ServerSession) -> None:
        for s in settings:
            for c in config.delay_concurrencies:
                run = session.measure(s, c, bodies, warmup)
                session.outcome.runs.append(run)
                print("  " + describe_run(run), flush=True)

    return [run_server("delay", settings, config, wrk, work_dir, drive, writer)]


def run_cache(
    config: SchedulerBenchConfig, wrk: str, work_dir: Path, warmup: BodiesFile, writer: ResultWriter
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

    return [run_server("cache", settings, config, wrk, work_dir, drive, writer)]


# ---------------------------------------------------------------------------------------------
# Report


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def fmt_ratio(value: float | None, width: int) -> str:
    return f"{'-' if value is None else f'{value:.2f}x':>{width}}"


def fmt_percent(fraction: float | None, width: int) -> str:
    return f"{'-' if fraction is None else f'{100 * fraction:.1f}%':>{width}}"


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def all_runs(outcomes: Iterable[ServerOutcome], section: str) -> list[Run]:
    return [r for o in outcomes for r in o.runs if r.section == section]


def best_fixed(runs: Sequence[Run]) -> Run | None:
    """The fixed batch size with the most answers per second that were not defaults."""
    fixed = [r for r in runs if r.label != "AIMD" and r.answered_per_s is not None]
    return max(fixed, key=lambda r: r.answered_per_s or 0.0, default=None)


def batching_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> list[str]:
    runs = all_runs(outcomes, "batching")
    if not runs:
        return []
    header = (
        f"{'model':<10}{'conc':>5}  {'setting':<10}{'req/s':>8}{'answered/s':>11}{'default%':>9}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'model q/s':>10}{'batch':>7}{'batch ms':>9}{'limit':>7}"
        f"{'answered/s vs best fixed':>26}  flags"
    )
    concurrencies = ",".join(map(str, config.batching_concurrencies))
    lines = [
        f"1. AIMD vs fixed batch sizes, closed loop c={concurrencies}, "
        f"max_batch_size {config.max_batch_size}, cache off",
        f"   synthetic: sleeps a + b·n, a = {1e3 * config.synthetic_a_s:g} ms, "
        f"b = {1e3 * config.synthetic_b_s:g} ms, SLO {config.synthetic_slo_micros / 1e3:g} ms: "
        f"n* = floor((0.9·SLO − a)/b) = {config.synthetic_n_star}; "
        f"w2: torch MLP, SLO {config.w2_slo_micros / 1e3:g} ms",
        "   answered/s = req/s × (1 − default%): answers computed by the model within the SLO;",
        "   model q/s: queries the model computed per second (late ones included); batch: mean "
        "queries per batch; batch ms: mean batch round trip; limit: AIMD limit, time-averaged "
        "over the measured run",
        header,
        "-" * len(header),
    ]
    groups = dict.fromkeys((r.subject, r.concurrency) for r in runs)
    for subject, c in groups:
        group = [r for r in runs if (r.subject, r.concurrency) == (subject, c)]
        best = best_fixed(group)
        for r in group:
            res = r.result
            lines.append(
                (
                    f"{subject:<10}{c:>5}  {r.label:<10}"
                    + fmt(res.req_per_s if res else None, ",.0f", 8)
                    + fmt(r.answered_per_s, ",.0f", 11)
                    + fmt(percent(r.default_fraction), ".1f", 9)
                    + fmt(res.p50_ms if res else None, ".2f", 8)
                    + fmt(res.p99_ms if res else None, ".2f", 8)
                    + fmt(r.model_queries_per_s, ",.0f", 10)
                    + fmt(r.mean_batch, ".1f", 7)
                    + fmt(r.mean_batch_ms, ".2f", 9)
                    + fmt(r.limit_mean, ".1f", 7)
                    + fmt_ratio(ratio(r.answered_per_s, best.answered_per_s if best else None), 26)
                    + "  "
                    + "; ".join(r.flags)
                ).rstrip()
            )
        aimd = next((r for r in group if r.label == "AIMD" and r.result), None)
        if aimd and best and best.result:
            lines.append(
                f"  {subject} c={c}: AIMD vs best fixed ({best.label}): answered/s "
                f"{fmt_ratio(ratio(aimd.answered_per_s, best.answered_per_s), 0)}, req/s "
                f"{fmt_ratio(ratio(aimd.result.req_per_s, best.result.req_per_s), 0)}, p50 "
                f"{fmt_ratio(ratio(aimd.result.p50_ms, best.result.p50_ms), 0)}, p99 "
                f"{fmt_ratio(ratio(aimd.result.p99_ms, best.result.p99_ms), 0)}; default% "
                f"{fmt(percent(aimd.default_fraction), '.1f', 0)} vs "
                f"{fmt(percent(best.default_fraction), '.1f', 0)}"
            )
        if subject == "synthetic" and aimd:
            lines.append(
                f"  synthetic c={c}: AIMD limit {fmt(aimd.limit_mean, '.1f', 0)} (time-average), "
                f"mean batch sent {fmt(aimd.mean_batch, '.1f', 0)}, analytic n* "
                f"{config.synthetic_n_star}"
            )
    return lines


def delay_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> list[str]:
    runs = all_runs(outcomes, "delay")
    if not runs:
        return []
    header = (
        f"{'conc':>5}{'wait µs':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'mean batch':>12}"
        f"{'limit end':>11}{'default%':>10}{'req/s vs 0':>12}{'p50 vs 0':>10}{'p99 vs 0':>10}  flags"
    )
    lines = [
        f"2. Delayed batching: model sleeps a + b·n, a = {1e3 * config.delay_a_s:g} ms, "
        f"b = {1e6 * config.delay_b_s:g} µs; AIMD on, SLO {config.delay_slo_micros / 1e3:g} ms, "
        "cache off; closed loop",
        header,
        "-" * len(header),
    ]
    for c in config.delay_concurrencies:
        at_c = [r for r in runs if r.concurrency == c]
        base = next((r for r in at_c if r.setting == "wait-0" and r.result), None)
        for r in at_c:
            res = r.result
            wait_us = r.setting.removeprefix("wait-")
            b = base.result if base else None
            lines.append(
                (
                    f"{c:>5}{wait_us:>9}"
                    + fmt(res.req_per_s if res else None, ",.0f", 9)
                    + fmt(res.p50_ms if res else None, ".2f", 9)
                    + fmt(res.p99_ms if res else None, ".2f", 9)
                    + fmt(r.mean_batch, ".1f", 12)
                    + fmt(r.limit_end, ".0f", 11)
                    + fmt(percent(r.default_fraction), ".1f", 10)
                    + fmt_ratio(ratio(res.req_per_s, b.req_per_s) if res and b else None, 12)
                    + fmt_ratio(ratio(res.p50_ms, b.p50_ms) if res and b else None, 10)
                    + fmt_ratio(ratio(res.p99_ms, b.p99_ms) if res and b else None, 10)
                    + "  "
                    + "; ".join(r.flags)
                ).rstrip()
            )
    return lines


def cache_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> list[str]:
    runs = all_runs(outcomes, "cache")
    if not runs:
        return []
    header = (
        f"{'repeats':>8}{'cache':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'hit rate':>10}"
        f"{'ideal hits':>12}{'model q/s':>11}{'req/s on/off':>14}{'p50 on/off':>12}{'p99 on/off':>12}  flags"
    )
    lines = [
        f"3. Prediction cache: W2 (torch MLP), AIMD, SLO {config.cache_slo_micros / 1e3:g} ms, "
        f"closed loop c={config.cache_concurrency}; repeats drawn Zipf(s={config.zipf_exponent:g}) "
        f"from {config.hot_inputs:,} hot inputs, the rest sent once; same bodies for on and off",
        "   ideal hits: repeats among the bodies wrk sent (a cache that never evicts); "
        "model q/s: queries that reached the model per second",
        header,
        "-" * len(header),
    ]
    for fraction in config.repeat_fractions:
        at = [r for r in runs if r.repeat_fraction == fraction]
        off = next((r for r in at if r.label == "cache off" and r.result), None)
        for r in at:
            res = r.result
            o = off.result if off and r.label == "cache on" else None
            model_qps = (
                r.counts.model_queries / res.duration_s
                if r.counts and res and res.duration_s
                else None
            )
            lines.append(
                (
                    f"{round(100 * fraction):>7}%{r.label.removeprefix('cache '):>7}"
                    + fmt(res.req_per_s if res else None, ",.0f", 9)
                    + fmt(res.p50_ms if res else None, ".2f", 9)
                    + fmt(res.p99_ms if res else None, ".2f", 9)
                    + fmt_percent(None if r.label == "cache off" else r.hit_rate, 10)
                    + fmt_percent(r.ideal_hit_rate, 12)
                    + fmt(model_qps, ",.0f", 11)
                    + fmt_ratio(ratio(res.req_per_s, o.req_per_s) if res and o else None, 14)
                    + fmt_ratio(ratio(res.p50_ms, o.p50_ms) if res and o else None, 12)
                    + fmt_ratio(ratio(res.p99_ms, o.p99_ms) if res and o else None, 12)
                    + "  "
                    + "; ".join(r.flags)
                ).rstrip()
            )
    return lines


def format_report(outcomes: Sequence[ServerOutcome], config: SchedulerBenchConfig) -> str:
    blocks = [
        batching_report(outcomes, config),
        delay_report(outcomes, config),
        cache_report(outcomes, config),
    ]
    lines: list[str] = []
    for block in blocks:
        if block:
            lines += [*block, ""]
    for o in outcomes:
        lines += [f"server {o.name}: {flag}" for flag in o.flags]
    busy = ", ".join(f"{o.name} {o.cpu_busy_percent_before:.0f}%" for o in outcomes)
    lines.append(f"other processes' CPU (% of one CPU) just before each server started: {busy}")
    return "\n".join(lines).rstrip()


def results_document(outcomes: Sequence[ServerOutcome], report: str) -> dict[str, object]:
    return {
        "servers": [
            {"name": o.name, "config_toml": o.config_toml, "others_cpu_percent_before": o.cpu_busy_percent_before,
             "error": o.error, "flags": o.flags, "wall_s": o.wall_s}
            for o in outcomes
        ],
        "runs": [r.to_json() for o in outcomes for r in o.runs],
        "report": report,
    }


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
    add_common_flags(parser, repeats=1)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    sections = tuple(s for s in args.sections.split(",") if s)
    if not sections or set(sections) - set(SECTIONS):
        parser.error(f"--sections takes a subset of {','.join(SECTIONS)}")
    try:
        batching_concurrencies = tuple(int(c) for c in args.batching_concurrency.split(","))
    except ValueError:
        parser.error("--batching-concurrency takes comma-separated integers")
    if any(c < 1 for c in batching_concurrencies):
        parser.error("--batching-concurrency values must be at least 1")
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
    ), common


def main(argv: list[str] | None = None) -> int:
    config, common = parse_config(argv)
    wrk = ensure_wrk()
    writer = ResultWriter("scheduler", asdict(config), {"wrk": wrk_version(wrk)})
    print(
        f"Schooner scheduler benchmark: sections {', '.join(config.sections)}; {config.duration_s:g} s "
        f"per point after a {config.warmup_s:g} s warm-up at the same concurrency; one server per "
        f"section (per model for batching), its settings driven one after the other"
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
        if "batching" in config.sections:
            outcomes += run_batching(config, wrk, work_dir, small, warmup, writer)
        if "delay" in config.sections:
            outcomes += run_delay(config, wrk, work_dir, small, warmup, writer)
        if "cache" in config.sections:
            outcomes += run_cache(config, wrk, work_dir, warmup, writer)
    report = format_report(outcomes, config)
    print()
    print(report)
    paths = writer.write(results_document(outcomes, report), publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    for line in plot_results(writer.document(results_document(outcomes, report)), paths[0].with_suffix("")):
        print(line)
    return 1 if any(o.error for o in outcomes) else 0
