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
* **Replica failure.** A dying replica's in-flight queries go back to the queue once (any live
  replica may take them); a query whose second attempt also dies is answered with HTTP 500.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from schooner.engine.core.aimd import AimdConfig, AimdController
from schooner.engine.core.cache import CacheKey, PredictionCache
from schooner.engine.core.metrics import BATCH_SIZE_BUCKETS, MetricSet
from schooner.engine.core.queues import DEFAULT_PRIORITY, PriorityDeadlineQueue, batch_ready_at

SLO_EXPLANATION = "Failed to retrieve a prediction response within the specified latency SLO"
NO_MODEL_EXPLANATION = "No connected models found for query"
MAX_ATTEMPTS = 2
_EWMA = 0.2  # weight of the newest batch latency in a replica's expected latency


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


@dataclass(frozen=True, slots=True)
class AppRoute:
    """What the core needs to know of an app."""

    model: int | None  # index of the linked model, None when no model is linked
    default_json: bytes  # JSON text of the default output
    slo_ns: int = 100_000_000
    cache: bool = True
    name: str = ""


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
class Respond:
    query: Query
    status: int  # HTTP status: 200, or 500 for a model failure
    default: bool
    output: bytes  # JSON text of the output when status is 200, else the error cause
    explanation: str = ""


Action = SendBatch | Respond


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
    __slots__ = ("state", "inflight", "sent_ns", "aimd", "expected_ns", "limit_gauge")

    def __init__(self, aimd: AimdController, limit_gauge) -> None:
        self.state = ReplicaState.DOWN
        self.inflight: list[Query] = []
        self.sent_ns = 0
        self.aimd = aimd
        self.expected_ns = 0
        self.limit_gauge = limit_gauge


class _Model:
    __slots__ = ("spec", "queue", "replicas", "oldest_ns", "wake_ns", "m_batches", "m_batch_size",
                 "m_latency", "m_queue_delay", "m_hits", "m_misses", "m_queries", "stats")  # fmt: skip

    def __init__(self, spec: ModelSpec, replicas: list[_Replica]) -> None:
        self.spec = spec
        self.queue = PriorityDeadlineQueue()
        self.replicas = replicas
        self.oldest_ns: int | None = None  # arrival of the oldest query waiting (approximate)
        self.wake_ns: int | None = None  # when a delayed batch becomes due
        self.stats = ModelStats()


