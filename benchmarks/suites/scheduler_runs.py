"""The scheduler suite's settings, request bodies and measurement: one server, its runs.

Owns the suite's constants and frozen config (``SchedulerBenchConfig``), what a table row measures
(``Setting``), one wrk run against one setting with what ``/metrics`` counted over it (``Run``),
one started server (``ServerOutcome``, ``ServerSession``, ``run_server``) and the request-body
files (plain, or Zipf repeats for the cache section). Used by ``benchmarks.suites.scheduler``
(plan, run, record) and ``benchmarks.suites.scheduler_report`` (the tables); never run itself.
"""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.drivers.closed_loop import ClosedPoint
from benchmarks.drivers.wrk import WrkError, WrkResult, run_wrk, write_bodies
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
from benchmarks.systems import StartContext
from benchmarks.systems.schooner import ModelEntry, schooner_toml, start_schooner
from benchmarks.workloads import Workload, make_inputs, request_body, zipf_input_ids
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
    repeats: int = 1  # passes over every section, each on fresh servers


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
    repeat: int = 0  # which of --repeats (each on a fresh server)
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
    repeat: int = 0
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # start to stopped, runs included




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
            self.outcome.repeat,
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
    repeat: int = 0,
) -> ServerOutcome:
    """Starts a fresh server for ``settings``, calls ``drive(session)``, stops it; failures are
    recorded in the outcome, not raised."""
    began = time.monotonic()
    toml = config_toml(settings)
    check = wait_until_idle(config.max_wait_idle_s, config.idle_threshold_percent)
    label = f"{name} #{repeat + 1}"
    writer.check(label, check)
    outcome = ServerOutcome(name, toml, check.others_cpu_percent, repeat)
    ctx = StartContext(work_dir, config.server_cpus, LATENCY_SLO_MICROS / 1e3)
    running = None
    try:
        running = start_schooner(name, toml, None, ctx, settings[0].name)
        print(f"{label}: ready on port {running.port} ({check.text()})", flush=True)
        session = ServerSession(running.port, config, wrk, outcome)
        try:
            drive(session)
        finally:
            session.close()
    except (ServerStartError, WrkError, OSError, RuntimeError, http.client.HTTPException) as exc:
        outcome.error = str(exc)
        print(f"{label}: FAILED: {exc}", flush=True)
    finally:
        if running is not None:
            stop = running.stop()
            if stop.killed or stop.leftover_pids:
                outcome.flags.append(f"stop: killed {stop.killed}, leftovers {stop.leftover_pids}")
    outcome.wall_s = time.monotonic() - began
    print(f"{label}: stopped, {outcome.wall_s:.0f} s from start to stopped", flush=True)
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
