"""FrontendCore without sockets: fake connections record what the core answers (as uvicorn tests
its protocol through a fake transport), the time is a plain integer, the flush and the drained
report are recorded calls. The last tests put a real `HttpConnection` over a fake transport to
see the core's answers leave on the wire in request order."""

import types

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schooner.frontend.codec import RequestError, encode_batch, encode_prediction
from schooner.frontend.core import ROW_OVERHEAD, FrontendCore, error_body, first_query_id
from schooner.frontend.pending import PendingRequest
from schooner.ipc import frames, rows
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.wire import HTTP_STATUS, REASON_TEXT, SLO_EXPLANATION

MS = 1_000_000
JSON = b"application/json"


class FakeConn:
    """Stands for an HttpConnection: records every `respond`."""

    def __init__(self) -> None:
        self.answers: list[tuple] = []

    def respond(self, slot, status, body, content_type=JSON, headers=b""):
        self.answers.append((slot, status, body, content_type, headers))


class FakeHistogram:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, v: float) -> None:
        self.seen.append(v)


class Rig:
    """A core and what it asked of its shell."""

    def __init__(self, index=0, incarnation=0, max_query_nbytes=1 << 20) -> None:
        self.flushes = 0
        self.drained = 0
        self.duration = FakeHistogram()
        self.core = FrontendCore(index, incarnation, max_query_nbytes, schedule_flush=self._flush,
                                 report_drained=self._drained, duration=self.duration)

    def _flush(self):
        self.flushes += 1

    def _drained(self):
        self.drained += 1

    def request(self, inputs, batch=None, route=0, deadline_ns=100 * MS, priority=0, uid=-1, start_ns=0, render=None):
        """Enqueue one request of these inputs (one query each); returns (conn, pending, ids)."""
        conn = FakeConn()
        p = PendingRequest(conn, ["slot"], len(inputs), len(inputs) > 1 if batch is None else batch, start_ns, render)
        first = self.core.next_id
        self.core.enqueue(p, route, deadline_ns, list(inputs), [len(x) for x in inputs], priority, uid)
        return conn, p, list(range(first, first + len(inputs)))

    def bell(self, rows, now_ns=0):
        """One response message as on_bell hands it over, then the shell's drained check:
        rows are (qid, status, output[, default, explanation, extra])."""
        rows = [tuple(r) + (False, "", b"")[len(r) - 3:] for r in rows]
        status = [HTTP_STATUS.index(r[1]) for r in rows]  # the wire's enums, as the scheduler writes them
        reasons = [REASON_TEXT.index(r[4]) if r[3] else 0 for r in rows]
        extras = [r[5] for r in rows]
        self.core.answer(len(rows), [r[0] for r in rows], status, reasons,
                         [r[2] for r in rows], extras if any(extras) else None, now_ns)
        self.core.check_drained()


def ok(qid, output=b"1"):
    return (qid, 200, output)


# -- ids --------------------------------------------------------------------------------------


def test_ids_carry_index_and_incarnation_bits():
    rig = Rig(index=3, incarnation=0x1AB)
    assert rig.core.next_id == first_query_id(3, 0x1AB) == (3 << 48) + (0xAB << 40) + 1
    _, _, a = rig.request([b"x", b"y"])
    _, _, b = rig.request([b"z"])
    ids = a + b
    assert ids == list(range(ids[0], ids[0] + 3))  # consecutive, never reused within an incarnation
    assert all(i >> 48 == 3 and (i >> 40) & 0xFF == 0xAB for i in ids)
    assert list(rig.core.inflight) == ids


def test_incarnations_of_one_frontend_never_share_ids():
    assert first_query_id(1, 7) >> 40 != first_query_id(1, 8) >> 40
    assert first_query_id(1, 256) == first_query_id(1, 0)  # 8 bits: only the predecessor matters


# -- the tick batch ---------------------------------------------------------------------------


