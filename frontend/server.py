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

When the scheduler dies, `Rebind` with an abort reason makes this process answer everything
in flight with 503 (no one else ever will) and move to the rings of the scheduler that
replaces it, in one step. `Abort` alone (no successor: the server is stopping) answers what is
in flight with 503 and refuses queries from then on. Query ids carry this process's index (bits 48+) and incarnation (bits 40-47), so a
respawned frontend never mistakes a late answer meant for its predecessor for one of its own.

The bookkeeping -- the tick batch, the in-flight table, answering, the drain state -- is
`FrontendCore` (`schooner.frontend.core`), pure and tested without sockets; this module is the
shell around it: the event loop, the sockets, the rings and doorbells, the clock, metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from collections import deque

import httptools
import uvloop

from schooner.engine.config import ServerConfig, app_route, model_route
from schooner.engine.core.metrics import MetricSet, merge_texts, stage_summary_text
from schooner.engine.spawn import FrontendArgs, setup_logging
from schooner.frontend.codec import InputCodec, RequestError, decode_predict_uid, decode_update
from schooner.frontend.core import FrontendCore, error_body
from schooner.frontend.pending import PendingRequest
from schooner.frontend.routes_v2 import V2Routes
from schooner.ipc import frames, protocol
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.board import Board
from schooner.ipc.channel import TSO, Doorbell, RingReader, RingWriter, full_fence
from schooner.ipc.shm import Segment

log = logging.getLogger(__name__)

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large", 414: b"URI Too Long",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 501: b"Not Implemented",
            503: b"Service Unavailable"}  # fmt: skip
_SUBMIT = FrameCodec(frames.SUBMIT_SCHEMA)
_RESPONSE = FrameCodec(frames.RESPONSE_SCHEMA)
PUBLISH_INTERVAL_S = 0.25
FEEDBACK_WINDOW = 32  # Feedback messages sent and not yet acknowledged; more wait in a queue
PIPELINE_PAUSE = 256  # unanswered requests on one connection before it stops being read
_FD_RESERVE = 64  # descriptors kept free for rings, boards, client shm and logs


def http_response(
    status: int, body: bytes, keep_alive: bool, content_type: bytes = b"application/json", headers: bytes = b"",
    head: bool = False,
) -> bytes:
    """One whole HTTP/1.1 response; `headers` are extra header lines, each ending in CRLF.
    `head`: the answer to a HEAD request (its length, not its body)."""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status, _REASONS.get(status, b"Unknown"), content_type, len(body), headers,
        b"" if keep_alive else b"Connection: close\r\n", b"" if head else body,
    )


