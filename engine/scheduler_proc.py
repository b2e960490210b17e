"""The scheduler process: a thin shell around `SchedulerCore`.

It owns no decisions. Each turn of its loop it blocks on its doorbell and its control socket
(up to the core's next deadline), drains every submit ring and every model output ring into
the core, then carries out the actions `poll` returns: it gathers a batch's inputs into the
replica's input ring, and groups answers per frontend into one response batch each. Doorbells
are posted once per turn per peer.

Input bytes: each submit batch's input column is copied once into scheduler memory (one
memcpy per batch) so the submit slot is released at once; queries keep numpy views into that
copy until their batch is written to a model.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time

import numpy as np
import orjson

from schooner.engine.config import ServerConfig, routes
from schooner.engine.core.aimd import AimdConfig
from schooner.engine.core.cache import digester
from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.metrics import stage_summary_text
from schooner.engine.core.policies import make_policy
from schooner.engine.core.scheduler import (
    AppRoute,
    ModelSpec,
    Query,
    Respond,
    RetiredReplica,
    SchedulerCore,
    SendBatch,
)
from schooner.engine.policy_store import PolicyStore
from schooner.engine.spawn import SchedulerArgs, setup_logging
from schooner.ipc import frames, protocol
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.board import Board
from schooner.ipc.channel import Doorbell, RingReader, RingWriter, Waiter, flush_all
from schooner.ipc.rows import pack_rows, render_scores
from schooner.ipc.shm import Segment
from schooner.ipc.wire import REASON_TEXT, AnswerStatus, DefaultReason

log = logging.getLogger(__name__)
_SUBMIT = FrameCodec(frames.SUBMIT_SCHEMA)
PUBLISH_INTERVAL_NS = 20_000_000  # metrics snapshots: at most 50 per second, at most 20 ms stale
_RESPONSE = FrameCodec(frames.RESPONSE_SCHEMA)
_STAMPS = frames.MODEL_STAMPS_NBYTES


def default_json(text: str) -> bytes:
    """Clipper's rule: a default output that parses as JSON is embedded as JSON."""
    try:
        orjson.loads(text)
        return text.encode()
    except orjson.JSONDecodeError:
        return orjson.dumps(text)


def core_tables(config: ServerConfig) -> tuple[list[AppRoute | None], list[ModelSpec]]:
    """The core's route table (by route id) and model list for `config`."""
    apps = [
        None if r is None else AppRoute(
            model=r.model,
            default_json=default_json(r.default_output),
            slo_ns=r.latency_slo_micros * 1000,
            cache=r.cache,
            name=r.name if r.is_app else f"model:{r.name}",
            models=r.models,
            policy=make_policy(r.policy, **r.policy_params) if r.is_app and r.policy != "single" else None,
            confidence_threshold=r.confidence_threshold,
            max_contexts=r.max_contexts,
        )
        for r in routes(config)
    ]
    models = [
        ModelSpec(
            max_batch_size=m.max_batch_size,
            replicas=m.replicas,
            version=m.version,
            batch_size=m.batch_size,
            batch_wait_ns=m.batch_wait_timeout_micros * 1000,
            aimd=AimdConfig(m.aimd_additive_step, m.aimd_backoff_factor, m.aimd_target_fraction),
            name=m.name,
        )
        for m in config.models
    ]
    return apps, models


def build_core(config: ServerConfig, rng: random.Random | None = None) -> SchedulerCore:
    apps, models = core_tables(config)
    return SchedulerCore(apps, models, cache_nbytes=config.cache_nbytes, rng=rng or random.Random(),
                         stall_ns=int(config.model_stall_timeout_s * 1e9))


_V2_TYPES = {"f4": "FP32", "f8": "FP64", "i8": "INT64", "u1": "BOOL"}


def output_meta(scores: np.ndarray | frames.TextRows) -> dict:
    """V2 datatype and shape ([-1, ...]: rows first) of a model's answer."""
    if isinstance(scores, frames.TextRows):
        return {"datatype": "BYTES", "shape": [-1]}
    dt = _V2_TYPES.get(scores.dtype.str[1:], "FP32")
    return {"datatype": dt, "shape": [-1, *scores.shape[1:]]}


_STATUS = {200: AnswerStatus.OK, 500: AnswerStatus.MODEL_ERROR, 503: AnswerStatus.UNAVAILABLE}
_REASON = {text: DefaultReason(i) for i, text in enumerate(REASON_TEXT) if text}