def test_a_requests_queries_go_into_one_tick_batch_in_order():
    rig = Rig()
    core = rig.core
    _, pa, a = rig.request([b"a0", b"a1", b"a2"], route=2, deadline_ns=5 * MS, priority=1, uid=9, start_ns=11)
    _, pb, b = rig.request([b"b0"], route=1, deadline_ns=7 * MS, start_ns=12)
    assert rig.flushes == 1  # one flush per tick, asked for by its first query
    assert not core.backlog
    core.end_tick()
    assert not core.flush_scheduled and not core.t_ids and core.t_nbytes == 0
    (rows, cols), = core.backlog
    ids, apps, deadlines, priorities, uids, starts, (offsets, chunks), typed = cols
    assert rows == 4
    assert ids == a + b
    assert apps == [2, 2, 2, 1]
    assert deadlines == [5 * MS] * 3 + [7 * MS]
    assert priorities == [1, 1, 1, 0]
    assert uids == [9, 9, 9, -1]
    assert starts == [11, 11, 11, 12]
    assert offsets == [0, 2, 4, 6, 8]
    assert chunks == [b"a0", b"a1", b"a2", b"b0"] and typed == [0] * 4
    assert core.inflight == {a[0]: (pa, 0), a[1]: (pa, 1), a[2]: (pa, 2), b[0]: (pb, 0)}
    # the next tick asks for its own flush
    rig.request([b"c"])
    assert rig.flushes == 2


def test_one_chunk_may_hold_several_queries():
    """V2 tensors: one chunk of rows, `lens` says each query's share."""
    rig = Rig()
    conn = FakeConn()
    p = PendingRequest(conn, ["slot"], 3, True, 0)
    rig.core.enqueue(p, 0, MS, [b"aabbcc"], [2, 2, 2])
    rig.core.end_tick()
    (rows, cols), = rig.core.backlog
    assert rows == 3
    assert cols[6][0] == [0, 2, 4, 6] and cols[6][1] == [b"aabbcc"]


def test_sealed_batch_is_a_submit_message():
    """What the shell writes into a submit slot, read back as the scheduler reads it."""
    rig = Rig(index=1)
    _, _, ids = rig.request([b"ab", b"", b"cde"], route=4, deadline_ns=9, priority=1, uid=5, start_ns=3)
    rig.core.end_tick()
    rows, cols = rig.core.backlog[0]
    codec = FrameCodec(frames.SUBMIT_SCHEMA)
    buf = memoryview(bytearray(1 << 16))
    codec.write(buf, rows, cols)
    n, (qids, apps, deadlines, priorities, uids, starts, (off, data), typed) = codec.read(buf)
    assert n == 3 and qids.tolist() == ids and apps.tolist() == [4] * 3 and uids.tolist() == [5] * 3
    assert deadlines.tolist() == [9] * 3 and priorities.tolist() == [1] * 3 and starts.tolist() == [3] * 3
    assert frames.binary_items(off, data) == [b"ab", b"", b"cde"] and typed.tolist() == [0] * 3


def test_a_tick_over_the_byte_limit_is_sealed_and_a_new_one_begun():
    size = 100
    rig = Rig(max_query_nbytes=3 * (size + ROW_OVERHEAD))
    core = rig.core
    _, _, a = rig.request([b"a" * size, b"a" * size])
    _, _, b = rig.request([b"b" * size, b"b" * size])  # would make 4 rows: seals a's batch first
    assert len(core.backlog) == 1
    assert core.backlog[0][1][0] == a
    assert core.t_ids == b and core.t_nbytes == 2 * (size + ROW_OVERHEAD)
    _, _, c = rig.request([b"c" * size])  # fits with b's
    assert len(core.backlog) == 1 and core.t_ids == b + c
    assert rig.flushes == 1  # still one tick
    core.end_tick()
    assert [batch[1][0] for batch in core.backlog] == [a, b + c]


def test_check_request_nbytes_refuses_what_cannot_travel_in_one_batch():
    rig = Rig(max_query_nbytes=2 * (10 + ROW_OVERHEAD))
    rig.core.check_request_nbytes([10, 10])
    with pytest.raises(RequestError) as e:
        rig.core.check_request_nbytes([10, 11])
    assert e.value.status == 413
    assert e.value.cause.startswith(f"the request's 2 queries take {21 + 2 * ROW_OVERHEAD} bytes")


# -- answers ----------------------------------------------------------------------------------


