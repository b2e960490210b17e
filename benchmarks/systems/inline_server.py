"""The inline baseline: one process that parses HTTP, runs the model and answers — "the Python HTTP limit".

Owns a minimal uvloop + httptools HTTP/1.1 server that serves one workload of
``benchmarks.workloads`` (any of the registry, or an app of a user's config) under Schooner's
Clipper-compatible API: ``POST /<app>/predict`` with ``{"input": [...]}`` (flat, exactly the
workload's input size) answers ``{"query_id": N, "output": <value>, "default": false}``. The model runs inline, one query per
call (batch of 1), in the event loop: no queue, no IPC, no batching. Whatever Schooner adds on top
of this server is the cost of its architecture; anything it does better is what batching and more
processes buy.

Also answers ``GET /v2/health/ready`` and ``/v2/health/live`` (200), so the harness starts and
waits for it exactly as for Schooner. Errors are Clipper-shaped JSON ``{"error", "cause"}``:
404 for an unknown path or app, 405 for a wrong method, 400 for a bad body.

Run: ``python -m benchmarks.systems.inline_server --workload w1 --port 8000`` (or
``--config FILE --app NAME``); prints ``ready`` on stdout
once listening; SIGTERM or SIGINT stops it. Only loopback hosts are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import socket
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools
import numpy as np
import orjson
import uvloop

from benchmarks.workloads import WORKLOADS, Workload, load_model, workload_from_config

HEALTH_PATHS = frozenset({b"/v2/health/ready", b"/v2/health/live"})


@dataclass(frozen=True, slots=True)
class InlineServerConfig:
    workload: Workload
    host: str
    port: int


def error_body(kind: str, cause: str) -> bytes:
    return orjson.dumps({"error": kind, "cause": cause})


def encode_response(status: int, body: bytes, keep_alive: bool) -> bytes:
    """The whole HTTP/1.1 response as one buffer, so it leaves in one ``transport.write``."""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"{'' if keep_alive else 'connection: close' + chr(13) + chr(10)}\r\n"
    )
    return head.encode("latin-1") + body


class InlinePredictor:
    """Maps one request (method, path, body) to (status, JSON body); no sockets here."""

    def __init__(self, workload: Workload, model) -> None:
        app_name = workload.app_name
        self._predict_paths = frozenset(
            {f"/{app_name}/predict".encode(), f"/{app_name}/predict/".encode()}
        )
        self._model = model
        self._shape = (1, *workload.input_shape)
        self._size = workload.input_size
        self._dtype = np.int32 if workload.input_type == "ints" else np.float32
        self._schema = f'{{"input": [number] with {self._size} numbers}}'
        self._next_query_id = 0

    def respond(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        if path in self._predict_paths:
            if method != b"POST":
                return 405, error_body("Request error", f"{path.decode()} accepts POST only")
            return self._predict(body)
        if path in HEALTH_PATHS:
            return 200, b""
        return 404, error_body("Request error", f"No route for {path.decode(errors='replace')}")

    def _predict(self, body: bytes) -> tuple[int, bytes]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 400, error_body(
                "Json error",
                f"Error parsing JSON: {exc}. Expected JSON schema: {self._schema}",
            )
        item = doc.get("input") if isinstance(doc, dict) else None
        bad = error_body("Json error", f'Bad or missing "input". Expected JSON schema: {self._schema}')
        if not (isinstance(item, list) and len(item) == self._size):
            return 400, bad
        try:
            row = np.array(item, dtype=self._dtype).reshape(self._shape)
        except (TypeError, ValueError):
            return 400, bad
        output = self._model.predict(row)[0]
        query_id = self._next_query_id
        self._next_query_id += 1
        return 200, orjson.dumps(
            {"query_id": query_id, "output": output, "default": False},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )


class InlineHttpProtocol(asyncio.Protocol):
    """One keep-alive connection: httptools parses, the predictor answers, one write per response."""

    def __init__(self, predictor: InlinePredictor) -> None:
        self._predictor = predictor
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but offer its methods.
        self._transport = cast(asyncio.Transport, transport)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._reply(
                400, error_body("Request error", f"Malformed HTTP request: {exc}"), keep_alive=False
            )

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body.clear()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0]
        status, body = self._predictor.respond(
            self._parser.get_method(), path, b"".join(self._body)
        )
        self._reply(status, body, keep_alive=self._parser.should_keep_alive())

    def _reply(self, status: int, body: bytes, keep_alive: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(encode_response(status, body, keep_alive))
        if not keep_alive:
            self._transport.close()
            self._transport = None


async def serve(config: InlineServerConfig) -> None:
    """Listen until SIGTERM/SIGINT; print ``ready`` once the socket accepts connections."""
    loop = asyncio.get_running_loop()
    predictor = InlinePredictor(config.workload, load_model(config.workload))
    server = await loop.create_server(
        lambda: InlineHttpProtocol(predictor), config.host, config.port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_config(argv: list[str] | None = None) -> InlineServerConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.inline_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help="a workload of the registry")
    parser.add_argument("--config", help="a Schooner config: serve the model of --app from it")
    parser.add_argument("--app", help="the app of --config")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)"
    )
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"--host must be a loopback address, not {args.host!r}")
    if args.config:
        if not args.app:
            parser.error("--config needs --app")
        workload = workload_from_config(args.config, args.app)
    elif args.workload:
        workload = WORKLOADS[args.workload]
    else:
        parser.error("give --workload, or --config and --app")
    return InlineServerConfig(workload=workload, host=args.host, port=args.port)


def main(argv: list[str] | None = None) -> None:
    uvloop.run(serve(parse_config(argv)))


if __name__ == "__main__":
    main()
