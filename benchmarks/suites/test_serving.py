"""The serving suite's cost summaries (CPU per query by role, the added p50, time per stage), its
printed summary with and without ``--variant`` systems, and the ``--variant`` flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.drivers.closed_loop import ClosedPoint, TargetRun
from benchmarks.drivers.wrk import WrkResult
from benchmarks.harness.cli import variant_arg
from benchmarks.harness.metrics import STAGES
from benchmarks.harness.stats import Spread
from benchmarks.suites import serving
from benchmarks.suites.serving_costs import (
    added_p50,
    cost_report,
    cpu_goal,
    cpu_summary,
    stage_summary,
)
from benchmarks.systems import RunningSystem, StartContext
from benchmarks.systems import schooner as schooner_system
from benchmarks.systems.schooner import SchoonerVariant, server_lines
from benchmarks.workloads import WORKLOADS


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



# ---------------------------------------------------------------------------------------------
# The printed summary, without and with --variant systems


def suite_runs(variants: tuple[str, ...] = ()) -> list[TargetRun]:
    """What the suite's loop returns: inline, schooner (+ variants) on w1 and w2, then the demo; 3 repeats.
    System k runs at (4000 + 300 k) req/s × 1.1^repeat-ish (inline 5000), p50 0.25 + 0.01 (k + repeat) ms."""
    out = []
    for i in range(3):
        for w, scale in (("w1", 1.0), ("w2", 0.5)):
            for k, s in enumerate(("inline", "schooner", *variants)):
                r = TargetRun(s, w, i)
                for c in (1, 64):
                    rate = scale * (5000.0 if s == "inline" else 4000.0 + 300.0 * k) * (1 + 0.1 * i) * (2 if c == 64 else 1)
                    p50 = (0.2 if s == "inline" else 0.25 + 0.01 * k + 0.01 * i) * (5 if c == 64 else 1)
                    obs: dict[str, object] = {} if s == "inline" else {"cpu_us_per_query": {
                        "frontend": 20.0 + k + i, "scheduler": 10.0 + k, "model": 8.0, "supervisor": 0.0, "other": 0.0,
                        "total": 38.0 + 2 * k + i}}
                    if c == 1 and s != "inline":
                        obs["stage_us"] = {"submit": 10.0 + i, "queue": 5.0 + k, "model": 20.0, "return": 4.0, "deliver": 11.0}
                    r.points.append(ClosedPoint(c, 10, wrk(c, p50, rate), observed=obs))
                out.append(r)
        demo = TargetRun("demo", "digits", i)
        demo.points = [ClosedPoint(c, 10, wrk(c, 0.3, 3000.0 + i), observed={"cpu_us_per_query": None}) for c in (1, 64)]
        out.append(demo)
    return out


# What `python -m benchmarks serving` printed for these runs before --variant existed (kept verbatim).
PLAIN = """
| workload | c | inline req/s | inline p50 / p99 ms | schooner req/s | schooner p50 / p99 ms | schooner / inline |
|---|---|---|---|---|---|---|
| w1 | 1 | 5,500 (5,000–6,000) | 0.200 / 0.200 | 4,730 (4,300–5,160) | 0.270 / 0.270 | 0.86× (0.86–0.86) |
| w1 | 64 | 11,000 (10,000–12,000) | 1.000 / 1.000 | 9,460 (8,600–10,320) | 1.350 / 1.350 | 0.86× (0.86–0.86) |
| w2 | 1 | 2,750 (2,500–3,000) | 0.200 / 0.200 | 2,365 (2,150–2,580) | 0.270 / 0.270 | 0.86× (0.86–0.86) |
| w2 | 64 | 5,500 (5,000–6,000) | 1.000 / 1.000 | 4,730 (4,300–5,160) | 1.350 / 1.350 | 0.86× (0.86–0.86) |

demo (digits, inputs repeat): c=1 3,001 (3,000–3,002) req/s, c=64 3,001 (3,000–3,002) req/s

Schooner CPU per query, µs (user + system of the supervisor and every descendant, read just before and after each wrk run, / requests completed; frontends and model replicas summed):
| workload | c | req/s | frontend | scheduler | model | supervisor | total |
|---|---|---|---|---|---|---|---|
| w1 | 1 | 4,730 (4,300–5,160) | 22.0 (21.0–23.0) | 11.0 (11.0–11.0) | 8.0 (8.0–8.0) | 0.0 (0.0–0.0) | 41.0 (40.0–42.0) |
| w1 | 64 | 9,460 (8,600–10,320) | 22.0 (21.0–23.0) | 11.0 (11.0–11.0) | 8.0 (8.0–8.0) | 0.0 (0.0–0.0) | 41.0 (40.0–42.0) |
| w2 | 1 | 2,365 (2,150–2,580) | 22.0 (21.0–23.0) | 11.0 (11.0–11.0) | 8.0 (8.0–8.0) | 0.0 (0.0–0.0) | 41.0 (40.0–42.0) |
| w2 | 64 | 4,730 (4,300–5,160) | 22.0 (21.0–23.0) | 11.0 (11.0–11.0) | 8.0 (8.0–8.0) | 0.0 (0.0–0.0) | 41.0 (40.0–42.0) |

