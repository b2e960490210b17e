"""Scheduler rules of the model abstraction layer: cache, AIMD, delayed batching, replicas.

Fake clock (integers), no sleeps, no processes."""

from schooner.engine.core.aimd import AimdConfig
from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.scheduler import (
    SLO_EXPLANATION,
    AppRoute,
    ModelSpec,
    Query,
    Respond,
    SchedulerCore,
    SendBatch,
)

MS = 1_000_000
US = 1_000


def core(*, cache=True, batch_size=-1, wait_ns=0, replicas=1, max_batch=32, slo_ns=10 * MS, aimd=None):
    spec = ModelSpec(max_batch, replicas, version="1", batch_size=batch_size, batch_wait_ns=wait_ns,
                     aimd=aimd or AimdConfig(), name="m")
    c = SchedulerCore([AppRoute(0, b"-1", slo_ns=slo_ns, cache=cache, name="a")], [spec])
    for r in range(replicas):
        c.replica_up(0, r)
    return c


def q(i, now=0, digest=None, slo=10 * MS):
    return Query(0, i, 0, now + slo, payload=b"x", digest=digest)


def split(actions):
    return ([a for a in actions if isinstance(a, SendBatch)], [a for a in actions if isinstance(a, Respond)])


def test_cache_hit_never_reaches_a_model_and_concurrent_misses_share_one_computation():
    c = core()
    for i in range(3):
        c.submit(q(i, digest=b"same"), 0)
    sends, answers = split(c.poll(0))
    assert answers == [] and [len(s.queries) for s in sends] == [1]  # one computation for three
    c.batch_done(0, 0, [b"42"], now_ns=1 * MS)
    _, answers = split(c.poll(1 * MS))
    assert sorted(a.query.query_id for a in answers) == [0, 1, 2]
    assert all(a.output == b"42" and not a.default for a in answers)
    c.submit(q(3, now=2 * MS, digest=b"same"), 2 * MS)
    sends, answers = split(c.poll(2 * MS))
    assert sends == [] and [a.output for a in answers] == [b"42"]  # a hit: no batch
    assert "schooner_cache_hits_total" in render_scheduler_metrics(c.counters)


def test_cache_off_for_an_app_sends_every_query():
    c = core(cache=False, batch_size=8)
    for i in range(3):
        c.submit(q(i, digest=b"same"), 0)
    sends, _ = split(c.poll(0))
    assert [len(s.queries) for s in sends] == [3]


def test_late_result_still_fills_the_cache():
    c = core()
    c.submit(q(1, digest=b"d", slo=1 * MS), 0)
    c.poll(0)  # sent
    _, answers = split(c.poll(1 * MS))
    assert answers[0].default and answers[0].explanation == SLO_EXPLANATION
    c.batch_done(0, 0, [b"7"], now_ns=5 * MS)
    assert split(c.poll(5 * MS))[1] == []  # exactly one answer for query 1
    c.submit(q(2, now=6 * MS, digest=b"d"), 6 * MS)
    sends, answers = split(c.poll(6 * MS))
    assert sends == [] and answers[0].output == b"7"


def test_expired_leader_hands_the_computation_to_a_live_waiter():
    c = core()
    c.replica_down(0, 0)
    c.submit(q(1, digest=b"k", slo=1 * MS), 0)  # leader, short deadline
    c.submit(q(2, digest=b"k", slo=50 * MS), 0)  # joins it
    _, answers = split(c.poll(1 * MS))
    assert [a.query.query_id for a in answers] == [1] and answers[0].default
    c.replica_up(0, 0)
    sends, _ = split(c.poll(2 * MS))
    assert [[x.query_id for x in s.queries] for s in sends] == [[2]]  # computed for the waiter
    c.batch_done(0, 0, [b"9"], now_ns=3 * MS)
    _, answers = split(c.poll(3 * MS))
    assert [(a.query.query_id, a.output) for a in answers] == [(2, b"9")]


def test_aimd_grows_while_under_target_and_backs_off_on_a_miss():
    c = core(slo_ns=10 * MS, max_batch=32)
    for i in range(200):
        c.submit(q(i, slo=1000 * MS), 0)
    now = 0
    sizes = []
    (s,), _ = split(c.poll(now))
    for _ in range(6):
        sizes.append(len(s.queries))
        now += 1 * MS  # well under 90% of the 10 ms SLO
        c.batch_done(0, 0, [b"0"] * len(s.queries), now_ns=now)
        (s,), _ = split(c.poll(now))
    assert sizes == [1, 3, 5, 7, 9, 11]
    assert len(s.queries) == 13
    c.batch_done(0, 0, [b"0"] * 13, now_ns=now + 20 * MS)  # a miss
    assert c.models[0].replicas[0].aimd.limit == int(13 * 0.9)
    assert 'schooner_batch_limit{model="m",replica="0",version="1"} 11' in render_scheduler_metrics(c.counters)


def test_fixed_batch_size_disables_aimd():
    c = core(batch_size=9, max_batch=32)
    for i in range(30):
        c.submit(q(i, slo=1000 * MS), 0)
    (s,), _ = split(c.poll(0))
    assert len(s.queries) == 9
    c.batch_done(0, 0, [b"0"] * 9, now_ns=50 * MS)  # slow, but fixed
    (s,), _ = split(c.poll(50 * MS))
    assert len(s.queries) == 9


