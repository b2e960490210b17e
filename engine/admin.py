"""The admin port's HTTP server, inside the supervisor's poll loop (no thread, no asyncio).

`AdminServer` owns the listening socket and its connections. The supervisor polls `fds()`
with everything else it watches and hands what became readable to `on_readable`, which
returns the requests completed by that data. Each request is answered with `respond` once the
management layer is done with it (an admin call may wait for model processes to start), so a
connection holds at most one request in progress; a pipelined next one waits its turn.

It is the trust boundary of the server: deploying a model runs its code. It binds 127.0.0.1
unless told otherwise, and a bearer token (when set) is checked on every request before
anything else; answers are JSON, errors `{"error", "cause"}`.
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections import deque
from dataclasses import dataclass, field

import httptools
import orjson

log = logging.getLogger(__name__)

MAX_ADMIN_BODY_NBYTES = 1 << 20
MAX_ADMIN_HEAD_NBYTES = 64 << 10  # request line and headers
MAX_ADMIN_CONNECTIONS = 64
MAX_QUEUED_PER_CONNECTION = 16  # parsed and unanswered: the connection is not read beyond this
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 431: b"Request Header Fields Too Large", 404: b"Not Found", 405: b"Method Not Allowed",
            413: b"Payload Too Large", 500: b"Internal Server Error", 503: b"Service Unavailable"}  # fmt: skip


@dataclass(eq=False)
class AdminRequest:
    conn: _AdminConn
    method: str
    path: str
    body: bytes
    keep_alive: bool
    authorized: bool


@dataclass(eq=False)
class _AdminConn:
    sock: socket.socket
    server: AdminServer
    parser: httptools.HttpRequestParser | None = None
    url: bytes = b""
    body: list = field(default_factory=list)
    nbytes: int = 0  # body bytes of this request
    head_nbytes: int = 0  # header bytes of this request
    auth: bytes = b""
    done: deque = field(default_factory=deque)  # parsed, not yet answered
    busy: bool = False  # one request at a time is handed out
    closed: bool = False

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body, self.nbytes, self.head_nbytes, self.auth = b"", [], 0, 0, b""

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_ADMIN_HEAD_NBYTES:
            raise ValueError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_nbytes += len(name) + len(value)
        if self.head_nbytes > MAX_ADMIN_HEAD_NBYTES:
            raise ValueError("headers too long")
        if name.lower() == b"authorization":
            self.auth = value

    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)
        if self.nbytes <= MAX_ADMIN_BODY_NBYTES:
            self.body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        token = self.server.token
        authorized = token is None or hmac.compare_digest(self.auth, b"Bearer " + token.encode())
        body = b"".join(self.body) if self.nbytes <= MAX_ADMIN_BODY_NBYTES else None
        self.done.append(AdminRequest(self, p.get_method().decode("latin-1"), path, body, p.should_keep_alive(), authorized))


class AdminServer:
    def __init__(self, host: str, port: int, token: str | None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.token = token
        self.conns: dict[int, _AdminConn] = {}
        self.handed: deque[AdminRequest] = deque()  # next requests of connections just answered

    def fds(self) -> list[int]:
        """What to poll: the listener, and each connection that may be read now."""
        conns = [fd for fd, c in self.conns.items() if len(c.done) < MAX_QUEUED_PER_CONNECTION]
        return [self.sock.fileno(), *conns]

    def pending(self) -> bool:
        """Requests ready to be handled without waiting for any descriptor."""
        return bool(self.handed)

    def on_readable(self, readable: set[int]) -> list[AdminRequest]:
        """Accept, read and parse; the requests ready to be handled, in arrival order.
        Requests that fail the token are answered 401 here, never queued."""
        if self.sock.fileno() in readable:
            while True:
                try:
                    s, _ = self.sock.accept()
                except (BlockingIOError, OSError):
                    break
                if len(self.conns) >= MAX_ADMIN_CONNECTIONS:
                    s.close()
                    continue
                s.setblocking(False)
                conn = _AdminConn(s, self)
                conn.parser = httptools.HttpRequestParser(conn)
                self.conns[s.fileno()] = conn
        out = list(self.handed)
        self.handed.clear()
        for fd, conn in list(self.conns.items()):
            if fd in readable and len(conn.done) < MAX_QUEUED_PER_CONNECTION:
                self._read(conn)
            while not conn.closed and not conn.busy and conn.done:
                req = conn.done.popleft()
                conn.busy = True
                if req.authorized:
                    out.append(req)
                else:
                    self.respond(req, 401, {"error": "unauthorized",
                                            "cause": "this admin port needs the header Authorization: Bearer <token>"})
        for req in self.handed:  # answered 401 above: their successors
            out.append(req)
        self.handed.clear()
        return out

    def _read(self, conn: _AdminConn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        try:
            conn.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            self._write(conn, 431, {"error": "too large", "cause": f"{e.__context__}"}, False)
        except httptools.HttpParserError as e:
            self._write(conn, 400, {"error": "bad request", "cause": f"malformed HTTP request: {e}"}, False)

    def respond(self, req: AdminRequest, status: int, doc) -> None:
        """Answer `req` (JSON) and hand out its connection's next request, if any."""
        conn = req.conn
        conn.busy = False
        if conn.closed:
            return
        self._write(conn, status, doc, req.keep_alive)
        if not conn.closed and conn.done:  # pipelined: the next one is ready now
            nxt = conn.done.popleft()
            conn.busy = True
            if nxt.authorized:
                self.handed.append(nxt)
            else:
                self.respond(nxt, 401, {"error": "unauthorized",
                                        "cause": "this admin port needs the header Authorization: Bearer <token>"})

    def _write(self, conn: _AdminConn, status: int, doc, keep_alive: bool) -> None:
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        ctype = b"text/plain" if isinstance(doc, bytes) else b"application/json"
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status, _REASONS.get(status, b"Unknown"), ctype, len(body), b"" if keep_alive else b"Connection: close\r\n")
        try:
            conn.sock.setblocking(True)  # answers are small; a stuck admin client is its own problem
            conn.sock.settimeout(5.0)
            conn.sock.sendall(head + body)
            conn.sock.setblocking(False)
        except OSError:
            keep_alive = False
        if not keep_alive:
            self._close(conn)

    def _close(self, conn: _AdminConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        self.sock.close()
