"""The admin API over real HTTP while a steady stream of queries runs: deploy a new version,
roll back, scale up and down, add and remove apps and links -- every answer checked (no
non-2xx, no default, outputs from the right version once a call has returned); restarts keep
the registry; bad admin input is a clear 4xx; the token and the bind rules."""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time

import orjson
import pytest

from tests.serving import ROOT, SchoonerServer, until

CONFIG = """
[server]
frontends = 2

[[models]]
name = "m"
version = "1"
entry_point = "tests.fault_models:Offset"
input_type = "floats"
input_shape = [4]

[[apps]]
name = "app"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 20000000
default_output = "-1"
models = ["m"]
"""

X = [1.0, 2.0, 3.0, 4.0]  # row sum 10


class Stream:
    """Closed-loop clients on `app`; records (time answered, status, output, default)."""

    def __init__(self, srv, app: str = "app", clients: int = 3) -> None:
        self.srv, self.app = srv, app
        self.stop = threading.Event()
        self.events: list[tuple[float, int, object, bool]] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        try:
            conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=60)
            while not self.stop.is_set():
                conn.request("POST", f"/{self.app}/predict", orjson.dumps({"input": X}))
                resp = conn.getresponse()
                body = orjson.loads(resp.read())
                with self.lock:
                    self.events.append((time.monotonic(), resp.status, body.get("output"), body.get("default")))
        except BaseException as e:
            self.errors.append(e)

    def __enter__(self) -> Stream:
        for t in self.threads:
            t.start()
        until(lambda: len(self.events) >= 20, "the stream to run")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not self.errors, self.errors

    def since(self, t: float) -> list:
        with self.lock:
            return [e for e in self.events if e[0] > t]

    def bad(self) -> list:
        with self.lock:
            return [e for e in self.events if e[1] != 200 or e[3]]


def _ok(srv, endpoint, body=None):
    status, doc = srv.admin(endpoint, body)
    assert status == 200, (endpoint, status, doc)
    return doc


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("admin-data")


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    with SchoonerServer(tmp_path_factory.mktemp("admin"), CONFIG, "--data-dir", str(data_dir)) as srv:
        yield srv
        assert srv.stop() == 0


def test_reads_and_bad_input(server):
    assert server.admin("ping") == (200, b"PONG")
    assert _ok(server, "get_all_applications") == ["app"]
    assert _ok(server, "get_application", {"name": "app"})["linked_models"] == ["m"]
    assert _ok(server, "get_application", {"name": "nope"}) == {}
    assert _ok(server, "get_linked_models", {"app_name": "app"}) == ["m"]
    assert _ok(server, "get_all_models") == ["m:1"]
    assert _ok(server, "get_model", {"model_name": "m", "model_version": "1"})["is_current_version"] is True
    assert _ok(server, "get_all_containers") == ["m:1:0"]
    status, doc = server.admin("get_linked_models", {"app_name": "nope"})
    assert status == 404 and "app" in doc["cause"]
    status, doc = server.admin("set_num_replicas", {"model_name": "m", "num_replicas": -1})
    assert status == 400 and "num_replicas" in doc["cause"]
    status, doc = server.admin("add_model", {"model_name": "m", "model_version": "1", "input_type": "floats",
                                             "input_shape": [4], "entry_point": "tests.fault_models:Offset"})
    assert status == 400 and "already has a version 1" in doc["cause"]
    status, doc = server.admin("add_model", {"model_name": "m", "model_version": "9", "input_type": "ints",
                                             "input_shape": [4], "entry_point": "tests.fault_models:Offset"})
    assert status == 400 and "floats[4]" in doc["cause"]
    status, doc = server.admin("nope", {})
    assert status == 404 and "known" in doc["cause"]
    status, _, _ = server.request("GET", "/admin/ping")  # never on the query port
    assert status == 404


