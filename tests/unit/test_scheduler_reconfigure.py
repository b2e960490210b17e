"""The core taking a new configuration while serving (fake clock, no sleeps): models added,
replicas grown and retired, an app moved to another version with its queued queries finishing
on the old one."""

from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.scheduler import (
    AppRoute,
    ModelSpec,
    Query,
    Respond,
    RetiredReplica,
    SchedulerCore,
    SendBatch,
)

MS = 1_000_000


def spec(version="1", replicas=1):
    return ModelSpec(4, replicas, version=version, batch_size=4, name="m")


def sends(actions):
    return [a for a in actions if isinstance(a, SendBatch)]


def test_an_app_moved_to_a_new_version_lets_queued_queries_finish_on_the_old_one():
    core = SchedulerCore([AppRoute(model=0, default_json=b"-1", cache=False)], [spec("1")])
    core.replica_up(0, 0)
    for i in range(6):
        core.submit(Query(0, i, 0, 10_000 * MS, payload=b"x"), 0)
    (first,) = sends(core.poll(0))  # 4 in flight on v1, 2 queued on v1
    assert (first.model, len(first.queries)) == (0, 4)
    core.reconfigure([AppRoute(model=1, default_json=b"-1", cache=False)], [spec("1"), spec("2")])
    core.replica_up(1, 0)
    core.submit(Query(0, 100, 0, 10_000 * MS, payload=b"y"), MS)
    batches = sends(core.poll(MS))
    assert [(b.model, [q.query_id for q in b.queries]) for b in batches] == [(1, [100])]
    core.batch_done(0, 0, [b"1"] * 4, None, 2 * MS)
    (rest,) = sends(core.poll(2 * MS))
    assert (rest.model, [q.query_id for q in rest.queries]) == (0, [4, 5])  # the old version finishes them


def test_replicas_grow_and_a_busy_replica_retires_after_its_batch():
    core = SchedulerCore([AppRoute(model=0, default_json=b"-1", cache=False)], [spec(replicas=1)])
    core.replica_up(0, 0)
    core.reconfigure(core.apps, [spec(replicas=2)])
    assert len(core.models[0].replicas) == 2
    core.replica_up(0, 1)
    for i in range(8):
        core.submit(Query(0, i, 0, 10_000 * MS, payload=b"x"), 0)
    assert sorted(b.replica for b in sends(core.poll(0))) == [0, 1]
    assert core.retire_replica(0, 1) is False  # busy: it finishes first
    core.batch_done(0, 1, [b"1"] * 4, None, MS)
    acts = core.poll(MS)
    assert RetiredReplica(0, 1) in acts
    assert sum(isinstance(a, Respond) for a in acts) == 4  # its batch was answered
    for i in range(8, 12):
        core.submit(Query(0, i, 0, 10_000 * MS, payload=b"x"), MS)
    core.batch_done(0, 0, [b"1"] * 4, None, 2 * MS)
    assert [b.replica for b in sends(core.poll(2 * MS))] == [0]  # never the retired one
    assert core.retire_replica(0, 0) is False
    assert core.model_ready(0, 2 * MS) is True


def test_an_added_app_gets_its_metrics_and_a_removed_policy_app_forgets():
    from schooner.engine.core.policies import make_policy

    ens = AppRoute(model=0, default_json=b"-1", cache=False, name="ens", models=(0, 1), policy=make_policy("exp3"))
    core = SchedulerCore([ens], [spec("1"), spec("2")])
    assert 0 in core.selection.contexts
    core.reconfigure([None, None, AppRoute(model=1, default_json=b"0", cache=False, name="new")], [spec("1"), spec("2")])
    assert 0 not in core.selection.contexts
    core.replica_up(1, 0)
    core.submit(Query(0, 1, 2, 10_000 * MS, payload=b"x"), 0)
    (b,) = sends(core.poll(0))
    assert b.model == 1
    assert 'schooner_app_queries_total{app="new"} 1' in render_scheduler_metrics(core.counters)


def test_a_deleted_app_answers_what_was_sent_with_its_default_and_never_crashes():
    from schooner.engine.core.policies import make_policy

    app = AppRoute(model=0, default_json=b"-1", cache=False, name="app", slo_ns=10 * MS)
    core = SchedulerCore([app], [spec("1")])  # no replica up: queries wait in the queue
    core.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    tomb = AppRoute(model=None, default_json=b"-1", cache=False, name="app", slo_ns=10 * MS)
    core.reconfigure([tomb], [spec("1")])
    core.submit(Query(0, 2, 0, 10 * MS, payload=b"x"), MS)  # sent before the frontend knew
    expired = [a for a in core.poll(20 * MS) if isinstance(a, Respond)]
    assert sorted((a.query.query_id, a.status, a.default) for a in expired) == [(1, 200, True), (2, 200, True)]
    assert core.feedback(0, 1, 1.0) is None
    # a route id the scheduler does not know is refused, not a crash
    core.submit(Query(0, 3, 40, 10 * MS, payload=b"x"), MS)
    (r,) = [a for a in core.poll(MS) if isinstance(a, Respond)]
    assert r.status == 503
    # a policy app deleted with an ensemble in flight finishes it with what it had
    ens = AppRoute(model=0, default_json=b"-1", cache=False, name="e", models=(0, 1), policy=make_policy("exp4"),
                   slo_ns=10 * MS)
    core = SchedulerCore([ens], [spec("1"), spec("2")])
    core.replica_up(0, 0)
    core.replica_up(1, 0)
    core.submit(Query(0, 7, 0, 10 * MS, payload=b"x"), 0)
    batches = sends(core.poll(0))
    core.reconfigure([AppRoute(model=None, default_json=b"-1", cache=False, name="e")], [spec("1"), spec("2")])
    for b in batches:
        core.batch_done(b.model, b.replica, [b"1.5"], None, MS)
    (done,) = [a for a in core.poll(MS) if isinstance(a, Respond)]
    assert done.query.query_id == 7 and done.status == 200 and not done.default


