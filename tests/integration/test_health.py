"""Readiness tells the truth, and the prediction cache stays within its memory budget.

A SIGSTOPped model process holds its batch: once it has held it past `model_stall_timeout_s`
the model, its app and the server report not ready (and `schooner_model_ready` is 0); after
SIGCONT the batch is answered and everything is ready again. The cache test fills a real
server's cache with distinct queries and measures the scheduler's resident memory.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import psutil

from tests.serving import SchoonerServer, until

CONFIG = """
[server]
model_stall_timeout_s = 1.0
cache_nbytes = {cache}

[[models]]
name = "summer"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [16]
max_batch_size = 256

[[apps]]
name = "sums"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 300000
default_output = "-1"
models = ["summer"]
"""




def _metric(srv, name: str) -> float:
    _, text, _ = srv.request("GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_hung_model_is_reported_not_ready_and_recovers(tmp_path):
    with SchoonerServer(tmp_path, CONFIG.format(cache=33554432)) as srv:
        assert srv.request("GET", "/v2/health/ready")[0] == 200
        assert srv.request("GET", "/v2/models/summer/ready")[0] == 200
        (model,) = srv.children("model")
        os.kill(model.pid, signal.SIGSTOP)
        try:
            status, body = srv.predict("sums", {"input": [1.0] * 16})
            assert status == 200 and body["default"] is True  # the SLO answered, the model did not
            until(lambda: srv.request("GET", "/v2/models/summer/ready")[0] == 503, "the model to turn not ready")
            assert srv.request("GET", "/v2/models/sums/ready")[0] == 503
            status, body, _ = srv.request("GET", "/v2/health/ready")
            assert status == 503 and "sums" in body["cause"]
            assert _metric(srv, 'schooner_model_ready{model="summer"') == 0
            assert srv.request("GET", "/v2/health/live")[0] == 200
        finally:
            os.kill(model.pid, signal.SIGCONT)
        until(lambda: srv.request("GET", "/v2/health/ready")[0] == 200, "readiness after SIGCONT")
        assert srv.request("GET", "/v2/models/summer/ready")[0] == 200
        status, body = srv.predict("sums", {"input": [2.0] * 16})
        assert status == 200 and body["output"] == 32.0
        assert srv.stop() == 0


def test_the_scheduler_stays_within_twice_the_cache_budget(tmp_path):
    cache = 8 * 1024 * 1024
    with SchoonerServer(tmp_path, CONFIG.format(cache=cache).replace("300000", "30000000")) as srv:
        (sched,) = srv.children("scheduler")
        rng = np.random.default_rng(0)
        conn = srv.connect(timeout=120)

        def send(n: int) -> None:
            rows = rng.random((n, 16)).astype(np.float32).round(4).tolist()
            status, body = srv.predict("sums", {"input_batch": rows}, conn)
            assert status == 200, body
            assert not any(p["default"] for p in body["batch_predictions"])

        for _ in range(5):  # warm up: allocator, numpy, metrics
            send(1000)
        base = psutil.Process(sched.pid).memory_info().rss
        for _ in range(80):  # ~80k distinct outputs: the 8 MiB cache fills and evicts
            send(1000)
        until(lambda: _metric(srv, "schooner_cache_evictions_total") > 0, "evictions")
        grown = psutil.Process(sched.pid).memory_info().rss - base
        held = _metric(srv, "schooner_cache_bytes")
        assert held <= cache
        # Documented in the README: the scheduler's memory grows by at most 2x cache_nbytes.
        assert grown <= 2 * cache, f"scheduler grew by {grown / 2**20:.1f} MiB for a {cache / 2**20:.0f} MiB cache"
        conn.close()
        assert srv.stop() == 0
