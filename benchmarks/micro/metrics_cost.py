"""What counting costs on the hot path: the scheduler core and the frontend's per-request calls.

``python -m benchmarks scheduler-core [--quick]`` prints, from one run:

1. **Scheduler core, in-process, fake clock.** ``SchedulerCore`` is driven the way the
   scheduler process drives it and the unit tests do (``tests/unit/test_scheduler_rules.py``):
   per batch, submit N queries at ``now``, ``poll(now)`` (one ``SendBatch`` of N), then
   ``batch_done`` 200 µs later and ``poll`` again (N answers). One app, one model with one
   replica and a fixed ``batch_size = N`` (N = 1, 8, 64), with the prediction cache off and on
   (on: every query carries a distinct digest, so every lookup misses and fills the cache;
   1 MiB cache, so it evicts from the first round on, as a long-running server does). Variants:

   The core counts for /metrics into plain records (``engine/core/counters.py``: ints, floats
   and bucket lists in slots, rendered as Prometheus text only when the shell publishes).

   real      the core as it is in this working tree.
   noop      the same class; after construction every counters record it holds
             (``ModelCounters``, ``AppCounters``, ``CacheCounters``, found by walking its
             attributes, models, lists and dicts) is replaced by a ``NullCounters`` whose reads
             give zeros and whose writes do nothing. The attribute lookups are still paid for,
             through ``__getattr__``, which costs more than the real slot add: real − noop
             comes out negative, and only says that the counting is cheaper than a call.
   stripped  ``SchedulerCore`` compiled from ``engine/core/scheduler.py`` with every statement
             of its methods (``__init__`` aside) that touches a counters record removed:
             attributes named ``counters`` or ``app_counters`` (and any ``m_*``), the local
             names bound from them, and the dead stores left behind. real − stripped is what
             the metrics cost.
   nostats   (only when the core keeps Triton statistics, ``_Model.stats``) ``stripped`` with
             every statement touching ``stats`` removed too: stripped − nostats is what the
             statistics cost.

   Before timing, each variant is driven through the same sequence as ``real`` and must give
   the same actions (batches, answers, outputs), and ``noop``/``stripped`` must leave every
   metric at zero (proof that every metric the core touches was replaced or removed). Timing
   interleaves the variants in rotating order, several rounds, garbage collection off inside a
   timed segment (a segment is ~10-30 ms, so many of them run undisturbed). The machine is
   shared and other work only ever adds time, so a variant's per-query time is its fastest
   round and the headline ratio is of fastest rounds; the median of the per-round (paired)
   ratios and their interquartile range are printed beside it.

2. **Frontend, micro-benchmark.** The two metric calls a frontend makes per request:
   ``FrontendProc.count_response(status)`` (on a stand-in object holding the same fields) and
   ``m_duration.observe((time.monotonic_ns() - start_ns) / 1e9)``, against a loop of the same
   shape calling empty functions.

3. **Publishing.** ``render_scheduler_metrics(core.counters)`` (the core's counters as
   Prometheus text) and a frontend's ``MetricSet.render()``: paid once per
   publish (the scheduler at most every 100 ms under load, a frontend every 250 s when
   changed), not per query, so it is reported per call only.

4. **In context (live server).** Schooner serving W1 (``benchmarks.workloads:SumModel``,
   cache off) under wrk at concurrency 16 for a few seconds: the CPU time the scheduler
   process and the frontend process spent per request (psutil, user+system), so that the
   per-query metric costs above can be read as a share of what those processes really spend.
   Skipped with ``--no-live``; a server that does not start is reported, not fatal.

Writes ``benchmarks/results/metrics-overhead-<UTC>.json`` (git sha, host, versions, config,
every round). Reused from the harness: git/host/version records (``benchmarks.harness.results``), server
start/stop (``benchmarks.systems.schooner``), wrk (``benchmarks.drivers.wrk``), inputs
(``benchmarks.workloads``). Nothing here judges a figure: there are no thresholds.
"""

from __future__ import annotations

import argparse
import ast
import gc
import inspect
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

