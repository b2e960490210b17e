"""Server processes under test: start one, wait until it is ready, stop it and check it left nothing.

Owns the lifecycle of every server the harness drives (Schooner, its demo, the inline baseline):
started from the repository root in a new session with its output in a log file, ready when
``GET /v2/health/ready`` answers 200 (bounded deadline), stopped with SIGTERM, then SIGKILL of its
whole process group after a bounded wait. Descendants still alive after the server exits are
reported and killed, so one system's leftovers never load the next system's measurement.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
READY_PATH = "/v2/health/ready"
READY_DEADLINE_S = 60.0
READY_POLL_INTERVAL_S = 0.05
STOP_GRACE_S = 15.0
LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time; the message carries its log tail."""


@dataclass(frozen=True, slots=True)
class StopReport:
    exit_code: int | None
    killed: bool  # SIGTERM was not enough
    leftover_pids: list[int] = field(
        default_factory=list
    )  # descendants alive after the server exited


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def is_ready(port: int) -> bool:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=1.0)
    try:
        conn.request("GET", READY_PATH)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(processes) -> list[psutil.Process]:
    """SIGKILL each of ``processes`` and wait (bounded) for them; returns them."""
    procs = list(processes)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)
    return procs


class ServerProc:
    """One server under test, used as a context manager: ready on entry, stopped on exit."""

    def __init__(
        self, label: str, argv: Sequence[str], port: int, cwd: Path, log_path: Path
    ) -> None:
        self.label = label
        self.argv = list(argv)
        self.port = port
        self.cwd = cwd
        self.log_path = log_path
        self.stop_report: StopReport | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> ServerProc:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        env = dict(os.environ)
        # Model processes import benchmarks.workloads however the server spawns them.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.cwd), env.get("PYTHONPATH", "")) if p
        )
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        assert self._proc is not None
        give_up = time.monotonic() + deadline_s
        while not is_ready(self.port):
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"{self.label} exited with code {self._proc.returncode} before it was ready\n"
                    f"command: {' '.join(self.argv)}\n--- log tail ---\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > give_up:
                raise ServerStartError(
                    f"{self.label}: GET {READY_PATH} on port {self.port} did not answer 200 within {deadline_s:.0f} s\n"
                    f"command: {' '.join(self.argv)}\n--- log tail ---\n{log_tail(self.log_path)}"
                )
            time.sleep(READY_POLL_INTERVAL_S)

    def stop(self) -> StopReport:
        """SIGTERM, a bounded wait, then SIGKILL of the process group; idempotent."""
        if self.stop_report is not None:
            return self.stop_report
        proc = self._proc
        if proc is None:
            self.stop_report = StopReport(exit_code=None, killed=False)
            return self.stop_report
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        killed = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                killed = True
                os.killpg(
                    proc.pid, signal.SIGKILL
                )  # the group this harness created with start_new_session
                proc.wait()
        leftovers = kill_all(p for p in descendants if still_running(p))
        self.stop_report = StopReport(
            exit_code=proc.returncode, killed=killed, leftover_pids=[p.pid for p in leftovers]
        )
        return self.stop_report
