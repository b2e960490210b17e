"""The fault suite: SIGKILL of a model process, the scheduler and one frontend under a steady
stream of queries; a role that keeps dying; SIGHUP; a port held by another server.

Under each fault the stream's failures are bounded by what was in flight when it struck (the
clients run one request at a time, so at most one each), service comes back, and after the
stop no process and no shared-memory segment is left (`SchoonerServer.__exit__`).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
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
max_restarts = {max_restarts}
restart_window_s = 60

[[models]]
name = "summer"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [4]
replicas = 2

[[apps]]
name = "sums"
input_type = "floats"
input_shape = [4]
latency_slo_micros = 10000000
default_output = "-1"
models = ["summer"]
"""

CLIENTS = 4


class Stream:
    """CLIENTS threads, each sending one query at a time on a fresh connection, recording
    every outcome; `failures()` counts what was not a correct 200."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.stop = threading.Event()
        self.outcomes: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def _run(self, i: int) -> None:
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                x = [float(i), float(n % 7), 1.0, 2.0]
                try:
                    conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=30)
                    conn.request("POST", "/sums/predict", orjson.dumps({"input": x}))
                    resp = conn.getresponse()
                    body = orjson.loads(resp.read())
                    conn.close()
                    ok = resp.status == 200 and body["output"] == sum(x) and not body["default"]
                    outcome = "ok" if ok else f"{resp.status} {body.get('cause') or body}"
                except (OSError, http.client.HTTPException) as e:
                    outcome = type(e).__name__
                with self.lock:
                    self.outcomes.append((time.monotonic(), outcome))
        except BaseException as e:  # recorded: a broken client must fail the test
            self.errors.append(e)

    def __enter__(self) -> Stream:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"
        assert not self.errors, self.errors

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def failures(self) -> list[str]:
        with self.lock:
            return [o for _, o in self.outcomes if o != "ok"]

    def ok_after(self, t: float) -> int:
        with self.lock:
            return sum(1 for at, o in self.outcomes if at > t and o == "ok")




def _restarts(srv, role: str) -> int:
    _, text, _ = srv.request("GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(f'schooner_process_restarts_total{{role="{role}"}}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


@pytest.mark.parametrize("role", ["model", "scheduler", "frontend"])
def test_sigkill_under_a_steady_stream(tmp_path, role):
    with SchoonerServer(tmp_path, CONFIG.format(max_restarts=5)) as srv:
        with Stream(srv) as stream:
            until(lambda: stream.count() >= 50, "the stream to run")
            before = stream.count()
            victim = srv.children(role)[0]
            srv.remember_children()
            killed_at = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            # service comes back: new successes after the kill, and the role was respawned
            until(lambda: stream.ok_after(killed_at) >= 50, "service after the kill")
            until(lambda: _restarts(srv, role) == 1, "the restart to be counted")
            until(lambda: len(srv.children(role)) == (2 if role != "scheduler" else 1), f"a new {role}")
            assert victim.pid not in [c.pid for c in srv.children(role)]
            assert stream.count() > before
        failures = stream.failures()
        # At most what was in flight: one query per client when the process died (a frontend's
        # connections are reset, a scheduler's in-flight queries are answered 503). Model
        # deaths are retried on the other replica, so they should cost nothing.
        assert len(failures) <= CLIENTS, (len(failures), failures)
        if role == "model":
            assert failures == [], failures
        srv.remember_children()
        assert srv.stop() == 0


def test_a_frontend_that_keeps_dying_stops_the_server_with_a_clear_log_line(tmp_path):
    srv = SchoonerServer(tmp_path, CONFIG.format(max_restarts=3))
    try:
        for _ in range(3):
            (victim, *_) = srv.children("frontend")
            srv.remember_children()
            os.kill(victim.pid, signal.SIGKILL)
            def replaced_or_stopped(victim=victim):
                if srv.proc.poll() is not None:
                    return True
                pids = [c.pid for c in srv.children("frontend")]
                return victim.pid not in pids and len(pids) == 2

            until(replaced_or_stopped, "the frontend to be replaced or the server to stop")
        assert srv.proc.wait(60) == 1
        log = srv.log()
        assert "the 3rd death of a frontend within 60 s; stopping the server" in log
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
        srv.__exit__(None, None, None)


def test_sighup_drains_and_stops_like_sigterm(tmp_path):
    with SchoonerServer(tmp_path, CONFIG.format(max_restarts=5)) as srv:
        assert srv.predict("sums", {"input": [1, 2, 3, 4]})[0] == 200
        srv.remember_children()
        assert srv.stop(signal.SIGHUP) == 0
        assert "draining: " in srv.log_path.read_text()  # the frontends drained: a stop, not a death


def test_a_port_held_by_another_server_fails_the_start_with_address_in_use(tmp_path):
    with SchoonerServer(tmp_path, CONFIG.format(max_restarts=5)) as first:
        cfg = tmp_path / "second.toml"
        cfg.write_text(CONFIG.format(max_restarts=5))
        second = subprocess.run(
            [sys.executable, "-m", "schooner.engine.cli", "serve", "--port", str(first.port), "--admin-port", "0", "--config", str(cfg),
             "--data-dir", str(tmp_path / "d2")],
            cwd=ROOT, capture_output=True, timeout=120,
        )
        assert second.returncode == 1
        assert b"address in use" in second.stderr
        assert first.predict("sums", {"input": [1, 2, 3, 4]})[0] == 200
    # and a plain socket holding a port is refused the same way
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        third = subprocess.run(
            [sys.executable, "-m", "schooner.engine.cli", "serve", "--port", str(port), "--admin-port", "0", "--config", str(cfg),
             "--data-dir", str(tmp_path / "d3")],
            cwd=ROOT, capture_output=True, timeout=120,
        )
        assert third.returncode == 1 and b"address in use" in third.stderr
    finally:
        holder.close()
