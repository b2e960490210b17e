"""Per-model-version deadline queues and the delayed-batching rule (pure).

Owns: the queries waiting for one model version, ordered earliest deadline first (EDF), and the
arithmetic that says when a partial batch should leave. The scheduler core is the only caller;
times are integer nanoseconds passed in, and nothing here reads a clock.

`DeadlineQueue` is a binary heap of (deadline_ns, seq, item). The sequence number breaks ties
in push order (FIFO among equal deadlines) and keeps the opaque items from ever being compared.
Deletion is lazy: a query answered elsewhere (its SLO timer fired, a cache hit answered it) is
not searched for in the heap; the caller marks it done, and `pop_batch` drops it when it reaches
the top. Invariants:

* `pop_batch` returns items in nondecreasing deadline order, and never one whose deadline has
  passed (deadline_ns <= now_ns, the same test as the scheduler's SLO timer) or that `is_live`
  rejects -- an expired query is never sent to a model. Every item dropped is gone for good.
* `len(queue)` counts heap entries, dead ones not yet dropped included: an upper bound on the
  live count, exact when nothing queued has been answered elsewhere. `earliest_deadline` may
  likewise be a dead entry's (never later than the earliest live one), so a wake-up computed
  from it is at worst early, never late.

`batch_ready_at` is Clipper's delayed batching: a partial batch may wait up to `wait_ns` for
more queries, but never so long that the earliest deadline can no longer be met.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class DeadlineQueue:
    """The queries waiting for one model version, earliest deadline first."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = 0

    def __len__(self) -> int:
        """Entries held, dead ones not yet dropped included (see the module docstring)."""
        return len(self._heap)

    def push(self, item: Any, deadline_ns: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline_ns, self._seq, item))

    def pop_batch(
        self,
        limit: int,
        now_ns: int,
        is_live: Callable[[Any], bool],
        discarded: list[Any] | None = None,
    ) -> list[Any]:
        """Up to `limit` live items in deadline order, removed from the queue.

        On the way it drops, for good, every item on top whose deadline has passed
        (deadline_ns <= now_ns) or that `is_live` rejects; when `discarded` is given they are
        appended to it, so the caller can release what it holds for them (a cache leader's
        pending key, for instance). Items past the `limit` live ones are not examined.
        """
        heap = self._heap
        batch: list[Any] = []
        while heap and len(batch) < limit:
            deadline_ns, _, item = heapq.heappop(heap)
            if deadline_ns <= now_ns or not is_live(item):
                if discarded is not None:
                    discarded.append(item)
                continue
            batch.append(item)
        return batch

    def earliest_deadline(self, is_live: Callable[[Any], bool] | None = None) -> int | None:
        """The earliest deadline queued, or None when empty.

        With `is_live`, dead entries on top are dropped first, so the answer is a live item's.
        """
        heap = self._heap
        if is_live is not None:
            while heap and not is_live(heap[0][2]):
                heapq.heappop(heap)
        return heap[0][0] if heap else None


def batch_ready_at(
    queued: int,
    limit: int,
    oldest_enqueued_ns: int,
    earliest_deadline_ns: int,
    wait_ns: int,
    expected_latency_ns: int,
) -> int:
    """The absolute time (ns) at which a batch should be sent to an idle replica.

    `queued` (>= 1) queries wait, the oldest since `oldest_enqueued_ns`; the replica's batch
    limit is `limit`; the earliest deadline among them is `earliest_deadline_ns`; a batch is
    expected to take `expected_latency_ns`; the app allows a batch wait of `wait_ns`.

    * A full batch (queued >= limit), or no batch wait (wait_ns <= 0), is due already: the
      result is `oldest_enqueued_ns`.
    * Otherwise the batch waits for more queries until `oldest_enqueued_ns + wait_ns`, but not
      past `earliest_deadline_ns - expected_latency_ns`, the last moment at which the earliest
      query can still be answered in time.

    The caller sends when the result is <= now, else sleeps until it (or until a new query
    arrives). A result earlier than `oldest_enqueued_ns` (the deadline is already too close)
    likewise means: send now.
    """
    if queued >= limit or wait_ns <= 0:
        return oldest_enqueued_ns
    return min(oldest_enqueued_ns + wait_ns, earliest_deadline_ns - expected_latency_ns)


DEFAULT_PRIORITY = 128


class PriorityDeadlineQueue:
    """Deadline queues per priority level: a batch takes from the lowest level first, earliest
    deadline first within a level (Triton's priority levels: 1 is served before 2; requests
    that name no priority use `DEFAULT_PRIORITY`). Same interface as `DeadlineQueue`."""

    __slots__ = ("_levels", "_order")

    def __init__(self) -> None:
        self._levels: dict[int, DeadlineQueue] = {}
        self._order: list[int] = []

    def __len__(self) -> int:
        levels = self._levels
        if len(levels) == 1:  # the common case: every query at the default level
            for q in levels.values():
                return len(q)
        return sum(len(q) for q in levels.values())

    def push(self, item: Any, deadline_ns: int, level: int = DEFAULT_PRIORITY) -> None:
        q = self._levels.get(level)
        if q is None:
            q = self._levels[level] = DeadlineQueue()
            self._order = sorted(self._levels)
        q.push(item, deadline_ns)

    def pop_batch(
        self, limit: int, now_ns: int, is_live: Callable[[Any], bool], discarded: list[Any] | None = None
    ) -> list[Any]:
        batch: list[Any] = []
        for level in self._order:
            if len(batch) >= limit:
                break
            batch += self._levels[level].pop_batch(limit - len(batch), now_ns, is_live, discarded)
        return batch

    def earliest_deadline(self, is_live: Callable[[Any], bool] | None = None) -> int | None:
        levels = self._levels
        if len(levels) == 1:
            for q in levels.values():
                return q.earliest_deadline(is_live)
        found = [d for q in levels.values() if (d := q.earliest_deadline(is_live)) is not None]
        return min(found) if found else None
