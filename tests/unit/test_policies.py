"""Selection policies: loss, Exp3/Exp4 update rules, convergence, confidence, ContextStates."""

import json
import math
import random

import numpy as np
import pytest

from schooner.engine.core.policies import (
    POLICIES,
    Combined,
    ContextStates,
    EpsilonGreedyPolicy,
    Exp3Policy,
    Exp4Policy,
    RewardsState,
    Selection,
    SinglePolicy,
    Ucb1Policy,
    WeightsState,
    make_policy,
    output_loss,
    predicted_label,
    state_from_json,
)


def onehot(label, n=10):
    v = np.zeros(n)
    v[label] = 1.0
    return v


# -- outputs and loss -------------------------------------------------------------------------


def test_predicted_label_of_vectors_and_scalars():
    assert predicted_label(np.array([0.1, 0.7, 0.2])) == 1
    assert predicted_label(np.array([0.5, 0.5])) == 0  # first maximum
    assert predicted_label(2.4) == 2
    assert predicted_label(2.5) == 3  # halves up, not to even
    assert predicted_label(-2.5) == -2
    assert predicted_label(np.float32(0.6)) == 1
    assert predicted_label(np.array(3.2)) == 3  # a 0-d array is a scalar
    assert predicted_label(4) == 4


def test_bad_outputs_are_rejected():
    with pytest.raises(ValueError):
        predicted_label(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        predicted_label(np.zeros(0))
    with pytest.raises(TypeError):
        predicted_label("3")
    with pytest.raises(ValueError):
        predicted_label(float("nan"))


def test_zero_one_and_prob_loss():
    v = np.array([0.2, 0.7, 0.1])
    assert output_loss(v, 1) == 0.0
    assert output_loss(v, 0) == 1.0
    assert output_loss(1.2, 1) == 0.0
    assert output_loss(1.2, 1.0) == 0.0
    assert output_loss(1.6, 1) == 1.0
    assert output_loss(v, 0, "prob") == pytest.approx(0.8)
    assert output_loss(v, 1, "prob") == pytest.approx(0.3)
    assert output_loss(v, 5, "prob") == 1.0  # label outside the classes
    assert output_loss(np.array([-1.0, 2.0]), 1, "prob") == 0.0  # clipped to [0, 1]
    assert output_loss(0.9, 1, "prob") == 0.0  # scalars fall back to 0/1
    with pytest.raises(ValueError):
        output_loss(v, 1, "hinge")


# -- Exp3 -------------------------------------------------------------------------------------


def test_exp3_weights_follow_the_update_rule_on_a_scripted_sequence():
    eta, gamma, k = 0.5, 0.3, 3
    pol = Exp3Policy(eta=eta, gamma=gamma)
    s = pol.initial_state(k)
    assert pol.probabilities(s) == pytest.approx([1 / 3] * 3, rel=1e-15)

    # 1. Model 0 chosen with p = 1/3 (recorded at selection), wrong (predicts 2, label 1).
    s = pol.observe(s, {0: np.array([0.1, 0.2, 0.7])}, 1, Selection((0,), (1 / 3,)))
    w = [math.exp(-eta * 1 / (1 / 3)), 1.0, 1.0]  # w0 = exp(-1.5)
    assert s.weights() == pytest.approx([x / sum(w) for x in w], rel=1e-12)

    # 2. Model 2 right (1.4 rounds to 1): loss 0, weights unchanged.
    s = pol.observe(s, {2: 1.4}, 1)
    assert s.weights() == pytest.approx([x / sum(w) for x in w], rel=1e-12)

    # 3. Model 1 wrong, no Selection: p1 comes from the current state.
    p1 = (1 - gamma) * w[1] / sum(w) + gamma / k
    assert pol.probabilities(s)[1] == pytest.approx(p1, rel=1e-12)
    s = pol.observe(s, {1: 0.6}, 0)
    w[1] *= math.exp(-eta * 1 / p1)
    assert s.weights() == pytest.approx([x / sum(w) for x in w], rel=1e-12)

    # 4. Model 2 wrong, selected earlier with p = 0.25: the recorded p is used, not today's.
    s = pol.observe(s, {2: np.array([1.0, 0.0, 0.0])}, 2, Selection((2,), (0.25,)))
    w[2] *= math.exp(-eta * 1 / 0.25)
    expected = [x / sum(w) for x in w]
    assert s.weights() == pytest.approx(expected, rel=1e-12)
    assert pol.probabilities(s) == pytest.approx(
        [(1 - gamma) * x + gamma / k for x in expected], rel=1e-12
    )
    assert max(s.log_weights) == 0.0  # normalised in log space
    assert s.updates == 4


def test_exp3_missing_output_teaches_nothing_and_unselected_model_is_refused():
    pol = Exp3Policy()
    s = pol.initial_state(2)
    assert pol.observe(s, {0: None}, 1) is s
    assert pol.observe(s, {}, 1) is s
    with pytest.raises(ValueError):
        pol.observe(s, {1: 0.0}, 1, Selection((0,), (0.5,)))
    with pytest.raises(ValueError):
        pol.observe(s, {2: 0.0}, 1)  # no such model


def test_exp3_selection_records_the_probability_and_follows_the_distribution():
    pol = Exp3Policy(gamma=0.2)
    s = WeightsState((0.0, math.log(0.25), math.log(0.5)))
    probs = pol.probabilities(s)
    assert sum(probs) == pytest.approx(1.0)
    rng = random.Random(7)
    counts = [0, 0, 0]
    n = 3000
    for _ in range(n):
        sel = pol.select_with_probs(s, None, rng)
        (i,) = sel.models
        assert sel.probs == (probs[i],)
        counts[i] += 1
    for c, p in zip(counts, probs, strict=True):
        assert abs(c / n - p) < 0.03
    # select draws exactly like select_with_probs
    assert (
        pol.select(s, None, random.Random(3))
        == pol.select_with_probs(s, None, random.Random(3)).models
    )


def test_exp3_weights_stay_finite_over_long_runs():
    pol = Exp3Policy(eta=1.0, gamma=0.01)
    s = pol.initial_state(2)
    for _ in range(2000):
        s = pol.observe(s, {1: 0.0}, 1, Selection((1,), (0.005,)))  # model 1 always wrong
    assert all(math.isfinite(x) for x in s.log_weights)
    assert s.log_weights[0] == 0.0
    assert pol.probabilities(s)[1] == pytest.approx(0.005)


def test_exp3_learns_to_pick_the_good_arm():
    pol = Exp3Policy(eta=0.1, gamma=0.1)
    rng = random.Random(1234)
    world = random.Random(99)
    accuracy = (0.9, 0.2)  # arm 0 good, arm 1 bad
    s = pol.initial_state(2)
    late = []
    for t in range(500):
        label = world.randrange(10)
        sel = pol.select_with_probs(s, None, rng)
        (i,) = sel.models
        out = float(label) if world.random() < accuracy[i] else float((label + 1) % 10)
        s = pol.observe(s, {i: out}, label, sel)
        if t >= 300:
            late.append(i)
    assert late.count(0) / len(late) > 0.85
    assert pol.probabilities(s)[0] > 0.9


# -- Exp4 -------------------------------------------------------------------------------------


def test_exp4_asks_every_model():
    pol = Exp4Policy()
    s = pol.initial_state(4)
    assert pol.select(s, None, random.Random(0)) == (0, 1, 2, 3)
    assert pol.select_with_probs(s, None, random.Random(0)).probs == (1.0,) * 4


def test_exp4_update_rule():
    eta = 0.3
    pol = Exp4Policy(eta=eta)
    s = pol.initial_state(3)
    s = pol.observe(s, {0: 1.0, 1: 2.0, 2: None}, 1)  # 0 right, 1 wrong, 2 missing
    w = [1.0, math.exp(-eta), 1.0]
    assert s.weights() == pytest.approx([x / sum(w) for x in w], rel=1e-12)
    s = pol.observe(s, {0: 0.0, 1: 0.0, 2: 0.0}, 1)  # all wrong: ratios unchanged
    assert s.weights() == pytest.approx([x / sum(w) for x in w], rel=1e-12)


def test_exp4_converges_to_the_perfect_model():
    pol = Exp4Policy(eta=0.1)
    world = random.Random(5)
    s = pol.initial_state(2)
    for _ in range(300):
        label = world.randrange(10)
        outputs = {0: onehot(label), 1: onehot(world.randrange(10))}
        s = pol.observe(s, outputs, label)
    assert s.weights()[0] > 0.95
    # and the ensemble now answers with the perfect model, even when outvoted 1 to 1
    c = pol.combine(s, {0: onehot(3), 1: onehot(7)})
    assert predicted_label(c.output) == 3
    assert c.confidence > 0.95
    assert c.contributors == 2


# -- confidence ---------------------------------------------------------------------------------


def weighted_state():
    return WeightsState((0.0, math.log(0.5), math.log(1 / 6)))  # normalised 0.6, 0.3, 0.1


def test_confidence_all_agree_is_exactly_one():
    pol = Exp4Policy()
    c = pol.combine(weighted_state(), {0: 2.2, 1: 1.9, 2: 2.0})
    assert c == Combined(2.0, 1.0, 3)
    c = pol.combine(weighted_state(), {0: onehot(4), 1: onehot(4), 2: onehot(4)})
    assert c.confidence == 1.0
    assert c.contributors == 3
    np.testing.assert_allclose(c.output, onehot(4))


def test_confidence_of_a_split_is_the_weight_of_the_agreeing_side():
    pol = Exp4Policy()
    c = pol.combine(weighted_state(), {0: 1.0, 1: 2.0, 2: 2.0})  # 0.6 vs 0.3 + 0.1
    assert c.output == 1.0
    assert c.confidence == pytest.approx(0.6)
    assert c.contributors == 3
    c = pol.combine(weighted_state(), {0: 1.0, 1: 2.0, 2: 3.0})
    assert (c.output, c.contributors) == (1.0, 3)
    assert c.confidence == pytest.approx(0.6)


def test_soft_vote_on_score_vectors():
    pol = Exp4Policy()
    s = weighted_state()
    outs = {0: np.array([0.4, 0.6]), 1: np.array([0.9, 0.1]), 2: np.array([0.9, 0.1])}
    c = pol.combine(s, outs)
    avg = 0.6 * outs[0] + 0.3 * outs[1] + 0.1 * outs[2]  # (0.63, 0.37): label 0
    np.testing.assert_allclose(c.output, avg)
    assert predicted_label(c.output) == 0
    assert c.confidence == pytest.approx(0.4)  # models 1 and 2 agree with the average
    assert c.contributors == 3


def test_mixed_outputs_fall_back_to_a_hard_vote():
    pol = Exp4Policy()
    c = pol.combine(
        weighted_state(), {0: np.array([0.0, 1.0]), 1: 0.0, 2: np.array([1.0, 0.0, 0.0])}
    )
    assert c.output == 1.0
    assert c.confidence == pytest.approx(0.6)


def test_missing_outputs_renormalise_and_are_not_counted():
    pol = Exp4Policy()
    s = weighted_state()
    c = pol.combine(s, {0: None, 1: 2.0, 2: 2.0})
    assert c == Combined(2.0, 1.0, 2)
    c = pol.combine(s, {0: 1.0, 1: 2.0, 2: None})  # 0.6 / (0.6 + 0.3)
    assert (c.output, c.contributors) == (1.0, 2)
    assert c.confidence == pytest.approx(2 / 3)
    c = pol.combine(s, {0: None, 1: 1.0})  # model 2 absent from the dict altogether
    assert c == Combined(1.0, 1.0, 1)
    assert pol.combine(s, {0: None, 1: None, 2: None}) == Combined(None, 0.0, 0)
    assert pol.combine(s, {}) == Combined(None, 0.0, 0)


def test_hard_vote_tie_goes_to_the_smallest_label():
    pol = Exp4Policy()
    c = pol.combine(pol.initial_state(2), {0: 5.0, 1: 3.0})
    assert c.output == 3.0
    assert c.confidence == 0.5


def test_single_model_policies_combine_with_full_confidence():
    v = np.array([0.3, 0.7])
    for pol in (SinglePolicy(), Exp3Policy(), EpsilonGreedyPolicy(), Ucb1Policy()):
        s = pol.initial_state(3)
        i = 0 if isinstance(pol, SinglePolicy) else 2
        c = pol.combine(s, {i: v})
        assert c.output is v and c.confidence == 1.0 and c.contributors == 1
        assert pol.combine(s, {i: None}) == Combined(None, 0.0, 0)


# -- single, epsilon-greedy, UCB1 ---------------------------------------------------------------


def test_single_policy_always_asks_model_0_and_learns_nothing():
    pol = SinglePolicy()
    s = pol.initial_state(3)
    rng = random.Random(0)
    assert all(pol.select(s, None, rng) == (0,) for _ in range(10))
    assert pol.observe(s, {0: 1.0}, 2) == s


def test_rewards_are_counted():
    pol = EpsilonGreedyPolicy()
    s = pol.initial_state(3)
    s2 = pol.observe(s, {0: 1.0, 1: 2.0, 2: None}, 1)
    assert s == RewardsState((0, 0, 0), (0.0, 0.0, 0.0))  # not mutated
    assert s2 == RewardsState((1, 1, 0), (1.0, 0.0, 0.0))
    s3 = EpsilonGreedyPolicy(loss="prob").observe(s2, {2: np.array([0.25, 0.75])}, 1)
    assert s3 == RewardsState((1, 1, 1), (1.0, 0.0, 0.75))


def test_epsilon_greedy_exploits_and_explores():
    s = RewardsState((10, 10, 10), (2.0, 9.0, 5.0))
    rng = random.Random(11)
    greedy = EpsilonGreedyPolicy(epsilon=0.0)
    assert all(greedy.select(s, None, rng) == (1,) for _ in range(20))
    explorer = EpsilonGreedyPolicy(epsilon=1.0)
    seen = {explorer.select(s, None, rng)[0] for _ in range(100)}
    assert seen == {0, 1, 2}
    pol = EpsilonGreedyPolicy(epsilon=0.3)
    sel = pol.select_with_probs(s, None, random.Random(0))
    assert sel.probs[0] == pytest.approx(pol.probabilities(s)[sel.models[0]])
    assert pol.probabilities(s) == pytest.approx((0.1, 0.8, 0.1))
    # untried models count as mean reward 1.0, so each gets a turn
    assert greedy.select(RewardsState((3, 0, 3), (3.0, 0.0, 3.0)), None, rng) == (0,)
    assert greedy.select(RewardsState((3, 0, 3), (2.0, 0.0, 3.0)), None, rng) == (1,)


def test_epsilon_greedy_converges_to_the_good_arm():
    pol = EpsilonGreedyPolicy(epsilon=0.1)
    rng, world = random.Random(2), random.Random(3)
    accuracy = (0.3, 0.9, 0.5)
    s = pol.initial_state(3)
    late = []
    for t in range(400):
        label = world.randrange(5)
        (i,) = pol.select(s, None, rng)
        out = float(label) if world.random() < accuracy[i] else float(label + 1)
        s = pol.observe(s, {i: out}, label)
        if t >= 200:
            late.append(i)
    assert late.count(1) / len(late) > 0.85


def test_ucb1_tries_each_model_then_follows_the_bound():
    pol = Ucb1Policy()
    s = pol.initial_state(3)
    rng = random.Random(0)
    order = []
    for label in (1, 1, 1):
        (i,) = pol.select(s, None, rng)
        order.append(i)
        s = pol.observe(s, {i: 1.0 if i == 2 else 0.0}, label)
    assert order == [0, 1, 2]
    assert pol.select(s, None, rng) == (2,)
    ub = pol.upper_bounds(s)
    assert ub[2] == pytest.approx(1.0 + math.sqrt(2 * math.log(3)))
    assert ub[0] == pytest.approx(math.sqrt(2 * math.log(3)))
    assert rng.random() == random.Random(0).random()  # UCB1 never draws


def test_ucb1_converges_to_the_good_arm():
    pol = Ucb1Policy()
    world = random.Random(8)
    accuracy = (0.2, 0.9)
    s = pol.initial_state(2)
    picks = []
    for _ in range(400):
        label = world.randrange(5)
        (i,) = pol.select(s, None, world)
        out = float(label) if world.random() < accuracy[i] else float(label + 1)
        s = pol.observe(s, {i: out}, label)
        picks.append(i)
    assert picks[200:].count(1) / 200 > 0.9


# -- construction -------------------------------------------------------------------------------


def test_make_policy_defaults_and_errors():
    assert set(POLICIES) == {"single", "exp3", "exp4", "epsilon_greedy", "ucb1"}
    assert make_policy("exp3") == Exp3Policy(eta=0.1, gamma=0.1)
    assert make_policy("exp4", eta=0.5) == Exp4Policy(eta=0.5)
    assert isinstance(make_policy("single"), SinglePolicy)
    assert make_policy("epsilon_greedy", epsilon=0.2).epsilon == 0.2
    assert isinstance(make_policy("ucb1"), Ucb1Policy)
    with pytest.raises(ValueError, match="single, exp3, exp4, epsilon_greedy, ucb1"):
        make_policy("thompson")
    with pytest.raises(ValueError, match="allowed: eta, gamma, loss"):
        make_policy("exp3", epsilon=0.1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Exp3Policy(eta=0.0),
        lambda: Exp3Policy(gamma=0.0),
        lambda: Exp3Policy(gamma=1.5),
        lambda: Exp4Policy(eta=-1.0),
        lambda: Exp4Policy(eta=math.inf),
        lambda: EpsilonGreedyPolicy(epsilon=1.1),
        lambda: Ucb1Policy(loss="hinge"),
        lambda: SinglePolicy().initial_state(0),
    ],
)
def test_bad_hyperparameters_are_refused(build):
    with pytest.raises(ValueError):
        build()


