"""Peer systems as small records a harness can plug in: ``start(workload) -> base_url``, ``stop()``.

Owns the lifecycle of the peer servers (LitServe, Ray Serve). Each record serves one workload
of ``benchmarks.workloads`` at a time under the inline server's HTTP contract
(``POST <base_url>/<workload>/predict``, ``GET <base_url>/v2/health/ready``):

    system = make_peer_system("rayserve", log_dir)
    base_url = system.start("w1")       # installs the peer's venv on first use; returns when ready
    ...                                 # any client on the host's loopback can use base_url
    report = system.stop()              # idempotent; StopReport as benchmarks.server_proc's

``start`` raises ``ServerStartError`` (with the log tail) when the server exits or is not ready
within ``ready_deadline_s``; after a failed start ``stop`` still cleans up. A record is reusable:
``start`` after ``stop`` starts a fresh server.

``load_route`` says how a load generator that can run as a separate process reaches the server
*without* any extra hop: a command prefix and a base URL. For LitServe it is the base URL itself.
Ray Serve runs confined to its own network and PID namespaces (see
``benchmarks.peers.rayserve_server``), so its ``base_url`` goes through a port forward
(``benchmarks.peers.netns_forward``) while its ``load_route`` is
``nsenter --target <pid> --net`` with the server's own port in there. ``stop`` checks that no
process is left in Ray's network namespace (and kills and reports any that is).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import psutil

from benchmarks.peers.envs import REPO_ROOT, PeerEnv, ensure_env
from benchmarks.server_proc import (
    LOOPBACK,
    READY_POLL_INTERVAL_S,
    ServerProc,
    ServerStartError,
    StopReport,
    free_port,
    is_ready,
    log_tail,
)

RAY_READY_DEADLINE_S = 180.0  # Ray starts GCS, raylet, agents, controller, proxy, replica
RAY_STOP_GRACE_S = 45.0  # serve.shutdown + ray.shutdown + ray stop took ~7 s here
RAY_HTTP_PORT = 8000  # inside Ray's own network namespace: nothing else listens there
NAMESPACE_PREFIX = ("unshare", "--net", "--pid", "--fork", "--mount-proc", "--")
INIT_PID_DEADLINE_S = 10.0


@dataclass(frozen=True, slots=True)
class LoadRoute:
    """How a load-generator process reaches the server directly: run it under ``prefix``."""

    prefix: tuple[str, ...]
    base_url: str


class PeerSystem(Protocol):
    name: str

    def start(self, workload: str) -> str: ...

    def stop(self) -> StopReport: ...

    @property
    def load_route(self) -> LoadRoute: ...

    @property
    def env(self) -> PeerEnv | None: ...

    @property
    def log_path(self) -> Path | None: ...

    def describe(self) -> dict[str, object]: ...


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def base_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


# ---------------------------------------------------------------------------------------------
# LitServe


@dataclass(slots=True)
class LitServeSystem:
    """LitServe (``benchmarks.peers.litserve_server``) as a ServerProc on the host's loopback."""

    log_dir: Path
    server_cpus: str | None = None
    fast_queue: bool = False
    name: str = "litserve"
    _env: PeerEnv | None = None
    _server: ServerProc | None = None
    _url: str | None = None
    _log_path: Path | None = None

    def start(self, workload: str) -> str:
        self.stop()
        self._env = ensure_env("litserve", announce=False)
        port = free_port()
        argv = [str(self._env.python), "-m", "benchmarks.peers.litserve_server"]
        argv += ["--workload", workload, "--port", str(port)]
        if self.fast_queue:
            argv.append("--fast-queue")
        self._log_path = self.log_dir / f"{self.name}-{workload}.log"
        self._server = ServerProc(
            f"{self.name} {workload}",
            pinned(argv, self.server_cpus),
            port,
            REPO_ROOT,
            self._log_path,
        )
        self._server.start()
        try:
            self._server.wait_ready()
        except BaseException:
            self._server.stop()
            raise
        self._url = base_url(port)
        return self._url

    def stop(self) -> StopReport:
        server, self._server, self._url = self._server, None, None
        if server is None:
            return StopReport(exit_code=None, killed=False)
        return server.stop()

    @property
    def load_route(self) -> LoadRoute:
        if self._url is None:
            raise RuntimeError(f"{self.name} is not running")
        return LoadRoute((), self._url)

    @property
    def env(self) -> PeerEnv | None:
        return self._env

    @property
    def log_path(self) -> Path | None:
        """The server's log (stdout and stderr) of the last start."""
        return self._log_path

    def describe(self) -> dict[str, object]:
        return {
            "system": self.name,
            "server": "benchmarks/peers/litserve_server.py",
            "max_batch_size": 64,
            "batch_timeout_s": 0.002,
            "workers_per_device": 1,
            "api_servers": 1,
            "fast_queue": self.fast_queue,
            "server_cpus": self.server_cpus,
        }


# ---------------------------------------------------------------------------------------------
# Ray Serve