class FrontendProc:
    """Process-wide state: apps, rings, sockets, metrics; the bookkeeping is `self.core`."""

    def __init__(self, args: FrontendArgs, loop: asyncio.AbstractEventLoop) -> None:
        cfg = args.config
        self.cfg = cfg
        self.loop = loop
        self.index = args.index
        self.apps: dict[str, tuple] = {}
        self._tables(cfg)
        self.bell = Doorbell(args.bell_fd)
        self.sched_bell = sched_bell = Doorbell(args.scheduler_bell_fd)
        self.submit = RingWriter(Segment.attach(args.submit_ring), sched_bell)
        self.responses = RingReader(Segment.attach(args.response_ring), sched_bell)
        self.ctrl = socket.socket(fileno=args.control_fd)
        self.ctrl.setblocking(False)
        self.stopped = asyncio.Event()
        self.connections: set[HttpConnection] = set()
        # metrics: ours live, everyone's through the boards (ours is boards[1 + index])
        self.boards = [Board(Segment.attach(name).buf) for name in args.metrics_boards]
        self.own_board = self.boards[1 + args.index]
        self.stats_board = Board(Segment.attach(args.stats_board).buf)
        self.client_shm_board = args.client_shm_board
        self.feedback = socket.socket(fileno=args.feedback_fd)
        self.feedback.setblocking(False)
        self.fb_queue: deque[protocol.Feedback] = deque()  # not sent yet: the window is full
        self.fb_credits = FEEDBACK_WINDOW
        self.fb_writer = False  # waiting for the socket to take more
        # client limits: connections, timeouts (a coarse clock advanced by the sweeper)
        self.max_connections = _connection_cap(cfg.max_connections)
        self.now = loop.time()
        self.sweep_s = max(0.05, min(1.0, cfg.header_timeout_s / 4, cfg.body_timeout_s / 4, cfg.keepalive_timeout_s / 4))
        self.refused_logged = 0.0
        self.refused_since_log = 0
        self.metrics = MetricSet()
        self.deliver_ns = 0  # stage timing: scheduler out -> answers handed to the transport
        self.deliver_n = 0
        fe = str(args.index)
        self.m_duration = self.metrics.histogram(
            "schooner_http_request_duration_seconds", "Predict requests, from parsed to answered", frontend=fe)
        self.m_status: dict[int, object] = {}
        self.m_refused = self.metrics.counter(
            "schooner_http_connections_refused_total", "Connections answered 503 and closed: max_connections reached", frontend=fe)
        self.m_timeouts = self.metrics.counter(
            "schooner_http_connection_timeouts_total", "Connections closed by a header, body or keep-alive timeout", frontend=fe)
        self.m_open = self.metrics.gauge("schooner_http_connections", "Open client connections", frontend=fe)
        self.metrics_changed = False
        self._fe_label = fe
        self.core = FrontendCore(
            args.index, args.incarnation, self.submit.ring.slot_nbytes - 4096,
            schedule_flush=self._schedule_tick, report_drained=self._report_drained,
            duration=self.m_duration,
        )
        self.v2 = V2Routes(self)

    def _tables(self, cfg) -> None:
        """What this process knows of the apps: name -> (route id, config, codec, linked
        model's current version, {version: route id} of the linked model)."""
        self.cfg = cfg
        apps = {}
        for i, a in enumerate(cfg.apps):
            if a.deleted:
                continue
            model = cfg.models[cfg.model_index(a.models[0])] if a.models else None
            versions = {m.version: model_route(mi) for mi, m in enumerate(cfg.models)
                        if model and m.name == model.name and not m.deleted}
            old = self.apps.get(a.name)
            codec = old[2] if old is not None and old[1] == a else InputCodec(a)
            apps[a.name] = (app_route(i), a, codec, model, versions)
        self.apps = apps

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
            self.own_board.publish(self.own_metrics().encode())
        self.loop.call_later(PUBLISH_INTERVAL_S, self.publish_metrics)

    def sweep_connections(self) -> None:
        """Advance the coarse clock and close connections whose deadline passed."""
        now = self.now = self.loop.time()
        expired = [c for c in self.connections if c.deadline is not None and c.deadline <= now]
        for c in expired:
            c.expire()
        if self.m_open.value != len(self.connections):
            self.m_open.value = len(self.connections)
            self.metrics_changed = True
        self.loop.call_later(self.sweep_s, self.sweep_connections)

    def refuse(self, conn: HttpConnection) -> None:
        """Over `max_connections`: 503 and close, logged at most every 10 s."""
        self.m_refused.value += 1
        self.metrics_changed = True
        self.refused_since_log += 1
        if self.now - self.refused_logged >= 10.0:
            log.warning("%d connection(s) refused: %d open, the limit is %d (server.max_connections, RLIMIT_NOFILE)",
                        self.refused_since_log, len(self.connections), self.max_connections)
            self.refused_logged = self.now
            self.refused_since_log = 0
        body = error_body("unavailable", f"this frontend holds its limit of {self.max_connections} connections; retry later")
        conn.transport.write(http_response(503, body, False))
        conn.transport.close()

    def own_metrics(self) -> str:
        return self.metrics.render() + stage_summary_text([("deliver", self.deliver_ns, self.deliver_n)],
                                                          frontend=str(self.index))

    def metrics_text(self) -> bytes:
        texts = []
        for board in self.boards:
            texts.append(self.own_metrics() if board is self.own_board else board.read().decode(errors="replace"))
        if any(m.gpus for m in self.cfg.models):
            texts.append(_gpu_metrics())
        return merge_texts(texts).encode()

    # -- queries in -------------------------------------------------------------------------

    def _accepting(self, app_name: str) -> tuple:
        """(index, config, codec) of an app that may take a query now; else the 4xx/503."""
        entry = self.apps.get(app_name)
        if entry is None:
            raise RequestError(404, "not found", f"no application named '{app_name}'; known: {sorted(self.apps)}")
        core = self.core
        if core.draining or core.scheduler_down:
            raise core.refusal()
        return entry

    def submit_request(self, conn: HttpConnection, slot: list, app_name: str, body: bytes) -> None:
        """Clipper's POST /<app>/predict."""
        app_idx, app, codec, model, versions = self._accepting(app_name)
        items, is_batch, uid, version = decode_predict_uid(body, app, model, versions)
        if version is not None and version != model.version:
            app_idx = versions[version]  # pinned to another version: that version's own route
        encoded = [codec.encode(item) for item in items]  # raises before anything is queued
        lens = [len(e) for e in encoded]
        core = self.core
        core.check_request_nbytes(lens)
        now = time.monotonic_ns()
        pending = PendingRequest(conn, slot, len(encoded), is_batch, now)
        core.enqueue(pending, app_idx, now + app.latency_slo_micros * 1000, encoded, lens, uid=uid)

    def submit_update(self, conn: HttpConnection, slot: list, app_name: str, body: bytes) -> None:
        """Clipper's POST /<app>/update: predict the input (all the app's policy needs to
        join), then hand the label to the scheduler on the feedback channel; answer
        {"ok": true} once it is applied."""
        app_idx, app, codec, _, _ = self._accepting(app_name)
        uid, item, label = decode_update(body)
        data = codec.encode(item)
        core = self.core
        core.check_request_nbytes([len(data)])
        now = time.monotonic_ns()

        def render(p):
            if p.error is not None:
                return p.error[0], p.error[1], b"", b"application/json"
            qid = p.outputs[0][3]
            core.fb_waiting[qid] = (p.conn, p.slot)
            self.fb_queue.append(protocol.Feedback(app_idx, qid, label))
            self._send_feedback()
            return None

        pending = PendingRequest(conn, slot, 1, False, now, render)
        core.enqueue(pending, app_idx, now + app.latency_slo_micros * 1000, [data], [len(data)], uid=uid)

    def _send_feedback(self) -> None:
        """Send queued feedback while the window allows; never raises. The window bounds the
        scheduler's unread replies too, so its answers always fit the socket."""
        q = self.fb_queue
        while q and self.fb_credits > 0:
            try:
                protocol.send(self.feedback, q[0])
            except BlockingIOError:
                if not self.fb_writer:
                    self.fb_writer = True
                    self.loop.add_writer(self.feedback.fileno(), self._on_feedback_writable)
                return
            except OSError:  # the scheduler is gone: the abort answers every waiting request
                return
            q.popleft()
            self.fb_credits -= 1

    def _on_feedback_writable(self) -> None:
        self.fb_writer = False
        self.loop.remove_writer(self.feedback.fileno())
        self._send_feedback()

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
                waiting = self.core.fb_waiting.pop(msg.query_id, None)
                if waiting is None:
                    continue
                self.fb_credits += 1
                if self.fb_queue:
                    self._send_feedback()
                self.core.feedback_answered(*waiting, msg.error)

    def _schedule_tick(self) -> None:
        """The first query of a tick: the tick runs before the loop can block again, and it
        looks at the response ring, so the scheduler need not post this process meanwhile
        (the ring's wake-up protocol, `schooner.ipc.ring`: the tick's end is C1-C3)."""
        if TSO:
            self.responses.ring.set_sleeping(False)
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        try:
            self._flush()
        finally:  # whatever happened above, the flag must not stay 0 with no tick pending
            ring = self.responses.ring
            ring.set_sleeping(True)  # C1: from here on the scheduler posts our doorbell
            full_fence()  # C2
        if ring.pending():  # C3: what came while the flag was 0 is read now
            self._drain_responses()

    def _flush(self) -> None:
        """Once per tick (and when answers may have freed submit slots): seal the tick batch
        and write what the backlog holds into the submit ring, posting the scheduler once."""
        core = self.core
        core.end_tick()
        backlog = core.backlog
        while backlog:
            try:
                if not self.submit.try_write(lambda slot, b=backlog[0]: _SUBMIT.write(slot, b[0], b[1])):
                    break
            except OverflowError as e:  # cannot happen within the request limits; never stall on it
                log.error("a submit batch does not fit its slot (%s); its queries are answered 500", e)
                core.fail_ids(backlog[0][1][0], 500, error_body("internal error", f"submit batch does not fit: {e}"),
                              time.monotonic_ns())
            backlog.popleft()
        self.submit.flush()  # one doorbell for the whole tick

    # -- answers out ------------------------------------------------------------------------

    def on_bell(self) -> None:
        self.bell.clear()
        self._drain_responses()

    def _drain_responses(self) -> None:
        reader = self.responses
        n = reader.pending()
        core = self.core
        for i in range(n):
            rows, (ids, status, reasons, outputs, extras, sent) = _RESPONSE.read_rows(reader.read(i))
            core.answer(rows, ids, status, reasons, outputs, extras if any(extras) else None, time.monotonic_ns())
            if rows:
                self.deliver_ns += rows * (time.monotonic_ns() - sent[0])
                self.deliver_n += rows
        if n:
            reader.release(n)  # posts the scheduler if it may be waiting for a free slot
        if core.backlog:
            self._flush()
        core.check_drained()

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
                self.core.check_drained()
                continue
            if isinstance(msg, protocol.Reconfigure):
                cfg = ServerConfig.from_json(msg.config)
                self._tables(cfg)
                self.v2.tables(cfg)
                protocol.send(self.ctrl, protocol.Reconfigured(msg.epoch, f"frontend[{self.index}]"))
                continue
            if isinstance(msg, protocol.Rebind):
                if msg.abort_reason:  # the old scheduler died: nobody answers what it held
                    self._abort(msg.abort_reason)
                self._rebind(msg)
                continue
            if isinstance(msg, protocol.Drain) and not self.core.draining:
                log.info("draining: %d request(s) in flight", self.core.requests_inflight)
                self.core.drain()

    def _rebind(self, msg: protocol.Rebind) -> None:
        """A new scheduler: its rings replace the old ones (whatever these hold is stale)."""
        old = (self.submit, self.responses)
        self.submit = RingWriter(Segment.attach(msg.ring_out), self.sched_bell)
        self.responses = RingReader(Segment.attach(msg.ring_in), self.sched_bell)
        for ring in old:
            ring.close()
        self.core.rebound()
        log.info("serving again through a new scheduler")

    def _abort(self, reason: str) -> None:
        """Answer every request still in flight with 503: nobody else ever will."""
        n = self.core.abort(reason)
        self.fb_queue.clear()
        self.fb_credits = FEEDBACK_WINDOW
        log.error("aborted %d request(s): %s", n, reason)

    def _report_drained(self) -> None:
        try:
            protocol.send(self.ctrl, protocol.Drained(f"frontend[{self.index}]"))
        except OSError:
            self.stopped.set()


