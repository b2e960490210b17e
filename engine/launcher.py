"""`schooner.Server`: start an engine from Python, drive it, stop it.

The engine runs as `schooner serve` in a child process started with a fresh interpreter
(subprocess, never `fork`: the user's process may hold CUDA or threads), on ports of its own
(0: free ones, read back from what it prints). `start()` returns when it serves; the admin
methods (those of `AdminClient`) answer when their change is in force; leaving the `with`
block or `stop()` drains and cleans up as SIGTERM does. An engine that dies makes the next
call raise `EngineExited` with the end of its log, rather than hang.

Closures: `deploy_python_closure` serializes a function with cloudpickle into the data
directory; the model process loads it (`schooner.model_procs.loaders:Closure`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

from schooner.engine.client import AdminClient

_SERVING = re.compile(r"at http://([^ ]+):(\d+) \(instance ([0-9a-fx]+)\)")
_ADMIN = re.compile(r"Admin API at http://([^ ]+):(\d+)/admin/")


class EngineExited(RuntimeError):
    """The engine's process is gone; the message holds the end of its log."""


class Server(AdminClient):
    def __init__(self, config: str | None = None, *, host: str = "127.0.0.1", port: int = 0, admin_port: int = 0,
                 data_dir: str | None = None, frontends: int | None = None, admin_token: str | None = None,
                 python: str | None = None, startup_timeout_s: float = 300.0, extra_args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.host, self.port_arg, self.admin_port_arg = host, port, admin_port
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="schooner-")
        self.frontends = frontends
        self.python = python or sys.executable
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.log: deque[str] = deque(maxlen=200)
        self.query_url = ""
        super().__init__("http://127.0.0.1:1", admin_token, alive=self._check_alive)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Server:
        config = self.config
        if config is None:  # no file: an empty engine, filled through the admin API
            config = os.path.join(self.data_dir, "launcher.toml")
            with open(config, "w") as f:
                f.write("# started by schooner.Server: apps and models come from the admin API\n")
        args = [self.python, "-m", "schooner.engine.cli", "serve", "--config", config, "--host", self.host,
                "--port", str(self.port_arg), "--admin-port", str(self.admin_port_arg), "--data-dir", self.data_dir,
                *self.extra_args]
        if self.frontends:
            args += ["--frontends", str(self.frontends)]
        env = dict(os.environ)
        if self.token:
            env["SCHOONER_ADMIN_TOKEN"] = self.token
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        serving = admin = None
        while serving is None or admin is None:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                code = self.proc.wait()
                raise EngineExited(f"schooner serve exited with code {code} before serving:\n{self._tail()}")
            self.log.append(line)
            serving = serving or _SERVING.search(line)
            admin = admin or _ADMIN.search(line)
            if time.monotonic() > deadline:
                self.stop()
                raise EngineExited(f"schooner serve did not start within {self.startup_timeout_s:g} s:\n{self._tail()}")
        self.query_url = f"http://{serving.group(1)}:{serving.group(2)}"
        self.instance = serving.group(3)
        AdminClient.__init__(self, f"http://{admin.group(1)}:{admin.group(2)}", self.token, alive=self._check_alive)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line.decode(errors="replace"))

    def _tail(self) -> str:
        return "".join(list(self.log)[-40:])

    def _check_alive(self) -> None:
        if self.proc is None:
            raise EngineExited("the engine is not started")
        code = self.proc.poll()
        if code is not None:
            raise EngineExited(f"the engine exited with code {code}:\n{self._tail()}")

    @property
    def admin_url(self) -> str:
        return self.url

    def stop(self, timeout_s: float = 120.0) -> int:
        """Drain and stop (SIGTERM, as a terminal would); returns the engine's exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return code

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- closures ----------------------------------------------------------------------------

    def deploy_python_closure(self, name: str, version: str, func, input_type: str, **settings) -> dict:
        """Deploy `func(batch) -> outputs` as a model version (serialized with cloudpickle into
        the data directory; the model process loads it)."""
        import cloudpickle

        folder = os.path.join(self.data_dir, "closures")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}-{version}.pkl")
        with open(path, "wb") as f:
            cloudpickle.dump(func, f)
        init_args = {**settings.pop("init_args", {}), "path": path}
        return self.deploy_model(name, version, input_type, entry_point="schooner.model_procs.loaders:Closure",
                                 init_args=init_args, **settings)
