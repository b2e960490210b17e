"""Unit tests of the harness's pure pieces: capacity bisection, spreads, ratio and difference
spreads, CPU lists, the /metrics parser and stage means, CPU per process role.

No clock, no server, no sleep: ``CapacitySearch`` is driven with a pass/fail function of the rate.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.harness.machine import cpu_count, cpu_list, pinned
from benchmarks.harness.metrics import STAGES, parse_metrics, stage_counts, stage_means_us, total
from benchmarks.harness.results import markdown_table, relative_paths, without_bulk
from benchmarks.harness.server_cpu import TOTAL, ProcessCpu, cpu_delta_s, snapshot
from benchmarks.harness.stats import (
    CapacitySearch,
    Spread,
    paired_difference,
    paired_difference_by,
    paired_ratio,
    paired_ratio_by,
    ratio_text,
    spread,
    spread_text,
)


def run_search(search: CapacitySearch, capacity: float) -> CapacitySearch:
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= capacity)
    return search


@pytest.mark.parametrize("capacity", [1_000.0, 1_234.0, 7_777.0, 15_999.0, 200_000.0])
def test_bisection_brackets_capacity_within_tolerance(capacity: float) -> None:
    s = run_search(CapacitySearch(1_000, 62.5, 256_000, tolerance=0.05), capacity)
    assert s.passed_rate is not None and s.failed_rate is not None
    assert s.passed_rate <= capacity < s.failed_rate
    assert s.failed_rate <= s.passed_rate * 1.05
    assert s.resolution is not None and s.resolution <= 0.05


def test_bisection_goes_down_when_the_start_fails() -> None:
    s = run_search(CapacitySearch(1_000, 10, 10_000), 90.0)
    assert s.passed_rate is not None and s.passed_rate <= 90.0 < s.failed_rate
    assert s.probes[0] == (1_000, False)


def test_bisection_reports_no_capacity_below_the_minimum() -> None:
    s = run_search(CapacitySearch(1_000, 100, 10_000), 50.0)
    assert s.passed_rate is None
    assert s.failed_rate == 100
    assert s.resolution is None


def test_bisection_stops_at_the_maximum() -> None:
    s = run_search(CapacitySearch(1_000, 100, 8_000), 1e9)
    assert s.passed_rate == 8_000 and s.failed_rate is None


def test_bisection_probe_count_is_bounded_and_logarithmic() -> None:
    s = run_search(CapacitySearch(1_000, 62.5, 256_000, tolerance=0.05), 23_456.0)
    # 5 doublings to bracket (1k..32k), then log2(ln 2 / ln 1.05) ≈ 4 halvings of the log-bracket
    assert len(s.probes) <= 10
    assert len(s.probes) <= s.max_probes


def test_bisection_noise_moves_the_bracket_without_looping() -> None:
    s = CapacitySearch(1_000, 100, 100_000, max_probes=30)
    answers = iter([True, True, False, True, False, True, True, False, True, True, True, True])
    while (rate := s.next_rate()) is not None:
        s.record(rate, next(answers, True))
    assert len(s.probes) <= 30


def test_bisection_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        CapacitySearch(10, 100, 1_000)
    with pytest.raises(ValueError):
        CapacitySearch(100, 10, 1_000, growth=1.0)


def test_spread_is_median_with_min_and_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
    assert spread([4.0, 1.0]) == Spread(2.5, 1.0, 4.0, 2)
    assert spread([None, float("nan")]) is None
    assert spread([None, 5.0]) == Spread(5.0, 5.0, 5.0, 1)


def test_spread_text() -> None:
    assert Spread(1234.0, 1000.0, 1500.0, 3).text() == "1,234 (1,000–1,500)"
    assert Spread(1234.0, 1234.0, 1234.0, 1).text() == "1,234"


def test_paired_ratio_divides_repeat_by_repeat() -> None:
    r = paired_ratio([10.0, 20.0, 30.0], [10.0, 10.0, 10.0])
    assert r == Spread(2.0, 1.0, 3.0, 3)
    # a missing or zero base drops that pair only
    assert paired_ratio([10.0, 20.0, None], [5.0, 0.0, 1.0]) == Spread(2.0, 2.0, 2.0, 1)
    assert paired_ratio([], []) is None


def test_spread_text_of_values() -> None:
    assert spread_text([3.0, None, 1.0, 2.0]) == "2 (1–3)"
    assert spread_text([0.5], ".2f", " ms") == "0.50 ms"
    assert spread_text([None]) == "-"


def test_paired_ratio_by_pairs_only_repeats_both_have() -> None:
    # repeat 1 of the base failed, repeat 2 of the numerator is missing
    assert paired_ratio_by({0: 4.0, 1: 9.0, 3: 6.0}, {0: 2.0, 1: None, 2: 5.0, 3: 2.0}) == Spread(2.5, 2.0, 3.0, 2)
    assert paired_ratio_by({0: 1.0}, {1: 1.0}) is None


def test_ratio_text_keeps_small_ratios_readable() -> None:
    assert ratio_text(Spread(2.04, 1.9, 2.2, 3)) == "2.04× (1.90–2.20)"
    assert ratio_text(Spread(0.012, 0.01, 0.02, 3)) == "0.012× (0.010–0.020)"
    assert ratio_text(None) == "-"


def test_cpu_lists() -> None:
    assert cpu_list("0,2-3") == (0, 2, 3)
    assert cpu_list(None) is None
    assert cpu_count("0,2-3") == 3
    assert pinned(["x"], "1") == ["taskset", "-c", "1", "x"]
    assert pinned(["x"], None) == ["x"]


def test_published_documents_hold_no_repository_path_and_no_bulk() -> None:
    from benchmarks.harness import REPO_ROOT

    doc = {"log": f"{REPO_ROOT}/benchmarks/x.log", "output": "wrk text", "command": "python -m benchmarks x",
           "nested": [{"cdf_ms": [1], "k": 1.23456789, "command": ["wrk", "-t1"]}]}
    small = relative_paths(without_bulk(doc))
    assert small == {"log": "benchmarks/x.log", "command": "python -m benchmarks x", "nested": [{"k": 1.2346}]}


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [[1, None]]) == "| a | b |\n|---|---|\n| 1 |  |"


def test_paired_difference_subtracts_repeat_by_repeat() -> None:
    assert paired_difference([110.0, 130.0, 125.0], [100.0, 100.0, 100.0]) == Spread(25.0, 10.0, 30.0, 3)
    assert paired_difference([5.0, None], [7.0, 1.0]) == Spread(-2.0, -2.0, -2.0, 1)  # negative: faster
    assert paired_difference_by({0: 3.0, 2: 9.0}, {0: 1.0, 1: 1.0, 2: None}) == Spread(2.0, 2.0, 2.0, 1)
    assert paired_difference_by({0: 1.0}, {1: 1.0}) is None


STAGE_TEXT = """# HELP schooner_stage_seconds Time per stage of a query
# TYPE schooner_stage_seconds summary
schooner_stage_seconds_sum{stage="submit"} 0.0020
schooner_stage_seconds_count{stage="submit"} 100
schooner_stage_seconds_sum{stage="queue"} 0.0010
schooner_stage_seconds_count{stage="queue"} 100
schooner_app_queries_total{app="w1"} 100
"""


def test_parse_metrics_sums_repeated_series_and_skips_noise() -> None:
    text = "\n".join([
        "# HELP x a counter", "# TYPE x counter",
        'x{b="2",a="1"} 3', 'x{a="1",b="2"} 4',  # the same series twice (two processes): summed
        'x{a="1",b="3"} 5', "y 1.5e-3", "z 7 1700000000000", "garbage line", "w{a=\"1\"} notanumber", "",
    ])
    m = parse_metrics(text)
    assert m[("x", (("a", "1"), ("b", "2")))] == 7.0
    assert total(m, "x", a="1") == 12.0
    assert m[("y", ())] == 0.0015
    assert m[("z", ())] == 7.0  # a sample with a timestamp
    assert len(m) == 4


def test_stage_means_are_delta_sum_over_delta_count_in_us() -> None:
    before = parse_metrics(STAGE_TEXT)
    after = parse_metrics(STAGE_TEXT.replace("0.0020", "0.0050").replace("0.0010", "0.0011")
                          .replace('"submit"} 100', '"submit"} 200').replace('"queue"} 100', '"queue"} 150'))
    means = stage_means_us(before, after)
    assert list(means) == list(STAGES)
    assert means["submit"] == pytest.approx(30.0)  # 3 ms over 100 queries
    assert means["queue"] == pytest.approx(2.0)  # 0.1 ms over 50
    assert means["model"] is None and means["return"] is None and means["deliver"] is None  # not exposed
    assert stage_means_us(before, before)["submit"] is None  # nothing timed in between
    assert stage_counts(after)[:2] == (200.0, 150.0)


def test_stage_means_sum_every_frontend_and_absent_metric_is_none() -> None:
    def fronts(sum0: float, n0: int, sum1: float, n1: int) -> str:
        return (f'schooner_stage_seconds_sum{{frontend="0",stage="deliver"}} {sum0}\n'
                f'schooner_stage_seconds_count{{frontend="0",stage="deliver"}} {n0}\n'
                f'schooner_stage_seconds_sum{{stage="deliver",frontend="1"}} {sum1}\n'
                f'schooner_stage_seconds_count{{stage="deliver",frontend="1"}} {n1}\n')
    # several frontends, each its own series, and one series that appears twice unlabelled: all summed
    twice = 'schooner_stage_seconds_sum{stage="return"} 0.001\nschooner_stage_seconds_count{stage="return"} 10\n'
    before = parse_metrics(fronts(0.0, 0, 0.0, 0) + twice + twice)
    after = parse_metrics(fronts(0.004, 100, 0.006, 100) + twice.replace("0.001", "0.002").replace("10\n", "20\n") * 2)
    means = stage_means_us(before, after)
    assert means["deliver"] == pytest.approx(50.0)
    assert means["return"] == pytest.approx(100.0)
    assert set(stage_means_us({}, {}).values()) == {None}  # a server without the metric
    assert stage_means_us({}, after)["deliver"] == pytest.approx(50.0)  # first scrape failed: counts from zero


def test_cpu_delta_by_role_counts_new_processes_from_zero_and_never_a_reused_pid() -> None:
    before = {(1, 10.0): ProcessCpu("supervisor", 1.0), (2, 11.0): ProcessCpu("frontend", 2.0),
              (3, 11.0): ProcessCpu("frontend", 1.0), (4, 12.0): ProcessCpu("model", 5.0), (9, 12.0): ProcessCpu("other", 1.0)}
    after = {(1, 10.0): ProcessCpu("supervisor", 1.5), (2, 11.0): ProcessCpu("frontend", 2.25),
             (3, 11.0): ProcessCpu("frontend", 1.25), (4, 99.0): ProcessCpu("model", 0.5),  # pid 4 reused: a new process
             (5, 13.0): ProcessCpu("scheduler", 0.25)}
    d = cpu_delta_s(before, after)
    assert d.seconds == {"frontend": 0.5, "scheduler": 0.25, "model": 0.5, "supervisor": 0.5, "other": 0.0, TOTAL: 1.75}
    assert (d.processes, d.started, d.exited) == (5, 2, 2)
    assert d.per_query_us(1000) == {k: v * 1e3 for k, v in d.seconds.items()}
    assert d.per_query_us(0) is None


def test_snapshot_reads_a_process_tree_by_role() -> None:
    child = subprocess.Popen([sys.executable, "-c", 'import time; time.sleep(30)',
                              '{"role":"scheduler","args_fd":3}'])
    try:
        for _ in range(200):  # until the child has exec'd (its command line is its own)
            snap = snapshot(os.getpid())
            if any(p.role == "scheduler" for p in snap.values()):
                break
        roles = sorted(p.role for p in snap.values())
        assert "supervisor" in roles and "scheduler" in roles
        assert all(p.cpu_s >= 0 for p in snap.values())
    finally:
        child.kill()
        child.wait()


def test_regions_a_killed_perf_analyzer_leaves_are_removed_and_nothing_else():
    import uuid

    from benchmarks.drivers import perf_analyzer as pa

    before = pa.shm_names()
    tag = uuid.uuid4().int % 10**9
    left = [f"input_{tag}_0", f"output_{tag}_1"]
    kept = f"schooner-test-{tag}"
    for name in [*left, kept]:
        (pa.SHM_DIR / name).write_bytes(b"x")
    try:
        assert pa.remove_left_regions(before) == sorted(left)
        assert not any((pa.SHM_DIR / n).exists() for n in left)
        assert (pa.SHM_DIR / kept).exists()
    finally:
        for name in [*left, kept]:
            (pa.SHM_DIR / name).unlink(missing_ok=True)
