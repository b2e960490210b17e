"""Readiness from stalled replicas, the deadline heap's sweep and the cache's exact-size
copies: pure rules with a fake clock."""

import tracemalloc

import orjson

from schooner.engine.core.cache import CacheKey, PredictionCache
from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.scheduler import AppRoute, ModelSpec, Query, SchedulerCore, SendBatch

MS = 1_000_000


def make_core(replicas=1):
    return SchedulerCore([AppRoute(model=0, default_json=b"-1")], [ModelSpec(4, replicas, batch_size=4)], stall_ns=50 * MS)


def test_a_replica_holding_its_batch_past_the_stall_bound_is_not_ready():
    core = make_core()
    assert core.readiness(0) == [False]  # down until it reports up
    core.replica_up(0, 0)
    assert core.readiness(0) == [True]
    core.submit(Query(0, 1, 0, 10_000 * MS, payload=b"x"), 0)
    (send,) = [a for a in core.poll(0) if isinstance(a, SendBatch)]
    assert core.next_stall_check(0) == 50 * MS
    assert core.readiness(49 * MS) == [True]
    assert core.readiness(50 * MS) == [False]
    assert core.next_stall_check(50 * MS) is None  # nothing more will change by itself
    core.batch_done(0, 0, [b"1"], None, 60 * MS)
    assert core.readiness(60 * MS) == [True]
    assert render_scheduler_metrics(core.counters).count("schooner_model_ready") >= 1


def test_one_stalled_replica_of_two_leaves_the_model_ready():
    core = make_core(replicas=2)
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    core.submit(Query(0, 1, 0, 10_000 * MS, payload=b"x"), 0)
    core.poll(0)
    assert core.readiness(100 * MS) == [True]


def test_answered_queries_leave_the_deadline_heap_before_their_deadlines():
    core = make_core()
    core.replica_up(0, 0)
    now = 0
    for i in range(20_000):
        core.submit(Query(0, i, 0, now + 10_000 * MS, payload=b"x"), now)
        for a in core.poll(now):
            if isinstance(a, SendBatch):
                core.batch_done(0, 0, [b"1"] * len(a.queries), None, now)
    core.poll(now)
    assert len(core._deadlines) <= 2 * 4096


def test_the_cache_holds_values_at_their_own_size():
    cache = PredictionCache(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        values = [orjson.dumps(float(i)) for i in range(2000)]  # each sits in a 4 KiB allocation
        for i, v in enumerate(values):
            cache.put(CacheKey(0, "1", i.to_bytes(16, "little")), v)
        del values
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2000 * 1024, f"{held / 2000:.0f} bytes per entry"
    assert cache.get(CacheKey(0, "1", (7).to_bytes(16, "little"))) == b"7.0"


def test_cache_hits_count_in_queue_and_success_as_triton_counts_them():
    # perf_analyzer finds the model version whose "queue" count grew during a measurement;
    # with every answer from the cache it must still grow
    core = SchedulerCore([AppRoute(model=0, default_json=b"-1")], [ModelSpec(4, 1, batch_size=4)])
    core.replica_up(0, 0)
    core.submit(Query(0, 1, 0, 10_000 * MS, payload=b"x", digest=b"d" * 16), 0)
    (send,) = [a for a in core.poll(0) if isinstance(a, SendBatch)]
    core.batch_done(0, 0, [b"1"], None, MS)
    st = core.models[0].stats
    queued, succeeded = st.queue_count, st.success_count
    for i in range(3):
        core.submit(Query(0, 2 + i, 0, 10_000 * MS, payload=b"x", digest=b"d" * 16), 2 * MS)
    assert st.cache_hit_count == 3
    assert st.queue_count == queued + 3 and st.success_count == succeeded + 3