import schooner.engine.core.scheduler as scheduler_module
from benchmarks.drivers.wrk import WrkError, ensure_wrk, run_wrk, write_bodies
from benchmarks.harness.machine import default_client_cpus
from benchmarks.harness.results import ResultWriter
from benchmarks.harness.servers import ServerStartError
from benchmarks.systems import StartContext
from benchmarks.systems.schooner import SchoonerSystem
from benchmarks.workloads import WORKLOADS, make_inputs, request_body
from schooner.engine.core.counters import AppCounters, CacheCounters, ModelCounters
from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.metrics import MetricSet
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
FRONTEND_CALLS = 200_000
QUICK_FRONTEND_CALLS = 50_000
RENDER_CALLS = 200
LIVE_WORKLOAD = "w1"
LIVE_CONCURRENCY = 16
LIVE_DURATION_S = 4
QUICK_LIVE_DURATION_S = 2
LIVE_WARMUP_S = 1
LIVE_INPUT_SEED = 7000
WRK_CPUS_NOTE = "wrk pinned to the first CPU when there are several, as the serving suite does"

COUNTING_ATTRS_METRICS = ("counters", "app_counters")  # plus every attribute named m_*
COUNTING_ATTRS_STATS = ("stats",)
PURE_CALLS = ("len",)  # calls a dead store may contain and still be removed


# ---------------------------------------------------------------------------------------------
# Variants of the core


class NullMetric:
    """Stands in for a frontend Histogram: every update does nothing."""

    __slots__ = ()

    @property
    def value(self) -> int:
        return 0

    @value.setter
    def value(self, v: float) -> None:
        pass

    def inc(self, n: float = 1) -> None:
        pass

    def set(self, v: float) -> None:
        pass

    def observe(self, v: float, n: int = 1) -> None:
        pass


NULL_METRIC = NullMetric()
COUNTER_TYPES = (ModelCounters, AppCounters, CacheCounters)


class NullContainer:
    """Stands in for a record's bucket list or dict: reads give 0, writes do nothing."""

    __slots__ = ()

    def __getitem__(self, key: object) -> int:
        return 0

    def __setitem__(self, key: object, value: object) -> None:
        pass


NULL_CONTAINER = NullContainer()


class NullCounters:
    """Stands in for a counters record: every field reads as 0 (a bucket list or dict as a
    `NullContainer`), every write does nothing."""

    def __init__(self, like: object) -> None:
        containers = {n for n in type(like).__slots__ if isinstance(getattr(like, n), list | dict)}
        object.__setattr__(self, "_containers", containers)

    def __getattr__(self, name: str) -> object:
        return NULL_CONTAINER if name in self._containers else 0

    def __setattr__(self, name: str, value: object) -> None:
        pass


