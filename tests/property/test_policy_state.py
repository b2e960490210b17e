"""Policy states survive JSON exactly, and observe is pure (hypothesis).

For every policy and any sequence of feedback (outputs as score vectors, scalars or None, any
labels, with or without the Selection recorded at select time): the state after the sequence,
passed through `json.dumps`/`json.loads` and `state_from_json`, equals the original, and the
policy's next decisions from it -- selections under the same seeded RNG, combined answers, the
state after one more feedback -- are identical. Along the way: observe never changes its input,
Exp3/Exp4 log weights stay finite with the largest exactly 0.0, and Exp3's probabilities are a
distribution bounded below by gamma / K.
"""

import json
import math
import random

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings

from schooner.engine.core.policies import (
    ContextStates,
    Exp3Policy,
    Selection,
    WeightsState,
    make_policy,
    state_from_json,
)

N_CLASSES = 3
PROPERTY = settings(max_examples=150, deadline=None)

policies = st.one_of(
    st.just(make_policy("single")),
    st.builds(
        Exp3Policy,
        eta=st.floats(0.01, 2.0),
        gamma=st.floats(0.01, 1.0),
        loss=st.sampled_from(["zero_one", "prob"]),
    ),
    st.builds(
        lambda eta, loss: make_policy("exp4", eta=eta, loss=loss),
        st.floats(0.01, 2.0),
        st.sampled_from(["zero_one", "prob"]),
    ),
    st.builds(lambda e: make_policy("epsilon_greedy", epsilon=e), st.floats(0.0, 1.0)),
    st.just(make_policy("ucb1")),
)

scores = st.lists(st.floats(-1.0, 2.0, allow_nan=False), min_size=N_CLASSES, max_size=N_CLASSES)
outputs = st.one_of(
    st.none(),
    st.floats(-1.0, 4.0, allow_nan=False),
    st.integers(-1, 4),
    scores.map(np.array),
)


@st.composite
def scenarios(draw):
    pol = draw(policies)
    n_models = draw(st.integers(1, 4))
    steps = draw(
        st.lists(
            st.tuples(
                st.dictionaries(st.integers(0, n_models - 1), outputs, max_size=n_models),
                st.integers(0, N_CLASSES - 1),  # label
                st.booleans(),  # whether to pass the Selection from select time
            ),
            max_size=25,
        )
    )
    return pol, n_models, steps, draw(st.integers(0, 2**32 - 1))


def snapshot(state):
    return json.dumps(state.to_json())


def run(pol, n_models, steps, seed):
    """Select then observe each step; an Exp3 observe with a Selection gets only the chosen model."""
    rng = random.Random(seed)
    state = pol.initial_state(n_models)
    for outs, label, with_selection in steps:
        sel = pol.select_with_probs(state, None, rng)
        assert all(0 <= m < n_models for m in sel.models)
        assert all(0.0 < p <= 1.0 for p in sel.probs)
        before = snapshot(state)
        if with_selection:
            outs = {m: outs.get(m) for m in sel.models}
            new = pol.observe(state, outs, label, sel)
        else:
            new = pol.observe(state, outs, label)
        assert snapshot(state) == before  # observe is pure
        state = new
        check_invariants(pol, state)
    return state


def check_invariants(pol, state):
    if isinstance(state, WeightsState):
        assert all(math.isfinite(x) and x <= 0.0 for x in state.log_weights)
        assert max(state.log_weights) == 0.0
    if isinstance(pol, Exp3Policy):
        probs = pol.probabilities(state)
        assert math.isclose(sum(probs), 1.0, rel_tol=1e-9)
        assert min(probs) >= pol.gamma / len(probs) * (1 - 1e-12)


def decisions(pol, state, seed, n_models):
    rng = random.Random(seed)
    sels = [pol.select_with_probs(state, None, rng) for _ in range(10)]
    probe = {i: np.array([0.1 * i, 0.5, 0.2]) for i in range(n_models)}
    combined = pol.combine(state, probe)
    out = combined.output
    after = pol.observe(state, probe, 1)
    return sels, (out.tolist() if isinstance(out, np.ndarray) else out), combined.confidence, after


@PROPERTY
@given(scenarios())
def test_state_round_trips_exactly_and_decides_identically(scenario):
    pol, n_models, steps, seed = scenario
    state = run(pol, n_models, steps, seed)
    text = json.dumps(state.to_json())
    back = state_from_json(json.loads(text))
    assert back == state
    assert type(back) is type(state)
    assert json.dumps(back.to_json()) == text
    assert decisions(pol, back, seed, n_models) == decisions(pol, state, seed, n_models)


@PROPERTY
@given(scenarios(), st.integers(0, 3))
def test_context_states_round_trip(scenario, max_contexts):
    pol, n_models, steps, seed = scenario
    rng = random.Random(seed)
    cs = ContextStates(max_contexts, pol.initial_state(n_models))
    for k, (outs, label, _) in enumerate(steps):
        uid = ("u", 0, "v", 1)[(k * 7 + seed) % 4]
        sel = pol.select_with_probs(cs.get(uid), None, rng)
        cs.observe(pol, uid, {m: outs.get(m) for m in sel.models}, label, sel)
        assert len(cs) <= max_contexts
    back = ContextStates.from_json(json.loads(json.dumps(cs.to_json())))
    assert back == cs
    for uid in ("u", 0, "v", 1, "stranger"):
        assert back.get(uid) == cs.get(uid)


def test_selection_round_trips():
    sel = Selection((1,), (1 / 3,))
    assert Selection.from_json(json.loads(json.dumps(sel.to_json()))) == sel
