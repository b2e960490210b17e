"""Systems under study: a small record per system, so peers (LitServe, Ray Serve) plug in later.

Owns what ``benchmarks.study`` needs to know about a server: how to start it for a workload
(returning its base URL) and how to stop it, plus, for Schooner, how to read its ``/metrics``
into the figures the study plots (per-stage latency, AIMD batch limit, cache hit rate).

Contract for every system: started fresh for one workload, it serves Clipper's
``POST <base_url>/<workload>/predict`` with ``{"input": [...]}`` (flat, the workload's input size)
and answers ``{"query_id", "output", "default"}``, on loopback. ``stop()`` stops it and every
process it started. A new system is a ``System`` passed to ``register_system``; a module that
does so is loaded with ``python -m benchmarks.study --plugin MODULE`` (``benchmarks.peers``
can add ``study_systems.py`` calling ``register_system`` for LitServe and Ray Serve).

Built in:
  inline    ``benchmarks.inline_server`` (W1, W2) / ``benchmarks.inline_server_extra`` (W3, W4):
            one process, model inline, batch of 1. The Python HTTP limit.
  schooner  ``schooner serve --config``: one model, one app named after the workload,
            ``max_batch_size`` 64, AIMD (``batch_size = -1``), one replica, the study's SLO as
            ``latency_slo_micros``, the cache on for W4 only.
Servers are started and stopped by ``benchmarks.server_proc.ServerProc`` (readiness on
``GET /v2/health/ready``, SIGTERM then SIGKILL of the group, leftover processes reported).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.run import REPO_ROOT, pinned
from benchmarks.scheduler_bench import MetricSample, Setting, counts_of, total
from benchmarks.server_proc import LOOPBACK, ServerProc, StopReport, free_port
from benchmarks.workloads_extra import StudyWorkload

MAX_BATCH_SIZE = 64


@dataclass(frozen=True, slots=True)
class SystemContext:
    """What the study hands every system's ``start``."""

    work_dir: Path  # for configs and logs
    server_cpus: str | None  # taskset CPU list; None: unpinned
    slo_micros: int


@dataclass(slots=True)
class RunningSystem:
    base_url: str  # http://127.0.0.1:PORT, no trailing slash
    stop: Callable[[], StopReport | None]
    metrics_port: int | None = None  # Schooner-style GET /metrics here; None: none
    log_path: Path | None = None
    config_text: str | None = None  # what it was started with, for the JSON


@dataclass(frozen=True, slots=True)
class System:
    name: str
    description: str
    start: Callable[[StudyWorkload, SystemContext], RunningSystem]
    workloads: frozenset[str] | None = None  # those it can serve; None: all
    # first rate of its sweeps when lower than the workload's (a slow peer), snapped to the
    # study's rate grid so that the rates it shares with the other systems are the same
    start_rate_per_s: float | None = None


SYSTEMS: dict[str, System] = {}


def register_system(system: System) -> None:
    SYSTEMS[system.name] = system


def _start_server(
    label: str, argv: list[str], port: int, ctx: SystemContext, **extra: object
) -> RunningSystem:
    log = ctx.work_dir / f"{label.replace(' ', '-')}.log"
    server = ServerProc(label, pinned(argv, ctx.server_cpus), port, REPO_ROOT, log)
    server.__enter__()  # ready, or ServerStartError with the log tail (and stopped)
    return RunningSystem(f"http://{LOOPBACK}:{port}", server.stop, log_path=log, **extra)  # type: ignore[arg-type]


def start_inline(workload: StudyWorkload, ctx: SystemContext) -> RunningSystem:
    port = free_port()
    module = (
        "benchmarks.inline_server"
        if workload.name in ("w1", "w2")
        else "benchmarks.inline_server_extra"
    )
    argv = [
        sys.executable,
        "-m",
        module,
        "--workload",
        workload.name,
        "--port",
        str(port),
        "--host",
        LOOPBACK,
    ]
    return _start_server(f"inline {workload.name}", argv, port, ctx)


def schooner_toml(
    workload: StudyWorkload, slo_micros: int, max_batch_size: int = MAX_BATCH_SIZE
) -> str:
    shape = ", ".join(map(str, workload.input_shape))
    return f"""\
[[models]]
name = "{workload.name}"
version = "1"
entry_point = "{workload.entry_point}"
input_type = "floats"
input_shape = [{shape}]
max_batch_size = {max_batch_size}
batch_size = -1
replicas = 1
device = "cpu"

[[apps]]
name = "{workload.name}"
input_type = "floats"
input_shape = [{shape}]
latency_slo_micros = {slo_micros}
default_output = "-1"
cache = {str(workload.cache).lower()}
models = ["{workload.name}"]
"""


