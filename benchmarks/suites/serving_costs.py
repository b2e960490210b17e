"""The serving suite's costs of Schooner, read around the same wrk runs (no extra run of a system).

Owns ``observing`` (the ``PointObserver`` the suite hands ``drive`` for every Schooner server:
psutil CPU time of the supervisor and every descendant just before and just after each measured
wrk run; at c=1 also ``GET /metrics``, settled, before and after) and the pure summaries:

* CPU per query: each role group's (frontends summed, the scheduler, model replicas summed, the
  supervisor, anything else) and the total's user + system µs between the two reads, divided by
  the requests wrk completed; median with min-max over the repeats, per workload and c, and the
  issue's goal (total at W1 c=64 ≤ 20 µs) checked against the median.
* The p50 Schooner adds at c=1: Schooner p50 − inline p50, the median of the paired differences
  (repeat i − repeat i) with their min-max.
* Time per stage at c=1 from the engine's ``schooner_stage_seconds`` summary (Δ sum / Δ count);
  "-" (null in the JSON) for a stage the server does not expose.

Every summary covers each Schooner configuration of the run (``schooner`` and the suite's
``--variant`` systems ``schooner-NAME``, see ``schooner_configs``) and the demo where it applies.
A run with variants labels every row by its system ("w1 (schooner-spin300)"); without, rows and
headers are as they always were (Schooner's rows are the bare workload).
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import psutil

from benchmarks.drivers.closed_loop import PointObserver, TargetRun
from benchmarks.drivers.wrk import WrkResult
from benchmarks.harness.metrics import (
    STAGES,
    MetricSample,
    MetricsClient,
    app_counts,
    settled_by,
    stage_counts,
    stage_means_us,
)
from benchmarks.harness.results import markdown_table
from benchmarks.harness.server_cpu import ROLE_GROUPS, TOTAL, CpuSnapshot, cpu_delta_s, snapshot
from benchmarks.harness.stats import Spread, paired_difference_by, spread
from benchmarks.systems import RunningSystem
from benchmarks.workloads import Workload

STAGE_CONCURRENCY = 1
SCHOONER = "schooner"
GOAL_WORKLOAD, GOAL_CONCURRENCY, GOAL_CPU_US = "w1", 64, 20.0  # the goal: total CPU per query
CPU_SPEC = ",.1f"


class SchoonerObserver:
    """CPU of a Schooner server's process tree around every point; its stages around c=1."""

    def __init__(self, pid: int, metrics_port: int, app: str) -> None:
        self.pid, self.metrics_port, self.app = pid, metrics_port, app
        self._cpu: CpuSnapshot | None = None
        self._metrics: dict[MetricSample, float] | None = None
        self._errors: list[str] = []

    def _snapshot(self) -> CpuSnapshot | None:
        try:
            return snapshot(self.pid)
        except psutil.Error as exc:
            self._errors.append(f"cpu: {exc!r}")
            return None

    def _scrape(self) -> dict[MetricSample, float] | None:
        """/metrics once the app's counters and the stage counts stop moving; None on failure."""
        client = MetricsClient(self.metrics_port)
        try:
            return settled_by(client, lambda m: (app_counts(m, self.app), stage_counts(m)))
        except (OSError, RuntimeError, http.client.HTTPException) as exc:
            self._errors.append(f"metrics: {exc!r}")
            return None
        finally:
            client.close()

    def before(self, concurrency: int) -> None:
        self._errors = []
        # /metrics first: a scrape's own CPU stays outside the CPU reads
        self._metrics = self._scrape() if concurrency == STAGE_CONCURRENCY else None
        self._cpu = self._snapshot()

    def after(self, concurrency: int, result: WrkResult | None) -> dict[str, object]:
        cpu_after = self._snapshot()
        out: dict[str, object] = {"requests": result.requests if result else None}
        if self._cpu is not None and cpu_after is not None:
            delta = cpu_delta_s(self._cpu, cpu_after)
            out.update(cpu_s=delta.seconds, processes=delta.processes, processes_started=delta.started,
                       processes_exited=delta.exited, cpu_us_per_query=delta.per_query_us(result.requests) if result else None)
        if concurrency == STAGE_CONCURRENCY:
            metrics_after = self._scrape()
            ok = self._metrics is not None and metrics_after is not None
            out["stage_us"] = stage_means_us(self._metrics, metrics_after) if ok else dict.fromkeys(STAGES)
        if self._errors:
            out["errors"] = list(self._errors)
        return out


def observing(workload: Workload) -> Callable[[RunningSystem], PointObserver | None]:
    """``drive``'s ``observe``: a ``SchoonerObserver`` for a Schooner server (the demo too), else None."""
    def observe(running: RunningSystem) -> PointObserver | None:
        if running.name != "schooner" or running.pid is None or running.metrics_port is None:
            return None
        return SchoonerObserver(running.pid, running.metrics_port, workload.app_name)
    return observe