total CPU per query at W1 c=64 (goal <= 20 µs): 41.0 (40.0–42.0) µs, NOT met (median)

Added p50 latency at c=1:
| workload | c | inline p50 µs | schooner p50 µs | added p50 µs (schooner − inline, paired) |
|---|---|---|---|---|
| w1 | 1 | 200.0 (200.0–200.0) | 270.0 (260.0–280.0) | +70.0 (+60.0–+80.0) |
| w2 | 1 | 200.0 (200.0–200.0) | 270.0 (260.0–280.0) | +70.0 (+60.0–+80.0) |

Schooner time per stage at c=1, mean µs (schooner_stage_seconds on GET /metrics, Δ sum / Δ count; - : not exposed by this server):
| workload | c | submit µs | queue µs | model µs | return µs | deliver µs | sum µs | wrk mean µs | wrk p50 µs |
|---|---|---|---|---|---|---|---|---|---|
| w1 | 1 | 11.0 (10.0–12.0) | 6.0 (6.0–6.0) | 20.0 (20.0–20.0) | 4.0 (4.0–4.0) | 11.0 (11.0–11.0) | 52.0 (51.0–53.0) | 297.0 (286.0–308.0) | 270.0 (260.0–280.0) |
| w2 | 1 | 11.0 (10.0–12.0) | 6.0 (6.0–6.0) | 20.0 (20.0–20.0) | 4.0 (4.0–4.0) | 11.0 (11.0–11.0) | 52.0 (51.0–53.0) | 297.0 (286.0–308.0) | 270.0 (260.0–280.0) |"""


def test_the_plain_run_prints_exactly_what_it_printed_before_variants() -> None:
    text, table, costs = serving.summary(suite_runs(), (1, 64))
    assert text == PLAIN
    assert table in text and costs["tables"]["cpu_goal"] in text
    assert list(costs["cpu_goals"]) == ["schooner"] and costs["cpu_goals"]["schooner"] == costs["cpu_goal"]


def test_each_variant_is_a_labelled_row_group_in_every_table() -> None:
    runs = suite_runs(("schooner-spin300", "schooner-onecore"))
    text, table, costs = serving.summary(runs, (1, 64))
    assert table.splitlines()[0] == ("| workload | c | inline req/s | inline p50 / p99 ms | system req/s | "
                                     "system p50 / p99 ms | system / inline |")
    labels = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:]]
    groups = ["w1 (schooner)", "w1 (schooner-spin300)", "w1 (schooner-onecore)",
              "w2 (schooner)", "w2 (schooner-spin300)", "w2 (schooner-onecore)"]
    assert labels == [g for g in groups for _ in (1, 64)]
    # spin300 (k=2): 4,600 × 1.1^i over inline's 5,000 × 1.1^i: 0.92 in every repeat
    assert "| w1 (schooner-spin300) | 1 | 5,500 (5,000–6,000) | 0.200 / 0.200 | 5,060 (4,600–5,520) | 0.280 / 0.280 | 0.92× (0.92–0.92) |" in table
    assert "| w2 (schooner-onecore) | 64 | 5,500 (5,000–6,000) | 1.000 / 1.000 | 5,390 (4,900–5,880) | 1.450 / 1.450 | 0.98× (0.98–0.98) |" in table
    for key in ("cpu", "added_p50", "stages"):
        rows = costs["tables"][key].splitlines()[2:]
        assert {line.split(" | ")[0].lstrip("| ") for line in rows} == set(groups), key
    assert "| w1 (schooner-onecore) | 64 | 10,780 (9,800–11,760) | 24.0 (23.0–25.0) |" in costs["tables"]["cpu"]
    assert "| w2 (schooner-spin300) | 1 | 200.0 (200.0–200.0) | 280.0 (270.0–290.0) | +80.0 (+70.0–+90.0) |" in text
    assert "| w1 (schooner-onecore) | 1 | 11.0 (10.0–12.0) | 8.0 (8.0–8.0) |" in costs["tables"]["stages"]
    assert costs["tables"]["cpu_goal"].splitlines() == [
        f"{s}: total CPU per query at W1 c=64 (goal <= 20 µs): {t} µs, NOT met (median)"
        for s, t in (("schooner", "41.0 (40.0–42.0)"), ("schooner-spin300", "43.0 (42.0–44.0)"),
                     ("schooner-onecore", "45.0 (44.0–46.0)"))]
    assert costs["cpu_goals"]["schooner-onecore"]["total_us"] == {"median": 45.0, "lo": 44.0, "hi": 46.0, "n": 3}
    assert [(r["system"], r["workload"]) for r in costs["added_p50_us"]] == [
        (s, w) for w in ("w1", "w2") for s in ("schooner", "schooner-spin300", "schooner-onecore")]
    assert "demo (digits, inputs repeat): c=1 3,001 (3,000–3,002) req/s" in text


def test_a_variant_ratio_pairs_repeat_i_with_repeat_i() -> None:
    runs = [run("inline", "w1", i, [(1, 0.2, {})]) for i in range(3)]
    for i, rate in enumerate((2000.0, 1000.0, 4000.0)):  # repeat 1 was a slow one for both
        runs[i].points[0].result = wrk(1, 0.2, rate)
        v = run("schooner-spin300", "w1", i, [(1, 0.3, {})])
        v.points[0].result = wrk(1, 0.3, rate * (0.5, 0.8, 0.6)[i])
        runs.append(v)
    runs.append(run("schooner-spin300", "w1", 3, [(1, 0.3, {})]))  # a repeat inline lacks: not paired
    table = serving.report(runs, (1,))
    assert table.splitlines()[2].endswith("| 0.60× (0.50–0.80) |")
    assert serving.report(runs, (1,), subjects=("schooner",)).count("\n") == 1  # no schooner: the header only


def test_the_plan_interleaves_variants_per_workload_and_the_demo_last() -> None:
    registry = {**serving.SYSTEMS, "schooner-spin300": SchoonerVariant("spin300", ("spin_us = 300",))}
    plan = serving.plan(("inline", "schooner", "demo", "schooner-spin300"), [WORKLOADS["w1"], WORKLOADS["w2"]], registry)
    assert [(s, w.name) for s, w in plan] == [
        ("inline", "w1"), ("schooner", "w1"), ("schooner-spin300", "w1"),
        ("inline", "w2"), ("schooner", "w2"), ("schooner-spin300", "w2"), ("demo", "digits")]


def test_a_variant_starts_schooner_with_its_server_lines_on_top_of_schooner_set(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    def fake_start(label, toml, config_path, ctx, settings_app, extra_args=()):
        seen.update(label=label, toml=toml, server=ctx.schooner_server, app=settings_app)
        return RunningSystem("schooner", "http://127.0.0.1:1", lambda: None, {})

    monkeypatch.setattr(schooner_system, "start_schooner", fake_start)
    variant = SchoonerVariant("spin300", ("spin_us = 300", "model_cpus = [1]"))
    ctx = StartContext(tmp_path, None, 100.0, schooner_server=("spin_us = 50", "frontends = 2"))
    variant.start(WORKLOADS["w1"], ctx)
    assert variant.name == "schooner-spin300" and seen["label"] == "schooner-spin300 w1" and seen["app"] == "w1"
    assert seen["server"] == ("spin_us = 300", "frontends = 2", "model_cpus = [1]")
    assert '[[models]]\nname = "w1"' in seen["toml"]
    assert server_lines((), ("spin_us = 300",)) == ("spin_us = 300",)


# ---------------------------------------------------------------------------------------------
# --variant NAME:KEY=VALUE[;KEY=VALUE...]


def test_variant_arg_parses_names_and_toml_values() -> None:
    assert variant_arg("spin300:spin_us=300") == ("spin300", ("spin_us = 300",))
    assert variant_arg("onecore:frontend_cpus=[1];scheduler_cpus=[1];model_cpus=[1]") == (
        "onecore", ("frontend_cpus = [1]", "scheduler_cpus = [1]", "model_cpus = [1]"))
    assert variant_arg('a-1: data_dir = "x;y" ; spin_us=0') == ("a-1", ('data_dir = "x;y"', "spin_us = 0"))


@pytest.mark.parametrize(("text", "reason"), [
    ("spin300", "no ':' after NAME"),
    ("Spin:spin_us=1", "NAME 'Spin' is not"),
    (":spin_us=1", "NAME '' is not"),
    ("spin:", "no KEY=VALUE after ':'"),
    ("spin:spin_us", "'spin_us' is not KEY=VALUE"),
    ("spin:spin_us=", "spin_us: no value"),
    ("spin:spin_us=3;spin_us=4", "spin_us set twice"),
    ("spin:model_cpus=[1", "'[1' is not a TOML value"),
    ("spin:spin_us=300 frontends=2", "is not a TOML value"),
    ("spin:spin_us=3\nfrontends = 2", "a line break in the value"),
])
def test_variant_arg_rejects_bad_forms_naming_the_expected_form(text: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        variant_arg(text)
    assert str(err.value).startswith("takes NAME:KEY=VALUE[;KEY=VALUE...] (e.g. 'spin300:spin_us=300'")
    assert reason in str(err.value)


@pytest.mark.parametrize(("argv", "message"), [
    (["--variant", "spin300"], "argument --variant: takes NAME:KEY=VALUE[;KEY=VALUE...]"),
    (["--variant", "a:spin_us=1", "--variant", "a:spin_us=2"], "--variant: NAME 'a' given twice"),
    (["--config", "my.toml", "--app", "a", "--variant", "a:spin_us=1"], "--variant and --schooner-set need Schooner's generated config"),
])
def test_the_suite_rejects_a_bad_variant_with_a_usage_error(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        serving.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
