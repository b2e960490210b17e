"""Driving the scheduler core with a fake clock: scenarios, the equivalence check, timed rounds.

Owns how ``python -m benchmarks scheduler-core`` drives ``SchedulerCore`` (per batch: submit N
queries, ``poll``, ``batch_done`` 200 µs later, ``poll``), the check that every variant does the
same work as the real core and counts nothing where counting was removed, the interleaved timed
rounds (``time_core``) and their comparison (``Comparison``: fastest rounds, and the median and
interquartile range of the per-round paired ratios).
"""

from __future__ import annotations

import ast
import gc
import inspect
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import schooner.engine.core.scheduler as scheduler_module
from benchmarks.micro.core_variants import (
    COUNTER_TYPES,
    COUNTING_ATTRS_METRICS,
    COUNTING_ATTRS_STATS,
    CountingStripper,
    compile_stripped_core,
    null_out_metrics,
)
from schooner.engine.core.scheduler import AppRoute, ModelSpec, Query, SchedulerCore

MS = 1_000_000
US = 1_000
SLO_NS = 100 * MS
MODEL_LATENCY_NS = 200 * US  # fake time from a batch's send to its result
GAP_NS = 100 * US  # fake time between one batch's answers and the next batch's arrival
BATCH_PERIOD_NS = MODEL_LATENCY_NS + GAP_NS
CACHE_NBYTES = 1 << 20
OUTPUT = b"0.5"
BATCH_SIZES = (1, 8, 64)
QUERIES_PER_SEGMENT = 2_048  # divisible by every batch size; ~10-30 ms per timed segment
QUICK_QUERIES_PER_SEGMENT = 1_024
ROUNDS = 40
QUICK_ROUNDS = 8
CHECK_BATCHES = 300  # batches driven through every variant before timing, for the equivalence check


# ---------------------------------------------------------------------------------------------
# Driving the core


@dataclass(frozen=True, slots=True)
class Scenario:
    batch_size: int
    cache: bool

    @property
    def label(self) -> str:
        return f"batch {self.batch_size}, cache {'on' if self.cache else 'off'}"


@dataclass(slots=True)
class Variant:
    name: str
    make: Callable[[Scenario], SchedulerCore]
    description: str
    cores: dict[Scenario, SchedulerCore] = field(default_factory=dict)
    clocks: dict[Scenario, int] = field(default_factory=dict)
    serial: dict[Scenario, int] = field(default_factory=dict)


def build_core(core_class: type[SchedulerCore], scenario: Scenario) -> SchedulerCore:
    app = AppRoute(0, b"-1", slo_ns=SLO_NS, cache=scenario.cache, name="bench")
    spec = ModelSpec(64, 1, version="1", batch_size=scenario.batch_size, name="bench")
    core = core_class([app], [spec], cache_nbytes=CACHE_NBYTES)
    core.replica_up(0, 0)
    return core