# ---------------------------------------------------------------------------------------------
# Pure summaries of the runs


def observed(run: TargetRun, concurrency: int, key: str) -> object:
    point = next((p for p in run.points if p.concurrency == concurrency), None)
    return None if point is None else point.observed.get(key)


def _get(mapping: object, key: str) -> float | None:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _text(s: Spread | None, spec: str = CPU_SPEC) -> str:
    return "-" if s is None else s.text(spec)


def _us(ms: float | None) -> float | None:
    return None if ms is None else 1e3 * ms


def _targets(runs: Iterable[TargetRun], key: str, concurrencies: Iterable[int]) -> list[tuple[str, str]]:
    """(system, workload) of the runs that observed ``key`` at any of ``concurrencies``, in run order."""
    cs = tuple(concurrencies)
    return list(dict.fromkeys((r.system, r.workload) for r in runs if any(observed(r, c, key) is not None for c in cs)))


def is_schooner_config(system: str) -> bool:
    """``schooner`` or one of its variants ``schooner-NAME`` (not the demo: another app)."""
    return system == SCHOONER or system.startswith(SCHOONER + "-")


def schooner_configs(runs: Iterable[TargetRun]) -> list[str]:
    """The Schooner configurations the runs hold, in run order."""
    return list(dict.fromkeys(r.system for r in runs if is_schooner_config(r.system)))


def labelled(systems: Iterable[str]) -> bool:
    """Whether rows name their system: when some Schooner configuration is not plain ``schooner``."""
    return any(is_schooner_config(s) and s != SCHOONER for s in systems)


def _label(system: str, workload: str, named: bool = False) -> str:
    return workload if system == SCHOONER and not named else f"{workload} ({system})"


@dataclass(frozen=True, slots=True)
class CpuRow:
    system: str
    workload: str
    concurrency: int
    req_per_s: Spread | None
    cpu_us_per_query: dict[str, Spread | None]  # role group (ROLE_GROUPS) and TOTAL


@dataclass(frozen=True, slots=True)
class AddedP50:
    system: str  # a Schooner configuration
    workload: str
    concurrency: int
    inline_p50_us: Spread | None
    schooner_p50_us: Spread | None
    added_p50_us: Spread | None  # schooner − inline, paired by repeat


@dataclass(frozen=True, slots=True)
class StageRow:
    system: str
    workload: str
    concurrency: int
    stage_us: dict[str, Spread | None]  # STAGES; None: not exposed (or nothing timed)
    sum_us: Spread | None  # of the repeats where every stage was measured
    wrk_mean_us: Spread | None
    wrk_p50_us: Spread | None


def cpu_summary(runs: list[TargetRun], concurrencies: tuple[int, ...]) -> list[CpuRow]:
    """Per Schooner target and c: req/s and each role group's and the total's CPU µs per query."""
    rows = []
    for system, workload in _targets(runs, "cpu_us_per_query", concurrencies):
        group = [r for r in runs if r.system == system and r.workload == workload]
        for c in concurrencies:
            per_query = [observed(r, c, "cpu_us_per_query") for r in group]
            rows.append(CpuRow(system, workload, c, spread([r.rate(c) for r in group]),
                               {role: spread([_get(q, role) for q in per_query]) for role in (*ROLE_GROUPS, TOTAL)}))
    return rows


def cpu_goal(rows: list[CpuRow], system: str = SCHOONER) -> dict[str, object]:
    """The issue's goal: the median total CPU per query of ``system`` at W1 c=64 within 20 µs."""
    row = next((r for r in rows if (r.system, r.workload, r.concurrency) == (system, GOAL_WORKLOAD, GOAL_CONCURRENCY)), None)
    measured = row.cpu_us_per_query[TOTAL] if row else None
    return {"workload": GOAL_WORKLOAD, "concurrency": GOAL_CONCURRENCY, "goal_us": GOAL_CPU_US,
            "total_us": measured, "met": None if measured is None else measured.median <= GOAL_CPU_US}


def goal_line(goal: dict[str, object], system: str | None = None) -> str:
    """The goal's line; prefixed by ``system`` when given (a run with variants)."""
    what = f"{system + ': ' if system else ''}total CPU per query at {GOAL_WORKLOAD.upper()} c={GOAL_CONCURRENCY} (goal <= {GOAL_CPU_US:g} µs)"
    measured = goal["total_us"]
    if not isinstance(measured, Spread):
        return f"{what}: not measured in this run"
    return f"{what}: {measured.text(CPU_SPEC)} µs, {'met' if goal['met'] else 'NOT met'} (median)"


def cpu_table(rows: list[CpuRow], named: bool = False) -> str:
    """µs per query; the "other" column only when some process outside the known roles spent CPU."""
    roles = [g for g in ROLE_GROUPS if g != "other" or any(
        (s := r.cpu_us_per_query.get("other")) is not None and s.hi > 0 for r in rows)]
    head = ["workload", "c", "req/s", *roles, "total"]
    body = [[_label(r.system, r.workload, named), r.concurrency, _text(r.req_per_s, ",.0f"),
             *(_text(r.cpu_us_per_query.get(k)) for k in (*roles, TOTAL))] for r in rows]
    return markdown_table(head, body)