def null_out_metrics(core: SchedulerCore) -> int:
    """Replaces every counters record reachable from ``core``'s attributes; returns how many."""
    replaced = 0
    seen: set[int] = set()

    def swap(value: object) -> object:
        nonlocal replaced
        if isinstance(value, COUNTER_TYPES):
            replaced += 1
            return NullCounters(value)
        if isinstance(value, list):
            value[:] = [swap(v) for v in value]
        elif isinstance(value, dict):
            for k in list(value):
                value[k] = swap(value[k])
        elif hasattr(value, "__slots__") and id(value) not in seen:
            seen.add(id(value))
            visit(value)
        return value

    def visit(obj: object) -> None:
        names = list(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            names += [s for s in getattr(cls, "__slots__", ()) if s not in names]
        for name in names:
            if not hasattr(obj, name):
                continue
            value = getattr(obj, name)
            new = swap(value)
            if new is not value:
                setattr(obj, name, new)

    visit(core)  # reaches the models, the per-app list and the core's SchedulerCounters
    return replaced


@dataclass(frozen=True, slots=True)
class Removed:
    method: str
    line: int
    source: str


class CountingStripper:
    """Removes the statements of SchedulerCore's methods that touch counting objects.

    A statement goes when it mentions a counting attribute (``m_*``/``limit_gauge`` for metrics,
    ``stats`` for statistics) or a local name bound from one; a compound statement whose
    header does, goes whole; a loop or ``if`` left with an empty body goes; then assignments to
    locals nobody reads (and whose right side calls nothing but ``len``) go, until nothing
    changes. ``__init__`` is kept whole, so every object still exists, untouched.
    """

    def __init__(self, counting_attrs: Sequence[str], strip_m_prefix: bool) -> None:
        self.counting_attrs = set(counting_attrs)
        self.strip_m_prefix = strip_m_prefix
        self.removed: list[Removed] = []

    def is_counting_attr(self, name: str) -> bool:
        return name in self.counting_attrs or (self.strip_m_prefix and name.startswith("m_"))

    def mentions(self, node: ast.AST, tainted: set[str]) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and self.is_counting_attr(sub.attr):
                return True
            if isinstance(sub, ast.Name) and sub.id in tainted:
                return True
        return False

    def strip_body(self, body: list[ast.stmt], method: str, tainted: set[str]) -> list[ast.stmt]:
        kept: list[ast.stmt] = []
        for stmt in body:
            if isinstance(stmt, ast.If | ast.For | ast.While | ast.With | ast.Try):
                header = [getattr(stmt, a) for a in ("test", "iter", "target") if hasattr(stmt, a)]
                header += [item.context_expr for item in getattr(stmt, "items", [])]
                if any(self.mentions(h, tainted) for h in header):
                    self.note(stmt, method)
                    continue
                for attr in ("body", "orelse", "finalbody"):
                    if hasattr(stmt, attr):
                        setattr(stmt, attr, self.strip_body(getattr(stmt, attr), method, tainted))
                for handler in getattr(stmt, "handlers", []):
                    handler.body = self.strip_body(handler.body, method, tainted) or [ast.Pass()]
                if not stmt.body and not getattr(stmt, "orelse", None):
                    if isinstance(stmt, ast.If | ast.For):
                        self.note(stmt, method)
                        continue
                if not stmt.body:
                    stmt.body = [ast.Pass()]
                kept.append(stmt)
            elif self.mentions(stmt, tainted):
                if isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign):
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    for t in targets:  # a local bound from a counting object is one too
                        elts = t.elts if isinstance(t, ast.Tuple) else [t]
                        tainted |= {n.id for n in elts if isinstance(n, ast.Name)}
                self.note(stmt, method)
            else:
                kept.append(stmt)
        return kept

    def remove_dead_stores(self, fn: ast.FunctionDef, originally_loaded: set[str]) -> bool:
        """Removes stores to locals that stripping left unread (never ones unread before)."""
        loaded = loaded_names(fn)
        changed = False

        def pure(expr: ast.AST | None) -> bool:
            return expr is None or all(
                not isinstance(n, ast.Call)
                or (isinstance(n.func, ast.Name) and n.func.id in PURE_CALLS)
                for n in ast.walk(expr)
            )

        def dead(stmt: ast.stmt) -> bool:
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AugAssign | ast.AnnAssign):
                targets = [stmt.target]
            else:
                return False
            names = [t for t in targets if isinstance(t, ast.Name)]
            return (
                len(names) == len(targets)
                and all(t.id not in loaded and t.id in originally_loaded for t in names)
                and pure(stmt.value)
            )

        def sweep(body: list[ast.stmt]) -> list[ast.stmt]:
            nonlocal changed
            kept = []
            for stmt in body:
                if dead(stmt):
                    self.note(stmt, fn.name)
                    changed = True
                    continue
                for attr in ("body", "orelse", "finalbody"):
                    if hasattr(stmt, attr) and isinstance(getattr(stmt, attr), list):
                        setattr(stmt, attr, sweep(getattr(stmt, attr)))
                if isinstance(stmt, ast.If | ast.For) and not stmt.body and not stmt.orelse:
                    self.note(stmt, fn.name)
                    changed = True
                    continue
                if hasattr(stmt, "body") and isinstance(stmt.body, list) and not stmt.body:
                    stmt.body = [ast.Pass()]
                kept.append(stmt)
            return kept

        fn.body = sweep(fn.body) or [ast.Pass()]
        return changed

    def note(self, stmt: ast.stmt, method: str) -> None:
        text = ast.unparse(stmt).splitlines()
        source = text[0] + (" ..." if len(text) > 1 else "")
        self.removed.append(Removed(method, stmt.lineno, source))

    def transform(self, tree: ast.Module) -> ast.Module:
        core_class = next(
            n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SchedulerCore"
        )
        for fn in core_class.body:
            if not isinstance(fn, ast.FunctionDef) or fn.name == "__init__":
                continue
            originally_loaded = loaded_names(fn)
            fn.body = self.strip_body(fn.body, fn.name, set()) or [ast.Pass()]
            while self.remove_dead_stores(fn, originally_loaded):
                pass
        return ast.fix_missing_locations(tree)