def test_states_and_selections_round_trip_through_json():
    for name in POLICIES:
        pol = make_policy(name)
        s = pol.initial_state(3)
        s = pol.observe(s, {0: 0.1, 1: 1.3, 2: np.array([0.2, 0.8])}, 1)
        d = json.loads(json.dumps(s.to_json()))
        assert state_from_json(d) == s
        assert type(s).from_json(d) == s
    sel = Selection((2,), (0.1 + 0.2,))
    assert Selection.from_json(json.loads(json.dumps(sel.to_json()))) == sel
    with pytest.raises(ValueError):
        state_from_json({"kind": "nope"})
    with pytest.raises(ValueError):
        WeightsState.from_json(RewardsState((0,), (0.0,)).to_json())


# -- ContextStates ------------------------------------------------------------------------------


def test_context_states_are_independent_per_uid():
    pol = Exp4Policy(eta=1.0)
    app = pol.initial_state(2)
    cs = ContextStates(8, app)
    a = cs.observe(pol, "alice", {0: 1.0, 1: 0.0}, 1)  # alice: model 0 right
    b = cs.observe(pol, "bob", {0: 1.0, 1: 0.0}, 0)  # bob: model 1 right
    assert a.weights()[0] > 0.5 > b.weights()[0]
    assert cs.get("alice") == a and cs.get("bob") == b
    assert cs.app_state is app  # per-user feedback leaves the app-wide state alone
    assert app == pol.initial_state(2)
    assert len(cs) == 2