def added_p50(runs: list[TargetRun], concurrency: int = STAGE_CONCURRENCY) -> list[AddedP50]:
    """Per Schooner configuration and workload that inline ran too: each p50 in µs, and the
    configuration's − inline's paired by repeat."""
    out = []
    for system, w in dict.fromkeys((r.system, r.workload) for r in runs if is_schooner_config(r.system)):
        a = {r.repeat: _us(r.latency(concurrency, "p50_ms")) for r in runs if r.system == system and r.workload == w}
        b = {r.repeat: _us(r.latency(concurrency, "p50_ms")) for r in runs if r.system == "inline" and r.workload == w}
        if b:
            out.append(AddedP50(system, w, concurrency, spread(list(b.values())), spread(list(a.values())),
                                paired_difference_by(a, b)))
    return out


def added_p50_table(rows: list[AddedP50], named: bool = False) -> str:
    who = "system" if named else SCHOONER
    head = ["workload", "c", "inline p50 µs", f"{who} p50 µs", f"added p50 µs ({who} − inline, paired)"]
    return markdown_table(head, [[_label(r.system, r.workload, named), r.concurrency, _text(r.inline_p50_us),
                                  _text(r.schooner_p50_us), _text(r.added_p50_us, "+,.1f")] for r in rows])


def stage_summary(runs: list[TargetRun], concurrency: int = STAGE_CONCURRENCY) -> list[StageRow]:
    """Per Schooner target: each stage's mean µs, their sum, wrk's mean and p50 (µs)."""
    rows = []
    for system, workload in _targets(runs, "stage_us", (concurrency,)):
        group = [r for r in runs if r.system == system and r.workload == workload]
        stages = [observed(r, concurrency, "stage_us") for r in group]
        sums = [None if None in (v := [_get(x, s) for s in STAGES]) else sum(v) for x in stages]
        rows.append(StageRow(
            system, workload, concurrency, {s: spread([_get(x, s) for x in stages]) for s in STAGES}, spread(sums),
            spread([_us(r.latency(concurrency, "mean_ms")) for r in group]),
            spread([_us(r.latency(concurrency, "p50_ms")) for r in group]),
        ))
    return rows


def stage_table(rows: list[StageRow], named: bool = False) -> str:
    head = ["workload", "c", *(f"{s} µs" for s in STAGES), "sum µs", "wrk mean µs", "wrk p50 µs"]
    body = [[_label(r.system, r.workload, named), r.concurrency, *(_text(r.stage_us[s]) for s in STAGES),
             _text(r.sum_us), _text(r.wrk_mean_us), _text(r.wrk_p50_us)] for r in rows]
    return markdown_table(head, body)


def cost_report(runs: list[TargetRun], concurrencies: tuple[int, ...]) -> tuple[str, dict[str, object]]:
    """The printed section (three tables and the goal line, one per Schooner configuration when the
    run has variants) and its JSON (null where not measured)."""
    configs = schooner_configs(runs)
    named = labelled(configs)
    cpu = cpu_summary(runs, concurrencies)
    goal = cpu_goal(cpu)
    goals = {s: cpu_goal(cpu, s) for s in configs}
    lines = "\n".join(goal_line(g, s) for s, g in goals.items()) if named else goal_line(goal)
    added = added_p50(runs)
    stages = stage_summary(runs)
    tables = {"cpu": cpu_table(cpu, named) if cpu else None, "cpu_goal": lines if cpu else None,
              "added_p50": added_p50_table(added, named) if added else None,
              "stages": stage_table(stages, named) if stages else None}
    titles = {
        "cpu": "Schooner CPU per query, µs (user + system of the supervisor and every descendant, read just before "
               "and after each wrk run, / requests completed; frontends and model replicas summed):",
        "added_p50": f"Added p50 latency at c={STAGE_CONCURRENCY}:",
        "stages": f"Schooner time per stage at c={STAGE_CONCURRENCY}, mean µs (schooner_stage_seconds on GET /metrics, "
                  "Δ sum / Δ count; - : not exposed by this server):",
    }
    text = "\n\n".join(f"{titles[k]}\n{v}" if k in titles else v for k, v in tables.items() if v)
    def goal_json(g: dict[str, object]) -> dict[str, object]:
        return {**g, "total_us": None if g["total_us"] is None else asdict(g["total_us"])}

    body = {
        "cpu_us_per_query": [asdict(r) for r in cpu],
        "cpu_goal": goal_json(goal),  # plain schooner's
        "cpu_goals": {s: goal_json(g) for s, g in goals.items()},  # every Schooner configuration's
        "added_p50_us": [asdict(r) for r in added],
        "stage_us": [asdict(r) for r in stages],
        "tables": tables,
    }
    return text, body
