"""Schooner as a system under test: the one config builder, the start, and its settings read back.

Owns ``ModelEntry`` and ``schooner_toml`` (every Schooner config any suite serves is built here:
one model linked to one app of the same name per entry), and ``SchoonerSystem``: ``schooner
serve --config`` started by ``ServerProc`` (readiness on ``GET /v2/health/ready``, SIGTERM then
SIGKILL of its group, leftovers reported). The settings a table prints come from the running
server: ``GET /v2/models/<app>/config`` (max batch, delayed-batching wait, AIMD or fixed,
replicas), not from the TOML that was asked for. A workload from a user's config
(``--config FILE --app NAME``) is served from that file unchanged. The admin API (``--admin-port
0``): ``admin_url`` reads the port the server printed, ``admin_call`` makes one call, and
``add_model_body`` is a ``ModelEntry`` as Clipper's ``add_model`` body (same keys as the TOML).
``SchoonerVariant`` is ``schooner`` with more ``[server]`` lines (a suite's ``--variant``), on top
of the context's (``--schooner-set``): a key both set takes the variant's value.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from benchmarks.harness import REPO_ROOT
from benchmarks.harness.machine import pinned
from benchmarks.harness.servers import LOOPBACK, ServerProc, free_port, log_tail
from benchmarks.systems import RunningSystem, StartContext
from benchmarks.workloads import Workload


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model and one app of the same name in a generated config."""

    name: str
    workload: Workload
    slo_micros: int
    max_batch_size: int = 64
    batch_size: int = -1  # -1: AIMD
    batch_wait_micros: int = 0
    cache: bool | None = None  # None: the workload's


def entry_for(workload: Workload, ctx: StartContext, **overrides) -> ModelEntry:
    return ModelEntry(
        workload.name, workload, round(ctx.slo_ms * 1000),
        max_batch_size=ctx.batching.max_batch_size, batch_wait_micros=ctx.batching.wait_micros,
        **overrides,
    )


def _toml_value(v: object) -> str:
    return orjson.dumps(v).decode() if isinstance(v, str) else repr(v)


def schooner_toml(entries: Sequence[ModelEntry]) -> str:
    parts = []
    for e in entries:
        w = e.workload
        shape = ", ".join(map(str, w.input_shape))
        init = ", ".join(f"{k} = {_toml_value(v)}" for k, v in w.init_args.items())
        parts.append(
            f'[[models]]\nname = "{e.name}"\nversion = "1"\nentry_point = "{w.entry_point}"\n'
            f'input_type = "{w.input_type}"\ninput_shape = [{shape}]\nmax_batch_size = {e.max_batch_size}\n'
            f"batch_size = {e.batch_size}\nbatch_wait_timeout_micros = {e.batch_wait_micros}\n"
            f'replicas = 1\ndevice = "cpu"\n' + (f"init_args = {{ {init} }}\n" if init else "")
        )
    for e in entries:
        w = e.workload
        shape = ", ".join(map(str, w.input_shape))
        cache = w.cache if e.cache is None else e.cache
        parts.append(
            f'[[apps]]\nname = "{e.name}"\ninput_type = "{w.input_type}"\ninput_shape = [{shape}]\n'
            f'latency_slo_micros = {e.slo_micros}\ndefault_output = "-1"\n'
            f'cache = {str(cache).lower()}\nmodels = ["{e.name}"]\n'
        )
    return "\n".join(parts)


def add_model_body(e: ModelEntry, version: str, init_args: dict[str, object]) -> dict[str, object]:
    """``POST /admin/add_model``'s body for another version of ``e``'s model (what its TOML says)."""
    w = e.workload
    return {
        "model_name": e.name, "model_version": version, "entry_point": w.entry_point, "input_type": w.input_type,
        "input_shape": list(w.input_shape), "max_batch_size": e.max_batch_size, "batch_size": e.batch_size,
        "batch_wait_timeout_micros": e.batch_wait_micros, "replicas": 1, "device": "cpu", "init_args": init_args,
    }


ADMIN_LINE = re.compile(rb"Admin API at (http://\S+?)/admin/")


def admin_url(running: RunningSystem, wait_s: float = 10.0) -> str:
    """The admin API's base URL, from the line ``schooner serve`` prints right after it serves."""
    give_up = time.monotonic() + wait_s
    while True:
        found = ADMIN_LINE.search(running.log_path.read_bytes()) if running.log_path else None
        if found:
            return found.group(1).decode()
        if time.monotonic() > give_up:
            raise RuntimeError(f"no admin API line in the server log\n{log_tail(running.log_path) if running.log_path else ''}")
        time.sleep(0.05)