def test_delayed_batching_waits_for_more_but_not_past_the_deadline_budget():
    c = core(batch_size=8, wait_ns=2 * MS)
    c.submit(q(1, now=0), 0)
    assert split(c.poll(0)) == ([], [])  # one query, limit 8: wait
    assert c.next_wakeup(0) == 2 * MS
    for i in range(2, 5):
        c.submit(q(i, now=1 * MS), 1 * MS)
    assert split(c.poll(1 * MS)) == ([], [])
    (s,), _ = split(c.poll(2 * MS))
    assert [x.query_id for x in s.queries] == [1, 2, 3, 4]


def test_delayed_batching_sends_a_full_batch_at_once():
    c = core(batch_size=4, wait_ns=2 * MS)
    for i in range(4):
        c.submit(q(i), 0)
    (s,), _ = split(c.poll(0))
    assert len(s.queries) == 4


def test_delayed_batching_respects_the_earliest_deadline():
    c = core(batch_size=8, wait_ns=50 * MS)
    c.submit(q(1, now=0, slo=3 * MS), 0)
    c.poll(0)
    assert c.next_wakeup(0) == 3 * MS  # the deadline, not the 50 ms wait
    r = c.models[0].replicas[0]
    r.expected_ns = 1 * MS
    c.submit(q(2, now=0, slo=30 * MS), 0)
    c.poll(0)
    assert c.models[0].wake_ns == 2 * MS  # deadline minus the expected batch latency


def test_each_replica_has_its_own_aimd_and_a_dead_replica_work_moves():
    c = core(replicas=2, max_batch=16)
    for i in range(10):
        c.submit(q(i, slo=1000 * MS + i), 0)  # later ids, later deadlines
    sends, _ = split(c.poll(0))
    assert sorted(s.replica for s in sends) == [0, 1]
    c.batch_done(0, 0, [b"0"], now_ns=1 * MS)
    assert c.models[0].replicas[0].aimd.limit == 3 and c.models[0].replicas[1].aimd.limit == 1
    c.replica_down(0, 1)  # its query goes back to the shared queue
    sends, _ = split(c.poll(1 * MS))
    assert [s.replica for s in sends] == [0] and len(sends[0].queries) == 3
    ids = [x.query_id for x in sends[0].queries]
    assert 1 in ids  # the dead replica's query, retried on the live one


def test_priority_levels_are_served_first_then_by_deadline():
    c = core(batch_size=2)
    c.replica_down(0, 0)
    for i, prio in [(1, 128), (2, 128), (3, 5), (4, 1)]:
        qq = q(i, slo=100 * MS - i)
        qq.priority = prio
        c.submit(qq, 0)
    c.replica_up(0, 0)
    (s,), _ = split(c.poll(0))
    assert [x.query_id for x in s.queries] == [4, 3]  # level 1, then level 5
    c.batch_done(0, 0, [b"0", b"0"], now_ns=1 * MS)
    (s,), _ = split(c.poll(1 * MS))
    assert [x.query_id for x in s.queries] == [2, 1]  # default level, earliest deadline first


def test_a_query_arriving_at_a_queue_too_long_for_its_deadline_is_shed_at_once():
    c = core(batch_size=2)
    r = c.models[0].replicas[0]
    r.expected_ns = 4 * MS  # a batch of 2 takes about 4 ms
    for i in range(5):
        c.submit(q(i, now=0, slo=100 * MS), 0)  # plenty of time: queued
    sends, answers = split(c.poll(0))
    assert answers == [] and len(sends) == 1
    # one batch in flight, 3 queued: a new query waits ~2 more waves + the one in flight = 12 ms
    c.submit(q(10, now=0, slo=10 * MS), 0)
    c.submit(q(11, now=0, slo=20 * MS), 0)
    _, answers = split(c.poll(0))
    assert [(a.query.query_id, a.default, a.explanation) for a in answers] == [(10, True, SLO_EXPLANATION)]
    assert "schooner_model_shed_total" in render_scheduler_metrics(c.counters)


def test_no_shedding_before_any_latency_is_known():
    c = core(batch_size=1)
    for i in range(50):
        c.submit(q(i, now=0, slo=1 * MS), 0)
    _, answers = split(c.poll(0))
    assert answers == []


def test_shedding_recovers_after_an_overload():
    """After an overload every queued query expired; a query arriving at low load later must be
    served (found by the open-loop study: shedding stayed on for good)."""
    c = core(batch_size=4)
    r = c.models[0].replicas[0]
    for i in range(40):
        c.submit(q(i, now=0, slo=10 * MS), 0)
    (s,), _ = split(c.poll(0))
    c.batch_done(0, 0, [b"0"] * 4, now_ns=30 * MS)  # slower than the SLO: expected latency 30 ms
    c.poll(30 * MS)  # everything else expired and was answered with the default
    assert r.expected_ns == 30 * MS
    c.submit(q(100, now=40 * MS, slo=10 * MS), 40 * MS)
    sends, answers = split(c.poll(40 * MS))
    assert answers == [] and [x.query_id for x in sends[0].queries] == [100]  # sent, not shed
