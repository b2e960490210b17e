"""Model selection policies: Clipper's model selection layer, as pure functions over plain data.

Owns: the rules that decide which of an app's linked models to ask for a query (`select`), how
their outputs are merged into one answer with a confidence (`combine`), and how feedback (a true
label) updates what the policy has learned (`observe`). No clock, no I/O, no global randomness:
a `random.Random` is passed in to every decision that draws, so a seeded run replays exactly.
The scheduler process is the intended caller; the frontend only forwards feedback.

State and policy are separate. A policy object (`SinglePolicy`, `Exp3Policy`, `Exp4Policy`,
`EpsilonGreedyPolicy`, `Ucb1Policy`) is a frozen dataclass holding hyperparameters only. What
it learns lives in a frozen state (`SingleState`, `WeightsState`, `RewardsState`) that
`initial_state(n_models)` creates and `observe` replaces: `observe` returns a new state and
never mutates its argument, so one state may be shared, snapshotted or rolled back freely.
Every state serialises with `to_json() -> dict` (a "kind" tag plus lists of ints and floats)
and `state_from_json(d)` / `<State>.from_json(d)` rebuild an equal state; Python floats go
through `json.dumps` by their shortest repr, so the round trip is exact and a policy's later
decisions under the same seeded RNG are identical.

Outputs and loss. A model's output for one query is one of:

* a class-score vector, a 1-D `np.ndarray` of shape (n_classes,): its predicted label is
  `int(argmax)` (the first maximum on ties);
* a scalar (a Python or numpy number, or a 0-d array): a regression value or a label value;
  its predicted label is the value rounded to the nearest integer, halves rounded up
  (`floor(value + 0.5)`, so 2.5 -> 3 and -2.5 -> -2; not Python's round-half-to-even);
* `None`: the model gave no output in time (it missed the SLO deadline, or failed). `None`
  contributes nothing to `combine` and teaches nothing to `observe`: missing a deadline says
  nothing about a model's accuracy, and latency is the scheduler's business, not the policy's.

Labels are integers (an integral float such as 3.0 equals 3). `output_loss(output, label,
kind)` is in [0, 1]:

* kind "zero_one" (the default of every policy): 0.0 when the predicted label equals the label,
  else 1.0, for vectors and scalars alike;
* kind "prob": for a vector, 1 - clip(scores[label], 0, 1), meaningful when the scores are
  class probabilities (a label outside [0, n_classes) costs 1.0); for a scalar, the 0/1 loss.

Reward, where a policy speaks of one, is 1 - loss.

Interface (every policy):

* `initial_state(n_models)` with n_models >= 1: the state before any feedback.
* `select(state, query_ctx, rng) -> tuple[int, ...]`: the indices of the linked models to ask,
  ascending. `query_ctx` is whatever the caller knows of the query (unused by these
  context-free policies; kept for contextual ones). `select_with_probs` returns the same choice
  as a `Selection`, with the probability with which each chosen model was picked; `select` is
  exactly `select_with_probs(...).models` and draws from `rng` identically.
* `combine(state, outputs) -> Combined(output, confidence, contributors)`: `outputs` maps model
  index -> output (None for a model that missed the deadline). With no output present, the
  result is `Combined(None, 0.0, 0)` and the caller answers with the app's default output.
* `observe(state, outputs, label, selection=None) -> new state`.

How Exp3 gets the probability of its choice (the design choice the importance weight needs):
`select_with_probs` records p_i at selection time in the `Selection` it returns, a small frozen
per-query value (JSON-serialisable too) that the caller keeps beside the query and hands back
to `observe(..., selection=sel)`. Feedback may arrive after other feedback has moved the
weights; the importance weight must use the p_i the choice was actually drawn with, and the
state cannot hold it (many queries are in flight against one state). When `selection` is None,
`observe` uses the probabilities of the state it is given: exact when the caller selects and
observes against the same state, as Clipper's feedback path does (it re-selects at feedback
time), and an approximation otherwise. Policies that do not importance-weight ignore
`selection`.

Policies:

* `SinglePolicy`: always model 0.
* `Exp3Policy(eta, gamma)`: one model per query, drawn from p_i = (1 - gamma) * w_i / sum(w) +
  gamma / K. Feedback for a chosen model i with loss l: w_i <- w_i * exp(-eta * l / p_i).
  Weights are stored as log weights shifted so that the largest is exactly 0.0 after every
  update: no overflow, and the largest weight never underflows (p_i >= gamma / K bounds every
  step by eta * K / gamma). Every present output in `observe` is updated, each with its own p_i.
* `Exp4Policy(eta)`: ask every linked model; combine with the learned weights renormalised
  over the models present; feedback updates every present model, w_i <- w_i * exp(-eta * l_i),
  stored in log space like Exp3. Combined output: when every present output is a score vector
  of one shape, their weighted average (soft vote; the combined label is its argmax);
  otherwise (scalars, or mixed kinds or shapes) the weighted vote over predicted labels (hard
  vote; ties go to the smallest label), returned as a float. Confidence: the total normalised
  weight of the present models whose predicted label equals the combined label (exactly 1.0
  when all agree); contributors: the number of present outputs. Note that a soft vote can pick a
  label that carries less than half of the weight.
* `EpsilonGreedyPolicy(epsilon)`: with probability epsilon a uniformly random model, else the
  best mean reward (untried models count as mean reward 1.0, so each is tried; ties go to the
  smallest index). Draws `rng.random()` once per query, plus `rng.randrange(K)` when exploring.
* `Ucb1Policy()`: any untried model first (smallest index), then argmax of mean_i + sqrt(2 ln
  n / n_i), n the total count. Deterministic: `rng` is not drawn from. With delayed feedback it
  picks the same model for every query until feedback arrives.

Single-model policies `combine` by taking the present output with the smallest index
(confidence 1.0, contributors 1). Log weights of Exp3/Exp4 are unbounded below: a model that
has been far behind for long takes as long to recover (no weight floor here).

`ContextStates` personalises: an LRU map of per-user (uid) states with a fallback to an
app-wide state. It is a mutable container of immutable states, like `PredictionCache`, owned by
the single scheduler loop.
"""