def admin_call(base_url: str, endpoint: str, body: dict[str, object], timeout_s: float = 600.0) -> tuple[int, object]:
    """(status, parsed JSON) of ``POST /admin/<endpoint>``; it answers once the change is in force."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout_s)
    try:
        conn.request("POST", f"/admin/{endpoint}", body=orjson.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return response.status, raw.decode(errors="replace")


def read_settings(port: int, app: str) -> dict[str, object]:
    """What the running server says about ``app``'s model (Triton's model config route)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5.0)
    try:
        conn.request("GET", f"/v2/models/{app}/config")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        return {"error": f"GET /v2/models/{app}/config failed: {exc!r}"}
    finally:
        conn.close()
    if response.status != 200:
        return {"error": f"GET /v2/models/{app}/config answered {response.status}"}
    cfg = orjson.loads(body)
    dyn = cfg.get("dynamic_batching", {})
    params = cfg.get("parameters", {}).get("batching", {})
    return {
        "max_batch_size": cfg.get("max_batch_size"),
        "batch_wait_s": dyn.get("max_queue_delay_microseconds", 0) / 1e6,
        "batching": params.get("string_value"),
        "replicas": sum(g.get("count", 0) for g in cfg.get("instance_group", [])),
        "slo_s": dyn.get("default_queue_policy", {}).get("default_timeout_microseconds", 0) / 1e6,
    }


def start_schooner(
    label: str, toml: str | None, config_path: str | None, ctx: StartContext, settings_app: str | None,
    extra_args: Sequence[str] = (),
) -> RunningSystem:
    """``schooner serve`` with ``toml`` (written to the work dir) or an existing ``config_path``."""
    port = free_port()
    if toml is not None:
        if ctx.schooner_server:
            toml = "[server]\n" + "\n".join(ctx.schooner_server) + "\n\n" + toml
        path = ctx.work_dir / f"{label.replace(' ', '-')}.toml"
        path.write_text(toml)
        config_path = str(path)
    argv = [sys.executable, "-m", "schooner.engine.cli", "serve", "--port", str(port), "--admin-port", "0",
            "--reset-registry"]  # hermetic: every start serves exactly the config it was given
    if config_path is not None:
        argv += ["--config", config_path]
    if ctx.allow_client_shm:
        argv.append("--allow-client-shm")
    argv += list(extra_args)
    log = ctx.work_dir / f"{label.replace(' ', '-')}.log"
    server = ServerProc(label, pinned(argv, ctx.server_cpus), port, REPO_ROOT, log)
    server.__enter__()  # ready, or ServerStartError with the log tail (and stopped)
    settings = read_settings(port, settings_app) if settings_app else {}
    settings["server_cpus"] = ctx.server_cpus
    settings["server_settings"] = list(ctx.schooner_server)
    return RunningSystem(
        "schooner", f"http://{LOOPBACK}:{port}", server.stop, settings, metrics_port=port,
        log_path=log, config_text=toml if toml is not None else None, pid=server.pid,
    )


class SchoonerSystem:
    name = "schooner"
    description = "schooner serve: 1 frontend, scheduler, 1 model replica, AIMD"
    batching = True

    def serves(self, workload: Workload) -> bool:
        return True

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem:
        if workload.config_path is not None:
            return start_schooner(f"schooner {workload.app_name}", None, workload.config_path, ctx, workload.app_name)
        toml = schooner_toml([entry_for(workload, ctx)])
        return start_schooner(f"schooner {workload.name}", toml, None, ctx, workload.name)


def server_lines(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """``[server]`` lines ("key = value") of ``base`` with ``extra`` on top: a key in both keeps its
    place in ``base`` and takes ``extra``'s value; the rest of ``extra`` follows."""
    lines = {line.split("=", 1)[0].strip(): line for line in base}
    lines.update({line.split("=", 1)[0].strip(): line for line in extra})
    return tuple(lines.values())


class SchoonerVariant:
    """``schooner`` started with more ``[server]`` lines: the system ``schooner-NAME``."""

    batching = True

    def __init__(self, name: str, server: Sequence[str]) -> None:
        self.name = f"schooner-{name}"
        self.server = tuple(server)
        self.description = f"schooner serve with [server] {'; '.join(self.server)}"

    def serves(self, workload: Workload) -> bool:
        return workload.config_path is None  # a user's config is served unchanged: no lines to add

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem:
        ctx = dataclasses.replace(ctx, schooner_server=server_lines(ctx.schooner_server, self.server))
        toml = schooner_toml([entry_for(workload, ctx)])
        return start_schooner(f"{self.name} {workload.name}", toml, None, ctx, workload.name)


class DemoSystem:
    """``schooner serve`` with no config: the built-in digits app (its inputs repeat)."""

    name = "demo"
    description = "schooner serve with no config: the built-in digits demo"
    batching = True

    def serves(self, workload: Workload) -> bool:
        return workload.name == "digits"

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem:
        return start_schooner("demo digits", None, None, ctx, "digits")