def netns_id(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def processes_in_netns(ns: str) -> list[psutil.Process]:
    found = []
    for pid in psutil.pids():
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == ns:
                found.append(psutil.Process(pid))
        except (OSError, psutil.NoSuchProcess):
            continue
    return found


@dataclass(slots=True)
class RayServeSystem:
    """Ray Serve in its own loopback-only namespaces, plus a port forward from the host's loopback."""

    log_dir: Path
    server_cpus: str | None = None
    name: str = "rayserve"
    _env: PeerEnv | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _init_pid: int | None = None
    _netns: str | None = None
    _forward: ServerProc | None = None
    _url: str | None = None
    _log_path: Path | None = None

    def start(self, workload: str) -> str:
        self.stop()
        self._env = ensure_env("rayserve", announce=False)
        argv = [*NAMESPACE_PREFIX, str(self._env.python), "-m", "benchmarks.peers.rayserve_server"]
        argv += ["--workload", workload, "--port", str(RAY_HTTP_PORT)]
        argv = pinned(argv, self.server_cpus)
        self._log_path = self.log_dir / f"{self.name}-{workload}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with self._log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._init_pid = self._wait_init_pid()
            self._netns = netns_id(self._init_pid)
            port = free_port()
            forward = [sys.executable, "-m", "benchmarks.peers.netns_forward"]
            forward += ["--netns", f"/proc/{self._init_pid}/ns/net"]
            forward += ["--target-port", str(RAY_HTTP_PORT), "--listen-port", str(port)]
            self._forward = ServerProc(
                f"{self.name} {workload} forward",
                forward,
                port,
                REPO_ROOT,
                self.log_dir / f"{self.name}-{workload}-forward.log",
            )
            self._forward.start()
            self._wait_ready(port, " ".join(argv))
        except BaseException:
            self.stop()
            raise
        self._url = base_url(port)
        return self._url

    def _wait_init_pid(self) -> int:
        """The PID (as the host sees it) of the server: the child unshare forked into the namespaces."""
        assert self._proc is not None
        give_up = time.monotonic() + INIT_PID_DEADLINE_S
        while time.monotonic() < give_up:
            try:
                children = psutil.Process(self._proc.pid).children()
            except psutil.NoSuchProcess:
                children = []
            if children:
                return children[0].pid
            if self._proc.poll() is not None:
                break
            time.sleep(READY_POLL_INTERVAL_S)
        raise ServerStartError(
            f"{self.name}: unshare started no server process\n--- log tail ---\n"
            f"{log_tail(self._log_path) if self._log_path else ''}"
        )

    def _wait_ready(self, port: int, command: str) -> None:
        assert self._proc is not None and self._forward is not None and self._log_path
        give_up = time.monotonic() + RAY_READY_DEADLINE_S
        while not is_ready(port):
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self._proc.returncode} before it was ready\n"
                    f"command: {command}\n--- log tail ---\n{log_tail(self._log_path)}"
                )
            if self._forward.stop_report is not None or time.monotonic() > give_up:
                raise ServerStartError(
                    f"{self.name}: GET /v2/health/ready through the forward on port {port} did "
                    f"not answer 200 within {RAY_READY_DEADLINE_S:.0f} s\ncommand: {command}\n"
                    f"--- log tail ---\n{log_tail(self._log_path)}"
                )
            time.sleep(READY_POLL_INTERVAL_S)

    def stop(self) -> StopReport:
        """Forward down, SIGTERM to the server (PID 1 of its namespace), bounded wait, KILL, leak check."""
        forward, self._forward = self._forward, None
        if forward is not None:
            forward.stop()
        proc, init_pid, ns = self._proc, self._init_pid, self._netns
        self._proc = self._init_pid = self._netns = self._url = None
        if proc is None:
            return StopReport(exit_code=None, killed=False)
        killed = False
        if proc.poll() is None:
            # unshare --fork ignores SIGTERM itself and exits with its child's status.
            if init_pid is not None:
                try:
                    os.kill(init_pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=RAY_STOP_GRACE_S if init_pid is not None else 0)
            except subprocess.TimeoutExpired:
                killed = True
                # The group holds unshare and the namespace's PID 1; when PID 1 dies the kernel
                # kills every other process of the PID namespace.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        leftovers = processes_in_netns(ns) if ns else []
        for p in leftovers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=5)
        return StopReport(
            exit_code=proc.returncode, killed=killed, leftover_pids=[p.pid for p in leftovers]
        )

    @property
    def load_route(self) -> LoadRoute:
        if self._init_pid is None or self._url is None:
            raise RuntimeError(f"{self.name} is not running")
        return LoadRoute(
            ("nsenter", f"--target={self._init_pid}", "--net"), base_url(RAY_HTTP_PORT)
        )

    @property
    def env(self) -> PeerEnv | None:
        return self._env

    @property
    def log_path(self) -> Path | None:
        """The server's log (stdout and stderr) of the last start."""
        return self._log_path

    def describe(self) -> dict[str, object]:
        return {
            "system": self.name,
            "server": "benchmarks/peers/rayserve_server.py",
            "max_batch_size": 64,
            "batch_wait_timeout_s": 0.002,
            "max_ongoing_requests": 128,
            "num_replicas": 1,
            "ray_init": {"num_cpus": 2, "include_dashboard": False},
            "namespaces": " ".join(NAMESPACE_PREFIX),
            "server_cpus": self.server_cpus,
        }


PEER_SYSTEMS: Mapping[str, Callable[..., PeerSystem]] = MappingProxyType(
    {"litserve": LitServeSystem, "rayserve": RayServeSystem}
)


def make_peer_system(
    name: str, log_dir: Path, server_cpus: str | None = None, **options: object
) -> PeerSystem:
    """A stopped peer system record; ``log_dir`` receives its server logs.

    ``options`` are the system's own settings (LitServe: ``fast_queue``).
    """
    return PEER_SYSTEMS[name](log_dir=log_dir, server_cpus=server_cpus, **options)