from __future__ import annotations

import math
import numbers
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

LOSS_KINDS = ("zero_one", "prob")

Output = np.ndarray | float | None
Outputs = Mapping[int, Any]


# -- outputs and loss -------------------------------------------------------------------------


def _as_vector(output: Any) -> np.ndarray | None:
    """The score vector of a vector output, or None for a scalar. Rejects other shapes."""
    if isinstance(output, np.ndarray):
        if output.ndim == 0:
            return None
        if output.ndim != 1 or output.shape[0] == 0:
            raise ValueError(f"a vector output must have shape (n_classes,), not {output.shape}")
        return output
    if isinstance(output, numbers.Real):
        return None
    raise TypeError(f"a model output must be a 1-D np.ndarray or a number, not {type(output)!r}")


def predicted_label(output: Any) -> int:
    """The label an output predicts: argmax of a score vector, a scalar rounded halves up."""
    vec = _as_vector(output)
    if vec is not None:
        return int(np.argmax(vec))
    value = float(output)
    if not math.isfinite(value):
        raise ValueError(f"a scalar output must be finite, not {value}")
    return math.floor(value + 0.5)


def output_loss(output: Any, label: int | float, kind: str = "zero_one") -> float:
    """The loss in [0, 1] of one present output against the true label (module docstring)."""
    if kind == "prob":
        vec = _as_vector(output)
        if vec is not None:
            if label != int(label) or not 0 <= int(label) < vec.shape[0]:
                return 1.0
            return 1.0 - min(1.0, max(0.0, float(vec[int(label)])))
    elif kind != "zero_one":
        raise ValueError(f"loss kind must be one of {', '.join(LOSS_KINDS)}, not {kind!r}")
    return 0.0 if predicted_label(output) == label else 1.0


def _present(outputs: Outputs, n_models: int) -> list[tuple[int, Any]]:
    """The (index, output) pairs that are not None, ascending by index; indices checked."""
    pairs = []
    for i in sorted(outputs):
        if not 0 <= i < n_models:
            raise ValueError(f"model index {i} outside [0, {n_models})")
        if outputs[i] is not None:
            pairs.append((i, outputs[i]))
    return pairs


def _check_n_models(n_models: int) -> None:
    if n_models < 1:
        raise ValueError(f"n_models must be >= 1, not {n_models}")


# -- per-query values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Combined:
    """The answer of a policy for one query. `output` is None when no model answered."""

    output: Output
    confidence: float
    contributors: int


