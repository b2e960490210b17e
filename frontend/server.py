"""The frontend process: HTTP/1.1 on uvloop + httptools, queries into the submit ring.

One `FrontendProc` per process, sharing the query port with its siblings (SO_REUSEPORT, each
with its own socket and its own ring pair). Per request it parses and validates the body and
queues the encoded queries; once per event-loop tick (`call_soon`) everything queued becomes
one Arrow batch in the submit ring and the scheduler's doorbell is posted once. Answers come
back on the response ring; this process's doorbell is an eventfd watched with `add_reader`.

Per connection, responses leave in request order (HTTP/1.1 pipelining), each with a single
`transport.write`. Bad requests are answered 4xx with `{"error", "cause"}` and disturb nothing
else. On `Drain` the process answers readiness 503 and new queries 503, finishes what is in
flight, reports `Drained` and exits on `Stop` (or when the supervisor's socket closes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from itertools import accumulate

import httptools
import numpy as np
import orjson
import uvloop

from schooner.engine.core.metrics import MetricSet, merge_texts
from schooner.engine.spawn import FrontendArgs, setup_logging
from schooner.frontend.codec import (
    InputCodec,
    RequestError,
    decode_predict_uid,
    decode_update,
    encode_batch,
    encode_prediction,
)
from schooner.frontend.pending import PendingRequest
from schooner.frontend.routes_v2 import V2Routes
from schooner.ipc import frames, protocol
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.board import Board
from schooner.ipc.channel import Doorbell, RingReader, RingWriter
from schooner.ipc.shm import Segment

log = logging.getLogger(__name__)

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            413: b"Payload Too Large", 500: b"Internal Server Error", 503: b"Service Unavailable"}  # fmt: skip
_SUBMIT = FrameCodec(frames.SUBMIT_SCHEMA)
_RESPONSE = FrameCodec(frames.RESPONSE_SCHEMA)
_ROW_OVERHEAD = 64
PUBLISH_INTERVAL_S = 0.25  # Arrow bytes per query besides its input (offsets, ids, deadline, padding)


def http_response(
    status: int, body: bytes, keep_alive: bool, content_type: bytes = b"application/json", headers: bytes = b""
) -> bytes:
    """One whole HTTP/1.1 response; `headers` are extra header lines, each ending in CRLF."""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status, _REASONS.get(status, b"Unknown"), content_type, len(body), headers,
        b"" if keep_alive else b"Connection: close\r\n", body,
    )


def error_body(kind: str, cause: str) -> bytes:
    return orjson.dumps({"error": kind, "cause": cause})


class FrontendProc:
    """Process-wide state: apps, rings, the tick batch, the in-flight table."""

    def __init__(self, args: FrontendArgs, loop: asyncio.AbstractEventLoop) -> None:
        cfg = args.config
        self.cfg = cfg
        self.loop = loop
        self.index = args.index
        self.apps = {a.name: (i, a, InputCodec(a)) for i, a in enumerate(cfg.apps)}
        self.app_models = [
            cfg.models[cfg.model_index(a.models[0])] if a.models else None for a in cfg.apps
        ]
        self.bell = Doorbell(args.bell_fd)
        sched_bell = Doorbell(args.scheduler_bell_fd)
        self.submit = RingWriter(Segment.attach(args.submit_ring), sched_bell)
        self.responses = RingReader(Segment.attach(args.response_ring), sched_bell)
        self.ctrl = socket.socket(fileno=args.control_fd)
        self.ctrl.setblocking(False)
        self.max_query_nbytes = self.submit.ring.slot_nbytes - 4096
        self.next_id = (args.index << 48) + 1
        self.inflight: dict[int, tuple[PendingRequest, int]] = {}
        self.requests_inflight = 0
        # the tick batch
        self.t_ids: list[int] = []
        self.t_apps: list[int] = []
        self.t_deadlines: list[int] = []
        self.t_priorities: list[int] = []
        self.t_uids: list[int] = []
        self.t_chunks: list[bytes] = []  # input bytes; a chunk may hold several queries' rows
        self.t_lens: list[int] = []  # one input length per query
        self.t_nbytes = 0
        self.flush_scheduled = False
        self.backlog: deque[tuple] = deque()  # sealed batches waiting for a free submit slot
        self.draining = False
        self.stopped = asyncio.Event()
        self.connections: set[HttpConnection] = set()
        # metrics: ours live, everyone's through the boards (ours is boards[1 + index])
        self.boards = [Board(Segment.attach(name).buf) for name in args.metrics_boards]
        self.own_board = self.boards[1 + args.index]
        self.stats_board = Board(Segment.attach(args.stats_board).buf)
        self.client_shm_board = args.client_shm_board
        self.feedback = socket.socket(fileno=args.feedback_fd)
        self.feedback.setblocking(False)
        self.fb_waiting: dict[int, tuple] = {}
        self.metrics = MetricSet()
        fe = str(args.index)
        self.m_duration = self.metrics.histogram(
            "schooner_http_request_duration_seconds", "Predict requests, from parsed to answered", frontend=fe)
        self.m_status: dict[int, object] = {}
        self.metrics_changed = False
        self._fe_label = fe
        self.v2 = V2Routes(self)

    def count_response(self, status: int) -> None:
        c = self.m_status.get(status)
        if c is None:
            c = self.m_status[status] = self.metrics.counter(
                "schooner_http_requests_total", "HTTP requests answered, by status code", frontend=self._fe_label, code=str(status))
        c.value += 1
        self.metrics_changed = True

    def publish_metrics(self) -> None:
        if self.metrics_changed:
            self.metrics_changed = False
            self.own_board.publish(self.metrics.render().encode())
        self.loop.call_later(PUBLISH_INTERVAL_S, self.publish_metrics)

    def metrics_text(self) -> bytes:
        texts = []
        for board in self.boards:
            texts.append(self.metrics.render() if board is self.own_board else board.read().decode(errors="replace"))
        return merge_texts(texts).encode()

    # -- queries in -------------------------------------------------------------------------

    def _accepting(self, app_name: str) -> tuple:
        """(index, config, codec) of an app that may take a query now; else the 4xx/503."""
        entry = self.apps.get(app_name)
        if entry is None:
            raise RequestError(404, "not found", f"no application named '{app_name}'; known: {sorted(self.apps)}")
        if self.draining:
            raise RequestError(503, "unavailable", "the server is draining; retry on another instance")
        return entry

    def submit_request(self, conn: HttpConnection, slot: list, app_name: str, body: bytes) -> None:
        """Clipper's POST /<app>/predict."""
        app_idx, app, codec = self._accepting(app_name)
        items, is_batch, uid = decode_predict_uid(body, app, self.app_models[app_idx])
        encoded = [codec.encode(item) for item in items]  # raises before anything is queued
        for e in encoded:
            if len(e) > self.max_query_nbytes:
                raise RequestError(413, "payload too large", f"one query's input is {len(e)} bytes; the limit is {self.max_query_nbytes}")
        now = time.monotonic_ns()
        pending = PendingRequest(conn, slot, len(encoded), is_batch, now)
        self.enqueue(pending, app_idx, now + app.latency_slo_micros * 1000, encoded, [len(e) for e in encoded], uid=uid)

    def submit_update(self, conn: HttpConnection, slot: list, app_name: str, body: bytes) -> None:
        """Clipper's POST /<app>/update: predict the input (all the app's policy needs to
        join), then hand the label to the scheduler on the feedback channel; answer
        {"ok": true} once it is applied."""
        app_idx, app, codec = self._accepting(app_name)
        uid, item, label = decode_update(body)
        data = codec.encode(item)
        now = time.monotonic_ns()

        def render(p):
            if p.error is not None:
                return p.error[0], p.error[1], b"", b"application/json"
            qid = p.outputs[0][3]
            self.fb_waiting[qid] = (p.conn, p.slot)
            protocol.send(self.feedback, protocol.Feedback(app_idx, qid, label))
            return None

        pending = PendingRequest(conn, slot, 1, False, now, render)
        self.enqueue(pending, app_idx, now + app.latency_slo_micros * 1000, [data], [len(data)], uid=uid)

    def on_feedback(self) -> None:
        while True:
            try:
                msg = protocol.recv(self.feedback)
            except BlockingIOError:
                return
            except OSError:
                msg = None
            if msg is None:  # the scheduler is gone; the supervisor's Abort answers what waits
                self.loop.remove_reader(self.feedback.fileno())
                return
            if isinstance(msg, protocol.FeedbackDone):
                waiting = self.fb_waiting.pop(msg.query_id, None)
                if waiting is None:
                    continue
                conn, slot = waiting
                self.requests_inflight -= 1
                if msg.error:
                    conn.respond(slot, 409, error_body("feedback not applied", msg.error))
                else:
                    conn.respond(slot, 200, b'{"ok":true}')
                if self.draining and self.requests_inflight == 0:
                    self._report_drained()

    def enqueue(
        self, pending: PendingRequest, route: int, deadline_ns: int, chunks: list[bytes], lens: list[int],
        priority: int = 0, uid: int = -1,
    ) -> None:
        """Queue one request's queries (`lens` gives each query's share of `chunks`, in order)
        for this tick's submit batch. Nothing can fail after this point: every query will be
        answered by the scheduler."""
        self.requests_inflight += 1
        inflight = self.inflight
        qid = self.next_id
        self.next_id = qid + len(lens)
        nbytes = sum(lens) + _ROW_OVERHEAD * len(lens)
        if self.t_nbytes + nbytes > self.max_query_nbytes:
            self._seal_tick()
        for i in range(len(lens)):
            inflight[qid + i] = (pending, i)
        self.t_ids.extend(range(qid, qid + len(lens)))
        self.t_apps.extend([route] * len(lens))
        self.t_deadlines.extend([deadline_ns] * len(lens))
        self.t_priorities.extend([priority] * len(lens))
        self.t_uids.extend([uid] * len(lens))
        self.t_chunks.extend(chunks)
        self.t_lens.extend(lens)
        self.t_nbytes += nbytes
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _seal_tick(self) -> None:
        if not self.t_ids:
            return
        offsets = np.fromiter(accumulate(self.t_lens, initial=0), np.int32, len(self.t_lens) + 1)
        self.backlog.append(
            (len(self.t_ids), [self.t_ids, self.t_apps, self.t_deadlines, self.t_priorities, self.t_uids,
                               (offsets, self.t_chunks)])  # the chunks are copied into the slot once
        )
        self.t_ids, self.t_apps, self.t_deadlines, self.t_priorities, self.t_uids = [], [], [], [], []
        self.t_chunks, self.t_lens = [], []
        self.t_nbytes = 0

    def _flush(self) -> None:
        self.flush_scheduled = False
        self._seal_tick()
        backlog = self.backlog
        while backlog and self.submit.try_write(lambda slot, b=backlog[0]: _SUBMIT.write(slot, b[0], b[1])):
            backlog.popleft()
        self.submit.flush()  # one doorbell for the whole tick

    # -- answers out ------------------------------------------------------------------------

    def on_bell(self) -> None:
        self.bell.clear()
        reader = self.responses
        n = reader.pending()
        inflight = self.inflight
        for i in range(n):
            rows, (ids, status, defaults, (off, data), (eoff, edata), (xoff, xdata)) = _RESPONSE.read(reader.read(i))
            outputs = frames.binary_items(off, data)
            has_expl = eoff[-1] != eoff[0]
            expl = frames.binary_items(eoff, edata) if has_expl else None
            extras = frames.binary_items(xoff, xdata) if xoff[-1] != xoff[0] else None
            for j, qid, st, dflt in zip(range(rows), ids.tolist(), status.tolist(), defaults.tolist(), strict=True):
                entry = inflight.pop(qid, None)
                if entry is None:
                    continue
                p, k = entry
                if st != 200:
                    if p.error is None:
                        p.error = (st, error_body("model error", outputs[j].decode(errors="replace")))
                else:
                    why = expl[j].decode() if dflt and expl else None
                    extra = extras[j] if extras else b""
                    if p.render is None:
                        p.outputs[k] = encode_prediction(qid, outputs[j], dflt, why, extra)
                    else:
                        p.outputs[k] = (outputs[j], dflt, why, qid, extra)
                p.remaining -= 1
                if p.remaining == 0:
                    self._complete(p)
        if n:
            reader.release(n)  # posts the scheduler if it may be waiting for a free slot
        if self.backlog:
            self._flush()
        if self.draining and self.requests_inflight == 0:
            self._report_drained()

    def _complete(self, p: PendingRequest) -> None:
        headers, ctype = b"", b"application/json"
        if p.render is not None:
            rendered = p.render(p)
            if rendered is None:  # answered later (feedback waits for the scheduler)
                return
            status, body, headers, ctype = rendered
            self.requests_inflight -= 1
        elif p.error is not None:
            self.requests_inflight -= 1
            status, body = p.error
        else:
            self.requests_inflight -= 1
            status = 200
            body = encode_batch(p.outputs) if p.batch else p.outputs[0]
        self.m_duration.observe((time.monotonic_ns() - p.start_ns) / 1e9)
        p.conn.respond(p.slot, status, body, content_type=ctype, headers=headers)

    # -- control ----------------------------------------------------------------------------

    def on_control(self) -> None:
        while True:
            try:
                msg = protocol.recv(self.ctrl)
            except BlockingIOError:
                return
            if msg is None or isinstance(msg, protocol.Stop):
                self.stopped.set()
                return
            if isinstance(msg, protocol.Abort):
                self._abort(msg.reason)
                continue
            if isinstance(msg, protocol.Drain) and not self.draining:
                self.draining = True
                log.info("draining: %d request(s) in flight", self.requests_inflight)
                if self.requests_inflight == 0:
                    self._report_drained()

    def _abort(self, reason: str) -> None:
        """Answer every request still in flight with 503: nobody else ever will."""
        self.draining = True
        body = error_body("unavailable", f"{reason}; the server is shutting down")
        pendings = {id(p): p for p, _ in self.inflight.values()}
        self.inflight.clear()
        self.backlog.clear()
        self.t_ids, self.t_apps, self.t_deadlines, self.t_priorities, self.t_uids = [], [], [], [], []
        self.t_chunks, self.t_lens = [], []
        for conn, slot in self.fb_waiting.values():
            self.requests_inflight -= 1
            conn.respond(slot, 503, body)
        self.fb_waiting.clear()
        for p in pendings.values():
            self.requests_inflight -= 1
            p.conn.respond(p.slot, 503, body)
        log.error("aborted %d request(s): %s", len(pendings), reason)

    def _report_drained(self) -> None:
        try:
            protocol.send(self.ctrl, protocol.Drained(f"frontend[{self.index}]"))
        except OSError:
            self.stopped.set()


