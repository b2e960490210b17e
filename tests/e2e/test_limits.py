"""Whole-request limits, feedback back-pressure, connection limits and timeouts, bad input.

Each test drives a real server over raw sockets where the HTTP client library would hide
what is tested (pipelining, partial requests, idle connections). Every socket has a timeout
and every wait an overall deadline: a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import socket

import orjson
import pytest

from tests.serving import SchoonerServer, until

CONFIG = """
[server]
submit_slot_nbytes = 65536
max_connections = 8
header_timeout_s = {timeout}
body_timeout_s = {timeout}
keepalive_timeout_s = {timeout}
max_url_nbytes = 1024
max_header_nbytes = 4096

[[models]]
name = "summer"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [16]

[[models]]
name = "summer2"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [16]

[[apps]]
name = "sums"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 5000000
default_output = "-1"
models = ["summer"]

[[apps]]
name = "bandit"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 5000000
default_output = "-1"
models = ["summer", "summer2"]
policy = "exp3"
"""

ROW = [1.0] * 16


def _config(timeout: float) -> str:
    return CONFIG.format(timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Long timeouts: the tests of this fixture must not race them."""
    with SchoonerServer(tmp_path_factory.mktemp("limits"), _config(600)) as srv:
        yield srv
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Timeouts of half a second."""
    with SchoonerServer(tmp_path_factory.mktemp("limits-quick"), _config(0.5)) as srv:
        yield srv
        assert srv.stop() == 0


def _connect(srv, timeout: float = 30) -> socket.socket:
    return socket.create_connection((srv.host, srv.port), timeout=timeout)


def _post(path: str, body: bytes, close: bool = False) -> bytes:
    conn = b"Connection: close\r\n" if close else b""
    return b"POST %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), conn, len(body), body)


class _Responses:
    """Reads HTTP/1.1 responses (Content-Length framed) from a socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def next(self) -> tuple[int, bytes] | None:
        """(status, body) of the next response; None at end of stream."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            if not self._fill():
                return None
            rest = self.buf.split(b"\r\n\r\n", 1)[1]
        self.buf = rest[length:]
        return status, rest[:length]




def _assert_serving(srv) -> None:
    status, body = srv.predict("sums", {"input": ROW})
    assert status == 200 and body["output"] == 16.0, body


# -- whole-request limits -----------------------------------------------------------------


def test_input_batch_over_the_submit_slot_is_413_and_the_frontend_keeps_serving(server):
    rows = [ROW] * 2000  # 128 KB of floats, far under the body limit, over the 64 KiB slot
    status, body = server.predict("sums", {"input_batch": rows})
    assert status == 413, body
    assert "submit" in body["cause"] and "65536" in body["cause"] or "limit" in body["cause"], body
    _assert_serving(server)
    status, body = server.predict("sums", {"input_batch": [ROW] * 100})
    assert status == 200 and len(body["batch_predictions"]) == 100


def test_v2_request_over_the_submit_slot_is_413(server):
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2000, 16], "data": [1.0] * 32000}]}
    status, body, _ = server.request("POST", "/v2/models/sums/infer", doc)
    assert status == 413, body
    _assert_serving(server)


def test_update_over_the_submit_slot_is_413(server):
    status, body, _ = server.request("POST", "/bandit/update", {"uid": 1, "input": [1.0] * 20000, "label": 1})
    assert status == 400 or status == 413, body  # a wrong shape is refused first
    _assert_serving(server)


# -- feedback back-pressure ---------------------------------------------------------------


def test_a_burst_of_pipelined_updates_is_answered_and_predicts_keep_working(server):
    n_conns, per_conn = 8, 400
    body = orjson.dumps({"uid": 3, "input": ROW, "label": 1.0})
    socks = [_connect(server, timeout=120) for _ in range(n_conns - 1)]  # the cap is 8
    try:
        for s in socks:
            s.sendall(_post("/bandit/update", body) * per_conn)
        statuses = []
        for s in socks:
            r = _Responses(s)
            for _ in range(per_conn):
                got = r.next()
                assert got is not None, f"connection closed after {len(statuses)} answers"
                statuses.append(got[0])
    finally:
        for s in socks:
            s.close()
    assert len(statuses) == (n_conns - 1) * per_conn
    assert set(statuses) <= {200, 409}, sorted(set(statuses))
    assert statuses.count(200) > 0
    _assert_serving(server)


# -- connections --------------------------------------------------------------------------


def test_connections_over_the_cap_get_503_and_service_resumes_when_some_close(server):
    idle = []
    try:
        # connections are accepted in order; once 8 are held the next one is refused
        def refused():
            s = _connect(server)
            idle.append(s)
            s.sendall(_post("/sums/predict", orjson.dumps({"input": ROW})))
            got = _Responses(s).next()
            return got if got is not None and got[0] == 503 else None

        status, body = until(refused, "a connection over the cap to be refused")
        assert b"connections" in body and orjson.loads(body)["error"] == "unavailable"
    finally:
        for s in idle:
            s.close()
    until(lambda: server.predict("sums", {"input": ROW})[0] == 200, "service after the idle clients left")
    status, text, _ = server.request("GET", "/metrics")
    assert b"schooner_http_connections_refused_total" in text


def test_idle_slow_and_huge_clients_are_closed_while_normal_ones_are_answered(quick):
    srv = quick
    idle = _connect(srv)
    slow_head = _connect(srv)
    slow_body = _connect(srv)
    kept = _connect(srv)
    try:
        slow_head.sendall(b"POST /sums/predict HTTP/1.1\r\nHost: t\r\n")
        slow_body.sendall(b"POST /sums/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"input\"")
        kept.sendall(_post("/sums/predict", orjson.dumps({"input": ROW})))
        assert _Responses(kept).next()[0] == 200
        # a normal client on a fresh connection is answered meanwhile
        _assert_serving(srv)
        # the idle connection and the kept-alive one are closed without an answer
        assert idle.recv(100) == b""
        r = _Responses(kept)
        assert r.next() is None and r.eof
        # the slow ones get 408 and are closed
        for s in (slow_head, slow_body):
            r = _Responses(s)
            got = r.next()
            assert got is not None and got[0] == 408, got
            assert orjson.loads(got[1])["error"] == "request timeout"
            assert r.next() is None
    finally:
        for s in (idle, slow_head, slow_body, kept):
            s.close()
    _assert_serving(srv)
    status, text, _ = srv.request("GET", "/metrics")
    assert b"schooner_http_connection_timeouts_total" in text


def test_a_huge_url_is_414_and_huge_headers_431(server):
    s = _connect(server)
    try:
        s.sendall(b"GET /" + b"a" * 4096)
        try:  # the server may close before it has read everything sent
            s.sendall(b"b" * (1 << 20) + b" HTTP/1.1\r\n\r\n")
        except OSError:
            pass
        got = _Responses(s).next()
        assert got is not None and got[0] == 414, got
        assert b"1024" in got[1]
    finally:
        s.close()
    _assert_serving(server)
    s = _connect(server)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 8192 + b"\r\n\r\n")
        got = _Responses(s).next()
        assert got is not None and got[0] == 431, got
    finally:
        s.close()
    s = _connect(server)
    try:  # one header fed in many small pieces is bounded too
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: ")
        got = None
        for _ in range(1000):
            try:
                s.sendall(b"v" * 1024)
            except OSError:
                break
        got = _Responses(s).next()
        assert got is not None and got[0] == 431, got
    finally:
        s.close()
    _assert_serving(server)


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": ROW, "parameters": 5}]},
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": ROW}],
         "outputs": [{"name": "output", "parameters": "x"}]},
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1e308] * 16}]},
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": ROW}],
         "outputs": [{"name": "output", "parameters": {"shared_memory_region": ["x"]}}]},
    ],
)
def test_bad_v2_requests_are_400(server, doc):
    status, body, _ = server.request("POST", "/v2/models/sums/infer", doc)
    assert status == 400, body
    assert isinstance(body, dict) and "error" in body


def test_a_float_out_of_float32_range_is_400_not_null(server):
    status, body = server.predict("sums", {"input": [1e308] * 16})
    assert status == 400, body
    assert "float32" in body["cause"]