def loaded_names(fn: ast.FunctionDef) -> set[str]:
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def compile_stripped_core(name: str, stripper: CountingStripper) -> type[SchedulerCore]:
    """SchedulerCore from the scheduler module's own source, with ``stripper`` applied."""
    path = inspect.getsourcefile(scheduler_module)
    assert path is not None
    tree = stripper.transform(ast.parse(Path(path).read_text(), filename=path))
    module = types.ModuleType(f"benchmarks._{name}_scheduler")
    module.__file__ = path
    sys.modules[module.__name__] = module  # dataclasses look their module up while processing
    exec(compile(tree, f"{path} ({name})", "exec"), module.__dict__)
    return module.SchedulerCore


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


# ---------------------------------------------------------------------------------------------
# Frontend and publishing


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str
    ns_per_call: float  # median over rounds
    baseline_ns_per_call: float
    rounds: list[tuple[float, float]]

    @property
    def added_ns(self) -> float:
        return self.ns_per_call - self.baseline_ns_per_call


def frontend_stand_in() -> types.SimpleNamespace:
    """The fields FrontendProc.count_response and _complete's observe use, nothing else."""
    metrics = MetricSet()
    return types.SimpleNamespace(
        metrics=metrics,
        m_status={},
        metrics_changed=False,
        _fe_label="0",
        m_duration=metrics.histogram(
            "schooner_http_request_duration_seconds", "Predict requests", frontend="0"
        ),
    )


def time_frontend(calls: int, rounds: int) -> MicroResult:
    from schooner.frontend.server import FrontendProc  # the frontend's own method, not a copy

    count_response = FrontendProc.count_response
    fe = frontend_stand_in()
    monotonic_ns = time.monotonic_ns

    def with_metrics(n: int, start_ns: int) -> None:
        for _ in range(n):
            count_response(fe, 200)
            fe.m_duration.observe((monotonic_ns() - start_ns) / 1e9)

    def empty(self: object, status: int) -> None:
        pass

    null = types.SimpleNamespace(m_duration=NULL_METRIC)

    def without(n: int, start_ns: int) -> None:
        for _ in range(n):
            empty(null, 200)
            null.m_duration.observe(0.0)

    pairs = []
    for _ in range(rounds):
        timed = []
        for fn in (with_metrics, without):
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter_ns()
                fn(calls, monotonic_ns())
                timed.append((time.perf_counter_ns() - t0) / calls)
            finally:
                gc.enable()
        pairs.append((timed[0], timed[1]))
    return MicroResult(
        "frontend count_response + duration observe",
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
        pairs,
    )