def test_a_new_version_then_a_rollback_under_load_lose_nothing(server):
    with Stream(server) as stream:
        doc = _ok(server, "add_model", {"model_name": "m", "model_version": "2", "input_type": "floats",
                                        "input_shape": [4], "container_name": "tests.fault_models:Offset",
                                        "init_args": {"offset": 1000}})
        assert doc["model_version"] == "2"
        t = time.monotonic()
        until(lambda: len(stream.since(t)) >= 20, "answers after the switch")
        assert {e[2] for e in stream.since(t)} == {1010.0}  # every answer from v2 now
        assert _ok(server, "get_model", {"model_name": "m", "model_version": "2"})["is_current_version"] is True
        _ok(server, "set_model_version", {"model_name": "m", "model_version": "1"})
        t = time.monotonic()
        until(lambda: len(stream.since(t)) >= 20, "answers after the rollback")
        assert {e[2] for e in stream.since(t)} == {10.0}
    assert stream.bad() == []
    assert {e[2] for e in stream.events} <= {10.0, 1010.0}


def test_scale_up_and_down_under_load_lose_nothing(server):
    with Stream(server) as stream:
        _ok(server, "set_num_replicas", {"model_name": "m", "num_replicas": 3})
        assert len(server.children("model")) >= 3
        assert sorted(c for c in _ok(server, "get_all_containers") if c.startswith("m:1:")) == ["m:1:0", "m:1:1", "m:1:2"]
        t = time.monotonic()
        until(lambda: len(stream.since(t)) >= 20, "answers at 3 replicas")
        _ok(server, "set_num_replicas", {"model_name": "m", "num_replicas": 1})
        t = time.monotonic()
        until(lambda: len(stream.since(t)) >= 20, "answers at 1 replica")
    assert stream.bad() == []
    assert [c for c in _ok(server, "get_all_containers") if c.startswith("m:1:")] == ["m:1:0"]


def test_apps_and_links_added_and_removed_while_serving(server):
    with Stream(server) as stream:
        _ok(server, "add_app", {"name": "extra", "input_type": "floats", "input_shape": [4],
                                "default_output": "-5", "latency_slo_micros": 20000000})
        for _ in range(4):  # both frontends know it: fresh connections spread over them
            status, body = server.predict("extra", {"input": X})
            assert status == 200 and body["default"] is True and body["output"] == -5
        _ok(server, "add_model_links", {"app_name": "extra", "model_names": ["m"]})
        for _ in range(4):
            status, body = server.predict("extra", {"input": X})
            assert status == 200 and body["output"] == 10.0 and not body["default"]
        _ok(server, "delete_model_links", {"app_name": "extra", "model_names": ["m"]})
        assert server.predict("extra", {"input": X})[1]["default"] is True
        _ok(server, "delete_app", {"name": "extra"})
        for _ in range(4):
            assert server.predict("extra", {"input": X})[0] == 404
    assert stream.bad() == []


def test_a_model_that_cannot_start_fails_the_call_and_the_old_version_keeps_serving(server):
    with Stream(server) as stream:
        status, doc = server.admin("add_model", {"model_name": "m", "model_version": "broken", "input_type": "floats",
                                                 "input_shape": [4], "entry_point": "tests.no_such_module:Model"})
        assert status == 400, doc
        assert "could not start" in doc["cause"] and "no_such_module" in doc["cause"]
        assert "m:broken" not in _ok(server, "get_all_models")
        t = time.monotonic()
        until(lambda: len(stream.since(t)) >= 10, "answers after the failed deploy")
    assert stream.bad() == []