class _Reject(Exception):
    """Raised from a parser callback: answer `status` and close the connection."""

    def __init__(self, status: int, cause: str) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause


class HttpConnection(asyncio.Protocol):
    """One client connection: httptools callbacks, ordered responses, keep-alive.

    Limits: the request line and headers must arrive within `header_timeout_s` (a new
    connection's first request included), a body within `body_timeout_s` of its first byte, and an idle
    connection is closed after `keepalive_timeout_s`; `deadline` holds the time (on the
    frontend's coarse clock) and the frontend's sweeper enforces it. A request waiting for its
    answer has no deadline: the SLO bounds it. A URL over `max_url_nbytes` is answered 414, a
    head over `max_header_nbytes` 431, both closing the connection. Over `PIPELINE_PAUSE`
    unanswered requests the connection is not read until half of them are answered.
    """

    __slots__ = ("fe", "transport", "parser", "url", "url_nbytes", "body", "body_nbytes", "too_large",
                 "queue", "closing", "keep_alive", "header_len", "deadline", "parsing", "in_head",
                 "head_nbytes", "chunk_nbytes", "began", "paused", "write_paused")  # fmt: skip

    def __init__(self, fe: FrontendProc) -> None:
        self.fe = fe
        self.transport: asyncio.Transport | None = None
        self.header_len: int | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url: list[bytes] = []
        self.url_nbytes = 0
        self.body: list[bytes] = []
        self.body_nbytes = 0
        self.too_large = False
        self.queue: deque[list] = deque()  # [ready, bytes] per request, in arrival order
        self.closing = False
        self.deadline: float | None = fe.now + fe.cfg.header_timeout_s
        self.parsing = False  # between a request's first byte and its end
        self.in_head = True  # reading a request line and headers
        self.head_nbytes = 0  # header bytes of this request, as parsed
        self.chunk_nbytes = 0  # bytes of reads that fell wholly inside this request's head
        self.began = False
        self.paused = False
        self.write_paused = False  # the transport's buffer is over its high-water mark

    def connection_made(self, transport) -> None:
        self.transport = transport
        fe = self.fe
        if len(fe.connections) >= fe.max_connections:
            self.closing = True
            self.deadline = None
            fe.refuse(self)
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fe.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.fe.connections.discard(self)
        self.transport = None
        self.deadline = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # a response that closes the connection is queued: nothing more is read
        # httptools joins a header's pieces itself (quadratic in their number): bound what it
        # may hold by the reads that fell wholly inside one head
        if self.chunk_nbytes > self.fe.cfg.max_header_nbytes + self.fe.cfg.max_url_nbytes:
            self._fail_connection(431, f"request headers exceed the limit of {self.fe.cfg.max_header_nbytes} bytes", "request header fields too large")
            return
        was_head = self.in_head
        self.began = False
        try:
            self.parser.feed_data(data)
            if was_head and self.in_head and not self.began:
                self.chunk_nbytes += len(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _Reject):
                self._fail_connection(cause.status, cause.cause, _REASONS[cause.status].decode().lower())
            else:  # a bug in a callback: one connection, never the process
                log.error("parser callback failed: %r", cause)
                self._fail_connection(500, f"internal error: {cause!r}", "internal error")
        except httptools.HttpParserUpgrade:
            self._fail_connection(400, "upgrade is not supported")
        except httptools.HttpParserError as e:
            self._fail_connection(400, f"malformed HTTP request: {e}")

    def _fail_connection(self, status: int, cause: str, kind: str = "bad request") -> None:
        """Answer `status` after the requests already queued, then close. Nothing follows a
        response that says `Connection: close`: when one is queued already, just stop."""
        self.deadline = None
        if self.closing:
            return
        self.closing = True
        slot = [False, b"", False, True]
        self.queue.append(slot)
        self.respond(slot, status, error_body(kind, cause))

    def expire(self) -> None:
        """The sweeper found `deadline` passed."""
        self.deadline = None
        self.fe.m_timeouts.value += 1
        if self.parsing:
            what = "headers" if self.in_head else "body"
            limit = self.fe.cfg.header_timeout_s if self.in_head else self.fe.cfg.body_timeout_s
            self._fail_connection(408, f"request {what} not received within {limit:g} s", "request timeout")
        elif self.transport is not None:
            self.transport.abort()  # idle: nothing worth flushing to a client that may not read

    # httptools callbacks
    def on_message_begin(self) -> None:
        fe = self.fe
        self.header_len = None
        self.url = []
        self.url_nbytes = 0
        self.body = []
        self.body_nbytes = 0
        self.too_large = False
        self.parsing = True
        self.in_head = True
        self.began = True
        self.head_nbytes = 0
        self.chunk_nbytes = 0
        self.deadline = fe.now + fe.cfg.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url_nbytes += len(url)
        if self.url_nbytes > self.fe.cfg.max_url_nbytes:
            raise _Reject(414, f"URL exceeds the limit of {self.fe.cfg.max_url_nbytes} bytes")
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_nbytes += len(name) + len(value)
        if self.head_nbytes > self.fe.cfg.max_header_nbytes:
            raise _Reject(431, f"request headers exceed the limit of {self.fe.cfg.max_header_nbytes} bytes")
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
        if self.in_head:  # the first piece of a body: the headers are in (no extra callback per request)
            self.in_head = False
            self.deadline = self.fe.now + self.fe.cfg.body_timeout_s
        if self.too_large:
            return
        self.body_nbytes += len(body)
        if self.body_nbytes > self.fe.cfg.max_body_nbytes:
            self.too_large = True
            self.body = []
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.parsing = False
        self.in_head = True
        self.deadline = None
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive()
        # [answered, response bytes, HEAD, close after it]
        slot = [False, b"", method == b"HEAD", not keep_alive]
        q = self.queue
        q.append(slot)
        if len(q) > PIPELINE_PAUSE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        if not keep_alive:
            self.closing = True
        url = self.url[0] if len(self.url) == 1 else b"".join(self.url)
        path = url.split(b"?", 1)[0].decode("latin-1")
        try:
            if self.too_large:
                self.closing = True  # the rest of an oversized body is not worth reading
                slot[3] = True
                raise RequestError(413, "payload too large", f"request body exceeds the limit of {self.fe.cfg.max_body_nbytes} bytes")
            self._route(slot, method, path)
        except RequestError as e:
            self.respond(slot, e.status, e.body())
        except Exception as e:  # a bug must cost one request, never the process
            log.exception("internal error on %s %s", method, path)
            self.respond(slot, 500, error_body("internal error", repr(e)))

    def _route(self, slot: list, method: bytes, path: str) -> None:
        if path.endswith("/predict") and path.count("/") == 2 and len(path) > 9 and path[0] == "/":
            parts = [path[1:-8], "predict"]  # the common request, "/<app>/predict": no split
        else:
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
            if path.endswith("live"):
                self.respond(slot, 200, b"")
            elif self.fe.core.draining:
                self.respond(slot, 503, error_body("unavailable", "draining"))
            elif self.fe.core.scheduler_down:
                self.respond(slot, 503, error_body("unavailable", "the scheduler is restarting"))
            elif unready := self.fe.v2.unready_apps():
                self.respond(slot, 503, error_body("unavailable", f"no ready model for app(s) {unready}"))
            else:
                self.respond(slot, 200, b"")
            return
        raise RequestError(404, "not found", f"no route for {path}; expected POST /<app>/predict, GET /metrics or GET /v2/health/live|ready")

    def respond(
        self, slot: list, status: int, body: bytes, content_type: bytes = b"application/json", headers: bytes = b"",
    ) -> None:
        """Fill this request's place in line and write every response that is now in order.
        A response that closes the connection is the last one written."""
        slot[0] = True
        slot[1] = data = http_response(status, body, not slot[3], content_type, headers, slot[2])
        self.fe.count_response(status)
        t = self.transport
        q = self.queue
        close = False
        if len(q) == 1 and q[0] is slot:  # the common case: the only request in line
            q.clear()
            close = slot[3]
        else:  # pipelined: write every response now in order, up to one that closes
            out = []
            while q and q[0][0]:
                done = q.popleft()
                out.append(done[1])
                if done[3]:
                    close = True
                    q.clear()
                    break
            if not out:
                return
            data = out[0] if len(out) == 1 else b"".join(out)
        if t is None:
            return
        t.write(data)
        if close:
            t.close()
            return
        if not q and not self.parsing:
            self.deadline = self.fe.now + self.fe.cfg.keepalive_timeout_s
        if self.paused and len(q) <= PIPELINE_PAUSE // 2 and not self.write_paused:
            self.paused = False
            t.resume_reading()

    # flow control: a client that does not read its answers is not read either
    def pause_writing(self) -> None:
        self.write_paused = True
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.paused and len(self.queue) <= PIPELINE_PAUSE // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()


def _gpu_metrics() -> str:
    """Per-GPU gauges from NVML (no CUDA context; empty without NVML)."""
    from schooner.engine.gpus import gpu_gauges

    mx = MetricSet()
    for gpu, used, util in gpu_gauges():
        labels = {"gpu": str(gpu.index), "uuid": gpu.uuid}
        mx.gauge("schooner_gpu_memory_used_bytes", "GPU memory in use (NVML)", **labels).set(used)
        mx.gauge("schooner_gpu_utilization_ratio", "GPU busy fraction over NVML's last sample period", **labels).set(util / 100)
    return mx.render()


def _connection_cap(configured: int) -> int:
    """`configured`, but below the descriptors this process may open: raise the soft limit to
    the hard one first, as servers do, and keep `_FD_RESERVE` free."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    cap = min(configured, max(1, soft - _FD_RESERVE))
    if cap < configured:
        log.info("max_connections %d lowered to %d by RLIMIT_NOFILE %d", configured, cap, soft)
    return cap


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
    fe.sweep_connections()
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