def time_render(render: Callable[[], str], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        render()
    return (time.perf_counter_ns() - t0) / calls


# ---------------------------------------------------------------------------------------------
# The live server, for context


@dataclass(slots=True)
class LiveResult:
    workload: str
    concurrency: int
    duration_s: float
    requests: int | None = None
    req_per_s: float | None = None
    scheduler_cpu_ns_per_request: float | None = None
    frontend_cpu_ns_per_request: float | None = None
    model_cpu_ns_per_request: float | None = None
    error: str | None = None


def role_of(process: psutil.Process) -> str | None:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return None
    for role in ("scheduler", "frontend", "model"):
        if f'"role":"{role}"' in cmdline:
            return role
    return None


def cpu_ns(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    out = {}
    for role, procs in processes.items():
        total = 0.0
        for p in procs:
            t = p.cpu_times()
            total += t.user + t.system
        out[role] = total * 1e9
    return out


def measure_live(duration_s: int, work_dir: Path) -> LiveResult:
    """Schooner serving W1 (cache off) under wrk; psutil's CPU time per request of each role."""
    result = LiveResult(LIVE_WORKLOAD, LIVE_CONCURRENCY, duration_s)
    running = None
    try:
        wrk = ensure_wrk()
        bodies = work_dir / "live-bodies.jsonl"
        write_bodies(bodies, (request_body(row) for row in make_inputs(200_000, LIVE_INPUT_SEED)))
        running = SchoonerSystem().start(WORKLOADS[LIVE_WORKLOAD], StartContext(work_dir, None, 100.0))
        url = running.url(WORKLOADS[LIVE_WORKLOAD])
        children = psutil.Process(running.pid).children(recursive=True)
        processes: dict[str, list[psutil.Process]] = {"scheduler": [], "frontend": [], "model": []}
        for child in children:
            role = role_of(child)
            if role is not None:
                processes[role].append(child)
        if not processes["scheduler"] or not processes["frontend"]:
            result.error = f"could not find the scheduler/frontend processes among {len(children)} children"
            return result
        cpus = default_client_cpus()
        run_wrk(wrk, url, LIVE_CONCURRENCY, LIVE_WARMUP_S, bodies, cpus)
        before = cpu_ns(processes)
        wrk_result = run_wrk(wrk, url, LIVE_CONCURRENCY, duration_s, bodies, cpus)
        after = cpu_ns(processes)
        if wrk_result.error_count:
            result.error = f"wrk saw {wrk_result.error_count} errors"
        n = wrk_result.requests
        result.requests = n
        result.req_per_s = wrk_result.req_per_s
        if n:
            result.scheduler_cpu_ns_per_request = (after["scheduler"] - before["scheduler"]) / n
            result.frontend_cpu_ns_per_request = (after["frontend"] - before["frontend"]) / n
            result.model_cpu_ns_per_request = (after["model"] - before["model"]) / n
    except (ServerStartError, WrkError, psutil.Error) as exc:
        result.error = str(exc)
    finally:
        if running is not None:
            running.stop()
    return result


# ---------------------------------------------------------------------------------------------
# Report


def fmt_ratio(c: Comparison) -> str:
    return f"{c.ratio_best:.3f}x {c.ratio_median:.3f}x [{c.ratio_q1:.2f}-{c.ratio_q3:.2f}]"


def core_table(
    comparisons: dict[tuple[Scenario, str], Comparison],
    scenarios: Sequence[Scenario],
    has_stats: bool,
) -> str:
    head = f"{'scenario':<22}{'real':>9}{'noop':>9}{'stripped':>10}"
    head += f"{'nostats':>9}" if has_stats else ""
    head += f"  {'real/noop':<27}{'real/stripped':<27}{'metrics %':>9}"
    head += f"  {'stripped/nostats':<27}{'stats %':>8}" if has_stats else ""
    lines = [
        "scheduler core, ns per query in the fastest round; ratios: of the fastest rounds, then the "
        "median of the per-round ratios [interquartile range]; % from the fastest rounds:",
        head,
        "-" * len(head),
    ]
    for s in scenarios:
        noop = comparisons[(s, "noop")]
        stripped = comparisons[(s, "stripped")]
        row = f"{s.label:<22}{stripped.ns_per_query:>9.0f}{noop.baseline_ns_per_query:>9.0f}{stripped.baseline_ns_per_query:>10.0f}"
        if has_stats:
            row += f"{comparisons[(s, 'stats')].baseline_ns_per_query:>9.0f}"
        row += f"  {fmt_ratio(noop):<27}{fmt_ratio(stripped):<27}{stripped.cost_percent:>8.1f}%"
        if has_stats:
            st = comparisons[(s, "stats")]
            row += f"  {fmt_ratio(st):<27}{st.cost_percent:>7.1f}%"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scheduler-core", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter rounds, for a smoke run"
    )
    parser.add_argument("--no-live", action="store_true", help="skip the live-server context")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/published/scheduler-core.json")
    args = parser.parse_args(argv)
    writer = ResultWriter("scheduler-core", vars(args))
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    per_segment = QUICK_QUERIES_PER_SEGMENT if args.quick else QUERIES_PER_SEGMENT
    scenarios = [Scenario(b, c) for c in (False, True) for b in BATCH_SIZES]

    metrics_stripper = CountingStripper(COUNTING_ATTRS_METRICS, strip_m_prefix=True)
    stripped_class = compile_stripped_core("stripped", metrics_stripper)
    has_stats = any(
        isinstance(n, ast.Attribute) and n.attr == "stats"
        for n in ast.walk(ast.parse(inspect.getsource(scheduler_module.SchedulerCore)))
    )
    variants = [
        Variant("real", lambda s: build_core(SchedulerCore, s), "the core as in this working tree"),
        Variant("noop", lambda s: noop_core(s), "every counters record replaced by NullCounters"),
        Variant(
            "stripped",
            lambda s: build_core(stripped_class, s),
            "metric statements removed from the source",
        ),
    ]
    stats_stripper = None
    if has_stats:
        stats_stripper = CountingStripper(
            COUNTING_ATTRS_METRICS + COUNTING_ATTRS_STATS, strip_m_prefix=True
        )
        nostats_class = compile_stripped_core("nostats", stats_stripper)
        variants.append(
            Variant(
                "nostats",
                lambda s: build_core(nostats_class, s),
                "metric and ModelStats statements removed",
            )
        )

    replaced = null_out_metrics(build_core(SchedulerCore, scenarios[0]))
    print(
        f"Metrics overhead: {psutil.cpu_count()} CPUs, machine {psutil.cpu_percent(interval=0.5):.0f}% busy "
        f"just before; the machine is shared, so figures are noisy: read the ratios and their interquartile ranges."
    )
    print(
        f"scheduler core driven in-process with a fake clock: {rounds} rounds x {per_segment:,} queries "
        f"per variant and scenario, variants interleaved in rotating order, gc off in timed segments"
    )
    print(f"noop: {replaced} counters records replaced per core (one app, one model, one replica)")
    print(
        f"stripped: {len(metrics_stripper.removed)} statements removed from SchedulerCore's methods:"
    )
    for r in metrics_stripper.removed:
        print(f"  {r.method}:{r.line}: {r.source}")
    if stats_stripper is not None:
        extra = [r for r in stats_stripper.removed if r not in metrics_stripper.removed]
        print(
            f"nostats: the core keeps Triton statistics (_Model.stats); {len(extra)} more statements removed:"
        )
        for r in extra:
            print(f"  {r.method}:{r.line}: {r.source}")

    problems = check_variants(variants, scenarios)
    for p in problems:
        print(f"CHECK FAILED: {p}", flush=True)
    if problems:
        print("variants do not do the same work; not timing them")
        return 1
    print(
        f"check: every variant gave the same {CHECK_BATCHES} batches of actions as real, and counted nothing where counting was removed",
        flush=True,
    )

    core_rounds = time_core(variants, scenarios, rounds, per_segment)
    comparisons: dict[tuple[Scenario, str], Comparison] = {}
    for s in scenarios:
        comparisons[(s, "noop")] = compare(core_rounds, s, "real", "noop")
        comparisons[(s, "stripped")] = compare(core_rounds, s, "real", "stripped")
        if has_stats:
            comparisons[(s, "stats")] = compare(core_rounds, s, "stripped", "nostats")
    print()
    print(core_table(comparisons, scenarios, has_stats))

    frontend = time_frontend(QUICK_FRONTEND_CALLS if args.quick else FRONTEND_CALLS, rounds)
    core_for_render = build_core(SchedulerCore, scenarios[-1])
    drive(
        core_for_render, make_queries(scenarios[-1], 1, 640, 0), scenarios[-1].batch_size, 0, None
    )
    render_core_ns = time_render(lambda: render_scheduler_metrics(core_for_render.counters), RENDER_CALLS)
    fe = frontend_stand_in()
    from schooner.frontend.server import FrontendProc

    FrontendProc.count_response(fe, 200)
    fe.m_duration.observe(0.001)
    render_fe_ns = time_render(fe.metrics.render, RENDER_CALLS)
    print()
    print(
        f"frontend per request: count_response(200) + m_duration.observe(...) "
        f"{frontend.ns_per_call:.0f} ns vs {frontend.baseline_ns_per_call:.0f} ns for the same calls to "
        f"empty functions: {frontend.added_ns:+.0f} ns per request "
        f"(median of {rounds} rounds of {QUICK_FRONTEND_CALLS if args.quick else FRONTEND_CALLS:,} calls)"
    )
    print(
        f"publishing (per snapshot, not per query): scheduler core render_scheduler_metrics() {render_core_ns / 1e3:.1f} µs "
        f"(every <= 100 ms under load), frontend {render_fe_ns / 1e3:.1f} µs (every 250 ms when changed)"
    )

    live = None
    if not args.no_live:
        with tempfile.TemporaryDirectory(prefix="schooner-metrics-overhead-") as tmp:
            live = measure_live(QUICK_LIVE_DURATION_S if args.quick else LIVE_DURATION_S, Path(tmp))
        if live.scheduler_cpu_ns_per_request is not None:
            print(
                f"live, for context: Schooner W1 (cache off) under wrk c={live.concurrency} for {live.duration_s} s "
                f"({WRK_CPUS_NOTE}): {live.req_per_s:,.0f} req/s; CPU per request: scheduler process "
                f"{live.scheduler_cpu_ns_per_request / 1e3:.1f} µs, frontend {live.frontend_cpu_ns_per_request / 1e3:.1f} µs, "
                f"model {live.model_cpu_ns_per_request / 1e3:.1f} µs"
                + (f" ({live.error})" if live.error else "")
            )
        else:
            print(f"live, for context: FAILED: {live.error}")

    def per_batch(kind: str, cache: bool, median: bool = False) -> str:
        cs = [comparisons[(s, kind)] for s in scenarios if s.cache == cache]
        return ", ".join(
            f"{c.cost_percent_median if median else c.cost_percent:.0f}% at batch "
            f"{c.scenario.batch_size}"
            for c in cs
        )

    print()
    print(
        f"metrics cost {per_batch('stripped', True)} of the scheduler core's per-query time "
        "(cache on, the default; fastest rounds, real vs metric statements removed)"
    )
    print(
        f"  same from the median of paired rounds: {per_batch('stripped', True, median=True)}; "
        f"cache off: {per_batch('stripped', False)}; "
        f"against no-op stand-ins (which still pay for the calls): {per_batch('noop', True)}"
    )
    added_ns = {
        s.batch_size: comparisons[(s, "stripped")].ns_per_query
        - comparisons[(s, "stripped")].baseline_ns_per_query
        for s in scenarios
        if s.cache
    }
    if live is not None and live.scheduler_cpu_ns_per_request and live.frontend_cpu_ns_per_request:
        sched, front = live.scheduler_cpu_ns_per_request, live.frontend_cpu_ns_per_request
        print(
            "in context (live run): the core's metrics add "
            + ", ".join(
                f"{ns:.0f} ns ({ns / sched * 100:.1f}%) at batch {b}" for b, ns in added_ns.items()
            )
            + f" of the scheduler process's {sched / 1e3:.1f} µs CPU per request; the frontend's "
            f"metric calls {frontend.added_ns:.0f} ns, {frontend.added_ns / front * 100:.1f}% of "
            f"its {front / 1e3:.1f} µs"
        )
    if has_stats:
        print(
            f"Triton statistics (ModelStats) cost {per_batch('stats', True)} of the metric-free "
            f"core's per-query time (cache on; cache off: {per_batch('stats', False)})"
        )

    document = {
        "settings": {
            "rounds": rounds,
            "queries_per_segment": per_segment,
            "batch_sizes": BATCH_SIZES,
            "slo_ns": SLO_NS,
            "model_latency_ns": MODEL_LATENCY_NS,
            "gap_ns": GAP_NS,
            "cache_nbytes": CACHE_NBYTES,
            "check_batches": CHECK_BATCHES,
            "frontend_calls": QUICK_FRONTEND_CALLS if args.quick else FRONTEND_CALLS,
        },
        "variants": {v.name: v.description for v in variants},
        "noop_metric_objects_replaced": replaced,
        "stripped_statements": [asdict(r) for r in metrics_stripper.removed],
        "nostats_statements": [asdict(r) for r in stats_stripper.removed]
        if stats_stripper
        else None,
        "core_rounds": [
            {"scenario": asdict(r.scenario), "round": r.round_index, "ns_per_query": r.ns_per_query}
            for r in core_rounds
        ],
        "core_comparisons": [
            {
                **asdict(c),
                "ratio_best": c.ratio_best,
                "cost_percent": c.cost_percent,
                "cost_percent_median": c.cost_percent_median,
            }
            for c in comparisons.values()
        ],
        "frontend": asdict(frontend) | {"added_ns": frontend.added_ns},
        "render_ns": {"scheduler_core": render_core_ns, "frontend": render_fe_ns},
        "live": asdict(live) if live else None,
    }
    paths = writer.write(document, publish=getattr(args, "publish", False))
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 0


def noop_core(scenario: Scenario) -> SchedulerCore:
    core = build_core(SchedulerCore, scenario)
    null_out_metrics(core)
    return core



