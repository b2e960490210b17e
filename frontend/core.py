"""The frontend's bookkeeping, as a pure object: no sockets, no event loop, no rings, no clock.

`FrontendCore` holds what `FrontendProc` (`schooner.frontend.server`, the shell) decides with:

* **The tick batch.** `enqueue` appends a request's queries, in order, to the batch of this
  event-loop tick, all of them to the same batch. A request that would take the batch over
  `max_query_nbytes` seals it first (into `backlog`) and begins a new one. The first query of
  a tick asks the shell for a flush (`schedule_flush`); the shell's flush calls `end_tick`
  and writes the sealed batches from `backlog` into the submit ring.
* **The in-flight table.** `inflight` maps each query id to (its request, its index in the
  request). Ids carry the frontend's index (bits 48+) and incarnation (bits 40-47), so a
  respawned frontend never mistakes an answer meant for its predecessor for one of its own:
  unknown ids are ignored. `requests_inflight` counts requests not yet answered, those
  waiting for a feedback acknowledgement (`fb_waiting`) included.
* **Answering.** `answer` takes one decoded response message; `fail_ids` answers queries
  that never reached the scheduler. A request is answered exactly once, when its last query
  is: with its outputs in query order, or with the first error any of its queries got.
* **The drain state.** `drain` and `check_drained` report (`report_drained`) when draining and
  nothing is in flight; `abort` answers everything in flight with 503 once, empties the tick,
  and marks the scheduler down, so `refusal` refuses new queries until `rebound`.

The shell passes the time in (`now_ns`) and gives the core its connections: each request's
`conn.respond(slot, status, body, content_type=..., headers=...)` is how it is answered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import accumulate

import orjson

from schooner.frontend.codec import RequestError, encode_batch, encode_prediction
from schooner.frontend.pending import PendingRequest
from schooner.ipc.rows import TYPED_FIRST, render_rows
from schooner.ipc.wire import HTTP_STATUS, REASON_TEXT

ROW_OVERHEAD = 64  # Arrow bytes per query besides its input (offsets, ids, deadline, padding)


def error_body(kind: str, cause: str) -> bytes:
    return orjson.dumps({"error": kind, "cause": cause})


def first_query_id(index: int, incarnation: int) -> int:
    """The first query id of frontend `index`'s `incarnation` (its low 8 bits)."""
    return (index << 48) + ((incarnation & 0xFF) << 40) + 1


