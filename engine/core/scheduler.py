"""The scheduler's decisions, as a pure state machine (no I/O, no clock, no threads).

The scheduler process shell (`schooner.engine.scheduler_proc`) feeds events in -- queries
arrived, a batch finished, a replica died or came up -- with the current time as an argument,
then asks `poll(now_ns)` for the actions to carry out and `next_wakeup(now_ns)` for how long it
may block. Nothing here reads a clock or touches a ring, so every rule is unit-tested with a
fake clock and no sleeps.

Rules (Clipper's model abstraction layer, as its paper describes it):

* **Routing.** A query goes to its app's linked model. An app with no linked model, or whose
  model has no replicas configured, is answered at once with its default output and
  `NO_MODEL_EXPLANATION`.
* **Prediction cache.** For apps with caching on, a query carrying an input digest is looked up
  under (model, version, digest). A hit is answered at once and never reaches a model.
  Concurrent misses on one key share one computation: the first is queued (the leader), the
  others wait for its result. Every result fills the cache, late ones included.
* **Deadline queues.** Per model (version), one earliest-deadline-first queue per priority
  level; a batch takes from the most urgent level first. A query whose deadline has passed is
  never sent to a model.
* **Batch sizing.** Each replica has its own AIMD controller (`AimdController`): the batch limit
  grows additively while batches finish within a fraction of the tightest SLO of the apps that
  use the model, and shrinks multiplicatively when one does not. A fixed `batch_size > 0`
  disables adaptation. One batch is in flight per replica; an idle replica gets the next one.
* **Delayed batching.** With fewer queries queued than the replica's limit, the batch waits up
  to the model's `batch_wait_ns` for more, but never past what the earliest deadline allows
  (`batch_ready_at`). The wait is expressed through `next_wakeup`, never as a sleep.
* **SLO defaults.** Every query is answered exactly once (`Query.done`). When its deadline
  passes first, it gets its app's default output with `SLO_EXPLANATION`.
* **Load shedding.** A query arriving at a queue so long that the batches ahead of it (at the
  replicas' current limits and measured latencies) end after its deadline gets its default at
  once: queued, it would only make the queries behind it late too. Under sustained overload
  this keeps the queue short enough that the queries accepted are answered in time.
* **Replica failure.** A dying replica's in-flight queries go back to the queue once (any live
  replica may take them); a query whose second attempt also dies is answered with HTTP 500.

Clipper's other layer, model selection (apps with a policy: which models to ask, combining
their answers, feedback, snapshots), is `SelectionCore` (`schooner.engine.core.selection`),
held as `self.selection`: this core sends the sub-queries it asks for, gives it their answers
and deadlines, and answers the query as it decides.

Counting: the core adds to plain records (`schooner.engine.core.counters`, `self.counters`,
plus the Triton `ModelStats` of each model); nothing here builds metric objects or text. The
shell renders the records as Prometheus text (`counters_render`) when it publishes.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from schooner.engine.core.aimd import AimdConfig, AimdController
from schooner.engine.core.cache import CacheKey, PredictionCache
from schooner.engine.core.counters import (
    AppCounters,
    ModelCounters,
    ReplicaCounters,
    SchedulerCounters,
)
from schooner.engine.core.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S
from schooner.engine.core.policies import SelectionPolicy
from schooner.engine.core.queues import DEFAULT_PRIORITY, PriorityDeadlineQueue, batch_ready_at
from schooner.engine.core.selection import Ensemble, EnsembleAnswer, SelectionCore, Verdict
from schooner.ipc.wire import LOW_CONFIDENCE_EXPLANATION, NO_MODEL_EXPLANATION, SLO_EXPLANATION

# the explanation of every default the core serves -> its `reason` label in /metrics
DEFAULT_REASONS = {SLO_EXPLANATION: "slo", NO_MODEL_EXPLANATION: "no_model", LOW_CONFIDENCE_EXPLANATION: "low_confidence"}
MAX_ATTEMPTS = 2
_EWMA = 0.2  # weight of the newest batch latency in a replica's expected latency
_COMPACT_MIN = 4096  # deadline heap entries before answered ones are swept out


class ReplicaState(IntEnum):
    DOWN = 0
    IDLE = 1
    BUSY = 2


@dataclass(slots=True, eq=False)
class Query:
    """One query in flight. `payload` is the shell's reference to the input bytes."""

    frontend: int
    query_id: int
    app: int
    deadline_ns: int
    payload: Any = None
    digest: bytes | None = None  # input digest, when the app caches
    arrival_ns: int = 0
    attempts: int = 0
    done: bool = False
    key: CacheKey | None = None
    priority: int = DEFAULT_PRIORITY  # lower levels are served first
    uid: int = -1  # the user (Clipper's context) when the request named one
    model: int = -1  # set on the sub-queries of a selection policy: the model asked
    parent: Ensemble | None = None  # set on sub-queries: the query they answer for
    typed: bool = False  # its answer is wanted as a typed row (V2), not JSON text (ipc/rows.py)


