"""Ray Serve peer: one workload of ``benchmarks.workloads`` served by Ray Serve with ``@serve.batch``.

Owns the Ray side of the peer comparison. Runs under the peer's own virtualenv
(``benchmarks/.venv-peers/rayserve``, see ``benchmarks.systems.peer_envs``), never Schooner's, and only
as the first process of its own network and PID namespaces:

    unshare --net --pid --fork --mount-proc -- <venv>/bin/python -m benchmarks.systems.rayserve_server ...

Why: Ray's GCS, raylet and workers listen on the node's address, not only on loopback. In a fresh
network namespace the only interface is ``lo``, so every Ray socket is on 127.0.0.1 of that
namespace, and nothing is reachable from or sent to another host. The PID namespace makes this
process PID 1 of every Ray process: ``ray stop --force`` (which kills Ray processes *by name*)
then sees only this server's processes, and when this process exits the kernel kills whatever
is left in the namespace. The script refuses to start if it is not PID 1 or if its network
namespace has any interface besides ``lo``; it brings ``lo`` up itself (``ip link set lo up``).
A client must run in the same network namespace (``nsenter --target <pid> --net``) or go through
a port forward (``benchmarks.systems.netns_forward``).

Configuration, chosen to match Schooner's one-replica benchmark on a 2-core machine:
  * ``ray.init(num_cpus=N, include_dashboard=False, object_store_memory=256 MiB)``, N the CPUs
    this process may use (``--num-cpus``; the harness passes the server CPUs), a fresh
    temporary directory per start, usage stats off;
  * ``serve.start(http_options={"host": "127.0.0.1", "port": P})``: one HTTP proxy;
  * one deployment, ``num_replicas=1``, ``ray_actor_options={"num_cpus": 1}``,
    ``max_ongoing_requests`` = 2 × the max batch (Ray's default, 5, would cap every batch at 5:
    Ray's batching guide asks for at least ``max_batch_size``; 2x lets the next batch form);
  * ``@serve.batch`` on the model call, sized at start with ``set_max_batch_size`` /
    ``set_batch_wait_timeout_s`` from ``--max-batch-size`` / ``--batch-wait-s``.
``GET /v2/settings`` answers what the replica runs with, read back from Ray's objects.
The model is the same class Schooner loads (``load_model(workload)``), called once per batch.

HTTP contract (the inline server's, ``benchmarks/inline_server.py``): the application is
deployed at route prefix ``/`` and dispatches by path itself, so ``POST /<app>/predict`` with
``{"input": [16 numbers]}`` answers ``{"query_id": N, "output": <float or list>, "default":
false}`` (orjson), and ``GET /v2/health/ready`` / ``/v2/health/live`` answer 200 once the
application is running (before that the proxy answers 404/503). Errors are ``{"error",
"cause"}`` with 400/404/405 as the inline server's.

Run with the command above plus ``--workload w1 --port P``; prints ``ready`` once
``serve.run`` returned. SIGTERM or SIGINT: ``serve.shutdown()``, ``ray.shutdown()``,
``ray stop --force``, a list of any process still in the namespace, exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

# Before ray is imported: no usage-stats reporting (there is no network here anyway).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

from benchmarks.workloads import WORKLOADS, load_model  # noqa: E402

OBJECT_STORE_BYTES = 256 * 1024 * 1024
LOOPBACK = "127.0.0.1"
HEALTH_PATHS = frozenset({"/v2/health/ready", "/v2/health/live"})
SETTINGS_PATH = "/v2/settings"


def error_response(status: int, kind: str, cause: str) -> Response:
    body = orjson.dumps({"error": kind, "cause": cause})
    return Response(body, status_code=status, media_type="application/json")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
class WorkloadDeployment:
    """The workload's model behind one Ray Serve replica; ``__call__`` is the HTTP ingress."""

    def __init__(self, workload: str, max_batch_size: int, batch_wait_s: float) -> None:
        w = WORKLOADS[workload]
        self._model = load_model(w)
        self._shape = w.input_shape
        self._size = w.input_size
        self._schema = f'{{"input": [float] with {self._size} numbers}}'
        self._predict_paths = frozenset({f"/{workload}/predict", f"/{workload}/predict/"})
        self._next_query_id = 0
        # Ray's documented way to size @serve.batch at run time.
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def predict_batch(self, rows: list[np.ndarray]) -> list:
        return self._model.predict(np.stack(rows)).tolist()

    def settings(self) -> dict[str, object]:
        """What this replica runs with, read back from Ray's own objects."""
        return {
            "max_batch_size": self.predict_batch._get_max_batch_size(),
            "batch_wait_s": self.predict_batch._get_batch_wait_timeout_s(),
            "ray_cpus": ray.cluster_resources().get("CPU"),
            "replica_cpus": sorted(os.sched_getaffinity(0)),
            "ray": ray.__version__,
        }

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        if path in self._predict_paths:
            if request.method != "POST":
                return error_response(405, "Request error", f"{path} accepts POST only")
            return await self._predict(await request.body())
        if path in HEALTH_PATHS:
            return Response(b"", status_code=200)
        if path == SETTINGS_PATH:
            return Response(orjson.dumps(self.settings()), media_type="application/json")
        return error_response(404, "Request error", f"No route for {path}")

    async def _predict(self, body: bytes) -> Response:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(400, "Json error", f"Error parsing JSON: {exc}")
        item = doc.get("input") if isinstance(doc, dict) else None
        if not (isinstance(item, list) and len(item) == self._size):
            return error_response(
                400, "Json error", f'Bad or missing "input". Expected JSON schema: {self._schema}'
            )
        try:
            row = np.array(item, dtype=np.float32).reshape(self._shape)
        except (TypeError, ValueError):
            return error_response(400, "Json error", f'"input" must hold numbers: {self._schema}')
        output = await self.predict_batch(row)
        query_id = self._next_query_id
        self._next_query_id += 1
        body = orjson.dumps({"query_id": query_id, "output": output, "default": False})
        return Response(body, media_type="application/json")