@dataclass(frozen=True, slots=True)
class Selection:
    """The models chosen for one query and the probability with which each was chosen.

    `probs[j]` belongs to `models[j]`; 1.0 for a deterministic choice. The caller keeps it
    beside the query and passes it back to `observe` with the feedback.
    """

    models: tuple[int, ...]
    probs: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.models) != len(self.probs):
            raise ValueError("models and probs must have the same length")

    def prob_of(self, model: int) -> float:
        try:
            return self.probs[self.models.index(model)]
        except ValueError:
            raise ValueError(f"model {model} was not selected (selected {self.models})") from None

    def to_json(self) -> dict:
        return {"models": list(self.models), "probs": list(self.probs)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Selection:
        return cls(tuple(int(m) for m in d["models"]), tuple(float(p) for p in d["probs"]))


# -- states -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SingleState:
    """`SinglePolicy` learns nothing; the state only records how many models are linked."""

    KIND: ClassVar[str] = "single"
    n_models: int

    def to_json(self) -> dict:
        return {"kind": self.KIND, "n_models": self.n_models}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SingleState:
        _check_kind(d, cls.KIND)
        return cls(int(d["n_models"]))


@dataclass(frozen=True, slots=True)
class WeightsState:
    """Log weights of Exp3 and Exp4, shifted so that the largest is 0.0.

    `updates` counts the feedback rounds that had at least one output present (informational).
    """

    KIND: ClassVar[str] = "weights"
    log_weights: tuple[float, ...]
    updates: int = 0

    @property
    def n_models(self) -> int:
        return len(self.log_weights)

    def weights(self) -> tuple[float, ...]:
        """Normalised weights, w_i / sum(w)."""
        ws = [math.exp(lw) for lw in self.log_weights]  # the largest is exp(0.0) = 1.0
        total = math.fsum(ws)
        return tuple(w / total for w in ws)

    def to_json(self) -> dict:
        return {"kind": self.KIND, "log_weights": list(self.log_weights), "updates": self.updates}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WeightsState:
        _check_kind(d, cls.KIND)
        return cls(tuple(float(x) for x in d["log_weights"]), int(d["updates"]))


@dataclass(frozen=True, slots=True)
class RewardsState:
    """Per-model feedback counts and reward sums (reward = 1 - loss), for ε-greedy and UCB1."""

    KIND: ClassVar[str] = "rewards"
    counts: tuple[int, ...]
    reward_sums: tuple[float, ...]

    @property
    def n_models(self) -> int:
        return len(self.counts)

    def means(self, untried: float = 1.0) -> tuple[float, ...]:
        return tuple(
            s / c if c else untried for c, s in zip(self.counts, self.reward_sums, strict=True)
        )

    def to_json(self) -> dict:
        return {
            "kind": self.KIND,
            "counts": list(self.counts),
            "reward_sums": list(self.reward_sums),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RewardsState:
        _check_kind(d, cls.KIND)
        return cls(tuple(int(c) for c in d["counts"]), tuple(float(s) for s in d["reward_sums"]))


PolicyState = SingleState | WeightsState | RewardsState
_STATE_KINDS: dict[str, Any] = {s.KIND: s for s in (SingleState, WeightsState, RewardsState)}


def _check_kind(d: Mapping[str, Any], kind: str) -> None:
    if d.get("kind") != kind:
        raise ValueError(f"expected a state of kind {kind!r}, got {d.get('kind')!r}")


def state_from_json(d: Mapping[str, Any]) -> PolicyState:
    """Rebuild any policy state from its `to_json()`, dispatching on its "kind"."""
    cls = _STATE_KINDS.get(d.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown state kind {d.get('kind')!r}; known: {', '.join(_STATE_KINDS)}")
    return cls.from_json(d)


def _shift_to_max(log_weights: list[float]) -> tuple[float, ...]:
    top = max(log_weights)
    return tuple(lw - top for lw in log_weights)


def _present_weights(state: WeightsState, idx: list[int]) -> list[float]:
    """Weights of the models `idx`, relative to the largest among them (not normalised)."""
    top = max(state.log_weights[i] for i in idx)
    return [math.exp(state.log_weights[i] - top) for i in idx]


# -- policies ---------------------------------------------------------------------------------


class SelectionPolicy:
    """What every policy offers; see the module docstring. Subclasses are frozen dataclasses."""

    __slots__ = ()
    name: ClassVar[str] = ""

    def initial_state(self, n_models: int) -> PolicyState:
        raise NotImplementedError

    def select_with_probs(self, state: Any, query_ctx: Any, rng: random.Random) -> Selection:
        raise NotImplementedError

    def select(self, state: Any, query_ctx: Any, rng: random.Random) -> tuple[int, ...]:
        return self.select_with_probs(state, query_ctx, rng).models

    def combine(self, state: Any, outputs: Outputs) -> Combined:
        """The present output with the smallest index, confidence 1.0 (single-model policies)."""
        present = _present(outputs, state.n_models)
        if not present:
            return Combined(None, 0.0, 0)
        return Combined(present[0][1], 1.0, 1)

    def observe(
        self, state: Any, outputs: Outputs, label: int | float, selection: Selection | None = None
    ) -> PolicyState:
        raise NotImplementedError


def _check_loss_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss must be one of {', '.join(LOSS_KINDS)}, not {kind!r}")


def _check_eta(eta: float) -> None:
    if not (math.isfinite(eta) and eta > 0.0):
        raise ValueError(f"eta must be a finite number > 0, not {eta}")


@dataclass(frozen=True, slots=True)
class SinglePolicy(SelectionPolicy):
    """Always model 0; learns nothing."""

    name: ClassVar[str] = "single"

    def initial_state(self, n_models: int) -> SingleState:
        _check_n_models(n_models)
        return SingleState(n_models)

    def select_with_probs(
        self, state: SingleState, query_ctx: Any, rng: random.Random
    ) -> Selection:
        return Selection((0,), (1.0,))

    def combine(self, state: SingleState, outputs: Outputs) -> Combined:
        out = outputs.get(0)
        _present(outputs, state.n_models)  # index check only
        return Combined(None, 0.0, 0) if out is None else Combined(out, 1.0, 1)

    def observe(
        self,
        state: SingleState,
        outputs: Outputs,
        label: int | float,
        selection: Selection | None = None,
    ) -> SingleState:
        _present(outputs, state.n_models)
        return state


@dataclass(frozen=True, slots=True)
class Exp3Policy(SelectionPolicy):
    """One model per query, drawn from the Exp3 probabilities; importance-weighted updates."""

    name: ClassVar[str] = "exp3"
    eta: float = 0.1
    gamma: float = 0.1
    loss: str = "zero_one"

    def __post_init__(self) -> None:
        _check_eta(self.eta)
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], not {self.gamma}")
        _check_loss_kind(self.loss)

    def initial_state(self, n_models: int) -> WeightsState:
        _check_n_models(n_models)
        return WeightsState((0.0,) * n_models)

    def probabilities(self, state: WeightsState) -> tuple[float, ...]:
        """p_i = (1 - gamma) * w_i / sum(w) + gamma / K."""
        k = state.n_models
        return tuple((1.0 - self.gamma) * w + self.gamma / k for w in state.weights())

    def select_with_probs(
        self, state: WeightsState, query_ctx: Any, rng: random.Random
    ) -> Selection:
        probs = self.probabilities(state)
        u = rng.random()
        acc = 0.0
        chosen = len(probs) - 1  # float sums may fall a hair short of 1.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                chosen = i
                break
        return Selection((chosen,), (probs[chosen],))

    def observe(
        self,
        state: WeightsState,
        outputs: Outputs,
        label: int | float,
        selection: Selection | None = None,
    ) -> WeightsState:
        present = _present(outputs, state.n_models)
        if not present:
            return state
        current = self.probabilities(state) if selection is None else None
        lws = list(state.log_weights)
        for i, out in present:
            p = current[i] if selection is None else selection.prob_of(i)
            if not 0.0 < p <= 1.0:
                raise ValueError(f"selection probability of model {i} must be in (0, 1], not {p}")
            lws[i] -= self.eta * output_loss(out, label, self.loss) / p
        return WeightsState(_shift_to_max(lws), state.updates + 1)


@dataclass(frozen=True, slots=True)
class Exp4Policy(SelectionPolicy):
    """Ask every model; weighted vote/average; multiplicative updates from every model's loss."""

    name: ClassVar[str] = "exp4"
    eta: float = 0.1
    loss: str = "zero_one"

    def __post_init__(self) -> None:
        _check_eta(self.eta)
        _check_loss_kind(self.loss)

    def initial_state(self, n_models: int) -> WeightsState:
        _check_n_models(n_models)
        return WeightsState((0.0,) * n_models)

    def select_with_probs(
        self, state: WeightsState, query_ctx: Any, rng: random.Random
    ) -> Selection:
        k = state.n_models
        return Selection(tuple(range(k)), (1.0,) * k)

    def combine(self, state: WeightsState, outputs: Outputs) -> Combined:
        present = _present(outputs, state.n_models)
        if not present:
            return Combined(None, 0.0, 0)
        idx = [i for i, _ in present]
        ws = _present_weights(state, idx)
        labels = [predicted_label(out) for _, out in present]
        vecs = [_as_vector(out) for _, out in present]
        output: Output
        if all(v is not None for v in vecs) and len({v.shape for v in vecs}) == 1:  # type: ignore[union-attr]
            acc = np.zeros(vecs[0].shape, dtype=np.float64)  # type: ignore[union-attr]
            for w, v in zip(ws, vecs, strict=True):
                acc += w * np.asarray(v, dtype=np.float64)
            output = acc / math.fsum(ws)
            label = int(np.argmax(output))
        else:
            votes: dict[int, float] = {}
            for w, lab in zip(ws, labels, strict=True):
                votes[lab] = votes.get(lab, 0.0) + w
            label = min(votes, key=lambda lab: (-votes[lab], lab))
            output = float(label)
        # Both sums run over the same weights in the same order, so all-agree gives exactly 1.0.
        total = math.fsum(ws)
        agree = math.fsum(w for w, lab in zip(ws, labels, strict=True) if lab == label)
        return Combined(output, min(1.0, agree / total), len(present))

    def observe(
        self,
        state: WeightsState,
        outputs: Outputs,
        label: int | float,
        selection: Selection | None = None,
    ) -> WeightsState:
        present = _present(outputs, state.n_models)
        if not present:
            return state
        lws = list(state.log_weights)
        for i, out in present:
            lws[i] -= self.eta * output_loss(out, label, self.loss)
        return WeightsState(_shift_to_max(lws), state.updates + 1)


def _observe_rewards(
    state: RewardsState, outputs: Outputs, label: int | float, kind: str
) -> RewardsState:
    present = _present(outputs, state.n_models)
    if not present:
        return state
    counts = list(state.counts)
    sums = list(state.reward_sums)
    for i, out in present:
        counts[i] += 1
        sums[i] += 1.0 - output_loss(out, label, kind)
    return RewardsState(tuple(counts), tuple(sums))


def _argmax_first(values: tuple[float, ...] | list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


@dataclass(frozen=True, slots=True)
class EpsilonGreedyPolicy(SelectionPolicy):
    """One model per query: explore uniformly with probability epsilon, else the best mean."""

    name: ClassVar[str] = "epsilon_greedy"
    epsilon: float = 0.1
    loss: str = "zero_one"

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], not {self.epsilon}")
        _check_loss_kind(self.loss)

    def initial_state(self, n_models: int) -> RewardsState:
        _check_n_models(n_models)
        return RewardsState((0,) * n_models, (0.0,) * n_models)

    def probabilities(self, state: RewardsState) -> tuple[float, ...]:
        k = state.n_models
        best = _argmax_first(state.means())
        return tuple(
            self.epsilon / k + (1.0 - self.epsilon if i == best else 0.0) for i in range(k)
        )

    def select_with_probs(
        self, state: RewardsState, query_ctx: Any, rng: random.Random
    ) -> Selection:
        k = state.n_models
        chosen = rng.randrange(k) if rng.random() < self.epsilon else _argmax_first(state.means())
        return Selection((chosen,), (self.probabilities(state)[chosen],))

    def observe(
        self,
        state: RewardsState,
        outputs: Outputs,
        label: int | float,
        selection: Selection | None = None,
    ) -> RewardsState:
        return _observe_rewards(state, outputs, label, self.loss)


@dataclass(frozen=True, slots=True)
class Ucb1Policy(SelectionPolicy):
    """One model per query: untried first, then the best upper confidence bound (UCB1)."""

    name: ClassVar[str] = "ucb1"
    loss: str = "zero_one"

    def __post_init__(self) -> None:
        _check_loss_kind(self.loss)

    def initial_state(self, n_models: int) -> RewardsState:
        _check_n_models(n_models)
        return RewardsState((0,) * n_models, (0.0,) * n_models)

    def upper_bounds(self, state: RewardsState) -> tuple[float, ...]:
        """mean_i + sqrt(2 ln n / n_i); +inf for an untried model."""
        log_n = math.log(max(1, sum(state.counts)))
        return tuple(
            s / c + math.sqrt(2.0 * log_n / c) if c else math.inf
            for c, s in zip(state.counts, state.reward_sums, strict=True)
        )

    def select_with_probs(
        self, state: RewardsState, query_ctx: Any, rng: random.Random
    ) -> Selection:
        return Selection((_argmax_first(self.upper_bounds(state)),), (1.0,))

    def observe(
        self,
        state: RewardsState,
        outputs: Outputs,
        label: int | float,
        selection: Selection | None = None,
    ) -> RewardsState:
        return _observe_rewards(state, outputs, label, self.loss)


POLICIES: dict[str, type[SelectionPolicy]] = {
    p.name: p for p in (SinglePolicy, Exp3Policy, Exp4Policy, EpsilonGreedyPolicy, Ucb1Policy)
}


def make_policy(name: str, **params: Any) -> SelectionPolicy:
    """The policy called `name` with `params` over its defaults (e.g. `make_policy("exp3",
    eta=0.2)`). An unknown name or parameter raises ValueError naming what is allowed."""
    cls = POLICIES.get(name)
    if cls is None:
        raise ValueError(f"unknown selection policy {name!r}; allowed: {', '.join(POLICIES)}")
    allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for policy {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return cls(**params)


# -- personalisation --------------------------------------------------------------------------


class ContextStates:
    """Per-user policy states, LRU-bounded, falling back to the app-wide state.

    * `get(uid)` answers the uid's own state (marking it most recently used) or, for a uid not
      held, the app-wide state. A new uid thus starts from the app-wide state: states are
      immutable, so sharing the value is as good as a copy and no later change to either side
      reaches the other.
    * `put(uid, state)` stores the uid's state as the most recently used one, evicting the least
      recently used uids beyond `max_contexts` (returned). `max_contexts == 0` keeps none.
    * `observe(policy, uid, outputs, label, selection)` is get, policy.observe, put.
    * `app_state` is a plain attribute; the caller decides whether feedback also updates it.

    Invariant: len(self) <= max_contexts after every call. uids are str or int (any JSON
    scalar); `to_json` keeps them and the LRU order, as a list of [uid, state] pairs.
    """

    __slots__ = ("max_contexts", "app_state", "_states")

    def __init__(self, max_contexts: int, app_state: PolicyState) -> None:
        if max_contexts < 0:
            raise ValueError(f"max_contexts must be >= 0, not {max_contexts}")
        self.max_contexts = max_contexts
        self.app_state = app_state
        self._states: OrderedDict[Hashable, PolicyState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, uid: object) -> bool:
        """Whether `uid` has its own state; does not touch recency."""
        return uid in self._states

    def uids(self) -> Iterator[Hashable]:
        """The uids held, least recently used first."""
        return iter(list(self._states))

    def get(self, uid: Hashable) -> PolicyState:
        state = self._states.get(uid)
        if state is None:
            return self.app_state
        self._states.move_to_end(uid)
        return state

    def put(self, uid: Hashable, state: PolicyState) -> list[Hashable]:
        self._states[uid] = state
        self._states.move_to_end(uid)
        evicted = []
        while len(self._states) > self.max_contexts:
            evicted.append(self._states.popitem(last=False)[0])
        return evicted

    def observe(
        self,
        policy: SelectionPolicy,
        uid: Hashable,
        outputs: Outputs,
        label: int | float,
        selection: Selection | None = None,
    ) -> PolicyState:
        state = policy.observe(self.get(uid), outputs, label, selection)
        self.put(uid, state)
        return state

    def to_json(self) -> dict:
        return {
            "max_contexts": self.max_contexts,
            "app_state": self.app_state.to_json(),
            "contexts": [[uid, s.to_json()] for uid, s in self._states.items()],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ContextStates:
        cs = cls(int(d["max_contexts"]), state_from_json(d["app_state"]))
        for uid, s in d["contexts"]:
            cs.put(uid, state_from_json(s))
        return cs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContextStates):
            return NotImplemented
        return (
            self.max_contexts == other.max_contexts
            and self.app_state == other.app_state
            and list(self._states.items()) == list(other._states.items())
        )

    __hash__ = None  # type: ignore[assignment]