@dataclass(frozen=True, slots=True)
class AppRoute:
    """What the core needs to know of an app."""

    model: int | None  # index of the linked model, None when no model is linked
    default_json: bytes  # JSON text of the default output
    slo_ns: int = 100_000_000
    cache: bool = True
    name: str = ""
    models: tuple[int, ...] = ()  # every linked model (selection policies choose among them)
    policy: SelectionPolicy | None = None  # None: the single `model` answers
    confidence_threshold: float = 0.0
    max_contexts: int = 10_000


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the core needs to know of a model."""

    max_batch_size: int
    replicas: int
    version: str = "1"
    batch_size: int = -1  # > 0: fixed batch size (no AIMD); -1: adaptive
    batch_wait_ns: int = 0
    aimd: AimdConfig = field(default_factory=AimdConfig)
    name: str = ""


@dataclass(frozen=True, slots=True)
class SendBatch:
    model: int
    replica: int
    queries: list[Query]


@dataclass(frozen=True, slots=True)
class RetiredReplica:
    """A replica taken out of service has answered its last batch: its process may stop."""

    model: int
    replica: int


@dataclass(slots=True)  # not frozen: one per query, and a frozen __init__ costs twice as much
class Respond:
    query: Query
    status: int  # HTTP status: 200, or 500 for a model failure
    default: bool
    output: bytes  # the answer row when status is 200 (JSON text or a typed row, ipc/rows.py), else the error cause
    explanation: str = ""
    extra: bytes = b""  # more JSON members for the answer, e.g. b'"confidence":0.9,"models_used":2'


Action = SendBatch | Respond | RetiredReplica


class ModelStats:
    """Triton-style per-model statistics, as plain counters (served at /v2/models/{m}/stats).

    Times are nanoseconds. `compute` is the batch round trip from send to result (gathering the
    inputs and reading the outputs included), attributed to each query of the batch.
    """

    __slots__ = ("last_inference_ns", "inference_count", "execution_count", "success_count",
                 "success_ns", "fail_count", "fail_ns", "queue_count", "queue_ns", "compute_count",
                 "compute_ns", "cache_hit_count", "cache_miss_count", "batches")  # fmt: skip

    def __init__(self) -> None:
        self.last_inference_ns = 0
        self.inference_count = self.execution_count = 0
        self.success_count = self.success_ns = self.fail_count = self.fail_ns = 0
        self.queue_count = self.queue_ns = self.compute_count = self.compute_ns = 0
        self.cache_hit_count = self.cache_miss_count = 0
        self.batches: dict[int, list[int]] = {}  # batch size -> [count, compute ns]

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


class _Replica:
    __slots__ = ("state", "inflight", "sent_ns", "aimd", "expected_ns", "retiring")

    def __init__(self, aimd: AimdController) -> None:
        self.retiring = False  # scaled down: no new batch; DOWN once its batch is answered
        self.state = ReplicaState.DOWN
        self.inflight: list[Query] = []
        self.sent_ns = 0
        self.aimd = aimd
        self.expected_ns = 0


class _Model:
    __slots__ = ("spec", "queue", "replicas", "oldest_ns", "wake_ns", "stats", "counters")

    def __init__(self, spec: ModelSpec, replicas: list[_Replica]) -> None:
        self.spec = spec
        self.queue = PriorityDeadlineQueue()
        self.replicas = replicas
        self.oldest_ns: int | None = None  # arrival of the oldest query waiting (approximate)
        self.wake_ns: int | None = None  # when a delayed batch becomes due
        self.stats = ModelStats()
        self.counters = ModelCounters(spec.name or "?", spec.version, self.stats)


class SchedulerCore:
    """Routing, caching, batching and deadlines for every model. See the module docstring."""

    def __init__(
        self,
        apps: list[AppRoute],
        models: list[ModelSpec],
        cache_nbytes: int = 32 * 1024 * 1024,
        rng: random.Random | None = None,
        stall_ns: int = 10_000_000_000,
    ) -> None:
        self.apps: list[AppRoute | None] = []
        self.stall_ns = stall_ns
        self.selection = SelectionCore(rng if rng is not None else random.Random(0))
        self.cache = PredictionCache(cache_nbytes)
        self.models: list[_Model] = []
        self.counters = SchedulerCounters()
        self.app_counters: list[AppCounters | None] = []  # by app index; kept when the app goes
        self.reconfigure(apps, models)
        self.counters.add(self.counters.cache)  # the cache's series follow the first models' and apps'
        self._deadlines: list[tuple[int, int, Query]] = []  # lazy: answered ones leave late
        self._compact_at = _COMPACT_MIN
        self._seq = 0
        self._actions: list[Action] = []
        self._ready_models: set[int] = set()

    # -- configuration ----------------------------------------------------------------------

    def reconfigure(self, apps: list[AppRoute | None], models: list[ModelSpec]) -> None:
        """Take a new configuration while serving. Indices are stable: `models` extends the
        current list (a model index never changes meaning) and `apps` is the whole route table,
        None where a route does not exist (any more). A model whose replica count grew gets
        replicas that stay DOWN until `replica_up`; fewer replicas are taken away with
        `retire_replica`, never here. Queries already queued stay with the model they were
        queued for, so a version switch lets them finish on the old version."""
        if len(models) < len(self.models):
            raise ValueError(f"models may only be added: {len(models)} < {len(self.models)}")
        before = {i: a.model for i, a in enumerate(self.apps) if a is not None and a.model is not None}
        self.apps = list(apps)
        for mi, spec in enumerate(models):
            if mi >= len(self.models):
                self.models.append(self._new_model(spec))
            else:
                m = self.models[mi]
                m.spec = spec
                while len(m.replicas) < spec.replicas:
                    m.replicas.append(self._new_replica(m, len(m.replicas)))
        for mi, m in enumerate(self.models):  # the AIMD target follows the tightest SLO of its apps
            slo = self._model_slo(mi)
            for r in m.replicas:
                if r.aimd.slo_ns != slo:
                    r.aimd.set_slo(slo)
        for i, a in enumerate(self.apps):
            if i >= len(self.app_counters):
                self.app_counters.append(None)
            if a is not None and self.app_counters[i] is None:
                self.app_counters[i] = self.counters.add(AppCounters(a.name or str(i), DEFAULT_REASONS))
        self.selection.reconfigure(self.apps)
        for i, old in before.items():  # a version switch: the new version takes over the load
            a = self.apps[i] if i < len(self.apps) else None
            if a is not None and a.model is not None and a.model != old:
                self._take_over(self.models[a.model], self.models[old].replicas)

    def _take_over(self, m: _Model, from_replicas) -> None:
        """Replicas of `m` that have answered nothing yet start at the batch limit the
        replicas `from_replicas` reached, so they do not probe up from the initial limit under
        a load sized for those (the transient would shed queries as hopeless)."""
        learned = [r.aimd.limit for r in from_replicas if r.expected_ns and not r.retiring]
        if not learned:
            return
        for r in m.replicas:
            if not r.expected_ns:
                r.aimd.take_over(max(learned))

    def _model_slo(self, mi: int) -> int:
        slos = [a.slo_ns for a in self.apps if a is not None and (a.model == mi or mi in a.models)]
        return min(slos) if slos else 1_000_000_000

    def _new_replica(self, m: _Model, ri: int) -> _Replica:
        spec = m.spec
        r = _Replica(AimdController(spec.aimd, spec.max_batch_size, 1_000_000_000, spec.batch_size))  # SLO set by reconfigure
        self.counters.add(ReplicaCounters(spec.name or "?", spec.version, ri, r.aimd))
        return r

    def _new_model(self, spec: ModelSpec) -> _Model:
        m = _Model(spec, [])
        m.replicas = [self._new_replica(m, ri) for ri in range(spec.replicas)]
        self.counters.add(m.counters)  # after its replicas' series, as they were registered
        return m

    def retire_replica(self, model: int, replica: int) -> bool:
        """Take a replica out of service (scale down). It gets no new batch; True when it
        holds none now (it may stop at once), else `RetiredReplica` follows its batch."""
        m = self.models[model]
        r = m.replicas[replica]
        r.retiring = True
        survivors = [o for o in m.replicas if o is not r and o.state is not ReplicaState.DOWN and not o.retiring]
        for o in survivors:  # they take over its share of the batch budget
            o.aimd.take_over(o.aimd.limit + -(-r.aimd.limit // len(survivors)))
        if r.state is ReplicaState.BUSY:
            return False
        r.state = ReplicaState.DOWN
        return True

    # -- events -----------------------------------------------------------------------------

    def submit(self, query: Query, now_ns: int = 0, shed: dict | None = None) -> None:
        """A query arrived. `shed`: `submit_all`'s per-call cache of load-shedding states."""
        route = self.apps[query.app] if query.app < len(self.apps) else None
        if route is None:  # cannot happen: frontends learn routes after the scheduler does
            query.done = True
            self._actions.append(Respond(query, 503, False, b"the application is being reconfigured; retry"))
            return
        self.app_counters[query.app].queries += 1
        if route.policy is not None:
            self._submit_ensemble(query, route, now_ns, shed)
            return
        mi = route.model
        if mi is None or not self.models[mi].spec.replicas:
            self._answer(query, 200, True, route.default_json, NO_MODEL_EXPLANATION)
            return
        self._submit_model(query, mi, route.cache, now_ns, shed)

    def submit_all(self, queries: list[Query], now_ns: int = 0) -> None:
        """`submit` each query of one submit batch in order (the same actions, counts and queue
        order); each model's load-shedding state is taken once per call, not per query:
        submits do not change it (replicas change state in `poll` and on events)."""
        shed: dict = {}
        submit = self.submit
        for q in queries:
            submit(q, now_ns, shed)

    def _submit_ensemble(self, query: Query, route: AppRoute, now_ns: int, shed: dict | None = None) -> None:
        """A query of a policy app: one sub-query to each model the selection layer asks."""
        live = [mi for mi in route.models if self.models[mi].spec.replicas]
        if not live:
            self._answer(query, 200, True, route.default_json, NO_MODEL_EXPLANATION)
            return
        ens = self.selection.on_submit(query)
        query.arrival_ns = now_ns
        query.parent = None
        self._seq += 1
        heapq.heappush(self._deadlines, (query.deadline_ns, self._seq, query))
        for k, mi in zip(ens.selection.models, ens.models, strict=True):
            sub = Query(query.frontend, query.query_id, query.app, query.deadline_ns, query.payload,
                        query.digest, priority=query.priority, uid=query.uid, model=k, parent=ens)
            if not self.models[mi].spec.replicas:
                self._sub_answer(sub, None, None)
                continue
            self._submit_model(sub, mi, route.cache, now_ns, shed)

    def _submit_model(self, query: Query, mi: int, cache: bool, now_ns: int, shed: dict | None = None) -> None:
        m = self.models[mi]
        query.arrival_ns = now_ns
        self._seq += 1
        if cache and query.digest is not None:
            key = CacheKey(mi, m.spec.version, query.digest)
            value, leader = self.cache.lookup_or_join(key, query)
            if value is not None:
                m.stats.cache_hit_count += 1  # also schooner_cache_hits_total
                m.stats.queue_count += 1  # as Triton counts: "queue" and "success" include cache hits
                self._answer(query, 200, False, value)
                m.stats.success_count += 1
                return
            m.stats.cache_miss_count += 1  # also schooner_cache_misses_total
            query.key = key
            heapq.heappush(self._deadlines, (query.deadline_ns, self._seq, query))
            if not leader:
                return  # answered when the leader's result arrives
        else:
            heapq.heappush(self._deadlines, (query.deadline_ns, self._seq, query))
        if self._hopeless(m, now_ns, query.deadline_ns, shed):
            # load shedding at the door: queueing it would only delay the queries behind it
            if query.key is not None:
                self.cache.fail(query.key)  # a fresh leader: nobody else waits on it yet
            m.counters.shed += 1
            self._answer(query, 200, True, self.apps[query.app].default_json, SLO_EXPLANATION)
            return
        self._enqueue(mi, query, now_ns)

    def batch_done(
        self, model: int, replica: int, outputs: list[bytes] | None, error: str | None = None, now_ns: int | None = None
    ) -> None:
        """A replica answered its in-flight batch: one answer row per query (JSON text or a typed
        row, `schooner.ipc.rows`; only the selection layer reads one, through `rows.policy_input`), or an error."""
        m = self.models[model]
        r = m.replicas[replica]
        queries, r.inflight = r.inflight, []
        if r.state is ReplicaState.BUSY:
            r.state = ReplicaState.IDLE
            if r.retiring:  # scaled down: that was its last batch
                r.state = ReplicaState.DOWN
                self._actions.append(RetiredReplica(model, replica))
        if now_ns is not None and queries:
            latency = now_ns - r.sent_ns
            r.aimd.observe(len(queries), latency)
            r.expected_ns = latency if not r.expected_ns else int(r.expected_ns + _EWMA * (latency - r.expected_ns))
            c = m.counters
            latency_s = latency / 1e9
            c.latency[bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
            c.latency_sum_s += latency_s
            st = m.stats
            n = len(queries)
            st.last_inference_ns = now_ns
            st.inference_count += n
            st.execution_count += 1
            st.compute_count += n
            st.compute_ns += latency * n
            b = st.batches.get(n)
            if b is None:
                b = st.batches[n] = [0, 0]
            b[0] += 1
            b[1] += latency
        if outputs is not None and len(outputs) != len(queries):
            error = f"model returned {len(outputs)} outputs for a batch of {len(queries)} queries"
            outputs = None
        cache = self.cache
        for i, q in enumerate(queries):
            if q.key is not None:
                waiters = cache.complete(q.key, outputs[i]) if outputs is not None else cache.fail(q.key)
                if not q.done and q not in waiters:
                    waiters.append(q)
            else:
                waiters = (q,)
            st = m.stats
            for w in waiters:
                if w.done:
                    continue
                took = (now_ns - w.arrival_ns) if now_ns is not None else 0
                if w is not q:  # joined the leader's computation: it waited in a queue too
                    st.queue_count += 1
                    st.queue_ns += took
                if outputs is None:
                    self.app_counters[w.app].errors += 1
                    self._answer(w, 500, False, (error or "model failed").encode())
                    st.fail_count += 1
                    st.fail_ns += took
                else:
                    self._answer(w, 200, False, outputs[i])
                    st.success_count += 1
                    st.success_ns += took
        self._mark(model)

    def replica_down(self, model: int, replica: int, now_ns: int = 0) -> None:
        m = self.models[model]
        r = m.replicas[replica]
        r.state = ReplicaState.DOWN
        queries, r.inflight = r.inflight, []
        for q in queries:
            if q.done:
                if q.key is not None:
                    self._rehome(q.key, now_ns)
                continue
            q.attempts += 1
            if q.attempts >= MAX_ATTEMPTS:
                waiters = self.cache.fail(q.key) if q.key is not None else (q,)
                for w in waiters:
                    if not w.done:
                        self.app_counters[w.app].errors += 1
                        self._answer(w, 500, False, b"model process exited while computing this query")
            else:
                self._enqueue(model, q, now_ns)  # EDF: retried queries keep their deadlines

    def replica_up(self, model: int, replica: int) -> None:
        m = self.models[model]
        while len(m.replicas) <= replica:  # up before its reconfiguration arrived
            m.replicas.append(self._new_replica(m, len(m.replicas)))
        r = m.replicas[replica]
        r.retiring = False
        r.state = ReplicaState.IDLE
        r.inflight = []
        self._take_over(m, [o for o in m.replicas if o is not r])  # a new replica starts where its siblings are
        self._mark(model)

    # -- decisions --------------------------------------------------------------------------

    def poll(self, now_ns: int) -> list[Action]:
        """Actions due at `now_ns`: expired queries answered, idle replicas given batches."""
        dl = self._deadlines
        if len(dl) > self._compact_at:  # answered entries wait for their deadline: drop them
            dl[:] = [e for e in dl if not e[2].done]
            heapq.heapify(dl)
            self._compact_at = max(_COMPACT_MIN, 2 * len(dl))
        while dl and dl[0][0] <= now_ns:
            _, _, q = heapq.heappop(dl)
            if not q.done:
                route = self.apps[q.app]
                if q.key is not None:
                    self.cache.abandon(q.key, q)
                ans = self.selection.on_deadline(q)  # an ensemble combines what arrived
                if ans is not None:
                    self._answer_ensemble(ans)
                else:
                    self._answer(q, 200, True, route.default_json, SLO_EXPLANATION)
        for mi, m in enumerate(self.models):
            if m.wake_ns is not None and m.wake_ns <= now_ns:
                m.wake_ns = None
                self._ready_models.add(mi)
        if self._ready_models:
            ready, self._ready_models = self._ready_models, set()
            for mi in ready:
                self._dispatch(mi, now_ns)
        cc = self.counters.cache
        cc.evictions = self.cache.evictions
        cc.nbytes = self.cache.nbytes
        actions, self._actions = self._actions, []
        return actions

    def next_wakeup(self, now_ns: int) -> int | None:
        """Absolute time (ns) of the next deadline or delayed batch; None if none."""
        if self._ready_models or self._actions:
            return now_ns
        dl = self._deadlines
        while dl and dl[0][2].done:
            heapq.heappop(dl)
        wake = dl[0][0] if dl else None
        for m in self.models:
            if m.wake_ns is not None and (wake is None or m.wake_ns < wake):
                wake = m.wake_ns
        return wake

    def model_ready(self, mi: int, now_ns: int) -> bool:
        """Whether some replica of model `mi` can answer: idle, or busy with a batch sent less
        than `stall_ns` ago. A replica holding its batch longer is hung or far too slow."""
        for r in self.models[mi].replicas:
            if r.state is ReplicaState.IDLE or r.state is ReplicaState.BUSY and now_ns - r.sent_ns < self.stall_ns:
                return True
        return False

    def readiness(self, now_ns: int) -> list[bool]:
        """`model_ready` of every model; also sets the `schooner_model_ready` counts."""
        out = []
        for mi, m in enumerate(self.models):
            ok = self.model_ready(mi, now_ns)
            m.counters.ready = 1 if ok else 0
            out.append(ok)
        return out

    def next_stall_check(self, now_ns: int) -> int | None:
        """When a busy replica would turn not ready, if it is still busy then (None: never)."""
        due = None
        for m in self.models:
            for r in m.replicas:
                if r.state is ReplicaState.BUSY:
                    t = r.sent_ns + self.stall_ns
                    if t > now_ns and (due is None or t < due):
                        due = t
        return due

    def inflight_count(self) -> int:
        """Queries accepted and not yet answered (for drain and metrics)."""
        return sum(1 for _, _, q in self._deadlines if not q.done)

    # -- internals --------------------------------------------------------------------------

    def _enqueue(self, mi: int, q: Query, now_ns: int) -> None:
        m = self.models[mi]
        m.queue.push(q, q.deadline_ns, q.priority)
        if m.oldest_ns is None:
            m.oldest_ns = now_ns
        self._ready_models.add(mi)

    def _mark(self, mi: int) -> None:
        if len(self.models[mi].queue):
            self._ready_models.add(mi)

    def _hopeless(self, m: _Model, now_ns: int, deadline_ns: int, shed: dict | None = None) -> bool:
        """Whether a query joining `m`'s queue now cannot be answered before `deadline_ns`:
        the batches queued ahead of it, at the replicas' current limits and latencies, end
        later. Unknown latency (no batch measured yet) or no live replica: not hopeless.
        `shed`: states already taken in this batch of submits, by model."""
        if shed is None:
            state = self._shed_state(m)
        else:
            state = shed.get(m, False)
            if state is False:
                state = shed[m] = self._shed_state(m)
        if state is None:
            return False
        return _beyond(len(m.queue), state, now_ns, deadline_ns)

    def _shed_state(self, m: _Model) -> tuple[int, int, int, bool] | None:
        """(expected batch latency, summed batch limits, idle replicas, all busy) of `m`'s live
        replicas, for `_beyond`; None when nothing is shed (no live replica, or no latency
        measured yet). Drops answered entries on top of the queue: they hold no place in line
        (nothing queued is answered during a batch of submits, so once per batch is enough)."""
        expected = capacity = 0
        live = idle = busy = 0
        for r in m.replicas:  # one pass: this runs for every submit
            state = r.state
            if state is ReplicaState.DOWN or r.retiring:
                continue
            live += 1
            if r.expected_ns > expected:
                expected = r.expected_ns
            capacity += r.aimd.limit
            if state is ReplicaState.IDLE:
                idle += 1
            elif state is ReplicaState.BUSY:
                busy += 1
        if not live or not expected:
            return None
        m.queue.earliest_deadline(_live)
        return expected, capacity, idle, busy == live

    def _rehome(self, key: CacheKey, now_ns: int) -> None:
        """A leader left without computing its key: hand the computation to a live waiter."""
        for w in self.cache.waiters(key):
            if not w.done:
                self._enqueue(key.model, w, now_ns)
                return
        self.cache.fail(key)  # nobody left to answer: forget the pending computation

    def _dispatch(self, mi: int, now_ns: int) -> None:
        m = self.models[mi]
        queue = m.queue
        spec = m.spec
        for ri, r in enumerate(m.replicas):
            if r.state is not ReplicaState.IDLE or r.retiring:
                continue
            if not len(queue):
                break
            limit = r.aimd.limit
            if spec.batch_wait_ns > 0 and len(queue) < limit:
                earliest = queue.earliest_deadline(_live)
                if earliest is None:
                    break
                oldest = now_ns if m.oldest_ns is None else m.oldest_ns
                due = batch_ready_at(len(queue), limit, oldest, earliest, spec.batch_wait_ns, r.expected_ns)
                if due > now_ns:
                    m.wake_ns = due if m.wake_ns is None else min(m.wake_ns, due)
                    break
            batch: list[Query] = []
            while len(batch) < limit and len(queue):
                discarded: list[Query] = []
                batch += queue.pop_batch(limit - len(batch), now_ns, _live, discarded)
                for q in discarded:  # expired leaders: their waiters still need the computation
                    if q.key is not None:
                        self._rehome(q.key, now_ns)
                if not discarded:
                    break
            if not batch:
                continue
            r.state = ReplicaState.BUSY
            r.inflight = batch
            r.sent_ns = now_ns
            c = m.counters
            c.batch_sizes[bisect_left(BATCH_SIZE_BUCKETS, len(batch))] += 1
            c.queries += len(batch)
            delays = c.queue_delay
            delay_sum_s = c.queue_delay_sum_s  # one float add per query, in order, as a histogram's
            waited = 0
            for q in batch:
                w = now_ns - q.arrival_ns
                waited += w
                w_s = w / 1e9
                delays[bisect_left(LATENCY_BUCKETS_S, w_s)] += 1
                delay_sum_s += w_s
            c.queue_delay_sum_s = delay_sum_s
            m.stats.queue_count += len(batch)
            m.stats.queue_ns += waited
            self._actions.append(SendBatch(mi, ri, batch))
            m.oldest_ns = now_ns if len(queue) else None  # approximate: the rest waited until now

    def _answer(
        self, q: Query, status: int, default: bool, output: bytes, explanation: str = "", extra: bytes = b""
    ) -> None:
        q.done = True
        q.payload = None
        if q.parent is not None:  # a sub-query: its answer is one model's contribution
            self._sub_answer(q, None if default or status != 200 else output, output if status != 200 else None)
            return
        if default:
            self.app_counters[q.app].defaults[explanation] += 1
        self._actions.append(Respond(q, status, default, output, explanation, extra))

    # -- the selection layer's answers ------------------------------------------------------

    def _sub_answer(self, sub: Query, output: bytes | None, error: bytes | None) -> None:
        ans = self.selection.on_sub_answer(sub, output, error)
        if ans is not None:
            self._answer_ensemble(ans)

    def _answer_ensemble(self, ans: EnsembleAnswer) -> None:
        q = ans.query
        verdict = ans.verdict
        if verdict is Verdict.COMBINED:
            self._answer(q, 200, False, ans.output, "", ans.extra)
        elif verdict is Verdict.ERROR:
            self.app_counters[q.app].errors += 1
            self._answer(q, 500, False, ans.output)
        elif verdict is Verdict.LOW_CONFIDENCE:
            self._answer(q, 200, True, self.apps[q.app].default_json, LOW_CONFIDENCE_EXPLANATION, ans.extra)
        else:
            self._answer(q, 200, True, self.apps[q.app].default_json, SLO_EXPLANATION)

    def feedback(self, app: int, query_id: int, label: float) -> str | None:
        """Feedback (a true label) for a recent query of `app`: `SelectionCore.feedback`."""
        return self.selection.feedback(app, query_id, label)


def _live(q: Query) -> bool:
    return not q.done


def _beyond(queued: int, state: tuple[int, int, int, bool], now_ns: int, deadline_ns: int) -> bool:
    """A query behind `queued` others ends after `deadline_ns` (`state`: `_shed_state`). A
    query sent at once (nothing queued, a replica idle) is never: this also keeps the latency
    estimate fresh."""
    expected, capacity, idle, all_busy = state
    if not queued and idle:
        return False
    waves = queued // capacity + (2 if all_busy else 1)
    return now_ns + waves * expected > deadline_ns
