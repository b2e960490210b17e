"""The inline baseline for the study workloads W3 and W4 (W1/W2 use ``benchmarks.inline_server``).

Owns nothing new but the input check: the server, its protocol and its answers are
``benchmarks.inline_server``'s (one process, uvloop + httptools + orjson, model run inline one
query at a time), reused here with a predictor that accepts any study workload of
``benchmarks.workloads_extra.STUDY_WORKLOADS``: ``POST /<workload>/predict`` with ``{"input":
[...]}`` of exactly the workload's input size (flat; 3,072 numbers for W3). W4 serves W2's model
under the app name ``w4``; there is no cache here, so a repeated input costs a model call.

Run: ``python -m benchmarks.inline_server_extra --workload w3 --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import numpy as np
import orjson
import uvloop

from benchmarks.inline_server import InlineHttpProtocol, InlinePredictor, error_body, is_loopback
from benchmarks.workloads_extra import STUDY_WORKLOADS, StudyWorkload, load_study_model


class StudyInlinePredictor(InlinePredictor):
    """``InlinePredictor`` with the input size and shape of a study workload."""

    def __init__(self, workload: StudyWorkload) -> None:
        super().__init__(workload.name, load_study_model(workload))
        self._shape = (1, *workload.input_shape)
        self._size = workload.input_size
        self._schema = f'{{"input": [float] with {self._size} numbers}}'

    def _predict(self, body: bytes) -> tuple[int, bytes]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 400, error_body(
                "Json error", f"Error parsing JSON: {exc}. Expected JSON schema: {self._schema}"
            )
        item = doc.get("input") if isinstance(doc, dict) else None
        if not (isinstance(item, list) and len(item) == self._size):
            return 400, error_body(
                "Json error", f'Bad or missing "input". Expected JSON schema: {self._schema}'
            )
        try:
            row = np.array(item, dtype=np.float32).reshape(self._shape)
        except (TypeError, ValueError):
            return 400, error_body(
                "Json error", f'"input" must hold numbers. Expected JSON schema: {self._schema}'
            )
        output = self._model.predict(row)[0]
        query_id = self._next_query_id
        self._next_query_id += 1
        return 200, orjson.dumps(
            {"query_id": query_id, "output": output, "default": False},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )


async def serve(workload: StudyWorkload, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    predictor = StudyInlinePredictor(workload)
    server = await loop.create_server(
        lambda: InlineHttpProtocol(predictor), host, port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inline_server_extra", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workload", choices=sorted(STUDY_WORKLOADS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"--host must be a loopback address, not {args.host!r}")
    uvloop.run(serve(STUDY_WORKLOADS[args.workload], args.host, args.port))


if __name__ == "__main__":
    main()