def test_single_query_answered_with_its_prediction():
    rig = Rig()
    conn, _, (qid,) = rig.request([b"x"], start_ns=1 * MS)
    rig.bell([ok(qid, b"[0.5]")], now_ns=4 * MS)
    assert conn.answers == [(["slot"], 200, encode_prediction(qid, b"[0.5]", False, None), JSON, b"")]
    assert rig.core.requests_inflight == 0 and not rig.core.inflight
    assert rig.duration.seen == [0.003]  # from parsed to answered, on the time passed in


def test_defaults_explanations_and_extras_reach_the_prediction():
    rig = Rig()
    conn, _, (q0, q1) = rig.request([b"x", b"y"])
    rig.bell([(q1, 200, b"-1", True, SLO_EXPLANATION, b""), (q0, 200, b"7", False, "", b'"confidence":0.5')])
    body = encode_batch([encode_prediction(q0, b"7", False, None, b'"confidence":0.5'),
                         encode_prediction(q1, b"-1", True, SLO_EXPLANATION)])
    assert conn.answers == [(["slot"], 200, body, JSON, b"")]
    got = orjson.loads(body)["batch_predictions"]
    assert got[1]["default_explanation"] == SLO_EXPLANATION and got[0]["confidence"] == 0.5


def test_typed_rows_reach_clipper_as_json_and_v2_as_they_are():
    """A Clipper answer that meets a typed row (one a V2 batch left in the cache) gets its JSON
    text; a V2 answer gets the row; an error cause that looks typed stays the cause."""
    rig = Rig()
    typed = rows.pack_rows(np.array([[0.1, 2.0], [3.0, -1.0]], np.float32))
    clip, _, (c0, c1) = rig.request([b"a", b"b"])
    v2, _, (v0,) = rig.request([b"v"], render=lambda p: (200, p.outputs[0][0], b"", b"application/octet-stream"))
    bad, _, (e0,) = rig.request([b"e"])
    cause = typed[0][:6]
    rig.bell([ok(c0, typed[0]), ok(v0, typed[1]), (e0, 500, cause), ok(c1, b"[7]")])
    body = encode_batch([encode_prediction(c0, b"[0.1,2.0]", False, None), encode_prediction(c1, b"[7]", False, None)])
    assert clip.answers == [(["slot"], 200, body, JSON, b"")]
    assert v2.answers == [(["slot"], 200, typed[1], b"application/octet-stream", b"")]
    assert bad.answers[0][1] == 500 and orjson.loads(bad.answers[0][2])["cause"] == cause.decode(errors="replace")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_answers_in_any_order_complete_each_request_once_in_query_order(data):
    sizes = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=8), label="queries per request")
    rig = Rig(index=2, incarnation=5)
    reqs = [rig.request([b"q%d" % i for i in range(n)], batch=n > 1 or data.draw(st.booleans())) for n in sizes]
    rig.core.end_tick()
    qids = [q for _, _, ids in reqs for q in ids]
    order = data.draw(st.permutations(qids), label="answer order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1))), label="message boundaries"))
    frames_ = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if a < b]
    arrived: set[int] = set()
    for msg in frames_:
        rig.bell([ok(q, b"%d" % (q & 0xFFFF)) for q in msg])
        arrived.update(msg)
        complete = [i for i, (_, _, ids) in enumerate(reqs) if arrived.issuperset(ids)]
        assert [i for i, (conn, _, _) in enumerate(reqs) if conn.answers] == complete  # when, and only when, complete
    for conn, p, ids in reqs:
        preds = [encode_prediction(q, b"%d" % (q & 0xFFFF), False, None) for q in ids]
        assert conn.answers == [(["slot"], 200, encode_batch(preds) if p.batch else preds[0], JSON, b"")]
    assert rig.core.requests_inflight == 0 and not rig.core.inflight


def test_an_error_on_one_query_answers_the_batch_request_with_it_once():
    rig = Rig()
    conn, _, (q0, q1, q2) = rig.request([b"a", b"b", b"c"])
    rig.bell([ok(q0), (q1, 500, b"model crashed")])
    assert conn.answers == []  # still waiting for q2
    rig.bell([(q2, 503, b"later error")])  # the first error is the one answered
    assert conn.answers == [(["slot"], 500, error_body("model error", "model crashed"), JSON, b"")]
    rig.bell([ok(q0), (q1, 500, b"again")])  # duplicates: already answered, ignored
    assert len(conn.answers) == 1 and rig.core.requests_inflight == 0