class SchedulerCore:
    """Routing, caching, batching and deadlines for every model. See the module docstring."""

    def __init__(
        self,
        apps: list[AppRoute],
        models: list[ModelSpec],
        cache_nbytes: int = 32 * 1024 * 1024,
        metrics: MetricSet | None = None,
    ) -> None:
        self.apps = apps
        self.metrics = metrics if metrics is not None else MetricSet()
        self.cache = PredictionCache(cache_nbytes)
        mx = self.metrics
        self.models: list[_Model] = []
        for mi, spec in enumerate(models):
            slos = [a.slo_ns for a in apps if a.model == mi]
            slo = min(slos) if slos else 1_000_000_000
            labels = {"model": spec.name or str(mi), "version": spec.version}
            reps = [
                _Replica(
                    AimdController(spec.aimd, spec.max_batch_size, slo, spec.batch_size),
                    mx.gauge("schooner_batch_limit", "Current batch size limit (AIMD) of a replica", **labels, replica=str(ri)),
                )
                for ri in range(spec.replicas)
            ]
            m = _Model(spec, reps)
            m.m_batches = mx.counter("schooner_model_batches_total", "Batches sent to model processes", **labels)
            m.m_batch_size = mx.histogram("schooner_model_batch_size", "Queries per batch", BATCH_SIZE_BUCKETS, **labels)
            m.m_latency = mx.histogram("schooner_model_latency_seconds", "Batch round trip from send to result", **labels)
            m.m_queue_delay = mx.histogram("schooner_queue_delay_seconds", "Time a query waited before its batch was sent", **labels)
            m.m_hits = mx.counter("schooner_cache_hits_total", "Queries answered from the prediction cache", **labels)
            m.m_misses = mx.counter("schooner_cache_misses_total", "Cache lookups that missed (joined ones included)", **labels)
            m.m_queries = mx.counter("schooner_model_queries_total", "Queries sent to model processes", **labels)
            for r in reps:
                r.limit_gauge.set(r.aimd.limit)
            self.models.append(m)
        self.m_app_queries = []
        self.m_app_defaults = []
        for i, a in enumerate(apps):
            name = a.name or str(i)
            self.m_app_queries.append(mx.counter("schooner_app_queries_total", "Queries received", app=name))
            self.m_app_defaults.append({
                SLO_EXPLANATION: mx.counter("schooner_app_defaults_total", "Default outputs served", app=name, reason="slo"),
                NO_MODEL_EXPLANATION: mx.counter("schooner_app_defaults_total", "Default outputs served", app=name, reason="no_model"),
            })  # fmt: skip
        self.m_app_errors = [mx.counter("schooner_app_errors_total", "Queries answered with a model error", app=a.name or str(i)) for i, a in enumerate(apps)]
        self.m_evictions = mx.counter("schooner_cache_evictions_total", "Entries evicted from the prediction cache")
        self.m_cache_bytes = mx.gauge("schooner_cache_bytes", "Bytes held by the prediction cache")
        self._deadlines: list[tuple[int, int, Query]] = []
        self._seq = 0
        self._actions: list[Action] = []
        self._ready_models: set[int] = set()

    # -- events -----------------------------------------------------------------------------

    def submit(self, query: Query, now_ns: int = 0) -> None:
        route = self.apps[query.app]
        self.m_app_queries[query.app].value += 1
        mi = route.model
        if mi is None or not self.models[mi].replicas:
            self._answer(query, 200, True, route.default_json, NO_MODEL_EXPLANATION)
            return
        m = self.models[mi]
        query.arrival_ns = now_ns
        self._seq += 1
        if route.cache and query.digest is not None:
            key = CacheKey(mi, m.spec.version, query.digest)
            value, leader = self.cache.lookup_or_join(key, query)
            if value is not None:
                m.m_hits.value += 1
                m.stats.cache_hit_count += 1
                self._answer(query, 200, False, value)
                m.stats.success_count += 1
                return
            m.m_misses.value += 1
            m.stats.cache_miss_count += 1
            query.key = key
            heapq.heappush(self._deadlines, (query.deadline_ns, self._seq, query))
            if not leader:
                return  # answered when the leader's result arrives
        else:
            heapq.heappush(self._deadlines, (query.deadline_ns, self._seq, query))
        self._enqueue(mi, query, now_ns)

    def batch_done(
        self, model: int, replica: int, outputs: list[bytes] | None, error: str | None = None, now_ns: int | None = None
    ) -> None:
        """A replica answered its in-flight batch: one JSON output per query, or an error."""
        m = self.models[model]
        r = m.replicas[replica]
        queries, r.inflight = r.inflight, []
        if r.state is ReplicaState.BUSY:
            r.state = ReplicaState.IDLE
        if now_ns is not None and queries:
            latency = now_ns - r.sent_ns
            r.aimd.observe(len(queries), latency)
            r.limit_gauge.value = r.aimd.limit
            r.expected_ns = latency if not r.expected_ns else int(r.expected_ns + _EWMA * (latency - r.expected_ns))
            m.m_latency.observe(latency / 1e9)
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
                if outputs is None:
                    self.m_app_errors[w.app].value += 1
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
                        self.m_app_errors[w.app].value += 1
                        self._answer(w, 500, False, b"model process exited while computing this query")
            else:
                self._enqueue(model, q, now_ns)  # EDF: retried queries keep their deadlines

    def replica_up(self, model: int, replica: int) -> None:
        r = self.models[model].replicas[replica]
        r.state = ReplicaState.IDLE
        r.inflight = []
        self._mark(model)

    # -- decisions --------------------------------------------------------------------------

    def poll(self, now_ns: int) -> list[Action]:
        """Actions due at `now_ns`: expired queries answered, idle replicas given batches."""
        dl = self._deadlines
        while dl and dl[0][0] <= now_ns:
            _, _, q = heapq.heappop(dl)
            if not q.done:
                route = self.apps[q.app]
                self._answer(q, 200, True, route.default_json, SLO_EXPLANATION)
                if q.key is not None:
                    self.cache.abandon(q.key, q)
        for mi, m in enumerate(self.models):
            if m.wake_ns is not None and m.wake_ns <= now_ns:
                m.wake_ns = None
                self._ready_models.add(mi)
        if self._ready_models:
            ready, self._ready_models = self._ready_models, set()
            for mi in ready:
                self._dispatch(mi, now_ns)
        self.m_evictions.value = self.cache.evictions
        self.m_cache_bytes.value = self.cache.nbytes
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
            if r.state is not ReplicaState.IDLE:
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
            m.m_batches.value += 1
            m.m_batch_size.observe(len(batch))
            m.m_queries.value += len(batch)
            qd = m.m_queue_delay
            waited = 0
            for q in batch:
                w = now_ns - q.arrival_ns
                waited += w
                qd.observe(w / 1e9)
            m.stats.queue_count += len(batch)
            m.stats.queue_ns += waited
            self._actions.append(SendBatch(mi, ri, batch))
            m.oldest_ns = now_ns if len(queue) else None  # approximate: the rest waited until now

    def _answer(self, q: Query, status: int, default: bool, output: bytes, explanation: str = "") -> None:
        q.done = True
        q.payload = None
        if default:
            self.m_app_defaults[q.app][explanation].value += 1
        self._actions.append(Respond(q, status, default, output, explanation))


def _live(q: Query) -> bool:
    return not q.done
