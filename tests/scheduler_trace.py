"""Scripted and seeded-random event traces through `SchedulerCore`, written out as text.

A trace records every action the core returns (batches sent, answers with their outputs,
explanations and extra members, retired replicas), readiness, feedback results, selection
snapshots, the Triton statistics and the Prometheus text, at checkpoints. The text of a trace
run on the core as it was before the selection layer and the plain statistics moved out
(commit c18aba3) is kept under `tests/unit/golden/`; `tests/unit/test_scheduler_golden.py`
checks that today's core writes the same bytes. Changed on purpose since: `scheduler_serving.txt`
was rewritten when replicas started taking over the AIMD budget of a retired replica or a
previous version (`SchedulerCore._take_over`), which changes batch sizes after a scale-down. `render` is how a trace turns the core's
counts into Prometheus text, so the trace itself does not depend on where that happens.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

from schooner.engine.core.aimd import AimdConfig
from schooner.engine.core.policies import make_policy
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
Render = Callable[[SchedulerCore], str]


class Trace:
    """Drives one core and writes what it does; `inflight` mirrors the batches it sent."""

    def __init__(self, core: SchedulerCore, render: Render) -> None:
        self.core = core
        self.render = render
        self.lines: list[str] = []
        self.inflight: dict[tuple[int, int], list[Query]] = {}
        self.answered: list[int] = []

    def poll(self, now: int) -> None:
        for a in self.core.poll(now):
            if isinstance(a, SendBatch):
                self.inflight[(a.model, a.replica)] = a.queries
                self.lines.append(f"send m{a.model} r{a.replica} {[q.query_id for q in a.queries]}")
            elif isinstance(a, Respond):
                q = a.query
                self.answered.append(q.query_id)
                self.lines.append(
                    f"answer f{q.frontend} q{q.query_id} app{q.app} {a.status} {int(a.default)} "
                    f"{a.output!r} {a.explanation!r} {a.extra!r}"
                )
            elif isinstance(a, RetiredReplica):
                self.lines.append(f"retired m{a.model} r{a.replica}")
            else:
                raise AssertionError(f"unknown action {a!r}")

    def done(self, model: int, replica: int, outputs: Callable[[int], list[bytes] | None], error=None, now=None) -> None:
        batch = self.inflight.pop((model, replica), [])
        self.core.batch_done(model, replica, outputs(len(batch)), error, now)

    def checkpoint(self, label: str, now: int) -> None:
        core = self.core
        self.lines.append(f"-- {label} @ {now}")
        self.lines.append(f"readiness {core.readiness(now)} stall {core.next_stall_check(now)}")
        self.lines.append(f"wakeup {core.next_wakeup(now)} inflight {core.inflight_count()}")
        for mi, m in enumerate(core.models):
            self.lines.append(f"stats m{mi} {orjson.dumps(m.stats.to_json(), option=orjson.OPT_NON_STR_KEYS).decode()}")
        self.lines.append(self.render(core).rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def one_hot(k: int, n: int = 4) -> bytes:
    v = [0.0] * n
    v[k % n] = 1.0
    return orjson.dumps(v)


# -- scripted: the model abstraction layer --------------------------------------------------


def rules_trace(render: Render, snapshot: Callable[[SchedulerCore], dict]) -> str:
    """Cache hits and joins, shedding, every default reason, errors, AIMD, replicas dying,
    growing and retiring, a new version and a new app while serving, a stalled replica."""
    apps = [
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=True, name="a"),
        AppRoute(None, b'"none"', slo_ns=10 * MS, name="unlinked"),
        AppRoute(1, b"0", slo_ns=20 * MS, cache=False, name="b"),
        AppRoute(2, b"0", slo_ns=20 * MS, cache=False, name=""),  # unnamed: labelled by index
    ]
    models = [
        ModelSpec(16, 2, version="1", name="m", aimd=AimdConfig(additive_step=3)),
        ModelSpec(4, 1, version="7", batch_size=4, batch_wait_ns=2 * MS, name="fixed"),
        ModelSpec(4, 0, version="1", name="zero"),
    ]
    core = SchedulerCore(apps, models, cache_nbytes=2048, stall_ns=30 * MS)
    t = Trace(core, render)
    t.checkpoint("start", 0)
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    core.replica_up(1, 0)
    qid = 0

    def sub(app, now, slo=10 * MS, digest=None, frontend=0):
        nonlocal qid
        qid += 1
        core.submit(Query(frontend, qid, app, now + slo, payload=b"x", digest=digest), now)

    for i in range(6):
        sub(0, 0, digest=b"d%d" % (i % 3))
    sub(1, 0)
    sub(3, 0)
    for _ in range(3):
        sub(2, 0, slo=20 * MS)
    t.poll(0)
    t.done(0, 0, lambda n: [b"%d" % i for i in range(n)], now=1 * MS)
    t.done(0, 1, lambda n: [b"1.5"] * n, now=2 * MS)
    t.poll(2 * MS)
    t.poll(3 * MS)  # the delayed batch of the fixed model is due at 2 ms
    t.done(1, 0, lambda n: [b"[1,2]"] * n, now=5 * MS)
    for i in range(4):
        sub(0, 6 * MS, digest=b"d%d" % i)  # hits and a miss
    t.poll(6 * MS)
    t.checkpoint("cache", 6 * MS)
    now = 7 * MS
    for _ in range(40):  # grow AIMD on replica 0, then a miss
        sub(0, now, slo=500 * MS)
    for _ in range(5):
        t.poll(now)
        now += 1 * MS
        for r in (0, 1):
            t.done(0, r, lambda n: [b"0"] * n, now=now)
    t.poll(now)
    for _ in range(30):
        sub(0, now, slo=500 * MS)
    t.poll(now)
    now += 1 * MS
    t.done(0, 0, lambda n: [b"0"] * n, now=now + 30 * MS)  # slow: cut
    t.done(0, 1, lambda n: None, error="boom", now=now)  # a model error
    t.poll(now + 30 * MS)
    now += 600 * MS
    t.poll(now)  # the rest expired
    t.checkpoint("aimd", now)
    for _ in range(6):
        sub(0, now, slo=8 * MS)
    t.poll(now)
    for _ in range(3):
        sub(0, now, slo=8 * MS)  # shed: the queue ahead cannot finish in time
    t.poll(now)
    t.done(0, 0, lambda n: [b"1"] * (n + 1), now=now + 1 * MS)  # wrong count: an error
    core.replica_down(0, 1)  # its queries go back once
    t.inflight.pop((0, 1), None)
    t.poll(now + 1 * MS)
    core.replica_down(0, 0)
    t.inflight.pop((0, 0), None)
    core.replica_up(0, 0)
    t.poll(now + 2 * MS)
    core.replica_down(0, 0)  # second death: answered with 500
    t.inflight.pop((0, 0), None)
    t.poll(now + 2 * MS)
    now += 40 * MS
    t.poll(now)  # everything left expires
    t.checkpoint("failures", now)
    # a new version, a new app and a replica more while serving
    apps2 = [apps[0], None, apps[2], apps[3],
             AppRoute(3, b"-2", slo_ns=5 * MS, cache=True, name="new")]
    models2 = [models[0], ModelSpec(4, 2, version="7", batch_size=4, batch_wait_ns=2 * MS, name="fixed"), models[2],
               ModelSpec(8, 1, version="2", name="m")]
    core.reconfigure(apps2, models2)
    core.replica_up(3, 0)
    core.replica_up(1, 1)
    core.replica_up(1, 2)  # up before its reconfiguration
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    for i in range(5):
        sub(4, now, slo=5 * MS, digest=b"n%d" % i)
        sub(2, now, slo=20 * MS)
    t.poll(now)
    t.poll(now + 2 * MS)
    assert core.retire_replica(1, 2) is True
    busy = [k for k in t.inflight if k[0] == 1]
    for k in busy:
        core.retire_replica(*k)
    for (mi, ri) in list(t.inflight):
        t.done(mi, ri, lambda n: [b"3"] * n, now=now + 3 * MS)
    t.poll(now + 3 * MS)
    t.checkpoint("reconfigured", now + 3 * MS)
    for _ in range(3):
        sub(0, now + 4 * MS, slo=100 * MS)
    t.poll(now + 4 * MS)
    t.checkpoint("stalled", now + 40 * MS)  # replica 0 of m holds its batch past the stall bound
    t.lines.append(f"snapshot {orjson.dumps(snapshot(core)).decode()}")
    return t.text()


# -- scripted: the selection layer ----------------------------------------------------------


def selection_core() -> SchedulerCore:
    apps = [
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="ens", models=(0, 1, 2),
                 policy=make_policy("exp4", eta=0.5), confidence_threshold=0.6, max_contexts=3),
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=True, name="pick", models=(0, 1, 2),
                 policy=make_policy("exp3", eta=0.3, gamma=0.2)),
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="greedy", models=(1, 3),
                 policy=make_policy("epsilon_greedy", epsilon=0.3)),
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="ucb", models=(0, 2), policy=make_policy("ucb1")),
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="plain"),
        AppRoute(0, b"-1", slo_ns=10 * MS, cache=False, name="dead", models=(3,), policy=make_policy("exp4")),
    ]
    models = [ModelSpec(8, 1, batch_size=8, name=f"s{i}") for i in range(3)] + [ModelSpec(8, 0, name="s3")]
    core = SchedulerCore(apps, models, cache_nbytes=1 << 16, rng=random.Random(5))
    for i in range(3):
        core.replica_up(i, 0)
    return core


def _output(rng: random.Random, n: int) -> list[bytes] | None:
    kind = rng.random()
    if kind < 0.1:
        return None
    out = []
    for _ in range(n):
        x = rng.random()
        if x < 0.6:
            out.append(one_hot(rng.randrange(4)))
        elif x < 0.75:
            out.append(b"%d" % rng.randrange(4))
        elif x < 0.85:
            out.append(b"2.5")
        elif x < 0.9:
            out.append(b"not json")
        elif x < 0.95:
            out.append(b"[0.25, 0.25, 0.5, Infinity]")
        else:
            out.append(b'"text"')
    return out


def random_trace(core: SchedulerCore, render: Render, snapshot, seed: int, steps: int) -> str:
    """A seeded mix of submits (uids, digests, priorities), polls, answers of every kind,
    replica deaths and returns, and feedback, with checkpoints along the way."""
    rng = random.Random(seed)
    t = Trace(core, render)
    now = 0
    qid = 0
    napps = len(core.apps)
    nmodels = len(core.models)
    for step in range(steps):
        x = rng.random()
        if x < 0.45:
            qid += 1
            app = rng.randrange(napps)
            digest = b"k%d" % rng.randrange(12) if rng.random() < 0.5 else None
            uid = rng.choice([-1, -1, 1, 2, 3, 4, 5])
            q = Query(rng.randrange(2), qid, app, now + rng.choice([3, 10, 40]) * MS, payload=b"x",
                      digest=digest, uid=uid, priority=rng.choice([128, 128, 1]))
            core.submit(q, now)
        elif x < 0.65:
            t.poll(now)
        elif x < 0.8 and t.inflight:
            mi, ri = rng.choice(sorted(t.inflight))
            t.done(mi, ri, lambda n: _output(rng, n), error=rng.choice([None, "bad"]),
                   now=now if rng.random() < 0.95 else None)
        elif x < 0.83:
            mi = rng.randrange(nmodels)
            reps = core.models[mi].replicas
            if reps:
                ri = rng.randrange(len(reps))
                core.replica_down(mi, ri)
                t.inflight.pop((mi, ri), None)
                t.lines.append(f"down m{mi} r{ri}")
        elif x < 0.86:
            mi = rng.randrange(nmodels)
            if core.models[mi].spec.replicas:
                ri = rng.randrange(core.models[mi].spec.replicas)
                if (mi, ri) not in t.inflight:
                    core.replica_up(mi, ri)
                    t.lines.append(f"up m{mi} r{ri}")
        elif x < 0.93 and t.answered:
            target = rng.choice(t.answered[-50:])
            app = rng.randrange(napps)
            t.lines.append(f"feedback app{app} q{target} -> {core.feedback(app, target, rng.randrange(4))!r}")
        else:
            now += rng.choice([100_000, 1 * MS, 4 * MS])
        if step % 1000 == 999:
            t.checkpoint(f"step {step}", now)
    now += 100 * MS
    t.poll(now)
    t.checkpoint("end", now)
    t.lines.append(f"snapshot {orjson.dumps(snapshot(core)).decode()}")
    return t.text()


def selection_trace(render: Render, snapshot) -> str:
    return random_trace(selection_core(), render, snapshot, seed=11, steps=3000)


def serving_trace(render: Render, snapshot) -> str:
    apps = [AppRoute(0, b"-1", slo_ns=10 * MS, cache=True, name="c"),
            AppRoute(1, b"0", slo_ns=30 * MS, cache=False, name="u")]
    models = [ModelSpec(16, 2, name="p"), ModelSpec(8, 1, batch_size=4, batch_wait_ns=1 * MS, name="q", version="3")]
    core = SchedulerCore(apps, models, cache_nbytes=4096, rng=random.Random(3), stall_ns=20 * MS)
    core.replica_up(0, 0)
    core.replica_up(0, 1)
    core.replica_up(1, 0)
    return random_trace(core, render, snapshot, seed=23, steps=3000)