class _Outbox:
    """Answers for one frontend, accumulated over one turn and written as one batch: status
    and default reason as the wire's small enums (the frontend maps them to HTTP and text)."""

    __slots__ = ("ids", "status", "reason", "output", "extra")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.status: list[int] = []
        self.reason: list[int] = []
        self.output: list[bytes] = []
        self.extra: list[bytes] = []

    def add(self, r: Respond) -> None:
        self.ids.append(r.query.query_id)
        self.status.append(_STATUS.get(r.status, AnswerStatus.MODEL_ERROR))
        self.reason.append(_REASON.get(r.explanation, DefaultReason.SLO) if r.default else 0)
        self.output.append(r.output)
        self.extra.append(r.extra)

    def encode(self, slot: memoryview, stop: int) -> int:
        """Write the first `stop` answers as one response message into `slot`."""
        return _RESPONSE.write(
            slot, stop,
            [self.ids[:stop], self.status[:stop], self.reason[:stop],
             frames.binary_column(self.output[:stop]),
             frames.binary_column(self.extra[:stop]),
             [time.monotonic_ns()] * stop],
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    def fail_first(self, cause: str) -> None:
        self.status[0] = AnswerStatus.MODEL_ERROR
        self.reason[0] = DefaultReason.NONE
        self.output[0] = cause.encode()
        self.extra[0] = b""

    def drop(self, n: int) -> None:
        for lst in (self.ids, self.status, self.reason, self.output, self.extra):
            del lst[:n]


class SchedulerProc:
    def __init__(self, args: SchedulerArgs) -> None:
        cfg = args.config
        self.cfg = cfg
        self.core = build_core(cfg)
        self.ctrl = socket.socket(fileno=args.control_fd)
        self.ctrl.setblocking(False)
        self.bell = Doorbell(args.bell_fd)
        self.waiter = Waiter(self.bell, cfg.spin_us / 1e6)
        fbells = [Doorbell(fd) for fd in args.frontend_bell_fds]
        self.frontend_bells = fbells
        self.submits = [
            RingReader(Segment.attach(name), fbells[i])
            for i, name in enumerate(args.submit_rings)
        ]
        self.responses = [
            RingWriter(Segment.attach(name), fbells[i]) for i, name in enumerate(args.response_rings)
        ]
        self.outboxes = [_Outbox() for _ in args.response_rings]
        # [model][replica] -> (input writer, output reader) or None while the replica is down
        self.replicas: list[list[tuple[RingWriter, RingReader] | None]] = []
        self.input_codecs: list[FrameCodec] = []
        self.scores = frames.ScoresCodec()
        # V2 output metadata: declared in the config, else learned from the first answer
        self.output_meta: list[dict | None] = []
        self.dtypes: list = []
        self.digest_of: list = []
        self._tables(cfg)
        # stage timing (README "Where the time goes"): sums of ns and counts of queries, for
        # submit (frontend in -> here), queue (here -> model in), model, return (model out -> answer written)
        self.stage_ns = [0, 0, 0, 0]
        self.stage_n = [0, 0, 0, 0]
        # (model, replica) -> (queries, sum of arrivals, every query wants a typed answer)
        self.sent: dict[tuple[int, int], tuple[int, int, bool]] = {}
        self.returns: list[tuple[int, int]] = []  # this turn's answered batches: (queries, model out)
        self.readers: list[RingReader] = []  # every ring this process consumes
        self.model_inputs: list[RingWriter] = []  # every live replica's input ring
        self._readers_changed()
        self.feedback = [socket.socket(fileno=fd) for fd in args.feedback_fds]
        for f in self.feedback:
            f.setblocking(False)
        self.store = PolicyStore(cfg.data_dir) if cfg.data_dir and self.core.selection.contexts else None
        if self.store is not None:
            for app, state in self.store.load().items():
                if self.core.selection.restore(app, state):
                    log.info("restored the selection state of app %s", app)
        self.snapshot_ns = time.monotonic_ns()
        self.board = Board(Segment.attach(args.metrics_board).buf)
        self.stats_board = Board(Segment.attach(args.stats_board).buf)
        self.published_ns = 0
        self.running = True

    def _tables(self, cfg: ServerConfig) -> None:
        """Per-model and per-route tables for `cfg` (models are only ever added)."""
        self.cfg = cfg
        for mi in range(len(self.replicas), len(cfg.models)):
            m = cfg.models[mi]
            self.replicas.append([])
            self.input_codecs.append(FrameCodec(frames.model_input_schema(m.input_type, m.input_shape)))
            self.output_meta.append({"datatype": m.output_type, "shape": [-1, *m.output_shape]} if m.output_type else None)
            self.dtypes.append(frames.NUMPY_DTYPES[m.input_type])
        # per route: its input digest function, or None when it does not cache
        self.digest_of = [
            digester(str(frames.NUMPY_DTYPES[r.input_type] or r.input_type), r.input_shape) if r is not None and r.cache
            else None
            for r in routes(cfg)
        ]

    def _readers_changed(self) -> None:
        """The rings this process reads (and the model input rings it writes) changed."""
        live = [rings for reps in self.replicas for rings in reps if rings is not None]
        self.model_inputs = [rings[0] for rings in live]
        self.readers = [*self.submits, *(rings[1] for rings in live)]
        for r in self.readers:  # we are awake; fresh rings start "sleeping" (posted at every flush)
            r.ring.set_sleeping(False)

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> int:
        self._publish(time.monotonic_ns())  # readiness and zeroed statistics from the start
        fds = [self.ctrl.fileno(), *(f.fileno() for f in self.feedback)]
        feedback_fds = set(fds[1:])
        waiter = self.waiter
        core = self.core
        snapshot_ns = int(self.cfg.snapshot_interval_s * 1e9)
        dirty = False  # metrics changed since the last publish
        while self.running:
            now = time.monotonic_ns()
            wake = core.next_wakeup(now)
            # housekeeping has deadlines too: the metrics snapshot, the policy snapshot
            if dirty:
                wake = _earliest(wake, self.published_ns + PUBLISH_INTERVAL_NS)
            if self.store is not None and core.selection.changed:
                wake = _earliest(wake, self.snapshot_ns + snapshot_ns)
            stall = core.next_stall_check(now)  # readiness changes with no event: publish it
            if stall is not None:
                wake = _earliest(wake, stall + 1)
            timeout = None if wake is None else max(0.0, (wake - now) / 1e9)
            ready = waiter.wait(self.readers, fds, timeout)  # clears the doorbell when it slept
            if ready:
                if self.ctrl.fileno() in ready:
                    self._control()
                if feedback_fds.intersection(ready):
                    self._feedback()
            self._drain_outputs()
            self._drain_submits()
            self._execute(core.poll(time.monotonic_ns()))
            self._flush_responses()
            dirty = True
            now = time.monotonic_ns()
            if now - self.published_ns >= PUBLISH_INTERVAL_NS:
                self._publish(now)  # off the critical path: the answers went out above
                dirty = False
            if self.store is not None and core.selection.changed and now - self.snapshot_ns >= snapshot_ns:
                self._snapshot(now)
        if self.store is not None:
            self._snapshot(time.monotonic_ns())  # on the way out: nothing learned is lost
            self.store.close()
        return 0

    def _snapshot(self, now_ns: int) -> None:
        self.snapshot_ns = now_ns
        try:
            self.store.save(self.core.selection.snapshot())
        except Exception:  # a full disk must not take serving down; the next snapshot retries
            log.exception("could not save the selection state")

    def _feedback(self) -> None:
        for sock in self.feedback:
            while True:
                try:
                    msg = protocol.recv(sock)
                except BlockingIOError:
                    break
                except (OSError, protocol.ProtocolError):
                    break
                if msg is None:
                    break
                if isinstance(msg, protocol.Feedback):
                    error = self.core.feedback(msg.app, msg.query_id, msg.label)
                    try:
                        protocol.send(sock, protocol.FeedbackDone(msg.query_id, error or ""))
                    except OSError:
                        pass

    def _publish(self, now_ns: int) -> None:
        """Metrics and statistics snapshots for /metrics and /stats: at most every
        PUBLISH_INTERVAL_NS, and once more that long after the last change (so an idle
        server's numbers are exact), never on the path of an answer."""
        self.published_ns = now_ns
        ready = self.core.readiness(now_ns)
        self.board.publish((render_scheduler_metrics(self.core.counters) + self._stage_text()).encode())
        wall_ms = time.time_ns() // 1_000_000
        stats = []
        for mi, m in enumerate(self.core.models):
            d = m.stats.to_json()
            d["ready"] = ready[mi]
            d["output"] = self.output_meta[mi]
            last = d.pop("last_inference_ns")
            d["last_inference"] = wall_ms - (now_ns - last) // 1_000_000 if last else 0
            stats.append(d)
        self.stats_board.publish(orjson.dumps(stats, option=orjson.OPT_NON_STR_KEYS))

    def _stage_text(self) -> str:
        names = ("submit", "queue", "model", "return")
        return stage_summary_text(list(zip(names, self.stage_ns, self.stage_n, strict=True)))

    def _control(self) -> None:
        while True:
            try:
                msg, fds = protocol.recv_with_fds(self.ctrl)
            except BlockingIOError:
                return
            if isinstance(msg, protocol.ReplicaUp) and fds:
                self._replica_up(msg, Doorbell(fds[0]))
                for fd in fds[1:]:
                    os.close(fd)
                continue
            for fd in fds:
                os.close(fd)
            if msg is None or isinstance(msg, protocol.Stop):
                self.running = False
                return
            if isinstance(msg, protocol.ReplicaDown):
                self._replica_down(msg)
            elif isinstance(msg, protocol.FrontendRings):
                self._frontend_rings(msg)
            elif isinstance(msg, protocol.Reconfigure):
                self._reconfigure(msg)
            elif isinstance(msg, protocol.ReplicaRetire):
                if self.core.retire_replica(msg.model, msg.replica):
                    self._retired(msg.model, msg.replica)

    def _reconfigure(self, msg: protocol.Reconfigure) -> None:
        cfg = ServerConfig.from_json(msg.config)
        self._tables(cfg)
        self.core.reconfigure(*core_tables(cfg))
        protocol.send(self.ctrl, protocol.Reconfigured(msg.epoch, "scheduler"))
        self.published_ns = 0  # statistics and readiness of new models at the end of this turn

    def _retired(self, mi: int, ri: int) -> None:
        self._close_replica(mi, ri)
        protocol.send(self.ctrl, protocol.ReplicaRetired(mi, ri))

    def _frontend_rings(self, msg: protocol.FrontendRings) -> None:
        """A respawned frontend: new rings; answers still waiting for the dead one are dropped
        (its successor never asked for them)."""
        fi = msg.index
        old = (self.submits[fi], self.responses[fi])
        self.submits[fi] = RingReader(Segment.attach(msg.submit_ring), self.frontend_bells[fi])
        self.responses[fi] = RingWriter(Segment.attach(msg.response_ring), self.frontend_bells[fi])
        self.outboxes[fi] = _Outbox()
        self._readers_changed()
        for ring in old:
            ring.close()
        log.info("frontend[%d] was respawned; serving it on new rings", fi)

    def _close_replica(self, mi: int, ri: int) -> None:
        """Drop a replica's rings and doorbell (its process is gone or going)."""
        reps = self.replicas[mi]
        rings = reps[ri] if ri < len(reps) else None
        if rings is None:
            return
        self._drain_replica(mi, ri, rings[1])  # whole results still count
        reps[ri] = None
        self._readers_changed()
        rings[0].close()
        rings[1].close()
        rings[0].consumer_bell.close()  # our copy of its eventfd

    def _replica_down(self, msg: protocol.ReplicaDown) -> None:
        self._close_replica(msg.model, msg.replica)
        self.core.replica_down(msg.model, msg.replica, time.monotonic_ns())
        log.warning(
            "model %s replica %d exited (code %d); its queries are retried",
            self.cfg.models[msg.model].label, msg.replica, msg.exit_code,
        )

    def _replica_up(self, msg: protocol.ReplicaUp, bell: Doorbell) -> None:
        reps = self.replicas[msg.model]
        while len(reps) <= msg.replica:
            reps.append(None)
        self._close_replica(msg.model, msg.replica)  # a stale pair (a rebind) goes first
        reps[msg.replica] = (
            RingWriter(Segment.attach(msg.input_ring), bell),
            RingReader(Segment.attach(msg.output_ring), bell),
        )
        self._readers_changed()
        self.core.replica_up(msg.model, msg.replica)

    # -- rings in ---------------------------------------------------------------------------

    def _drain_submits(self) -> None:
        submit_all = self.core.submit_all
        digest_of = self.digest_of
        now = time.monotonic_ns()
        for fi, reader in enumerate(self.submits):
            n = reader.pending()
            for i in range(n):
                queries = []
                # lists and one bytes object per input: the slot goes back at the release below
                rows, (ids, apps, deadlines, prios, uids, starts, payloads, typed) = _SUBMIT.read_rows(reader.read(i))
                self.stage_ns[0] += time.monotonic_ns() * rows - sum(starts)
                self.stage_n[0] += rows
                for qid, app, deadline, prio, uid, payload, ty in zip(ids, apps, deadlines, prios, uids, payloads, typed, strict=True):
                    d = digest_of[app]
                    q = Query(fi, qid, app, deadline, payload, d(payload) if d is not None else None)
                    if prio:
                        q.priority = prio
                    if uid >= 0:
                        q.uid = uid
                    if ty:
                        q.typed = True
                    queries.append(q)
                submit_all(queries, now)
            if n:
                reader.release(n)

    def _drain_outputs(self) -> None:
        for mi, reps in enumerate(self.replicas):
            for ri, rings in enumerate(reps):
                if rings is not None:
                    self._drain_replica(mi, ri, rings[1])

    def _drain_replica(self, mi: int, ri: int, reader: RingReader) -> None:
        n = reader.pending()
        for i in range(n):
            view = reader.read(i)
            t_in, t_out = frames.read_model_stamps(view)
            scores, error = self.scores.read(view[_STAMPS:])
            view = None
            now = time.monotonic_ns()
            queries, arrivals, typed = self.sent.pop((mi, ri), (0, 0, False))
            if queries:
                self.stage_ns[1] += queries * t_in - arrivals
                self.stage_ns[2] += queries * (t_out - t_in)
                self.stage_n[1] += queries
                self.stage_n[2] += queries
                self.returns.append((queries, t_out))
            if error is not None:
                self.core.batch_done(mi, ri, None, error, now)
            else:
                if self.output_meta[mi] is None:
                    self.output_meta[mi] = output_meta(scores)
                    self.published_ns = 0  # tell the frontends at the end of this turn
                # a batch of V2 queries only answers typed rows; others JSON text, rendered here
                # once per batch (the frontend renders a typed row a JSON answer meets, from the cache)
                self.core.batch_done(mi, ri, pack_rows(scores) if typed else render_scores(scores), None, now)
            scores = None
        if n:
            reader.release(n)

    # -- actions out ------------------------------------------------------------------------

    def _execute(self, actions) -> None:
        outboxes = self.outboxes
        sent = False
        for a in actions:
            t = type(a)
            if t is Respond:
                outboxes[a.query.frontend].add(a)
            elif t is SendBatch:
                self._send_batch(a)
                sent = True
            elif t is RetiredReplica:
                self._retired(a.model, a.replica)
        if sent:
            flush_all(self.model_inputs)

    def _send_batch(self, a: SendBatch) -> None:
        rings = self.replicas[a.model][a.replica]
        cfg = self.cfg.models[a.model]
        codec = self.input_codecs[a.model]
        dtype = self.dtypes[a.model]
        queries = a.queries
        payloads = [q.payload for q in queries]
        n = len(payloads)
        typed = queries[0].typed and all([q.typed for q in queries])
        self.sent[a.model, a.replica] = (n, sum([q.arrival_ns for q in queries]), typed)
        if dtype is not None:
            column = np.frombuffer(b"".join(payloads), dtype).reshape(n, cfg.input_width)
        else:
            column = frames.binary_column(payloads)
        try:
            written = rings is not None and rings[0].try_write(lambda slot: codec.write(slot, n, [column]))
        except OverflowError as e:
            self.core.batch_done(a.model, a.replica, None, f"{e}: the batch does not fit the model's input slot", time.monotonic_ns())
            return
        if not written:  # cannot happen with one batch in flight per replica; fail loudly, not silently
            self.core.batch_done(a.model, a.replica, None, "model input ring unavailable", time.monotonic_ns())

    def _flush_responses(self) -> None:
        for fi, box in enumerate(self.outboxes):
            if not box:
                continue
            writer = self.responses[fi]
            while box and writer.free():
                n = len(box)
                while True:
                    try:
                        writer.try_write(lambda slot, n=n, box=box: box.encode(slot, n))
                        break
                    except OverflowError:
                        if n == 1:  # one answer larger than a slot: it becomes its error
                            box.fail_first(
                                f"the answer of {len(box.output[0])} bytes exceeds the response slot of "
                                f"{self.cfg.response_slot_nbytes} bytes (server.response_slot_nbytes)")
                            continue
                        n //= 2
                box.drop(n)
        if self.returns:  # stamped before the post: a frontend woken on this core may run first
            now = time.monotonic_ns()
            for queries, t_out in self.returns:
                self.stage_ns[3] += queries * (now - t_out)
                self.stage_n[3] += queries
            self.returns.clear()
        flush_all(self.responses)  # a full ring: the frontend posts our bell when it frees a slot


def _earliest(a: int | None, b: int) -> int:
    return b if a is None or b < a else a


def run_scheduler(args: SchedulerArgs) -> int:
    setup_logging("scheduler")
    proc = SchedulerProc(args)
    ctrl = socket.socket(fileno=os.dup(args.control_fd))
    protocol.send(ctrl, protocol.Ready(protocol.Role.SCHEDULER, "scheduler", os.getpid()))
    ctrl.close()
    return proc.serve()
