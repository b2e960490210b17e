"""Test helper: a real `schooner serve` process on a free port, and an HTTP client for it.

`SchoonerServer` spawns the CLI exactly as a user would, reads the port from the line it
prints, and on exit checks what a user would notice: the process exited, no child process is
left, and no shared-memory segment of its instance remains in /dev/shm.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import orjson
import psutil

from schooner.ipc.shm import list_segments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SERVING = re.compile(r"at http://([^ ]+):(\d+) \(instance ([0-9a-fx]+)\)")
_ADMIN = re.compile(r"Admin API at http://([^ ]+):(\d+)/admin/")


class ClientThread(threading.Thread):
    """A test's client thread whose exception is kept, not lost: `finish` joins it within a
    deadline and re-raises what it raised (a thread still running is a failure too)."""

    def __init__(self, target, *args) -> None:
        super().__init__(daemon=True)
        self._call = (target, args)
        self.error: BaseException | None = None

    def run(self) -> None:
        target, args = self._call
        try:
            target(*args)
        except BaseException as e:  # noqa: B036 -- kept for the test to re-raise
            self.error = e


def finish(threads, timeout_s: float = 120) -> None:
    """Join every thread within one overall deadline; fail on the first that raised or hangs."""
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"client threads still running after {timeout_s} s: {stuck}"
    for t in threads:
        if t.error is not None:
            raise AssertionError(f"client thread {t.name} failed: {t.error!r}") from t.error


def start(threads):
    for t in threads:
        t.start()
    return threads


def until(cond, what: str, timeout_s: float = 60):
    """Poll `cond` until it returns something truthy (returned), failing after `timeout_s`:
    a test waits for a condition, never for a fixed time, and never forever."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def toml_config(text: str) -> str:
    return textwrap.dedent(text)


class SchoonerServer:
    def __init__(self, tmp_path, config: str | None = None, *extra: str, startup_s: float = 90) -> None:
        self.tmp_path = tmp_path
        args = [sys.executable, "-m", "schooner.engine.cli", "serve", "--port", "0", *extra]
        if "--admin-port" not in extra:
            args += ["--admin-port", "0"]
        if config is not None:
            path = tmp_path / "schooner.toml"
            path.write_text(toml_config(config))
            args += ["--config", str(path)]
        if "--data-dir" not in extra:
            args += ["--data-dir", str(tmp_path / "data")]
        self.log_path = tmp_path / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log)
        self.lines: list[str] = []
        deadline = time.monotonic() + startup_s
        m = None
        while m is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"server exited with {self.proc.wait()}: {self.log()}")
            self.lines.append(line)
            m = _SERVING.search(line)
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time: " + self.log())
        self.host, self.port, self.instance = m.group(1), int(m.group(2)), m.group(3)
        line = self.proc.stdout.readline().decode()  # printed right after the serving line
        self.lines.append(line)
        a = _ADMIN.search(line)
        self.admin_host, self.admin_port = (a.group(1), int(a.group(2))) if a else (None, None)
        self._rest = threading.Thread(target=self._read_rest, daemon=True)
        self._rest.start()
        self.all_pids: set[int] = set()
        self.remember_children()

    def _read_rest(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.decode())

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def children(self, role: str | None = None) -> list[psutil.Process]:
        out = []
        for c in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = " ".join(c.cmdline())
            except psutil.NoSuchProcess:
                continue
            if role is None or f'"role":"{role}"' in cmd:
                out.append(c)
        return out

    def remember_children(self) -> None:
        self.all_pids |= {c.pid for c in self.children()}

    def segments(self) -> list[str]:
        return [s for s in list_segments() if f"-{self.instance}-" in s]

    def connect(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, conn=None, headers=None):
        """(status, parsed JSON or raw bytes, headers) of one request."""
        own = conn is None
        conn = conn or self.connect()
        data = body if isinstance(body, (bytes, type(None))) else orjson.dumps(body)
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        if own:
            conn.close()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = raw
        return resp.status, parsed, dict(resp.getheaders())

    def admin(self, endpoint: str, body=None, token: str | None = None, timeout: float = 300):
        """(status, parsed JSON or raw bytes) of one admin API call (POST, or GET for ping)."""
        conn = http.client.HTTPConnection(self.admin_host, self.admin_port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            method = "GET" if endpoint == "ping" else "POST"
            conn.request(method, f"/admin/{endpoint}", body=None if body is None else orjson.dumps(body), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return resp.status, raw

    def predict(self, app: str, payload, conn=None):
        status, body, _ = self.request("POST", f"/{app}/predict", payload, conn)
        return status, body

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError("server did not stop after SIGTERM: " + self.log()) from None
        finally:
            self._log.close()
        return code

    def assert_clean(self) -> None:
        leftover = [p for p in self.all_pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not leftover, f"child processes left behind: {leftover}"
        assert not self.segments(), f"shared memory left behind: {self.segments()}"

    def __enter__(self) -> SchoonerServer:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()
        self.assert_clean()
