"""Selection policies inside the scheduler core: fan-out, combine, stragglers, confidence,
feedback, per-user state, snapshots. Fake clock, seeded RNG."""

import random

import orjson

from schooner.engine.core.policies import make_policy
from schooner.engine.core.scheduler import (
    LOW_CONFIDENCE_EXPLANATION,
    SLO_EXPLANATION,
    AppRoute,
    ModelSpec,
    Query,
    Respond,
    SchedulerCore,
    SendBatch,
)

MS = 1_000_000


def core(policy="exp4", threshold=0.0, n=2, **params):
    app = AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="ens", models=tuple(range(n)),
                   policy=make_policy(policy, **params), confidence_threshold=threshold)
    c = SchedulerCore([app], [ModelSpec(8, 1, batch_size=8, name=f"m{i}") for i in range(n)], rng=random.Random(1))
    for i in range(n):
        c.replica_up(i, 0)
    return c


def sends(actions):
    return {a.model: a for a in actions if isinstance(a, SendBatch)}


def answers(actions):
    return [a for a in actions if isinstance(a, Respond)]


def one_hot(k):
    v = [0.0] * 10
    v[k] = 1.0
    return orjson.dumps(v)


def test_exp4_asks_every_model_and_combines_with_confidence():
    c = core("exp4")
    c.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    s = sends(c.poll(0))
    assert set(s) == {0, 1}
    c.batch_done(0, 0, [one_hot(3)], now_ns=1 * MS)
    assert answers(c.poll(1 * MS)) == []  # waits for the other model
    c.batch_done(1, 0, [one_hot(3)], now_ns=2 * MS)
    (a,) = answers(c.poll(2 * MS))
    assert not a.default and orjson.loads(a.output)[3] == 1.0
    assert b'"confidence":1.0' in a.extra and b'"models_used":2' in a.extra


def test_at_the_deadline_an_ensemble_combines_what_arrived():
    c = core("exp4")
    c.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    c.poll(0)
    c.batch_done(0, 0, [one_hot(4)], now_ns=1 * MS)
    (a,) = answers(c.poll(10 * MS))  # model 1 is a straggler
    assert not a.default and b'"models_used":1' in a.extra and b'"models_asked":2' in a.extra
    c.batch_done(1, 0, [one_hot(5)], now_ns=20 * MS)
    assert answers(c.poll(20 * MS)) == []  # exactly one answer


def test_nothing_arrived_by_the_deadline_answers_the_default():
    c = core("exp4")
    c.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    c.poll(0)
    (a,) = answers(c.poll(10 * MS))
    assert a.default and a.explanation == SLO_EXPLANATION


def test_low_confidence_answers_the_default_with_its_explanation():
    c = core("exp4", threshold=0.8)
    c.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    c.poll(0)
    c.batch_done(0, 0, [one_hot(1)], now_ns=1 * MS)
    c.batch_done(1, 0, [one_hot(2)], now_ns=1 * MS)
    (a,) = answers(c.poll(1 * MS))
    assert a.default and a.explanation == LOW_CONFIDENCE_EXPLANATION and a.output == b"-1"
    assert b'"confidence":0.5' in a.extra


def test_feedback_moves_exp4_weights_to_the_right_model_and_per_uid_states_are_independent():
    c = core("exp4", eta=0.5)
    now = 0
    for i in range(30):
        c.submit(Query(0, i, 0, now + 10 * MS, payload=b"x", uid=7), now)
        c.poll(now)
        c.batch_done(0, 0, [one_hot(2)], now_ns=now + 1)
        c.batch_done(1, 0, [one_hot(9)], now_ns=now + 1)
        c.poll(now + 1)
        assert c.feedback(0, i, 2) is None  # the truth is model 0's answer
        now += MS
    ctx = c.selection.contexts[0]
    assert ctx.get(7).weights()[0] > 0.99
    assert ctx.app_state.weights()[0] > 0.99  # the app-wide state learns too
    assert 8 not in ctx  # another user has no state of its own: it starts from the app's
    assert c.feedback(0, 12345, 1) is not None  # nothing to join with


def test_exp3_picks_one_model_and_snapshot_round_trips():
    c = core("exp3", eta=0.3, gamma=0.1)
    c.submit(Query(0, 1, 0, 10 * MS, payload=b"x"), 0)
    assert len(sends(c.poll(0))) == 1
    snap = orjson.loads(orjson.dumps(c.selection.snapshot()))
    fresh = core("exp3", eta=0.3, gamma=0.1)
    assert fresh.selection.restore("ens", snap["ens"])
    assert fresh.selection.contexts[0] == c.selection.contexts[0]
    assert not core("exp4").selection.restore("ens", snap["ens"])  # another policy's state is refused