def test_an_error_cause_that_is_not_utf8_is_replaced_not_raised():
    rig = Rig()
    conn, _, (q,) = rig.request([b"a"])
    rig.bell([(q, 500, b"bad \xff byte")])
    assert orjson.loads(conn.answers[0][2]) == {"error": "model error", "cause": "bad \ufffd byte"}


def test_answers_for_unknown_ids_are_ignored():
    rig = Rig(index=1, incarnation=2)
    conn, _, (q,) = rig.request([b"a"])
    predecessor = first_query_id(1, 1)  # a late answer meant for the frontend this one replaced
    rig.bell([ok(predecessor), (predecessor + 1, 500, b"x"), ok(q + 1000)])
    assert conn.answers == [] and rig.core.requests_inflight == 1 and list(rig.core.inflight) == [q]
    rig.bell([ok(predecessor + 2), ok(q)])
    assert len(conn.answers) == 1 and conn.answers[0][1] == 200


def test_fail_ids_answers_each_request_once():
    rig = Rig()
    c1, _, a = rig.request([b"a", b"b"])
    c2, _, b = rig.request([b"c"])
    c3, _, c = rig.request([b"d", b"e"])
    rig.bell([ok(a[0])])
    body = error_body("internal error", "submit batch does not fit")
    rig.core.fail_ids(a + b + c[:1], 500, body, now_ns=2 * MS)  # a[0] answered already: skipped
    assert c1.answers == [(["slot"], 500, body, JSON, b"")]
    assert c2.answers == [(["slot"], 500, body, JSON, b"")]
    assert c3.answers == []  # c[1] is still to come
    rig.core.fail_ids(a + c, 500, body, now_ns=2 * MS)
    assert len(c1.answers) == len(c2.answers) == len(c3.answers) == 1
    assert rig.core.requests_inflight == 0 and not rig.core.inflight


def test_render_answers_through_the_route_and_may_answer_later():
    """V2 renders its own body; an update's render hands the request to the feedback table."""
    rig = Rig()
    core = rig.core
    v2, _, (v0, v1) = rig.request([b"a", b"b"], render=lambda p: (200, b"%d" % len(p.outputs), b"X: 1\r\n", b"text/plain"))

    def later(p):
        core.fb_waiting[p.outputs[0][3]] = (p.conn, p.slot)

    upd, _, (u,) = rig.request([b"u"], render=later)
    rig.bell([ok(v1), ok(v0), ok(u, b"3")], now_ns=MS)
    assert v2.answers == [(["slot"], 200, b"2", b"text/plain", b"X: 1\r\n")]
    assert upd.answers == [] and core.requests_inflight == 1 and list(core.fb_waiting) == [u]
    core.drain()
    assert rig.drained == 0  # the update still waits for its acknowledgement
    core.feedback_answered(*core.fb_waiting.pop(u), "")
    assert upd.answers == [(["slot"], 200, b'{"ok":true}', JSON, b"")]
    assert rig.drained == 1


def test_a_refused_update_is_409():
    rig = Rig()
    conn = FakeConn()
    rig.core.requests_inflight += 1
    rig.core.feedback_answered(conn, ["slot"], "unknown label")
    assert conn.answers == [(["slot"], 409, error_body("feedback not applied", "unknown label"), JSON, b"")]


# -- drain and abort --------------------------------------------------------------------------


def test_draining_reports_drained_when_the_last_request_is_answered():
    rig = Rig()
    core = rig.core
    c1, _, a = rig.request([b"a", b"b"])
    c2, _, (b,) = rig.request([b"c"])
    core.end_tick()
    assert core.refusal() is None
    core.drain()
    assert core.draining and rig.drained == 0
    e = core.refusal()
    assert (e.status, e.kind, e.cause) == (503, "unavailable", "the server is draining; retry on another instance")
    rig.bell([ok(a[0]), ok(b)])
    assert rig.drained == 0 and len(c2.answers) == 1
    rig.bell([])  # an empty bell changes nothing
    assert rig.drained == 0
    rig.bell([ok(a[1])])
    assert rig.drained == 1 and len(c1.answers) == 1


def test_draining_with_nothing_in_flight_is_drained_at_once():
    rig = Rig()
    rig.core.drain()
    assert rig.drained == 1


