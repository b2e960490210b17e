"""The scheduler's rules behind a real server: AIMD finds the analytic batch size, slow models
yield SLO defaults (whose late results still fill the cache), repeats stop reaching the model."""

import threading
import time

import pytest

from tests.serving import ClientThread, SchoonerServer, finish, start

LINEAR = """
[[models]]
name = "linear"
entry_point = "tests.models:LinearLatencyModel"
input_type = "floats"
input_shape = [4]
max_batch_size = 128
init_args = {{ a_s = {a}, b_s = {b} }}

[[apps]]
name = "linear"
input_type = "floats"
input_shape = [4]
latency_slo_micros = {slo_us}
default_output = "-1"
cache = false
models = ["linear"]
"""


def scrape(srv) -> dict[str, float]:
    """{series: value} of /metrics (the exposition format is checked by the protocol tests)."""
    status, body, _ = srv.request("GET", "/metrics")
    assert status == 200
    text = body.decode() if isinstance(body, bytes) else body
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_aimd_settles_near_the_analytic_batch_size(tmp_path):
    a, b, slo_s = 0.010, 0.002, 0.100
    n_star = int((0.9 * slo_s - a) / b)  # largest n with a + b*n <= 90% of the SLO: 40
    with SchoonerServer(tmp_path, LINEAR.format(a=a, b=b, slo_us=int(slo_s * 1e6))) as srv:
        stop = threading.Event()

        def load(k):
            conn = srv.connect()
            while not stop.is_set():
                status, body = srv.predict("linear", {"input_batch": [[k, i, 0, 0] for i in range(60)]}, conn)
                assert status == 200, body

        threads = start([ClientThread(load, k) for k in range(3)])  # ~180 queued: saturating
        try:
            count = 'schooner_model_batch_size_count{model="linear",version="1"}'
            total = 'schooner_model_batch_size_sum{model="linear",version="1"}'
            wait_for(lambda: scrape(srv).get(count, 0) >= 30)  # warm-up: ~20 batches to climb from 1
            m0 = scrape(srv)
            wait_for(lambda: scrape(srv)[count] >= m0[count] + 30)
            m1 = scrape(srv)
        finally:
            stop.set()
            finish(threads, 60)  # a client that failed fails the test
        mean = (m1[total] - m0[total]) / (m1[count] - m0[count])
        assert abs(mean - n_star) <= 0.15 * n_star, (mean, n_star)
        limit = m1['schooner_batch_limit{model="linear",replica="0",version="1"}']
        assert 0.7 * n_star <= limit <= 1.2 * n_star


def test_slow_model_answers_defaults_and_late_results_fill_the_cache(tmp_path):
    config = LINEAR.format(a=0.2, b=0.0, slo_us=20_000).replace("cache = false", "cache = true")
    with SchoonerServer(tmp_path, config) as srv:
        status, body = srv.predict("linear", {"input": [1, 2, 3, 4]})
        assert status == 200 and body["default"] is True and body["output"] == -1
        assert body["default_explanation"] == "Failed to retrieve a prediction response within the specified latency SLO"
        wait_for(lambda: scrape(srv).get("schooner_cache_bytes", 0) > 0)  # the late result landed
        status, body = srv.predict("linear", {"input": [1, 2, 3, 4]})
        assert (status, body["default"], body["output"]) == (200, False, 10.0)
        hits = 'schooner_cache_hits_total{model="linear",version="1"}'
        wait_for(lambda: scrape(srv).get(hits) == 1)  # the snapshot follows the answer closely
        assert scrape(srv)['schooner_app_defaults_total{app="linear",reason="slo"}'] == 1


@pytest.mark.parametrize("cache", [True, False])
def test_repeated_inputs_stop_reaching_the_model(tmp_path, cache):
    config = LINEAR.format(a=0.0, b=0.0, slo_us=5_000_000).replace("cache = false", f"cache = {str(cache).lower()}")
    with SchoonerServer(tmp_path, config) as srv:
        conn = srv.connect()
        outputs = {srv.predict("linear", {"input": [1, 1, 1, 1]}, conn)[1]["output"] for _ in range(20)}
        assert outputs == {4.0}
        wait_for(lambda: scrape(srv).get('schooner_app_queries_total{app="linear"}') == 20)
        sent = scrape(srv)['schooner_model_queries_total{model="linear",version="1"}']
        assert sent == (1 if cache else 20)
