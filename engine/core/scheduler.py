"""The scheduler's decisions, as a pure state machine (no I/O, no clock, no threads).

The scheduler process shell (`schooner.engine.scheduler_proc`) feeds events in -- queries
arrived, a batch finished, a replica died or came up -- with the current time as an argument,
then asks `poll(now_ns)` for the actions to carry out and `next_wakeup(now_ns)` for how long it
may block. Nothing here reads a clock or touches a ring, so every rule is unit-tested with a
fake clock and no sleeps.

Rules (this first cut; caching and AIMD come with the scheduler issue):

* A query is routed to its app's linked model. An app with no linked model, or whose model
  has no replicas configured, is answered at once with its default output and the explanation
  `NO_MODEL_EXPLANATION`.
* Each model has one FIFO queue. When a replica is idle and its model's queue holds live
  queries, the replica gets a batch of up to `max_batch_size` of them (one batch in flight per
  replica).
* Every query is answered exactly once (`Query.done`). When its app's SLO deadline passes first,
  it is answered with the default output and `SLO_EXPLANATION`; a query answered that way is never
  sent to a model, and a late model result for it is dropped.
* A replica that dies hands its in-flight queries back to the front of the queue once; a query
  whose second attempt also dies with its replica is answered with HTTP 500.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

SLO_EXPLANATION = "Failed to retrieve a prediction response within the specified latency SLO"
NO_MODEL_EXPLANATION = "No connected models found for query"
MAX_ATTEMPTS = 2


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
    attempts: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class AppRoute:
    """What the core needs to know of an app."""

    model: int | None  # index of the linked model, None when no model is linked
    default_json: bytes  # JSON text of the default output


@dataclass(frozen=True, slots=True)
class ModelLimits:
    max_batch_size: int
    replicas: int


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


@dataclass(slots=True)
class _Replica:
    state: ReplicaState = ReplicaState.DOWN
    inflight: list[Query] = field(default_factory=list)


@dataclass(slots=True)
class _Model:
    limits: ModelLimits
    queue: deque = field(default_factory=deque)
    replicas: list[_Replica] = field(default_factory=list)


class SchedulerCore:
    """Routing, batching and deadlines for every model. See the module docstring."""

    def __init__(self, apps: list[AppRoute], models: list[ModelLimits]) -> None:
        self.apps = apps
        self.models = [
            _Model(limits=m, replicas=[_Replica() for _ in range(m.replicas)]) for m in models
        ]
        self._deadlines: list[tuple[int, int, Query]] = []
        self._seq = 0
        self._actions: list[Action] = []
        self._ready_models: set[int] = set()

    # -- events -----------------------------------------------------------------------------

    def submit(self, query: Query) -> None:
        route = self.apps[query.app]
        m = route.model
        if m is None or not self.models[m].replicas:
            self._answer(query, 200, True, route.default_json, NO_MODEL_EXPLANATION)
            return
        self.models[m].queue.append(query)
        self._ready_models.add(m)
        self._seq += 1
        heapq.heappush(self._deadlines, (query.deadline_ns, self._seq, query))

    def batch_done(
        self, model: int, replica: int, outputs: list[bytes] | None, error: str | None = None
    ) -> None:
        """A replica answered its in-flight batch: one JSON output per query, or an error."""
        r = self.models[model].replicas[replica]
        queries, r.inflight = r.inflight, []
        if r.state is ReplicaState.BUSY:
            r.state = ReplicaState.IDLE
        if outputs is not None and len(outputs) != len(queries):
            error = f"model returned {len(outputs)} outputs for a batch of {len(queries)} queries"
            outputs = None
        for i, q in enumerate(queries):
            if q.done:
                continue
            if outputs is None:
                self._answer(q, 500, False, (error or "model failed").encode())
            else:
                self._answer(q, 200, False, outputs[i])
        self._mark(model)

    def replica_down(self, model: int, replica: int) -> None:
        m = self.models[model]
        r = m.replicas[replica]
        r.state = ReplicaState.DOWN
        queries, r.inflight = r.inflight, []
        retry = []
        for q in queries:
            if q.done:
                continue
            q.attempts += 1
            if q.attempts >= MAX_ATTEMPTS:
                self._answer(q, 500, False, b"model process exited while computing this query")
            else:
                retry.append(q)
        m.queue.extendleft(reversed(retry))  # retried first, in their original order

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
        for mi in self._ready_models:
            self._dispatch(mi)
        self._ready_models.clear()
        actions, self._actions = self._actions, []
        return actions

    def next_wakeup(self, now_ns: int) -> int | None:
        """Absolute time (ns) of the next deadline the core must act on; None if none."""
        dl = self._deadlines
        while dl and dl[0][2].done:
            heapq.heappop(dl)
        if self._ready_models:
            return now_ns
        return dl[0][0] if dl else None

    def inflight_count(self) -> int:
        """Queries accepted and not yet answered (for drain and metrics)."""
        return sum(1 for _, _, q in self._deadlines if not q.done)

    # -- internals --------------------------------------------------------------------------

    def _mark(self, mi: int) -> None:
        if self.models[mi].queue:
            self._ready_models.add(mi)

    def _dispatch(self, mi: int) -> None:
        m = self.models[mi]
        queue = m.queue
        limit = m.limits.max_batch_size
        for ri, r in enumerate(m.replicas):
            if r.state is not ReplicaState.IDLE:
                continue
            batch: list[Query] = []
            while queue and len(batch) < limit:
                q = queue.popleft()
                if not q.done:
                    batch.append(q)
            if not batch:
                return
            r.state = ReplicaState.BUSY
            r.inflight = batch
            self._actions.append(SendBatch(mi, ri, batch))

    def _answer(
        self, q: Query, status: int, default: bool, output: bytes, explanation: str = ""
    ) -> None:
        q.done = True
        q.payload = None
        self._actions.append(Respond(q, status, default, output, explanation))