class HttpConnection(asyncio.Protocol):
    """One client connection: httptools callbacks, ordered responses, keep-alive."""

    __slots__ = ("fe", "transport", "parser", "url", "body", "body_nbytes", "too_large",
                 "queue", "closing", "keep_alive", "header_len")  # fmt: skip

    def __init__(self, fe: FrontendProc) -> None:
        self.fe = fe
        self.transport: asyncio.Transport | None = None
        self.header_len: int | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.body_nbytes = 0
        self.too_large = False
        self.queue: deque[list] = deque()  # [ready, bytes] per request, in arrival order
        self.closing = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fe.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.fe.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_connection(400, "upgrade is not supported")
        except httptools.HttpParserError as e:
            self._fail_connection(400, f"malformed HTTP request: {e}")

    def _fail_connection(self, status: int, cause: str) -> None:
        slot = [False, b""]
        self.queue.append(slot)
        self.closing = True
        self.respond(slot, status, error_body("bad request", cause), keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.header_len = None
        self.url = b""
        self.body = []
        self.body_nbytes = 0
        self.too_large = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            try:
                if int(value) > self.fe.cfg.max_body_nbytes:
                    self.too_large = True
            except ValueError:
                pass
        elif name == b"inference-header-content-length":
            try:
                self.header_len = int(value)
            except ValueError:
                self.header_len = -1  # refused by the V2 decoder with a clear message

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return
        self.body_nbytes += len(body)
        if self.body_nbytes > self.fe.cfg.max_body_nbytes:
            self.too_large = True
            self.body = []
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        slot = [False, b""]
        self.queue.append(slot)
        keep_alive = self.parser.should_keep_alive()
        if not keep_alive:
            self.closing = True
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        try:
            if self.too_large:
                self.closing = True  # the rest of an oversized body is not worth reading
                raise RequestError(413, "payload too large", f"request body exceeds the limit of {self.fe.cfg.max_body_nbytes} bytes")
            self._route(slot, method, path)
        except RequestError as e:
            self.respond(slot, e.status, e.body())
        except Exception as e:  # a bug must cost one request, never the process
            log.exception("internal error on %s %s", method, path)
            self.respond(slot, 500, error_body("internal error", repr(e)))

    def _route(self, slot: list, method: bytes, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[1] == "update" and parts[0] != "v2":
            if method != b"POST":
                raise _method_not_allowed("POST", path)
            body = b"".join(self.body)
            self.body = []
            self.fe.submit_update(self, slot, parts[0], body)
            return
        if len(parts) == 2 and parts[1] == "predict":
            if method != b"POST":
                raise _method_not_allowed("POST", path)
            body = b"".join(self.body)
            self.body = []
            self.fe.submit_request(self, slot, parts[0], body)
            return
        if parts and parts[0] == "v2" and path not in ("/v2/health/live", "/v2/health/ready"):
            body = b"".join(self.body)
            self.body = []
            self.fe.v2.handle(self, slot, method, parts, body, self.header_len)
            return
        if path == "/metrics":
            if method != b"GET":
                raise _method_not_allowed("GET", path)
            self.respond(slot, 200, self.fe.metrics_text(), content_type=b"text/plain; version=0.0.4")
            return
        if path in ("/v2/health/live", "/v2/health/ready"):
            if method != b"GET":
                raise _method_not_allowed("GET", path)
            ok = path.endswith("live") or not self.fe.draining
            self.respond(slot, 200 if ok else 503, b"" if ok else error_body("unavailable", "draining"))
            return
        raise RequestError(404, "not found", f"no route for {path}; expected POST /<app>/predict, GET /metrics or GET /v2/health/live|ready")

    def respond(
        self, slot: list, status: int, body: bytes, keep_alive: bool | None = None,
        content_type: bytes = b"application/json", headers: bytes = b"",
    ) -> None:
        """Fill this request's place in line and write every response that is now in order."""
        slot[0] = True
        slot[1] = http_response(status, body, not self.closing if keep_alive is None else keep_alive, content_type, headers)
        self.fe.count_response(status)
        t = self.transport
        q = self.queue
        out = []
        while q and q[0][0]:
            out.append(q.popleft()[1])
        if t is None or not out:
            return
        t.write(out[0] if len(out) == 1 else b"".join(out))
        if self.closing and not q:
            t.close()


def _method_not_allowed(allowed: str, path: str) -> RequestError:
    return RequestError(405, "method not allowed", f"{path} accepts {allowed} only")


async def _serve(args: FrontendArgs) -> int:
    loop = asyncio.get_running_loop()
    fe = FrontendProc(args, loop)
    sock = socket.socket(fileno=args.listen_fd)
    server = await loop.create_server(lambda: HttpConnection(fe), sock=sock, backlog=4096)
    loop.add_reader(fe.bell.fileno(), fe.on_bell)
    loop.add_reader(fe.ctrl.fileno(), fe.on_control)
    loop.add_reader(fe.feedback.fileno(), fe.on_feedback)
    fe.publish_metrics()
    protocol.send(fe.ctrl, protocol.Ready(protocol.Role.FRONTEND, f"frontend[{fe.index}]", os.getpid()))
    await fe.stopped.wait()
    server.close()
    for conn in list(fe.connections):
        if conn.transport is not None:
            conn.transport.close()
    return 0


def run_frontend(args: FrontendArgs) -> int:
    setup_logging(f"frontend[{args.index}]")
    return uvloop.run(_serve(args))
