"""The peers as systems under test: LitServe and Ray Serve behind ``benchmarks.systems.System``.

Owns the lifecycle of the peer servers. Each serves one workload of ``benchmarks.workloads`` at a
time under the inline server's HTTP contract, with the batching of the table being measured
(``ctx.batching``: the same maximum batch and batch wait as Schooner's), and reports the settings
read back from the started server (LitServe: its ``settings`` log line; Ray: ``GET /v2/settings``):

    running = LitServeSystem(fast_queue=True).start(WORKLOADS["w1"], ctx)   # venv on first use
    ...                                 # any client on the host's loopback can use running.base_url
    report = running.stop()             # idempotent; StopReport as benchmarks.harness.servers's

``start`` raises ``ServerStartError`` (with the log tail) when the server exits or is not ready
within ``ready_deadline_s``; after a failed start ``stop`` still cleans up. A record is reusable:
``start`` after ``stop`` starts a fresh server.

``load_prefix``/``load_base_url`` say how a load generator run as a separate process reaches the
server *without* any extra hop. For LitServe it is the base URL itself.
Ray Serve runs confined to its own network and PID namespaces (see
``benchmarks.systems.rayserve_server``), so its ``base_url`` goes through a port forward
(``benchmarks.systems.netns_forward``) while its load route is
``nsenter --target <pid> --net`` with the server's own port in there. ``stop`` checks that no
process is left in Ray's network namespace (and kills and reports any that is).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

from benchmarks.harness.machine import cpu_count, pinned
from benchmarks.harness.servers import (
    LOOPBACK,
    READY_POLL_INTERVAL_S,
    ServerProc,
    ServerStartError,
    StopReport,
    free_port,
    is_ready,
    kill_all,
    log_tail,
)
from benchmarks.systems import RunningSystem, StartContext
from benchmarks.systems.peer_envs import REPO_ROOT, PeerEnv, ensure_env
from benchmarks.workloads import WORKLOADS, Workload

RAY_READY_DEADLINE_S = 180.0  # Ray starts GCS, raylet, agents, controller, proxy, replica
RAY_STOP_GRACE_S = 45.0  # serve.shutdown + ray.shutdown + ray stop took ~7 s here
RAY_HTTP_PORT = 8000  # inside Ray's own network namespace: nothing else listens there
NAMESPACE_PREFIX = ("unshare", "--net", "--pid", "--fork", "--mount-proc", "--")
INIT_PID_DEADLINE_S = 10.0


SETTINGS_LINE = "settings "
SETTINGS_DEADLINE_S = 10.0


def base_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def env_versions(env: PeerEnv | None) -> dict[str, str | None]:
    if env is None:
        return {}
    main = env.spec.requirements[0].split("[")[0].split("==")[0]
    return {main: env.version_of(main), "torch": env.version_of("torch"), "numpy": env.version_of("numpy")}


def settings_from_log(path: Path) -> dict[str, object]:
    """The ``settings {...}`` line a peer server prints once built (waits for it briefly)."""
    give_up = time.monotonic() + SETTINGS_DEADLINE_S
    while time.monotonic() < give_up:
        for line in log_tail(path).splitlines():
            if line.startswith(SETTINGS_LINE):
                return orjson.loads(line[len(SETTINGS_LINE):])
        time.sleep(READY_POLL_INTERVAL_S)
    return {"error": f"no settings line in {path.name}"}


def serves_registry(workload: Workload) -> bool:
    """Peers serve registry workloads (their servers import the model by name), not a user's config."""
    return workload.config_path is None and workload.name in WORKLOADS


@dataclass(slots=True)
class LitServeSystem:
    """LitServe (``benchmarks.systems.litserve_server``) as a ServerProc on the host's loopback."""

    fast_queue: bool = False
    batching: bool = True

    @property
    def name(self) -> str:
        return "litserve-fq" if self.fast_queue else "litserve"

    @property
    def description(self) -> str:
        return f"LitServe, 1 API server + 1 worker, fast_queue {'on' if self.fast_queue else 'off'}"

    def serves(self, workload: Workload) -> bool:
        return serves_registry(workload)

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem:
        env = ensure_env("litserve", announce=False)
        port = free_port()
        argv = [str(env.python), "-m", "benchmarks.systems.litserve_server", "--workload", workload.name]
        argv += ["--port", str(port), "--max-batch-size", str(ctx.batching.max_batch_size)]
        argv += ["--batch-wait-s", repr(ctx.batching.batch_wait_s)]
        if self.fast_queue:
            argv.append("--fast-queue")
        log = ctx.work_dir / f"{self.name}-{workload.name}.log"
        server = ServerProc(f"{self.name} {workload.name}", pinned(argv, ctx.server_cpus), port, REPO_ROOT, log)
        server.__enter__()
        settings = {**settings_from_log(log), "server_cpus": ctx.server_cpus}
        return RunningSystem(self.name, base_url(port), server.stop, settings, log_path=log, versions=env_versions(env))


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

    name: str = "rayserve"
    description: str = "Ray Serve, 1 replica (@serve.batch), own network+PID namespace"
    batching: bool = True
    _env: PeerEnv | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _init_pid: int | None = None
    _netns: str | None = None
    _forward: ServerProc | None = None
    _url: str | None = None
    _log_path: Path | None = None

    def serves(self, workload: Workload) -> bool:
        return serves_registry(workload)

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem:
        """Ray gets the CPUs it may really use: ``num_cpus`` = the server CPUs (all when unpinned)."""
        self.stop()
        self._env = ensure_env("rayserve", announce=False)
        argv = [*NAMESPACE_PREFIX, str(self._env.python), "-m", "benchmarks.systems.rayserve_server"]
        argv += ["--workload", workload.name, "--port", str(RAY_HTTP_PORT)]
        argv += ["--max-batch-size", str(ctx.batching.max_batch_size), "--batch-wait-s", repr(ctx.batching.batch_wait_s)]
        argv += ["--num-cpus", str(cpu_count(ctx.server_cpus))]
        argv = pinned(argv, ctx.server_cpus)
        self._log_path = ctx.work_dir / f"{self.name}-{workload.name}.log"
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
            forward = [sys.executable, "-m", "benchmarks.systems.netns_forward"]
            forward += ["--netns", f"/proc/{self._init_pid}/ns/net"]
            forward += ["--target-port", str(RAY_HTTP_PORT), "--listen-port", str(port)]
            self._forward = ServerProc(
                f"{self.name} {workload.name} forward",
                forward,
                port,
                REPO_ROOT,
                ctx.work_dir / f"{self.name}-{workload.name}-forward.log",
            )
            self._forward.start()
            self._wait_ready(port, " ".join(argv))
        except BaseException:
            self.stop()
            raise
        self._url = base_url(port)
        settings = {**self._read_settings(port), "server_cpus": ctx.server_cpus, "namespaces": " ".join(NAMESPACE_PREFIX)}
        return RunningSystem(
            self.name, self._url, self.stop, settings, load_prefix=("nsenter", f"--target={self._init_pid}", "--net"),
            load_base_url=base_url(RAY_HTTP_PORT), log_path=self._log_path, versions=env_versions(self._env),
        )

    def _read_settings(self, port: int) -> dict[str, object]:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10.0)
        try:
            conn.request("GET", "/v2/settings")
            return orjson.loads(conn.getresponse().read())
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return {"error": f"GET /v2/settings failed: {exc!r}"}
        finally:
            conn.close()

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
        leftovers = kill_all(processes_in_netns(ns) if ns else [])
        return StopReport(
            exit_code=proc.returncode, killed=killed, leftover_pids=[p.pid for p in leftovers]
        )