def test_a_restart_keeps_what_was_changed(tmp_path, server, data_dir):
    _ok(server, "add_model", {"model_name": "m", "model_version": "3", "input_type": "floats", "input_shape": [4],
                              "entry_point": "tests.fault_models:Offset", "init_args": {"offset": 3000}})
    _ok(server, "add_app", {"name": "kept", "input_type": "floats", "input_shape": [4], "models": ["m"],
                            "latency_slo_micros": 20000000})
    # another server on the same config file and data directory: same registry
    cfg = server.tmp_path / "schooner.toml"
    with SchoonerServer(tmp_path, None, "--config", str(cfg), "--data-dir", str(data_dir)) as second:
        models = _ok(second, "get_all_models", {"verbose": True})
        current = [m for m in models if m["is_current_version"]]
        assert [(m["model_name"], m["model_version"]) for m in current] == [("m", "3")]
        assert "kept" in _ok(second, "get_all_applications")
        status, body = second.predict("kept", {"input": X})
        assert status == 200 and body["output"] == 3010.0
        assert second.stop() == 0


def test_a_token_guards_the_admin_api_and_a_public_bind_needs_one(tmp_path):
    with SchoonerServer(tmp_path, CONFIG, "--admin-token", "s3cret") as srv:
        status, doc = srv.admin("get_all_models", {})
        assert status == 401 and "Bearer" in doc["cause"]
        assert srv.admin("get_all_models", {}, token="s3cret")[0] == 200
        assert srv.admin("get_all_models", {}, token="wrong")[0] == 401
        assert srv.stop() == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    run = subprocess.run([sys.executable, "-m", "schooner.engine.cli", "serve", "--port", "0", "--admin-port", "0",
                          "--admin-host", "0.0.0.0", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                         cwd=ROOT, capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 2 and b"needs a token" in run.stderr


def test_pipelined_admin_requests_are_all_answered(server):
    import socket

    s = socket.create_connection((server.admin_host, server.admin_port), timeout=30)
    try:
        s.sendall(b"GET /admin/ping HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
        data = b""
        while data.count(b"PONG") < 3:
            chunk = s.recv(4096)
            assert chunk, f"closed after {data.count(b'PONG')} answers"
            data += chunk
    finally:
        s.close()


def test_deleting_an_app_under_load_disturbs_nothing_else(server):
    _ok(server, "add_app", {"name": "doomed", "input_type": "floats", "input_shape": [4], "models": ["m"],
                            "latency_slo_micros": 20000000})
    (sched,) = server.children("scheduler")
    with Stream(server) as stream, Stream(server, app="doomed") as doomed:
        _ok(server, "delete_app", {"name": "doomed"})
        t = time.monotonic()
        until(lambda: len(doomed.since(t)) >= 10 and len(stream.since(t)) >= 10, "answers after the delete")
        assert {e[1] for e in doomed.since(t + 1.0)} <= {404}
    assert stream.bad() == []
    assert {e[1] for e in doomed.events} <= {200, 404}
    assert [c.pid for c in server.children("scheduler")] == [sched.pid]


SLOW = """
[[models]]
name = "slow"
entry_point = "tests.models:SlowTorchMLP"
input_type = "floats"
input_shape = [16]
max_batch_size = 1
replicas = 2
init_args = { hold_s = 0.5 }

[[apps]]
name = "slow"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 60000000
models = ["slow"]
"""


def test_a_scale_down_survives_a_scheduler_death(tmp_path):
    import os
    import signal

    with SchoonerServer(tmp_path, SLOW) as srv:
        busy = [threading.Thread(target=srv.predict, args=("slow", {"input": [1.0] * 16}), daemon=True) for _ in range(4)]
        for t in busy:
            t.start()
        result = {}
        call = threading.Thread(target=lambda: result.update(r=srv.admin("set_num_replicas",
                                                                          {"model_name": "slow", "num_replicas": 1})))
        call.start()
        time.sleep(0.1)  # the call is under way (a race either way is fine: both orders must end well)
        (sched,) = srv.children("scheduler")
        os.kill(sched.pid, signal.SIGKILL)
        call.join(120)
        assert not call.is_alive(), "the admin call hung"
        assert result["r"][0] == 200, result
        until(lambda: len(srv.children("model")) == 1, "one model process left")
        until(lambda: srv.predict("slow", {"input": [2.0] * 16})[0] == 200, "service after the restart")
        for t in busy:
            t.join(60)
        assert srv.stop() == 0