class FrontendCore:
    """The tick batch, the in-flight table, answering and the drain state of one frontend."""

    __slots__ = ("max_query_nbytes", "schedule_flush", "report_drained", "duration", "next_id", "inflight",
                 "requests_inflight", "t_ids", "t_apps", "t_deadlines", "t_priorities", "t_uids", "t_starts", "t_typed",
                 "t_chunks", "t_lens", "t_nbytes", "flush_scheduled", "backlog", "fb_waiting", "draining",
                 "scheduler_down")  # fmt: skip

    def __init__(
        self, index: int, incarnation: int, max_query_nbytes: int, schedule_flush: Callable[[], object],
        report_drained: Callable[[], object], duration,
    ) -> None:
        """`schedule_flush()`: call `end_tick` and write `backlog` soon (once per tick);
        `report_drained()`: tell the supervisor this frontend is drained; `duration`: the
        histogram (`.observe(seconds)`) of predict requests, from parsed to answered."""
        self.max_query_nbytes = max_query_nbytes
        self.schedule_flush = schedule_flush
        self.report_drained = report_drained
        self.duration = duration
        self.next_id = first_query_id(index, incarnation)
        self.inflight: dict[int, tuple[PendingRequest, int]] = {}
        self.requests_inflight = 0
        # the tick batch
        self.t_ids: list[int] = []
        self.t_apps: list[int] = []
        self.t_deadlines: list[int] = []
        self.t_priorities: list[int] = []
        self.t_uids: list[int] = []
        self.t_typed: list[int] = []
        self.t_starts: list[int] = []
        self.t_chunks: list[bytes] = []  # input bytes; a chunk may hold several queries' rows
        self.t_lens: list[int] = []  # one input length per query
        self.t_nbytes = 0
        self.flush_scheduled = False
        self.backlog: deque[tuple] = deque()  # sealed batches waiting for a free submit slot
        self.fb_waiting: dict[int, tuple] = {}  # query id -> (conn, slot) of an update waiting for its ack
        self.draining = False
        self.scheduler_down = False  # after an abort: no scheduler will answer

    # -- queries in -------------------------------------------------------------------------

    def refusal(self) -> RequestError | None:
        """The 503 for a new query while draining or with the scheduler down; else None."""
        if self.draining:
            return RequestError(503, "unavailable", "the server is draining; retry on another instance")
        if self.scheduler_down:
            return RequestError(503, "unavailable", "the scheduler is restarting; retry in a moment")
        return None

    def check_request_nbytes(self, lens: list[int]) -> None:
        """413 unless the request's queries fit one submit batch (they travel together)."""
        nbytes = sum(lens) + ROW_OVERHEAD * len(lens)
        if nbytes > self.max_query_nbytes:
            raise RequestError(
                413, "payload too large",
                f"the request's {len(lens)} quer{'y' if len(lens) == 1 else 'ies'} take {nbytes} bytes in a submit batch; "
                f"the limit is {self.max_query_nbytes} (server.submit_slot_nbytes - 4096); send fewer or smaller inputs per request",
            )

    def enqueue(
        self, pending: PendingRequest, route: int, deadline_ns: int, chunks: list[bytes], lens: list[int],
        priority: int = 0, uid: int = -1, typed: int = 0,
    ) -> None:
        """Queue one request's queries (`lens` gives each query's share of `chunks`, in order)
        for this tick's submit batch. Nothing can fail after this point: every query will be
        answered by the scheduler."""
        self.requests_inflight += 1
        inflight = self.inflight
        qid = self.next_id
        n = len(lens)
        self.next_id = qid + n
        nbytes = (lens[0] if n == 1 else sum(lens)) + ROW_OVERHEAD * n
        if self.t_nbytes + nbytes > self.max_query_nbytes:
            self.seal_tick()
        if n == 1:  # the common request: appends, no lists built
            inflight[qid] = (pending, 0)
            self.t_ids.append(qid)
            self.t_apps.append(route)
            self.t_deadlines.append(deadline_ns)
            self.t_priorities.append(priority)
            self.t_uids.append(uid)
            self.t_typed.append(typed)
            self.t_starts.append(pending.start_ns)
            self.t_lens.append(lens[0])
        else:
            for i in range(n):
                inflight[qid + i] = (pending, i)
            self.t_ids.extend(range(qid, qid + n))
            self.t_apps.extend([route] * n)
            self.t_deadlines.extend([deadline_ns] * n)
            self.t_priorities.extend([priority] * n)
            self.t_uids.extend([uid] * n)
            self.t_typed.extend([typed] * n)
            self.t_starts.extend([pending.start_ns] * n)
            self.t_lens.extend(lens)
        self.t_chunks.extend(chunks)
        self.t_nbytes += nbytes
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.schedule_flush()

    def seal_tick(self) -> None:
        """Move the tick batch, if any, to `backlog` as (rows, submit columns) and begin a new one."""
        if not self.t_ids:
            return
        offsets = list(accumulate(self.t_lens, initial=0))
        self.backlog.append(
            (len(self.t_ids), [self.t_ids, self.t_apps, self.t_deadlines, self.t_priorities, self.t_uids,
                               self.t_starts, (offsets, self.t_chunks), self.t_typed])  # the chunks are copied into the slot once
        )
        self._new_tick()

    def _new_tick(self) -> None:
        self.t_ids, self.t_apps, self.t_deadlines, self.t_priorities, self.t_uids = [], [], [], [], []
        self.t_starts, self.t_typed = [], []
        self.t_chunks, self.t_lens = [], []
        self.t_nbytes = 0

    def end_tick(self) -> None:
        """The shell's flush: seal the tick batch; the next `enqueue` schedules a flush again."""
        self.flush_scheduled = False
        self.seal_tick()

    # -- answers out ------------------------------------------------------------------------

    def answer(
        self, rows: int, ids: list[int], status: list[int], reasons: list[int], outputs: list[bytes],
        extras: list[bytes] | None, now_ns: int,
    ) -> None:
        """One response message: per row its query id, `AnswerStatus`, `DefaultReason` (NONE:
        not a default) and output (a typed row or JSON text, `schooner.ipc.rows`; the error cause
        when the status is not OK). Clipper answers take the row's JSON text (the typed rows they
        meet are rendered together, after the others); V2 answers keep the row. `extras` (more
        JSON members) is None when all are empty. Rows of unknown ids are ignored."""
        inflight = self.inflight
        typed = None  # JSON answers of typed rows: rendered together after the loop
        for j, qid, st, reason in zip(range(rows), ids, status, reasons, strict=True):
            entry = inflight.pop(qid, None)
            if entry is None:
                continue
            p, k = entry
            if st:
                if p.error is None:
                    p.error = (HTTP_STATUS[st], error_body("model error", outputs[j].decode(errors="replace")))
            else:
                why = REASON_TEXT[reason] if reason else None
                extra = extras[j] if extras else b""
                if p.render is None:
                    out = outputs[j]
                    if out and out[0] in TYPED_FIRST:
                        if typed is None:
                            typed = []
                        typed.append((p, k, out, qid, reason != 0, why, extra))
                        continue  # answered below, with the message's other typed rows
                    p.outputs[k] = encode_prediction(qid, out, reason != 0, why, extra)
                else:
                    p.outputs[k] = (outputs[j], reason != 0, why, qid, extra)
            p.remaining -= 1
            if p.remaining == 0:
                self.complete(p, now_ns)
        if typed:
            texts = render_rows([t[2] for t in typed])
            for (p, k, _, qid, default, why, extra), text in zip(typed, texts, strict=True):
                p.outputs[k] = encode_prediction(qid, text, default, why, extra)
                p.remaining -= 1
                if p.remaining == 0:
                    self.complete(p, now_ns)

    def fail_ids(self, ids: list[int], status: int, body: bytes, now_ns: int) -> None:
        """Answer the requests of these queries with `status` (each request once)."""
        for qid in ids:
            entry = self.inflight.pop(qid, None)
            if entry is None:
                continue
            p = entry[0]
            if p.error is None:
                p.error = (status, body)
            p.remaining -= 1
            if p.remaining == 0:
                self.complete(p, now_ns)

    def complete(self, p: PendingRequest, now_ns: int) -> None:
        """Every query of `p` is answered: respond (through its render, if it has one)."""
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
        self.duration.observe((now_ns - p.start_ns) / 1e9)
        p.conn.respond(p.slot, status, body, content_type=ctype, headers=headers)

    def feedback_answered(self, conn, slot: list, error: str) -> None:
        """The scheduler acknowledged an update taken from `fb_waiting` ("" when applied)."""
        self.requests_inflight -= 1
        if error:
            conn.respond(slot, 409, error_body("feedback not applied", error))
        else:
            conn.respond(slot, 200, b'{"ok":true}')
        self.check_drained()

    # -- drain and abort --------------------------------------------------------------------

    def check_drained(self) -> None:
        """Report drained if draining and nothing is in flight."""
        if self.draining and self.requests_inflight == 0:
            self.report_drained()

    def drain(self) -> None:
        """Begin draining (new queries are refused); drained when nothing is in flight."""
        self.draining = True
        self.check_drained()

    def abort(self, reason: str) -> int:
        """Answer every request still in flight with 503: nobody else ever will. Updates waiting
        for their acknowledgement first, then the others in the order they were queued. Empties
        the tick batch and the backlog; new queries are refused until `rebound`. Returns how many
        requests (besides those updates) it answered."""
        self.scheduler_down = True
        body = error_body("unavailable", f"{reason}; retry in a moment")
        pendings = {id(p): p for p, _ in self.inflight.values()}
        self.inflight.clear()
        self.backlog.clear()
        self._new_tick()
        for conn, slot in self.fb_waiting.values():
            self.requests_inflight -= 1
            conn.respond(slot, 503, body)
        self.fb_waiting.clear()
        for p in pendings.values():
            self.requests_inflight -= 1
            p.conn.respond(p.slot, 503, body)
        return len(pendings)

    def rebound(self) -> None:
        """A new scheduler serves this frontend: queries are accepted again."""
        self.scheduler_down = False
