"""One load-generator process: sends pre-encoded requests at scheduled times over a connection pool.

Owns the hot path of the open-loop generator. Started by ``benchmarks.drivers.loadgen.driver`` as
``python -m benchmarks.drivers.loadgen.worker SPEC.json``; the protocol with the driver is three steps:

  1. read the spec and its arrays (due offsets in ns, which request each arrival sends, the
     pre-encoded requests), pin to the given CPUs, open the initial connections, print ``ready``;
  2. block on stdin for ``go <t0_ns>`` (CLOCK_MONOTONIC, the same clock in every process), so all
     workers share one t0;
  3. send every arrival at t0 + offset, wait for the answers until ``drain_s`` after the last
     one is due, write the per-request records to ``out_path`` (.npz) and exit.

Sending: one uvloop event loop; a timerfd (``timerfd.py``) armed at the next due time wakes it
with µs precision; on a wake-up every request that is due leaves at once. A request goes on an
idle keep-alive connection (one request outstanding per connection, no pipelining); when none is
idle a new connection is opened, so a slow server never holds the sender back (that is the
point of open loop), up to ``max_connections`` per worker. Past that cap the request is not
sent and is recorded as dropped (no connection).

Records, one entry per arrival: when the worker decided to send it (``sent_ns``; send lag =
sent − due, the generator's own delay; a new connection's connect time is not lag but is in
the latency), when the answer was complete (``done_ns``), the status (HTTP status, or a negative
code below) and whether the body was a default answer. The latency (done − due) is computed by
the driver, from the *due* time: time a request waited for the generator is charged to it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import orjson
import uvloop

from benchmarks.drivers.loadgen.http1 import BadResponse, parse_response
from benchmarks.drivers.loadgen.timerfd import MonotonicTimerFd

# status codes that are not HTTP statuses
UNANSWERED = -4  # sent, no answer by the drain deadline
DROPPED_NO_CONNECTION = -1  # not sent: every connection busy and the cap reached
CONNECT_ERROR = -2  # a new connection for it failed
CONNECTION_LOST = -3  # the connection closed or reset while it was outstanding
BAD_RESPONSE = -5  # the answer could not be parsed
STATUS_NAMES = {
    UNANSWERED: "unanswered",
    DROPPED_NO_CONNECTION: "dropped_no_connection",
    CONNECT_ERROR: "connect_error",
    CONNECTION_LOST: "connection_lost",
    BAD_RESPONSE: "bad_response",
}


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs; written as JSON by the driver, arrays in ``arrays_path``."""

    index: int
    host: str
    port: int
    arrays_path: str  # .npz: due_offsets_ns (int64), request_index (int32)
    requests_path: str  # .npz: blob (uint8), starts (int64, len m + 1): request k = blob[starts[k]:starts[k+1]]
    out_path: str
    max_connections: int
    initial_connections: int
    drain_s: float
    cpus: tuple[int, ...] | None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> WorkerSpec:
        raw = orjson.loads(data)
        raw["cpus"] = tuple(raw["cpus"]) if raw["cpus"] is not None else None
        return cls(**raw)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_requests(path: str) -> list[bytes]:
    with np.load(path) as f:
        blob, starts = f["blob"], f["starts"]
    data = blob.tobytes()
    return [data[starts[k] : starts[k + 1]] for k in range(len(starts) - 1)]


