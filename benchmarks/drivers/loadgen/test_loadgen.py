"""Unit tests of the load generator's pure cores: schedules, histogram, response parsing, summary.

Run: ``.venv/bin/python -m pytest benchmarks/drivers/loadgen/test_loadgen.py`` (kept beside the code
rather than in ``tests/unit`` while the benchmark harness is being written; no sockets, no
sleeps, seeded RNGs).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.drivers.loadgen.driver import Records, summarize, timeline
from benchmarks.drivers.loadgen.histogram import (
    BUCKETS,
    HIGHEST_NS,
    LatencyHistogram,
    bucket_bounds,
    bucket_index,
)
from benchmarks.drivers.loadgen.http1 import BadResponse, encode_post, parse_response
from benchmarks.drivers.loadgen.schedule import (
    on_off,
    on_off_rates,
    poisson,
    rates_in_windows,
    read_trace,
    split_round_robin,
)
from benchmarks.drivers.loadgen.worker import DROPPED_NO_CONNECTION, UNANSWERED

# -- schedules ----------------------------------------------------------------------------------


def test_poisson_rate_and_gaps() -> None:
    offsets = poisson(10_000, 5.0, np.random.default_rng(0))
    assert np.all(np.diff(offsets) > 0) and offsets[0] >= 0 and offsets[-1] < 5.0
    assert abs(len(offsets) / 5.0 - 10_000) < 4 * np.sqrt(10_000 * 5) / 5
    gaps = np.diff(offsets)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03  # exponential: CV = 1


def test_poisson_is_seeded() -> None:
    a = poisson(500, 1.0, np.random.default_rng(7))
    b = poisson(500, 1.0, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_on_off_mean_and_bursts() -> None:
    on, off = on_off_rates(1000, 3.0, 0.25, 0.75)
    assert on == 3000 and off == pytest.approx(1000 / 3)
    offsets = on_off(1000, 3.0, 0.25, 0.75, 20.0, np.random.default_rng(1))
    assert abs(len(offsets) / 20.0 - 1000) < 50
    rates = rates_in_windows(offsets, 0.25, 20.0)[:80]
    assert rates[0::4].mean() > 2500 and rates[1::4].mean() < 600


def test_on_off_silent_off_when_the_burst_carries_the_mean() -> None:
    on, off = on_off_rates(1000, 10.0, 0.25, 0.75)
    assert off == 0 and on == pytest.approx(4000)


def test_trace_sorted_rebased_scaled_and_cut(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("# arrivals\n10.5\n10.0\n\n11.0  # late\n13.0\n")
    assert read_trace(path).tolist() == [0.0, 0.5, 1.0, 3.0]
    assert read_trace(path, time_scale=0.5, duration_s=1.0).tolist() == [0.0, 0.25, 0.5]


def test_round_robin_split_covers_every_arrival_once() -> None:
    parts = split_round_robin(10, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert parts[1].tolist() == [1, 4, 7]


# -- histogram ----------------------------------------------------------------------------------


def test_buckets_are_contiguous_and_within_a_tenth_of_a_percent() -> None:
    idx = np.arange(BUCKETS)
    low, high = bucket_bounds(idx)
    assert np.all(low[1:] == high[:-1] + 1)
    assert high[-1] >= HIGHEST_NS
    big = low >= 2048
    assert np.all((high[big] - low[big] + 1) / low[big] <= 1 / 1024)


def test_bucket_index_inverts_bounds() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([np.arange(5000), rng.integers(0, HIGHEST_NS, 10_000)])
    idx = bucket_index(values)
    low, high = bucket_bounds(idx)
    assert np.all((low <= values) & (values <= high))


def test_percentiles_match_numpy_to_three_digits() -> None:
    rng = np.random.default_rng(5)
    values = (rng.lognormal(mean=13, sigma=1.0, size=200_000)).astype(np.int64)  # ~0.4 ms median
    h = LatencyHistogram.of(values)
    for p in (50, 90, 99, 99.9):
        exact = np.percentile(values, p, method="inverted_cdf")
        assert exact <= h.percentile_ns(p) <= exact * 1.001 + 1
    assert h.percentile_ns(100) == values.max() == h.max_ns
    assert h.mean_ns() == pytest.approx(values.mean())


def test_merge_equals_recording_everything() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.integers(1000, 10**9, 5000), rng.integers(1000, 10**7, 3000)
    merged = LatencyHistogram.merged(
        [LatencyHistogram.of(a), LatencyHistogram.of(b), LatencyHistogram.empty()]
    )
    whole = LatencyHistogram.of(np.concatenate([a, b]))
    assert np.array_equal(merged.counts, whole.counts)
    assert (merged.total, merged.min_ns, merged.max_ns, merged.sum_ns) == (
        whole.total,
        whole.min_ns,
        whole.max_ns,
        whole.sum_ns,
    )


def test_values_beyond_the_range_are_clipped_but_max_is_exact() -> None:
    h = LatencyHistogram.of([-5, 3 * HIGHEST_NS])
    assert h.total == 2 and h.max_ns == 3 * HIGHEST_NS
    assert h.percentile_ns(50) == 0


def test_empty_histogram() -> None:
    h = LatencyHistogram.empty()
    assert h.percentile_ns(99) is None and h.summary_ms()["p99_ms"] is None and h.cdf_ms() == []


# -- HTTP/1.1 responses -------------------------------------------------------------------------


def test_encode_post() -> None:
    req = encode_post("127.0.0.1", 80, "/w1/predict", b'{"input":[1]}')
    assert req.startswith(b"POST /w1/predict HTTP/1.1\r\n") and req.endswith(
        b"\r\n\r\n" + b'{"input":[1]}'
    )
    assert b"Content-Length: 13\r\n" in req


def test_parse_content_length_and_default() -> None:
    body = b'{"query_id":1,"output":-1,"default":true,"default_explanation":"x"}'
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body
    )
    parsed = parse_response(raw)
    assert parsed is not None and parsed.status == 200 and parsed.is_default and parsed.keep_alive
    assert parsed.consumed == len(raw)
    for cut in (10, len(raw) - 1):
        assert parse_response(raw[:cut]) is None


def test_parse_lowercase_headers_close_and_not_default() -> None:
    raw = b'HTTP/1.1 503 Service Unavailable\r\ncontent-length: 17\r\nconnection: close\r\n\r\n{"default":false}'
    parsed = parse_response(raw)
    assert (
        parsed is not None
        and parsed.status == 503
        and not parsed.is_default
        and not parsed.keep_alive
    )


def test_parse_chunked() -> None:
    raw = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"def\r\nf\r\nault": true, "x\r\n3\r\n":1\r\n0\r\n\r\n'
    parsed = parse_response(raw)
    assert parsed is not None and parsed.consumed == len(raw) and parsed.is_default
    assert parse_response(raw[:-2]) is None


def test_parse_garbage() -> None:
    with pytest.raises(BadResponse):
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")


# -- summary ------------------------------------------------------------------------------------


def _records(n: int) -> Records:
    due = np.arange(n, dtype=np.int64) * 1_000_000  # one per ms
    return Records(
        due_ns=due,
        sent_ns=due + 10_000,  # 10 µs lag
        done_ns=due + 2_000_000,  # 2 ms latency
        status=np.full(n, 200, np.int16),
        is_default=np.zeros(n, np.bool_),
        worker=(np.arange(n) % 2).astype(np.int16),
    )


def test_summary_counts_from_scheduled_time() -> None:
    r = _records(2000)  # 2 s at 1000/s
    r.done_ns[1500] = r.due_ns[1500] + 50_000_000  # 50 ms: misses a 20 ms SLO
    r.is_default[1501] = True
    r.status[1502] = 500
    r.status[1503] = DROPPED_NO_CONNECTION
    r.status[1504] = UNANSWERED
    r.sent_ns[1505] = r.due_ns[1505] + 5_000_000  # one late send
    s, lat, lag = summarize(
        r, warmup_s=1.0, end_s=2.0, slo_s=0.02, lag_limit_ms=1.0, workers_meta=[]
    )
    assert s.scheduled == 1000 and s.offered_per_s == pytest.approx(1000)
    assert (s.defaults, s.non_2xx, s.dropped_no_connection, s.unanswered) == (1, 1, 1, 1)
    assert s.ok == 997 and s.good == 995 and s.slo_attainment == pytest.approx(0.995)
    assert s.latency["max_ms"] == pytest.approx(50.0)
    assert s.latency["p50_ms"] == pytest.approx(2.0, rel=1e-3)
    assert lat.total == s.answered == 998
    assert not s.generator_limited and s.send_lag["max_ms"] == pytest.approx(5.0)


def test_summary_flags_lag_and_saturation() -> None:
    r = _records(1000)
    r.sent_ns[::50] += 3_000_000  # 2% of sends 3 ms late: p99 lag > 1 ms
    busy = [{"cpu_busy_fraction": 0.3}]
    s, _, _ = summarize(r, 0.0, 1.0, 0.02, 1.0, busy)
    assert s.generator_limited and not s.generator_saturated
    s, _, _ = summarize(r, 0.0, 1.0, 0.02, 1.0, [{"cpu_busy_fraction": 0.97}])
    assert s.generator_saturated


def test_timeline_windows() -> None:
    tl = timeline(_records(1000), end_s=1.0, window_s=0.1)
    assert len(tl["t_s"]) == 10 and tl["offered_per_s"][0] == pytest.approx(1000)
    assert tl["p99_ms"][3] == pytest.approx(2.0)