def make_queries(scenario: Scenario, first_id: int, count: int, start_ns: int) -> list[Query]:
    """``count`` fresh queries for `drive` from fake time ``start_ns``, deadlines set (outside the
    timed loop); with the cache on each has its own digest, so every lookup misses."""
    n = scenario.batch_size
    return [
        Query(
            0,
            first_id + i,
            0,
            start_ns + (i // n) * BATCH_PERIOD_NS + SLO_NS,
            payload=b"x",
            digest=(first_id + i).to_bytes(16, "little") if scenario.cache else None,
        )
        for i in range(count)
    ]


def drive(
    core: SchedulerCore, queries: list[Query], batch_size: int, now_ns: int, record: list | None
) -> int:
    """Submit/poll/batch_done/poll per batch of ``batch_size``; returns the fake clock after."""
    outputs = [OUTPUT] * batch_size
    submit, poll, batch_done = core.submit, core.poll, core.batch_done
    for start in range(0, len(queries), batch_size):
        for q in queries[start : start + batch_size]:
            submit(q, now_ns)
        sent = poll(now_ns)
        now_ns += MODEL_LATENCY_NS
        batch_done(0, 0, outputs, None, now_ns)
        answered = poll(now_ns)
        now_ns += GAP_NS
        if record is not None:
            record.append(describe_actions(sent) + describe_actions(answered))
    return now_ns


def describe_actions(actions: list) -> list[tuple]:
    out = []
    for a in actions:
        if type(a).__name__ == "SendBatch":
            out.append(("send", a.model, a.replica, tuple(q.query_id for q in a.queries)))
        else:
            out.append(("answer", a.query.query_id, a.status, a.default, a.output, a.explanation))
    return out


def metric_values(core: SchedulerCore) -> list[float]:
    """Every count the core keeps for /metrics in its counters records (zeros when untouched);
    the cache hit and miss counts are the Triton statistics' (`stats_values`)."""
    values: list[float] = []
    for rec in core.counters.series:
        if isinstance(rec, COUNTER_TYPES):
            for name in type(rec).__slots__:
                v = getattr(rec, name)
                if isinstance(v, list):
                    values += v
                elif isinstance(v, dict):
                    values += v.values()
                elif isinstance(v, int | float):
                    values.append(v)
    return values


def stats_values(core: SchedulerCore) -> list[object]:
    values: list[object] = []
    for m in core.models:
        stats = getattr(m, "stats", None)
        if stats is not None:
            values += [getattr(stats, s) for s in type(stats).__slots__]
    return values


def check_variants(variants: Sequence[Variant], scenarios: Sequence[Scenario]) -> list[str]:
    """Same actions as ``real`` for every variant; nothing counted where counting was removed."""
    problems = []
    for scenario in scenarios:
        expected: list | None = None
        for v in variants:
            core = v.make(scenario)
            baseline_metrics = metric_values(core)
            record: list = []
            queries = make_queries(scenario, 1, CHECK_BATCHES * scenario.batch_size, 0)
            drive(core, queries, scenario.batch_size, 0, record)
            if expected is None:
                expected = record
                if not any(metric_values(core)):
                    problems.append(f"{scenario.label}: real core counted nothing")
            elif record != expected:
                problems.append(f"{scenario.label}: {v.name} answered differently from real")
            if v.name != "real" and metric_values(core) != baseline_metrics:
                problems.append(f"{scenario.label}: {v.name} still updated a metric")
            if v.name == "nostats" and any(x for x in stats_values(core) if x):
                problems.append(f"{scenario.label}: nostats still updated ModelStats")
    return problems


@dataclass(frozen=True, slots=True)
class CoreRound:
    scenario: Scenario
    round_index: int
    ns_per_query: dict[str, float]  # variant -> ns per query in this round


def time_core(
    variants: Sequence[Variant],
    scenarios: Sequence[Scenario],
    rounds: int,
    queries_per_segment: int,
) -> list[CoreRound]:
    results = []
    for scenario in scenarios:
        for v in variants:
            v.cores[scenario] = v.make(scenario)
            v.clocks[scenario] = 0
            v.serial[scenario] = 1
        # one untimed warm-up segment per variant (caches, the deadline heap, the code itself)
        for r in range(-1, rounds):
            order = [variants[(i + max(r, 0)) % len(variants)] for i in range(len(variants))]
            per_variant: dict[str, float] = {}
            for v in order:
                queries = make_queries(
                    scenario, v.serial[scenario], queries_per_segment, v.clocks[scenario]
                )
                v.serial[scenario] += queries_per_segment
                gc.collect()
                gc.disable()
                try:
                    t0 = time.perf_counter_ns()
                    v.clocks[scenario] = drive(
                        v.cores[scenario], queries, scenario.batch_size, v.clocks[scenario], None
                    )
                    elapsed = time.perf_counter_ns() - t0
                finally:
                    gc.enable()
                per_variant[v.name] = elapsed / queries_per_segment
            if r >= 0:
                results.append(CoreRound(scenario, r, per_variant))
        for v in variants:
            v.cores.pop(scenario)
        print(f"  timed {scenario.label}", flush=True)
    return results


@dataclass(frozen=True, slots=True)
class Comparison:
    scenario: Scenario
    variant: str
    baseline: str
    ns_per_query: float  # the fastest round: other work on the machine only ever adds time
    baseline_ns_per_query: float
    ratio_median: float  # variant / baseline, median of the per-round (paired) ratios
    ratio_q1: float  # their interquartile range
    ratio_q3: float

    @property
    def ratio_best(self) -> float:
        return self.ns_per_query / self.baseline_ns_per_query

    @property
    def cost_percent(self) -> float:
        """What ``variant`` has and ``baseline`` lacks, as a share of ``variant``'s time (fastest rounds)."""
        return (1 - 1 / self.ratio_best) * 100

    @property
    def cost_percent_median(self) -> float:
        return (1 - 1 / self.ratio_median) * 100


def compare(
    rounds: Sequence[CoreRound], scenario: Scenario, variant: str, baseline: str
) -> Comparison:
    mine = [r for r in rounds if r.scenario == scenario]
    ratios = [r.ns_per_query[variant] / r.ns_per_query[baseline] for r in mine]
    q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return Comparison(
        scenario,
        variant,
        baseline,
        min(r.ns_per_query[variant] for r in mine),
        min(r.ns_per_query[baseline] for r in mine),
        q2,
        q1,
        q3,
    )


def noop_core(scenario: Scenario) -> SchedulerCore:
    core = build_core(SchedulerCore, scenario)
    null_out_metrics(core)
    return core


def make_variants() -> tuple[list[Variant], CountingStripper, CountingStripper | None]:
    """real, noop, stripped and (when the core keeps ``_Model.stats``) nostats, with the strippers
    that made the last two (what they removed is printed and stored)."""
    metrics_stripper = CountingStripper(COUNTING_ATTRS_METRICS, strip_m_prefix=True)
    stripped_class = compile_stripped_core("stripped", metrics_stripper)
    has_stats = any(
        isinstance(n, ast.Attribute) and n.attr == "stats"
        for n in ast.walk(ast.parse(inspect.getsource(scheduler_module.SchedulerCore)))
    )
    variants = [
        Variant("real", lambda s: build_core(SchedulerCore, s), "the core as in this working tree"),
        Variant("noop", lambda s: noop_core(s), "every counters record replaced by NullCounters"),
        Variant("stripped", lambda s: build_core(stripped_class, s), "metric statements removed from the source"),
    ]
    if not has_stats:
        return variants, metrics_stripper, None
    stats_stripper = CountingStripper(COUNTING_ATTRS_METRICS + COUNTING_ATTRS_STATS, strip_m_prefix=True)
    nostats_class = compile_stripped_core("nostats", stats_stripper)
    variants.append(Variant("nostats", lambda s: build_core(nostats_class, s), "metric and ModelStats statements removed"))
    return variants, metrics_stripper, stats_stripper