class LoadConn(asyncio.Protocol):
    """One keep-alive connection; ``index`` is the arrival outstanding on it (−1: idle)."""

    __slots__ = ("worker", "transport", "buf", "index")

    def __init__(self, worker: LoadWorker, index: int) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.index = index

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        w = self.worker
        if self.index >= 0:
            self.transport.write(w.requests[w.request_index[self.index]])
        else:
            w.idle.append(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self.buf + data if self.buf else data
        try:
            parsed = parse_response(buf)
        except BadResponse:
            self.buf = b""
            self.worker.on_bad_response(self)
            return
        if parsed is None:
            self.buf = buf
            return
        self.buf = buf[parsed.consumed :]
        self.worker.on_response(self, now, parsed.status, parsed.is_default, parsed.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.on_lost(self)


class LoadWorker:
    def __init__(
        self,
        spec: WorkerSpec,
        due_offsets_ns: np.ndarray,
        request_index: np.ndarray,
        requests: list[bytes],
    ) -> None:
        self.spec = spec
        self.offsets = due_offsets_ns.tolist()
        self.request_index = request_index.tolist()
        self.requests = requests
        n = len(self.offsets)
        self.n = n
        self.sent_ns = [0] * n
        self.done_ns = [0] * n
        self.status = [UNANSWERED] * n
        self.is_default = [False] * n
        self.due: list[int] = []
        self.next = 0
        self.idle: list[LoadConn] = []
        self.conns: set[LoadConn] = set()
        self.open_count = 0  # connections open or opening
        self.opened = 0
        self.inflight = 0
        self.max_inflight = 0
        self.draining = False
        self.stopped = False
        self.finished: asyncio.Future[None] | None = None
        self.timer = MonotonicTimerFd()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.all_sent_cpu_s: float | None = None
        self.all_sent_ns: int | None = None

    # -- connections ------------------------------------------------------------------------

    def _factory(self, index: int):
        def make() -> LoadConn:
            conn = LoadConn(self, index)
            self.conns.add(conn)
            return conn

        return make

    async def _connect(self, index: int) -> None:
        assert self.loop is not None
        try:
            await self.loop.create_connection(self._factory(index), self.spec.host, self.spec.port)
        except OSError:
            self.open_count -= 1
            if index >= 0:
                self.status[index] = CONNECT_ERROR
                self.inflight -= 1
                self._maybe_finish()

    async def open_initial(self) -> None:
        count = min(self.spec.initial_connections, self.spec.max_connections)
        self.open_count += count
        self.opened += count
        await asyncio.gather(*(self._connect(-1) for _ in range(count)))

    def on_response(
        self, conn: LoadConn, now: int, status: int, is_default: bool, keep_alive: bool
    ) -> None:
        i = conn.index
        if i < 0:  # an answer nobody asked for: ignore it
            return
        conn.index = -1
        self.done_ns[i] = now
        self.status[i] = status
        self.is_default[i] = is_default
        self.inflight -= 1
        if keep_alive and not self.draining:
            self.idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        if self.draining and self.inflight == 0:
            self._finish()

    def on_bad_response(self, conn: LoadConn) -> None:
        i = conn.index
        if i >= 0:
            conn.index = -1
            self.status[i] = BAD_RESPONSE
            self.inflight -= 1
        if conn.transport is not None:
            conn.transport.close()
        self._maybe_finish()

    def on_lost(self, conn: LoadConn) -> None:
        if self.stopped:  # our own abort at the end: what is outstanding stays unanswered
            return
        self.conns.discard(conn)
        self.open_count -= 1
        conn.transport = None
        i = conn.index
        if i >= 0:
            conn.index = -1
            self.status[i] = CONNECTION_LOST
            self.inflight -= 1
        else:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        self._maybe_finish()

    # -- sending ----------------------------------------------------------------------------

    def on_timer(self) -> None:
        self.timer.consume()
        if self.draining:
            self._finish()
            return
        due, n, i = self.due, self.n, self.next
        now = time.monotonic_ns()
        idle, requests, request_index = self.idle, self.requests, self.request_index
        sent_ns, status = self.sent_ns, self.status
        while i < n:
            if due[i] > now:
                now = time.monotonic_ns()
                if due[i] > now:
                    break
            sent_ns[i] = now
            if idle:
                conn = idle.pop()
                conn.index = i
                conn.transport.write(requests[request_index[i]])  # type: ignore[union-attr]
                self.inflight += 1
            elif self.open_count < self.spec.max_connections:
                self.open_count += 1
                self.opened += 1
                self.inflight += 1
                self.loop.create_task(self._connect(i))  # type: ignore[union-attr]
            else:
                status[i] = DROPPED_NO_CONNECTION
            i += 1
            now = time.monotonic_ns()
        self.next = i
        if self.inflight > self.max_inflight:
            self.max_inflight = self.inflight
        if i < n:
            self.timer.arm_at_ns(due[i])
        else:
            self.draining = True
            self.all_sent_cpu_s = _cpu_s()
            self.all_sent_ns = time.monotonic_ns()
            self.timer.arm_at_ns(due[-1] + int(self.spec.drain_s * 1e9) if n else 0)
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.draining and self.inflight == 0:
            self._finish()

    def _finish(self) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def run(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.finished = loop.create_future()
        await self.open_initial()
        gc.collect()
        gc.freeze()
        gc.disable()  # no collector pauses in the middle of a send burst
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        line = sys.stdin.readline().split()  # blocking on purpose: nothing else to do until go
        if len(line) != 2 or line[0] != "go":
            raise SystemExit(f"worker[{self.spec.index}]: expected 'go <t0_ns>', got {line!r}")
        t0 = int(line[1])
        self.due = [t0 + off for off in self.offsets]
        cpu0 = _cpu_s()
        wall0 = time.monotonic_ns()
        loop.add_reader(self.timer.fd, self.on_timer)
        if self.n:
            self.timer.arm_at_ns(self.due[0])
        else:
            self.draining = True
            self._finish()
        await self.finished
        wall_s = (time.monotonic_ns() - wall0) / 1e9
        cpu_s = _cpu_s() - cpu0
        # busy while sending: from t0 to the last arrival (the drain is mostly idle waiting)
        send_wall_s = ((self.all_sent_ns or wall0) - wall0) / 1e9
        send_cpu_s = (self.all_sent_cpu_s or cpu0) - cpu0
        loop.remove_reader(self.timer.fd)
        self.timer.close()
        self.stopped = True
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        return {
            "index": self.spec.index,
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "send_wall_s": send_wall_s,
            "send_cpu_s": send_cpu_s,
            "cpu_busy_fraction": send_cpu_s / send_wall_s if send_wall_s > 0 else None,
            "connections_opened": self.opened,
            "max_inflight": self.max_inflight,
            "affinity": sorted(os.sched_getaffinity(0)),
            "requests": self.n,
        }

    def write_records(self, meta: dict[str, object]) -> None:
        np.savez(
            self.spec.out_path,
            sent_ns=np.asarray(self.sent_ns, dtype=np.int64),
            done_ns=np.asarray(self.done_ns, dtype=np.int64),
            status=np.asarray(self.status, dtype=np.int16),
            is_default=np.asarray(self.is_default, dtype=np.bool_),
            meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
        )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.drivers.loadgen.worker SPEC.json")
    spec = WorkerSpec.from_json(Path(args[0]).read_bytes())
    if spec.cpus:
        os.sched_setaffinity(0, spec.cpus)
    with np.load(spec.arrays_path) as f:
        offsets, request_index = f["due_offsets_ns"], f["request_index"]
    worker = LoadWorker(spec, offsets, request_index, load_requests(spec.requests_path))
    meta = uvloop.run(worker.run())
    worker.write_records(meta)
    sys.stdout.write("done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