def start_schooner(workload: StudyWorkload, ctx: SystemContext) -> RunningSystem:
    port = free_port()
    toml = schooner_toml(workload, ctx.slo_micros)
    config_path = ctx.work_dir / f"schooner-{workload.name}.toml"
    config_path.write_text(toml)
    argv = [
        sys.executable,
        "-m",
        "schooner.engine.cli",
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
    ]
    return _start_server(
        f"schooner {workload.name}", argv, port, ctx, metrics_port=port, config_text=toml
    )


register_system(
    System(
        "inline", "one Python process, model inline, batch 1 (the Python HTTP limit)", start_inline
    )
)
register_system(
    System(
        "schooner",
        "schooner serve: 1 frontend, scheduler, 1 model replica, AIMD, max batch 64",
        start_schooner,
    )
)


# ---------------------------------------------------------------------------------------------
# Schooner's /metrics, as the study reads it


def metrics_setting(workload: StudyWorkload, slo_micros: int) -> Setting:
    """The scheduler benchmark's record of one model+app, so its /metrics helpers apply as they are."""
    return Setting(
        workload.name,
        "study",
        workload.name,
        "AIMD",
        workload.entry_point,
        slo_micros,
        cache=workload.cache,
    )


@dataclass(frozen=True, slots=True)
class StageCounters:
    http_sum_s: float = 0.0
    http_count: float = 0.0
    queue_sum_s: float = 0.0
    queue_count: float = 0.0
    model_sum_s: float = 0.0  # per batch
    batches: float = 0.0
    model_queries: float = 0.0
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    defaults: float = 0.0
    app_queries: float = 0.0

    def minus(self, other: StageCounters) -> StageCounters:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return StageCounters(*(a - b for a, b in pairs))


def stage_counters(metrics: Mapping[MetricSample, float], setting: Setting) -> StageCounters:
    m = dict(metrics)
    model = {"model": setting.name}
    c = counts_of(m, setting)
    return StageCounters(
        http_sum_s=total(m, "schooner_http_request_duration_seconds_sum"),
        http_count=total(m, "schooner_http_request_duration_seconds_count"),
        queue_sum_s=total(m, "schooner_queue_delay_seconds_sum", **model),
        queue_count=total(m, "schooner_queue_delay_seconds_count", **model),
        model_sum_s=total(m, "schooner_model_latency_seconds_sum", **model),
        batches=total(m, "schooner_model_latency_seconds_count", **model),
        model_queries=c.model_queries,
        cache_hits=c.cache_hits,
        cache_misses=c.cache_misses,
        defaults=c.defaults,
        app_queries=c.queries,
    )


def stage_breakdown_ms(
    delta: StageCounters, client_mean_ms: float | None
) -> dict[str, float | None]:
    """Mean per-request contribution of each stage, in ms, from counter differences over a run.

      server_total    ``schooner_http_request_duration_seconds``: parsed to answered, in the frontend.
      queue           ``schooner_queue_delay_seconds`` sum / requests (a query answered without
                      queueing, e.g. a cache hit, contributes 0).
      model           mean batch round trip (``schooner_model_latency_seconds``, per batch) × the
                      share of requests that reached the model. Each query in a batch waits the
                      whole batch; weighting batches by their size is not possible from sums, so
                      this is the per-batch mean, not the per-query one.
      frontend_back   server_total − queue − model: frontend parse/validate, the hops to the
                      scheduler and model process and back, encoding the answer.
      client_network  the load generator's mean latency − server_total: the kernel, loopback,
                      the server's accept/read queue, and the generator's own send lag.
    Every figure covers the whole run, warm-up included; None when nothing was counted.
    """
    if delta.http_count <= 0:
        return {
            k: None for k in ("server_total", "queue", "model", "frontend_back", "client_network")
        }
    n = delta.http_count
    server_total = 1e3 * delta.http_sum_s / n
    queue = 1e3 * delta.queue_sum_s / n
    model = (
        1e3 * delta.model_sum_s / delta.batches * (delta.model_queries / n)
        if delta.batches
        else 0.0
    )
    return {
        "server_total": server_total,
        "queue": queue,
        "model": model,
        "frontend_back": server_total - queue - model,
        "client_network": None if client_mean_ms is None else client_mean_ms - server_total,
    }
