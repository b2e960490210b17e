"""SelectionCore on its own: no scheduler, no models; sub-query answers and deadlines are fed
in by hand. Seeded RNG."""

import random

import orjson

from schooner.engine.core.policies import make_policy
from schooner.engine.core.scheduler import AppRoute, Query
from schooner.engine.core.selection import RECENT_PREDICTIONS, SelectionCore, Verdict

MS = 1_000_000


def app(policy="exp4", threshold=0.0, models=(4, 5, 6), **params):
    return AppRoute(None, b"-1", name="ens", models=models, policy=make_policy(policy, **params),
                    confidence_threshold=threshold)


def layer(*apps):
    s = SelectionCore(random.Random(1))
    s.reconfigure(list(apps))
    return s


def subs(ens):
    q = ens.query
    return [Query(q.frontend, q.query_id, q.app, q.deadline_ns, model=k, parent=ens) for k in ens.selection.models]


def test_exp4_asks_every_linked_model_and_the_last_answer_combines():
    s = layer(app())
    q = Query(0, 1, 0, 10 * MS)
    ens = s.on_submit(q)
    assert ens.models == (4, 5, 6) and ens.selection.models == (0, 1, 2)
    a, b, c = subs(ens)
    assert s.on_sub_answer(a, b"[0, 1]", None) is None
    assert s.on_sub_answer(b, None, b"boom") is None  # an error is no output
    ans = s.on_sub_answer(c, b"[0, 1]", None)
    assert ans.query is q and ans.verdict is Verdict.COMBINED and orjson.loads(ans.output) == [0.0, 1.0]
    assert ans.extra == b'"confidence":1.0,"models_used":2,"models_asked":3'
    assert s.on_deadline(q) is None  # finished: nothing more at the deadline


def test_the_deadline_combines_what_arrived_and_stragglers_change_nothing():
    s = layer(app())
    q = Query(0, 1, 0, 10 * MS)
    a, b, _ = subs(s.on_submit(q))
    s.on_sub_answer(a, b"2", None)
    ans = s.on_deadline(q)
    assert ans.verdict is Verdict.COMBINED and ans.output == b"2.0" and b'"models_used":1' in ans.extra
    q.done = True  # the core answered it
    assert s.on_sub_answer(b, b"3", None) is None


def test_no_output_is_an_error_when_one_failed_else_the_default():
    s = layer(app())
    q1, q2 = Query(0, 1, 0, 10 * MS), Query(0, 2, 0, 10 * MS)
    for sub in subs(s.on_submit(q1)):
        ans = s.on_sub_answer(sub, None, b"boom")
    assert (ans.verdict, ans.output) == (Verdict.ERROR, b"boom")
    s.on_submit(q2)
    assert s.on_deadline(q2).verdict is Verdict.NO_OUTPUT


def test_below_the_confidence_threshold_the_verdict_is_the_default_with_the_confidence():
    s = layer(app(threshold=0.9, models=(0, 1)))
    q = Query(0, 1, 0, 10 * MS)
    a, b = subs(s.on_submit(q))
    s.on_sub_answer(a, b"1", None)
    ans = s.on_sub_answer(b, b"2", None)
    assert ans.verdict is Verdict.LOW_CONFIDENCE and ans.output == b""
    assert ans.extra.startswith(b'"confidence":0.5,')


def test_feedback_joins_a_recent_prediction_once_and_marks_the_state_changed():
    s = layer(app(models=(0, 1), eta=0.5))
    q = Query(0, 7, 0, 10 * MS, uid=3)
    a, b = subs(s.on_submit(q))
    s.on_sub_answer(a, b"1", None)
    s.on_sub_answer(b, b"2", None)
    assert not s.changed
    assert s.feedback(0, 7, 1) is None
    assert s.changed and 3 in s.contexts[0]
    assert s.contexts[0].app_state.weights()[0] > s.contexts[0].app_state.weights()[1]
    assert s.feedback(0, 7, 1) is not None  # joined already
    snap = s.snapshot()
    assert not s.changed and snap["ens"]["policy"] == "Exp4Policy"
    fresh = layer(app(models=(0, 1), eta=0.5))
    assert fresh.restore("ens", orjson.loads(orjson.dumps(snap["ens"])))
    assert fresh.contexts[0] == s.contexts[0]


def test_recent_predictions_are_bounded_and_a_removed_app_forgets():
    s = layer(app(models=(0,)))
    for i in range(RECENT_PREDICTIONS + 5):
        q = Query(0, i, 0, 10 * MS)
        s.on_submit(q)
        s.on_deadline(q)
    assert len(s.recent[0]) == RECENT_PREDICTIONS and 0 not in s.recent[0]
    s.reconfigure([None])
    assert s.contexts == {} and s.recent == {}
