"""Systems under test, behind one interface: ``start(workload, ctx)`` → a running system, ``stop()``.

Owns ``System`` (what a suite knows about a server: its name, which workloads it serves, how to
start it), ``StartContext`` (what every start gets: a work directory, the server CPUs, the SLO and
the batching settings of the table being measured) and ``RunningSystem`` (its URL, how a load
generator reaches it without an extra hop, the settings *read back from what was started*, and
``stop()``). The registry is ``benchmarks.systems.registry``.

Every system serves Clipper's ``POST <base_url>/<app>/predict`` with ``{"input": [...]}`` (flat)
answering ``{"query_id", "output", "default"}``, and ``GET <base_url>/v2/health/ready``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benchmarks.harness.servers import StopReport
from benchmarks.workloads import Workload


@dataclass(frozen=True, slots=True)
class Batching:
    """The batching every batching system of one table runs with."""

    max_batch_size: int = 64
    batch_wait_s: float = 0.0  # how long a partial batch may wait for more queries

    @property
    def wait_micros(self) -> int:
        return round(self.batch_wait_s * 1e6)


@dataclass(frozen=True, slots=True)
class StartContext:
    work_dir: Path  # configs and logs
    server_cpus: str | None  # taskset list; None: unpinned
    slo_ms: float
    batching: Batching = Batching()
    metrics: bool = True  # Schooner: keep /metrics readable (always on; stated for the record)
    allow_client_shm: bool = False  # Schooner: --allow-client-shm (perf_analyzer --shared-memory)
    schooner_server: tuple[str, ...] = ()  # Schooner: extra [server] lines ("key = value") in its config


@dataclass(slots=True)
class RunningSystem:
    name: str
    base_url: str  # http://127.0.0.1:PORT, no trailing slash
    stop: Callable[[], StopReport]
    settings: dict[str, object]  # read from the system as started, not from what was asked
    load_prefix: tuple[str, ...] = ()  # run a load generator under this (nsenter into Ray's netns)
    load_base_url: str | None = None  # the URL seen from inside that prefix
    metrics_port: int | None = None  # Schooner's GET /metrics; None: none
    log_path: Path | None = None
    config_text: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    pid: int | None = None  # the server's top process (Schooner: the supervisor)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, workload: Workload) -> str:
        return f"{self.base_url}/{workload.app_name}/predict"

    def load_url(self, workload: Workload) -> str:
        return f"{self.load_base_url or self.base_url}/{workload.app_name}/predict"


class System(Protocol):
    name: str
    description: str
    batching: bool  # does it batch (and so take ``ctx.batching``)?

    def serves(self, workload: Workload) -> bool: ...

    def start(self, workload: Workload, ctx: StartContext) -> RunningSystem: ...
