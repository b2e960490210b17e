"""LitServe peer: one workload of ``benchmarks.workloads`` served by LitServe with its batching on.

Owns the LitServe side of the peer comparison. Runs under the peer's own virtualenv
(``benchmarks/.venv-peers/litserve``, see ``benchmarks.systems.peer_envs``), never Schooner's.

Configuration, chosen to match Schooner's one-replica benchmark on a 2-core machine:
  * ``LitAPI(max_batch_size=N, batch_timeout=W, api_path="/<app>/predict")``, N and W from
    ``--max-batch-size`` / ``--batch-wait-s`` (the same as every batching system's in a table);
  * ``LitServer(accelerator="cpu", devices=1, workers_per_device=1)``: one inference worker
    process, and (LitServe's default) as many API-server processes as inference workers: one;
  * ``fast_queue`` (ZeroMQ instead of multiprocessing-manager queues between the API server and
    the worker) is off unless ``--fast-queue`` (the peers suite runs both and keeps the best);
    ``timeout=30`` (LitServe's default).
After building the server it prints ``settings {...}``: the batch size, batch timeout, transport
and workers read back from LitServe's objects, which the harness records.
So a LitServe server is three processes: the launcher (which also runs the multiprocessing
Manager, a fourth), one uvicorn+FastAPI API server, and one inference worker. The model is the
same class Schooner loads (``load_model(workload)``), called once per batch.

HTTP contract (the inline server's, ``benchmarks/inline_server.py``):
  ``POST /<app>/predict`` with ``{"input": [16 numbers]}`` answers 200
  ``{"query_id": N, "output": <float or list>, "default": false}``; ``query_id`` counts from 0
  in the inference worker (one worker, so it is unique). ``GET /v2/health/ready`` is LitServe's
  own health check moved there (``healthcheck_path``): 200 ``ok`` once the worker has set up.
Differences, all outside the benchmark's path: a bad body answers FastAPI's shape
``{"detail": ...}`` with 400 (not ``{"error", "cause"}``) and, because LitServe decodes a whole
batch at once in the worker, fails every request batched with it; ``/w1/predict/`` (trailing
slash) is a 307 redirect, not a prediction; ``/v2/health/live`` does not exist; responses are
serialised by FastAPI's ``JSONResponse`` (the stdlib json), not orjson.

Run: ``benchmarks/.venv-peers/litserve/bin/python -m benchmarks.systems.litserve_server
--workload w1 --port P``. SIGTERM or SIGINT stops it through LitServe's own graceful shutdown
(which it runs on KeyboardInterrupt): API server, then worker, then the Manager.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from multiprocessing import resource_tracker
from types import FrameType

import litserve as ls
import numpy as np
from fastapi import HTTPException

from benchmarks.workloads import WORKLOADS, load_model

READY_PATH = "/v2/health/ready"
LOOPBACK = "127.0.0.1"


class WorkloadLitAPI(ls.LitAPI):
    """The workload's model behind LitServe's batched loop: decode, stack, predict, split, encode."""

    def __init__(self, workload: str, max_batch_size: int, batch_timeout_s: float) -> None:
        self._input_size = WORKLOADS[workload].input_size
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout_s,
            api_path=f"/{workload}/predict",
        )
        self.workload = workload
        self._model = None
        self._next_query_id = 0

    def setup(self, device: str) -> None:
        self._model = load_model(WORKLOADS[self.workload], "cpu" if device.startswith("cpu") else device)

    # ``request`` is left unannotated on purpose: LitServe reads the annotation to choose how
    # FastAPI parses the body, and without one it takes its default path (``request.json()``).
    def decode_request(self, request, **kwargs: object) -> np.ndarray:  # type: ignore[no-untyped-def]
        item = request.get("input") if isinstance(request, dict) else None
        if not (isinstance(item, list) and len(item) == self._input_size):
            raise HTTPException(400, f'Bad or missing "input": expected {self._input_size} numbers')
        return np.asarray(item, dtype=np.float32).reshape(WORKLOADS[self.workload].input_shape)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray, **kwargs: object) -> np.ndarray:
        assert self._model is not None
        return self._model.predict(x)

    def unbatch(self, output: np.ndarray) -> list:
        return output.tolist()  # floats (W1) or lists of 10 floats (W2), as JSON wants them

    def encode_response(self, output: object, **kwargs: object) -> dict:
        query_id = self._next_query_id
        self._next_query_id += 1
        return {"query_id": query_id, "output": output, "default": False}


def build_server(workload: str, max_batch_size: int, batch_wait_s: float, fast_queue: bool) -> ls.LitServer:
    api = WorkloadLitAPI(workload, max_batch_size, batch_wait_s)
    return ls.LitServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        healthcheck_path=READY_PATH,
        fast_queue=fast_queue,
    )


LAUNCHER_PID = os.getpid()


def raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # LitServe's run() shuts down gracefully on KeyboardInterrupt only; SIGTERM would otherwise
    # kill the launcher and orphan its API-server and worker processes. The API server is a
    # forked child that inherits this handler and re-raises SIGTERM after uvicorn's own graceful
    # shutdown: there it takes the default action.
    if os.getpid() != LAUNCHER_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise KeyboardInterrupt


def reap_resource_tracker() -> None:
    """Stops multiprocessing's resource tracker (started by the spawned worker) and waits for it.

    Left alone it exits only after this process does, on EOF of its pipe, so a harness that
    checks for leftover children right after the launcher exits would find it still alive.
    Python 3.12 has ``resource_tracker._resource_tracker._stop()``; this is its 3.11 equivalent.
    """
    tracker = resource_tracker._resource_tracker
    fd, pid = getattr(tracker, "_fd", None), getattr(tracker, "_pid", None)
    if fd is None or pid is None:
        return
    os.close(fd)
    tracker._fd = None
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    tracker._pid = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.litserve_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ transport")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-s", type=float, default=0.0, help="LitAPI batch_timeout")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    server = build_server(args.workload, args.max_batch_size, args.batch_wait_s, args.fast_queue)
    # What runs, read from LitServe's own objects (the harness prints these, not its arguments).
    api = next(iter(server.litapi_connector.lit_apis), None)
    settings = {
        "max_batch_size": getattr(api, "max_batch_size", None),
        "batch_wait_s": getattr(api, "batch_timeout", None),
        "fast_queue": getattr(server, "use_zmq", None),
        "workers_per_device": getattr(server, "workers_per_device", None),
        "cpus": sorted(os.sched_getaffinity(0)),
        "litserve": ls.__version__,
    }
    print("settings " + json.dumps(settings), flush=True)
    # LitServe accepts 0.0.0.0, 127.0.0.1 or ::; loopback only here.
    server.run(
        host=LOOPBACK,
        port=args.port,
        log_level="warning",
        generate_client_file=False,  # it would write client.py into the working directory
        access_log=False,
    )
    reap_resource_tracker()
    return 0


if __name__ == "__main__":
    sys.exit(main())
