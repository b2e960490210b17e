"""`SchedulerCore.submit_all` (the scheduler's per-submit-batch path) against `submit` called
once per query: the same actions, counts, queue order and load shedding, for every kind of app
(single model, cached, selection policy, no model, a model with no replicas, an unknown route),
with replicas busy, idle or down and latencies measured so that queries are shed."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.policies import make_policy
from schooner.engine.core.scheduler import (
    AppRoute,
    ModelSpec,
    Query,
    Respond,
    SchedulerCore,
    SendBatch,
)

MS = 1_000_000


def build() -> SchedulerCore:
    apps = [
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="plain"),
        AppRoute(0, b"-2", slo_ns=10 * MS, cache=True, name="cached"),
        AppRoute(1, b"-3", slo_ns=5 * MS, cache=False, name="other"),
        AppRoute(None, b"-4", cache=False, name="unlinked"),
        AppRoute(2, b"-5", cache=False, name="no-replicas"),
        AppRoute(0, b"-6", slo_ns=10 * MS, cache=False, name="ens", models=(0, 1),
                 policy=make_policy("exp4")),
    ]
    models = [ModelSpec(4, 2, batch_size=4, name="m0"), ModelSpec(8, 1, name="m1"), ModelSpec(4, 0, name="m2")]
    c = SchedulerCore(apps, models, rng=random.Random(7))
    for mi, ri in ((0, 0), (0, 1), (1, 0)):
        c.replica_up(mi, ri)
    return c


def warm(c: SchedulerCore, latency_ms: int, busy: bool, down: bool) -> int:
    """Give models 0 and 1 measured latencies (so load shedding applies), then leave replica 0
    of model 0 busy or idle and replica 1 down or up. Returns the clock."""
    now = 0
    for i in range(2):
        c.submit(Query(0, 900 + i, 0, now + 50 * MS, payload=b"w"), now)
        c.submit(Query(0, 950 + i, 2, now + 50 * MS, payload=b"w"), now)
    for a in c.poll(now):
        if isinstance(a, SendBatch):
            c.batch_done(a.model, a.replica, [b"0"] * len(a.queries), None, now + latency_ms * MS)
    now += latency_ms * MS
    c.poll(now)
    if down:
        c.replica_down(0, 1, now)
    if busy:
        c.submit(Query(0, 990, 0, now + 50 * MS, payload=b"w"), now)
        c.poll(now)
    return now


def describe(actions) -> list[tuple]:
    out = []
    for a in actions:
        if isinstance(a, Respond):
            out.append(("respond", a.query.query_id, a.status, a.default, a.output, a.explanation, a.extra))
        elif isinstance(a, SendBatch):
            out.append(("send", a.model, a.replica, [q.query_id for q in a.queries]))
        else:
            out.append((type(a).__name__, a.model, a.replica))
    return out


QUERY = st.tuples(
    st.integers(0, 6),  # app (6: no such route)
    st.integers(0, 12),  # deadline in ms after now
    st.sampled_from([0, 1, 128, 200]),  # priority (0: the default)
    st.integers(0, 3),  # input digest (the cached app repeats some)
)


@settings(max_examples=200, deadline=None)
@given(
    queries=st.lists(QUERY, max_size=40), latency_ms=st.integers(1, 6), busy=st.booleans(), down=st.booleans(),
    split=st.integers(0, 40),
)
def test_submit_all_does_what_submit_does_one_query_at_a_time(queries, latency_ms, busy, down, split):
    one, many = build(), build()
    now = warm(one, latency_ms, busy, down)
    assert warm(many, latency_ms, busy, down) == now

    def make(i, spec):
        app, deadline_ms, priority, digest = spec
        q = Query(0, i, app, now + deadline_ms * MS, payload=b"x", digest=bytes([digest]) * 16)
        if priority:
            q.priority = priority
        return q

    for i, spec in enumerate(queries):
        one.submit(make(i, spec), now)
    batch = [make(i, spec) for i, spec in enumerate(queries)]
    many.submit_all(batch[:split], now)  # two submit batches in one turn
    many.submit_all(batch[split:], now)

    assert describe(many.poll(now)) == describe(one.poll(now))
    for m1, m2 in zip(one.models, many.models, strict=True):
        assert len(m1.queue) == len(m2.queue)
        assert m1.oldest_ns == m2.oldest_ns
    later = now + 3 * MS
    assert describe(many.poll(later)) == describe(one.poll(later))
    assert render_scheduler_metrics(many.counters) == render_scheduler_metrics(one.counters)
