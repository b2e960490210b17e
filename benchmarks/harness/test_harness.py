"""Unit tests of the harness's pure pieces: capacity bisection, spreads, ratio spreads, CPU lists.

No clock, no server, no sleep: ``CapacitySearch`` is driven with a pass/fail function of the rate.
"""

from __future__ import annotations

import pytest

from benchmarks.harness.machine import cpu_count, cpu_list, pinned
from benchmarks.harness.results import markdown_table, relative_paths, without_bulk
from benchmarks.harness.stats import (
    CapacitySearch,
    Spread,
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
