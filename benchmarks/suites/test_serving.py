"""The serving suite's cost summaries: CPU per query by role, the added p50, time per stage."""

from __future__ import annotations

from benchmarks.drivers.closed_loop import ClosedPoint, TargetRun
from benchmarks.drivers.wrk import WrkResult
from benchmarks.harness.metrics import STAGES
from benchmarks.harness.stats import Spread
from benchmarks.suites.serving_costs import (
    added_p50,
    cost_report,
    cpu_goal,
    cpu_summary,
    stage_summary,
)


def wrk(c: int, p50_ms: float, rate: float = 1000.0) -> WrkResult:
    return WrkResult(c, int(rate), 1.0, rate, p50_ms, p50_ms, p50_ms, p50_ms, p50_ms * 1.1, 0,
                     dict.fromkeys(("connect", "read", "write", "timeout"), 0), [], "")


def cpu(total: float, other: float = 0.0) -> dict[str, float]:
    return {"frontend": total * 0.5, "scheduler": total * 0.2, "model": total * 0.3 - other, "supervisor": 0.0,
            "other": other, "total": total}


def run(system: str, workload: str, repeat: int, points: list[tuple[int, float, dict[str, object]]]) -> TargetRun:
    r = TargetRun(system, workload, repeat)
    r.points = [ClosedPoint(c, 10, wrk(c, p50), observed=obs) for c, p50, obs in points]
    return r


STAGE_US = {"submit": 10.0, "queue": 5.0, "model": 20.0, "return": 4.0, "deliver": 11.0}


def runs() -> list[TargetRun]:
    out = []
    for i, (added_ms, total) in enumerate([(0.100, 30.0), (0.080, 40.0), (0.120, 35.0)]):
        out.append(run("inline", "w1", i, [(1, 0.200, {}), (64, 2.0, {})]))
        out.append(run("schooner", "w1", i, [
            (1, 0.200 + added_ms, {"cpu_us_per_query": cpu(100.0 + i), "stage_us": {**STAGE_US, "queue": 5.0 + i}}),
            (64, 1.0, {"cpu_us_per_query": cpu(total)}),
        ]))
    out.append(run("demo", "digits", 0, [(1, 0.3, {"cpu_us_per_query": cpu(50.0, other=1.0), "stage_us": dict.fromkeys(STAGES)}),
                                         (64, 1.0, {"cpu_us_per_query": None})]))
    return out


def test_cpu_per_query_is_median_with_min_max_over_repeats_and_checks_the_goal() -> None:
    rows = cpu_summary(runs(), (1, 64))
    assert [(r.system, r.workload, r.concurrency) for r in rows] == [
        ("schooner", "w1", 1), ("schooner", "w1", 64), ("demo", "digits", 1), ("demo", "digits", 64)]
    assert rows[1].cpu_us_per_query["total"] == Spread(35.0, 30.0, 40.0, 3)
    assert rows[1].cpu_us_per_query["frontend"] == Spread(17.5, 15.0, 20.0, 3)
    assert rows[3].cpu_us_per_query["total"] is None  # the demo's c=64 was not measured
    goal = cpu_goal(rows)
    assert goal["met"] is False and goal["total_us"] == Spread(35.0, 30.0, 40.0, 3)
    assert cpu_goal(rows[:1])["met"] is None  # no W1 c=64 in the run


def test_added_p50_is_the_median_of_paired_differences_in_us() -> None:
    (row,) = added_p50(runs())
    assert row.workload == "w1" and row.concurrency == 1
    assert row.added_p50_us is not None
    assert (round(row.added_p50_us.median, 6), round(row.added_p50_us.lo, 6), round(row.added_p50_us.hi, 6)) == (100.0, 80.0, 120.0)
    assert row.inline_p50_us == Spread(200.0, 200.0, 200.0, 3)


def test_stage_means_per_stage_with_their_sum_and_dashes_when_not_exposed() -> None:
    w1, demo = stage_summary(runs())
    assert w1.stage_us["queue"] == Spread(6.0, 5.0, 7.0, 3)
    assert w1.sum_us == Spread(51.0, 50.0, 52.0, 3)
    assert set(demo.stage_us.values()) == {None} and demo.sum_us is None


def test_cost_report_prints_three_tables_and_records_json_with_nulls() -> None:
    text, body = cost_report(runs(), (1, 64))
    assert "| workload | c | req/s | frontend | scheduler | model | supervisor | other | total |" in text
    assert "| w1 | 64 | 1,000 (1,000–1,000) | 17.5 (15.0–20.0) |" in text
    assert "goal <= 20 µs): 35.0 (30.0–40.0) µs, NOT met" in text
    assert "| w1 | 1 | 200.0 (200.0–200.0) | 300.0 (280.0–320.0) | +100.0 (+80.0–+120.0) |" in text
    assert "| digits (demo) | 1 | - | - | - | - | - | - |" in text
    assert body["stage_us"][1]["stage_us"]["submit"] is None
    assert body["cpu_goal"]["total_us"] == {"median": 35.0, "lo": 30.0, "hi": 40.0, "n": 3}
    assert body["added_p50_us"][0]["added_p50_us"]["n"] == 3
    empty_text, empty = cost_report([run("inline", "w1", 0, [(1, 0.2, {})])], (1,))
    assert empty_text == "" and empty["cpu_us_per_query"] == [] and empty["cpu_goal"]["total_us"] is None