def test_changing_a_policy_apps_links_restarts_its_state_and_in_flight_ensembles_finish():
    from schooner.engine.core.policies import make_policy

    three = AppRoute(model=0, default_json=b"-1", cache=False, name="e", models=(0, 1, 2), policy=make_policy("exp3"),
                     slo_ns=10 * MS)
    core = SchedulerCore([three], [spec("1"), spec("2"), spec("3")])
    for mi in range(3):
        core.replica_up(mi, 0)
    core.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    (b,) = sends(core.poll(0))
    two = AppRoute(model=0, default_json=b"-1", cache=False, name="e", models=(0, 1), policy=make_policy("exp3"),
                   slo_ns=10 * MS)
    core.reconfigure([two], [spec("1"), spec("2"), spec("3")])
    assert core.selection.contexts[0].app_state is not None
    core.batch_done(b.model, b.replica, [b"2.0"], None, MS)  # the in-flight ensemble, asked under 3 models
    (first,) = [a for a in core.poll(MS) if isinstance(a, Respond)]
    assert first.status == 200
    for i in range(20):  # later queries choose among the two left
        core.submit(Query(0, 10 + i, 0, 100 * MS, payload=b"x"), 2 * MS)
        for s in sends(core.poll(2 * MS)):
            assert s.model in (0, 1)
            core.batch_done(s.model, s.replica, [b"1.0"] * len(s.queries), None, 2 * MS)


def test_a_non_finite_score_in_an_ensemble_counts_as_no_answer():
    from schooner.engine.core.policies import make_policy

    ens = AppRoute(model=0, default_json=b"-1", cache=False, name="e", models=(0, 1), policy=make_policy("exp4"),
                   slo_ns=10 * MS)
    core = SchedulerCore([ens], [spec("1"), spec("2")])
    core.replica_up(0, 0)
    core.replica_up(1, 0)
    core.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    for b in sends(core.poll(0)):
        core.batch_done(b.model, b.replica, [b"NaN" if b.model == 0 else b"2.0"], None, MS)
    (r,) = [a for a in core.poll(MS) if isinstance(a, Respond)]
    assert r.status == 200 and b'"models_used":1' in r.extra


def _warm(core, mi, ri, n_batches=6):
    """Drive replica ri of model mi through full batches so its AIMD limit grows."""
    for k in range(n_batches):
        for i in range(64):
            core.submit(Query(0, 10_000 * mi + 100 * k + i, 0, 10_000 * MS, payload=b"x"), 0)
        for b in sends(core.poll(0)):
            core.batch_done(b.model, b.replica, [b"1"] * len(b.queries), None, MS)


def test_a_new_version_and_a_new_replica_start_at_the_limit_the_old_ones_reached():
    big = [ModelSpec(64, 1, version="1", name="m"), ModelSpec(64, 1, version="2", name="m")]
    core = SchedulerCore([AppRoute(model=0, default_json=b"-1", cache=False, slo_ns=10_000 * MS)], big)
    core.replica_up(0, 0)
    _warm(core, 0, 0)
    learned = core.models[0].replicas[0].aimd.limit
    assert learned > core.models[1].replicas[0].aimd.limit
    core.reconfigure([AppRoute(model=1, default_json=b"-1", cache=False, slo_ns=10_000 * MS)], big)
    assert core.models[1].replicas[0].aimd.limit == learned  # the switch did not reset the budget
    grown = [big[0], ModelSpec(64, 2, version="2", name="m")]
    core.reconfigure(core.apps, grown)
    core.replica_up(1, 0)
    _warm(core, 1, 0)
    core.replica_up(1, 1)
    assert core.models[1].replicas[1].aimd.limit == core.models[1].replicas[0].aimd.limit


def test_the_replicas_left_take_over_a_retired_ones_budget():
    two = [ModelSpec(64, 2, version="1", name="m")]
    core = SchedulerCore([AppRoute(model=0, default_json=b"-1", cache=False, slo_ns=10_000 * MS)], two)
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    a, b = core.models[0].replicas
    before = a.aimd.limit + b.aimd.limit
    core.retire_replica(0, 1)
    assert a.aimd.limit == min(64, before)
