"""SchedulerCore rules with a fake clock (plain integers) and no sleeps."""

from schooner.engine.core.scheduler import (
    NO_MODEL_EXPLANATION,
    SLO_EXPLANATION,
    AppRoute,
    ModelSpec,
    Query,
    Respond,
    SchedulerCore,
    SendBatch,
)

MS = 1_000_000


def make_core(max_batch=4, replicas=1, linked=True):
    apps = [AppRoute(model=0 if linked else None, default_json=b"-1")]
    return SchedulerCore(apps, [ModelSpec(max_batch, replicas, batch_size=max_batch)])


def q(i, deadline=None, app=0, frontend=0):
    """Query i; by default queries arriving later have later deadlines (same SLO)."""
    return Query(frontend, i, app, 100 * MS + i if deadline is None else deadline, payload=b"x")


def sends(actions):
    return [a for a in actions if isinstance(a, SendBatch)]


def responds(actions):
    return [a for a in actions if isinstance(a, Respond)]


def test_idle_replica_gets_batch_of_at_most_max_batch_size():
    core = make_core(max_batch=4)
    core.replica_up(0, 0)
    for i in range(10):
        core.submit(q(i))
    acts = core.poll(0)
    (b,) = sends(acts)
    assert [x.query_id for x in b.queries] == [0, 1, 2, 3]
    # one batch in flight per replica: nothing more until it answers
    assert sends(core.poll(1)) == []
    core.batch_done(0, 0, [b"1"] * 4)
    acts = core.poll(2)
    assert [r.query.query_id for r in responds(acts)] == [0, 1, 2, 3]
    assert all(r.status == 200 and not r.default and r.output == b"1" for r in responds(acts))
    (b2,) = sends(acts)
    assert [x.query_id for x in b2.queries] == [4, 5, 6, 7]


def test_no_linked_model_answers_default_at_once():
    core = make_core(linked=False)
    core.submit(q(1))
    (r,) = core.poll(0)
    assert r.default and r.output == b"-1" and r.explanation == NO_MODEL_EXPLANATION
    assert core.next_wakeup(0) is None


def test_model_with_zero_replicas_answers_no_model_default():
    core = make_core(replicas=0)
    core.submit(q(1))
    (r,) = core.poll(0)
    assert r.explanation == NO_MODEL_EXPLANATION


def test_deadline_answers_default_and_query_never_reaches_model():
    core = make_core()
    core.submit(q(1, deadline=5 * MS))  # replica still down: nothing can serve it
    assert core.poll(4 * MS) == []
    assert core.next_wakeup(4 * MS) == 5 * MS
    (r,) = core.poll(5 * MS)
    assert r.default and r.explanation == SLO_EXPLANATION and r.output == b"-1"
    core.replica_up(0, 0)
    assert sends(core.poll(6 * MS)) == []  # expired query is not sent


def test_late_result_is_dropped_after_default():
    core = make_core()
    core.replica_up(0, 0)
    core.submit(q(1, deadline=5 * MS))
    (b,) = sends(core.poll(0))
    (r,) = core.poll(5 * MS)
    assert r.default
    core.batch_done(0, 0, [b"7"])
    assert responds(core.poll(6 * MS)) == []  # exactly one answer per query


def test_model_error_answers_500_with_cause():
    core = make_core()
    core.replica_up(0, 0)
    core.submit(q(1))
    core.submit(q(2))
    core.poll(0)
    core.batch_done(0, 0, None, "ValueError: boom")
    rs = responds(core.poll(1))
    assert [(r.status, r.output) for r in rs] == [(500, b"ValueError: boom")] * 2


def test_wrong_output_count_is_an_error_not_a_misalignment():
    core = make_core()
    core.replica_up(0, 0)
    core.submit(q(1))
    core.submit(q(2))
    core.poll(0)
    core.batch_done(0, 0, [b"1"])
    rs = responds(core.poll(1))
    assert all(r.status == 500 for r in rs) and len(rs) == 2


def test_replica_death_requeues_once_then_fails():
    core = make_core(max_batch=2)
    core.replica_up(0, 0)
    core.submit(q(1))
    core.submit(q(2))
    core.submit(q(3))
    (b,) = sends(core.poll(0))
    core.replica_down(0, 0)
    assert core.poll(1) == []  # requeued, waiting for a replica
    core.replica_up(0, 0)
    (b2,) = sends(core.poll(2))
    assert [x.query_id for x in b2.queries] == [1, 2]  # retried first, in order
    core.replica_down(0, 0)
    rs = responds(core.poll(3))
    assert [(r.query.query_id, r.status) for r in rs] == [(1, 500), (2, 500)]
    core.replica_up(0, 0)
    (b3,) = sends(core.poll(4))
    assert [x.query_id for x in b3.queries] == [3]


def test_two_replicas_share_the_queue():
    core = make_core(max_batch=2, replicas=2)
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    for i in range(4):
        core.submit(q(i))
    bs = sends(core.poll(0))
    assert sorted(b.replica for b in bs) == [0, 1]
    assert sorted(x.query_id for b in bs for x in b.queries) == [0, 1, 2, 3]


def test_next_wakeup_is_earliest_live_deadline():
    core = make_core()
    core.replica_up(0, 0)
    assert core.next_wakeup(0) is None
    core.submit(q(1, deadline=9 * MS))
    core.submit(q(2, deadline=3 * MS))
    assert core.next_wakeup(0) == 0  # work to dispatch now
    core.poll(0)
    assert core.next_wakeup(1) == 3 * MS
    core.batch_done(0, 0, [b"1", b"2"])
    core.poll(2)
    assert core.next_wakeup(2) is None


def test_every_query_answered_exactly_once_under_mixed_events():
    core = make_core(max_batch=3, replicas=2)
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    answered = []
    now = 0
    for i in range(30):
        core.submit(q(i, deadline=now + (i % 7 + 1) * MS))
        for a in core.poll(now):
            if isinstance(a, Respond):
                answered.append(a.query.query_id)
        if i % 4 == 0:
            core.batch_done(0, i % 2, [b"0"] * len(core.models[0].replicas[i % 2].inflight))
        if i == 10:
            core.replica_down(0, 1)
        if i == 15:
            core.replica_up(0, 1)
        now += MS // 2
    for r in (0, 1):
        core.batch_done(0, r, [b"0"] * len(core.models[0].replicas[r].inflight))
    answered += [a.query.query_id for a in core.poll(now + 100 * MS) if isinstance(a, Respond)]
    answered += [a.query.query_id for a in core.poll(now + 200 * MS) if isinstance(a, Respond)]
    assert sorted(answered) == list(range(30))