def test_abort_answers_everything_in_flight_with_503_once_and_refuses_new_queries():
    rig = Rig()
    core = rig.core
    c1, _, a = rig.request([b"a", b"b"])
    c2, _, b = rig.request([b"c"])
    core.end_tick()  # a and b are sealed; c stays in the open tick
    c3, _, c = rig.request([b"d"])
    upd = FakeConn()
    core.fb_waiting[12345] = (upd, ["slot"])
    core.requests_inflight += 1
    rig.bell([ok(a[0])])
    assert core.requests_inflight == 4
    assert core.abort("the scheduler died") == 3
    body = error_body("unavailable", "the scheduler died; retry in a moment")
    for conn in (upd, c1, c2, c3):
        assert conn.answers == [(["slot"], 503, body, JSON, b"")]
    assert core.requests_inflight == 0 and not core.inflight and not core.fb_waiting
    assert not core.backlog and not core.t_ids and not core.t_starts and core.t_nbytes == 0
    e = core.refusal()
    assert (e.status, e.cause) == (503, "the scheduler is restarting; retry in a moment")
    # late answers and a second abort answer nobody again
    rig.bell([ok(a[1]), ok(b[0]), ok(c[0])])
    assert core.abort("again") == 0
    assert all(len(conn.answers) == 1 for conn in (upd, c1, c2, c3))
    # a new scheduler: queries are accepted and begin a clean tick
    core.rebound()
    assert core.refusal() is None
    _, _, (d,) = rig.request([b"e"], start_ns=77)
    core.end_tick()
    (rows, cols), = core.backlog
    assert rows == 1 and cols[0] == [d] and cols[5] == [77]


def test_abort_while_draining_then_drained():
    rig = Rig()
    rig.request([b"a"])
    rig.core.drain()
    assert rig.drained == 0
    rig.core.abort("stopping")
    rig.core.check_drained()  # the shell's check after Abort
    assert rig.drained == 1


# -- through a real HttpConnection on a fake transport ----------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name):
        return None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connection():
    from schooner.frontend.server import HttpConnection

    cfg = types.SimpleNamespace(header_timeout_s=5.0, keepalive_timeout_s=5.0, max_header_nbytes=8192,
                                max_url_nbytes=8192, max_body_nbytes=1 << 20)
    fe = types.SimpleNamespace(now=0.0, cfg=cfg, connections=set(), max_connections=10, statuses=[])
    fe.count_response = fe.statuses.append
    conn = HttpConnection(fe)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport, fe


def test_pipelined_answers_leave_in_request_order_on_the_wire():
    conn, transport, fe = _connection()
    rig = Rig()
    core = rig.core
    slots, ids = [], []
    for i in range(3):
        slot = [False, b"", False, i == 2]  # the last request says Connection: close
        conn.queue.append(slot)
        p = PendingRequest(conn, slot, 1, False, 0)
        ids.append(core.next_id)
        core.enqueue(p, 0, MS, [b"x"], [1])
        slots.append(slot)
    core.end_tick()
    rig.bell([ok(ids[2], b"2"), ok(ids[1], b"1")])
    assert transport.written == []  # the first is not answered yet
    rig.bell([ok(ids[0], b"0")])
    assert len(transport.written) == 1  # all three in one write
    wire = transport.written[0]
    heads = wire.split(b"HTTP/1.1 ")[1:]
    assert [h.split(b"\r\n\r\n", 1)[1] for h in heads] == [
        encode_prediction(q, b"%d" % i, False, None) for i, q in enumerate(ids)
    ]
    assert b"Connection: close" in heads[2] and b"Connection: close" not in heads[0] + heads[1]
    assert transport.closed and fe.statuses == [200, 200, 200]


def test_abort_reaches_the_wire_as_503():
    conn, transport, _ = _connection()
    rig = Rig()
    slot = [False, b"", False, False]
    conn.queue.append(slot)
    rig.core.enqueue(PendingRequest(conn, slot, 2, True, 0), 0, MS, [b"x", b"y"], [1, 1])
    rig.core.abort("scheduler exited")
    (wire,) = transport.written
    assert wire.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert wire.endswith(error_body("unavailable", "scheduler exited; retry in a moment"))