def check_isolated() -> None:
    """Refuses to run Ray outside a fresh loopback-only network namespace as its PID 1."""
    if os.getpid() != 1:
        raise SystemExit(
            "rayserve_server must be PID 1 of its own PID namespace "
            "(unshare --net --pid --fork --mount-proc): `ray stop --force` kills Ray processes by "
            "name, which is only safe when the only Ray processes it can see are this server's"
        )
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        raise SystemExit(
            f"rayserve_server must run in a network namespace with only lo, not {names}: "
            "Ray listens on the node address"
        )
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def namespace_leftovers() -> list[str]:
    """Every other process of this PID namespace (the /proc mounted for it shows only those)."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.info["pid"] == 1:
            continue
        cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
        found.append(f"{proc.info['pid']} {cmd[:120]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.rayserve_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-s", type=float, default=0.0, help="@serve.batch batch_wait_timeout_s")
    parser.add_argument("--num-cpus", type=int, default=len(os.sched_getaffinity(0)), help="ray.init(num_cpus=...): default, the CPUs this process may use")
    parser.add_argument("--max-ongoing-requests", type=int, default=0, help="default: 2 x max batch size")
    args = parser.parse_args(argv)
    check_isolated()

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Short path: Ray's Unix sockets live under it (108-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="ray-peer-", dir="/tmp")
    try:
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _temp_dir=temp_dir,
            log_to_driver=False,
        )
        serve.start(http_options={"host": LOOPBACK, "port": args.port})
        ongoing = args.max_ongoing_requests or 2 * args.max_batch_size
        app = WorkloadDeployment.options(max_ongoing_requests=ongoing).bind(
            args.workload, args.max_batch_size, args.batch_wait_s
        )
        serve.run(app, name=args.workload, route_prefix="/")
        # After ray.init, which installs its own SIGTERM handler (sys.exit(15)); a signal that
        # arrives before this line still reaches the finally below through that SystemExit.
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        print("ready", flush=True)
        while not stop.wait(timeout=1.0):
            pass
    finally:
        print("stopping: serve.shutdown(), ray.shutdown(), ray stop --force", flush=True)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            subprocess.run([ray_cli(), "stop", "--force"], check=False, capture_output=True)
            left = namespace_leftovers()
            if left:
                # The kernel kills them when this process (PID 1) exits; said here so it shows.
                print(f"processes left in the namespace after ray stop: {left}", flush=True)
            else:
                print("no process left in the namespace", flush=True)
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
