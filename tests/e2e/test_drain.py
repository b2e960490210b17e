"""SIGTERM drains: readiness turns false at once, in-flight queries are answered, exit 0."""

import time

from tests.serving import ClientThread, SchoonerServer, finish, start

CONFIG = """
[[models]]
name = "slow"
entry_point = "tests.models:SlowTorchMLP"
input_type = "floats"
input_shape = [16]
init_args = {{ hold_s = 2.0, marker_path = "{marker}" }}

[[apps]]
name = "slow"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 30000000
default_output = "-1"
models = ["slow"]
"""


def test_sigterm_drains_in_flight_queries(tmp_path):
    marker = tmp_path / "batches"
    srv = SchoonerServer(tmp_path, CONFIG.format(marker=marker))
    result = {}
    (t,) = start([ClientThread(lambda: result.update(r=srv.predict("slow", {"input": [1] * 16})))])
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    srv.remember_children()
    srv.proc.terminate()
    ready = None
    deadline = time.monotonic() + 10
    while ready != 503 and time.monotonic() < deadline:
        ready = srv.request("GET", "/v2/health/ready")[0]
    assert ready == 503  # not ready while draining
    assert srv.request("GET", "/v2/health/live")[0] == 200
    status, body = srv.predict("slow", {"input": [1] * 16})
    assert status == 503 and "draining" in body["cause"]
    finish([t], 60)
    status, body = result["r"]
    assert status == 200 and body["default"] is False  # the in-flight query got its real answer
    assert srv.proc.wait(60) == 0
    srv.__exit__(None, None, None)