def test_unknown_uid_falls_back_to_the_app_wide_state():
    pol = Exp4Policy(eta=1.0)
    app = pol.observe(pol.initial_state(2), {0: 1.0, 1: 0.0}, 1)
    cs = ContextStates(4, app)
    assert cs.get("carol") == app
    assert "carol" not in cs and len(cs) == 0  # looking up does not insert
    s = cs.observe(pol, "carol", {0: 0.0, 1: 1.0}, 1)  # carol starts from the app-wide state
    assert s == pol.observe(app, {0: 0.0, 1: 1.0}, 1)
    assert cs.app_state == app  # and her feedback does not reach it
    assert cs.get("dave") == app


def test_lru_bound_is_respected():
    pol = EpsilonGreedyPolicy()
    cs = ContextStates(2, pol.initial_state(2))
    assert cs.put("a", RewardsState((1, 0), (1.0, 0.0))) == []
    assert cs.put("b", RewardsState((2, 0), (1.0, 0.0))) == []
    cs.get("a")  # a is now the most recently used
    assert cs.put("c", RewardsState((3, 0), (1.0, 0.0))) == ["b"]
    assert list(cs.uids()) == ["a", "c"]
    assert "b" not in cs and cs.get("b") == cs.app_state
    for i in range(10):
        cs.observe(pol, i, {0: 1.0}, 1)
        assert len(cs) <= 2
    assert list(cs.uids()) == [8, 9]
    none = ContextStates(0, pol.initial_state(2))
    assert none.put("x", RewardsState((1, 0), (1.0, 0.0))) == ["x"]
    assert len(none) == 0
    with pytest.raises(ValueError):
        ContextStates(-1, pol.initial_state(2))


def test_context_states_round_trip_through_json():
    pol = Exp3Policy()
    cs = ContextStates(3, pol.initial_state(2))
    rng = random.Random(4)
    for uid in ("u1", 7, "u1", "u3", 7):
        sel = pol.select_with_probs(cs.get(uid), None, rng)
        cs.observe(pol, uid, {sel.models[0]: 0.3}, 1, sel)
    back = ContextStates.from_json(json.loads(json.dumps(cs.to_json())))
    assert back == cs
    assert list(back.uids()) == ["u1", "u3", 7]
