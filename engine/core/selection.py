"""Clipper's model selection layer inside the scheduler, as a pure state machine.

Owns, for every app with a selection policy (`AppRoute.policy` set): what the policy has
learned (`contexts`: a `ContextStates` per app, per-uid states with an app-wide fallback), the
queries being answered by several models (`Ensemble`: which models were asked, what each
answered), how their answers are combined into one (at the last answer or at the deadline,
whichever comes first, with the app's confidence threshold), the recent predictions that
feedback is joined with (`RECENT_PREDICTIONS` per app), and the snapshots of the learned state
(`snapshot` / `restore`). Nothing here reads a clock, draws from global randomness (the
`random.Random` is an argument) or touches a model: sending sub-queries, their deadlines and
the cache are `SchedulerCore`'s.

Who calls it: only `SchedulerCore`, through a narrow interface, and the scheduler shell for
snapshots (`snapshot`, `restore`, `changed`):

* `reconfigure(apps)` with the core's whole route table: a new policy app starts from its
  policy's initial state; a removed one forgets what it learned.
* `on_submit(query)` draws the models to ask (the policy's `select_with_probs`, from the uid's
  state or the app-wide one) and holds the ensemble until it is answered. The core then sends
  one sub-query (`Query.parent` = the ensemble, `Query.model` = the index among the app's
  models) to each of `Ensemble.models`.
* `on_sub_answer(sub, output, error)` records one model's contribution (an output, an error
  cause, or neither for a default); the last one finishes the ensemble.
* `on_deadline(query)` finishes the ensemble of a query whose deadline passed with what
  arrived; stragglers are not awaited and their later answers change nothing.
* `feedback(app, query_id, label)` joins a true label with a recent prediction and updates the
  uid's state and the app-wide state.

Finishing returns an `EnsembleAnswer` (the `Verdict` and the bytes of the answer); the core
turns it into the query's one answer. Invariants: an ensemble is finished at most once (the
parent query answered exactly once), and it leaves `_ensembles` when it is; every finished
ensemble's outputs are kept for feedback, the oldest dropped beyond `RECENT_PREDICTIONS`;
`changed` is true from feedback that moved a state until the next `snapshot`.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

import orjson

from schooner.engine.core.policies import ContextStates, Selection
from schooner.ipc.rows import policy_input

if TYPE_CHECKING:
    from schooner.engine.core.scheduler import AppRoute, Query

RECENT_PREDICTIONS = 4096  # per app: predictions kept for joining feedback


class Verdict(IntEnum):
    """How an ensemble's query is answered."""

    COMBINED = 0  # the combined output, with its confidence
    ERROR = 1  # no model answered and one failed: HTTP 500 with that cause
    NO_OUTPUT = 2  # no model answered in time: the app's default (the SLO explanation)
    LOW_CONFIDENCE = 3  # combined below the app's confidence_threshold: the default


@dataclass(frozen=True, slots=True)
class EnsembleAnswer:
    query: Query
    verdict: Verdict
    output: bytes = b""  # JSON text of the combined output (COMBINED) or the error cause (ERROR)
    extra: bytes = b""  # b'"confidence":0.9,"models_used":2,"models_asked":3' once combined


class Ensemble:
    """A query of a selection-policy app: the models asked, and what each answered."""

    __slots__ = ("query", "selection", "models", "outputs", "remaining", "error", "route", "ctx")

    def __init__(self, query: Query, selection: Selection, models: tuple[int, ...], route=None, ctx=None) -> None:
        self.query = query
        self.route = route  # the app as it was when asked: a reconfiguration may change it meanwhile
        self.ctx = ctx  # its selection state then
        self.selection = selection  # indices among the app's models, with their probabilities
        self.models = models  # the same choice as model indices of the core
        self.outputs: dict[int, object] = {}
        self.remaining = len(models)
        self.error: bytes | None = None


class SelectionCore:
    """The selection state of every policy app and the ensembles in flight. See the module
    docstring."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.apps: list[AppRoute | None] = []
        self.contexts: dict[int, ContextStates] = {}
        self.recent: dict[int, OrderedDict] = {}
        self.changed = False  # feedback moved a state since the last snapshot
        self._ensembles: dict[int, Ensemble] = {}
        self._shapes: dict[int, tuple] = {}  # per context: (policy, linked models) it was made for

    def reconfigure(self, apps: list[AppRoute | None]) -> None:
        """New apps get a fresh state; an app whose policy or linked models changed starts
        afresh (its old state has the wrong arms); a removed one forgets. Ensembles in flight
        finish with the app and state they started with."""
        self.apps = apps
        for i in list(self.contexts):
            a = apps[i] if i < len(apps) else None
            if a is None or a.policy is None or self._shapes.get(i) != (type(a.policy).__name__, a.models):
                del self.contexts[i]
                self.recent.pop(i, None)
                self._shapes.pop(i, None)
        for i, a in enumerate(apps):
            if a is not None and a.policy is not None and i not in self.contexts:
                self.contexts[i] = ContextStates(a.max_contexts, a.policy.initial_state(len(a.models)))
                self.recent[i] = OrderedDict()
                self._shapes[i] = (type(a.policy).__name__, a.models)

    # -- a query's life ---------------------------------------------------------------------

    def on_submit(self, query: Query) -> Ensemble:
        """Choose the models to ask for `query` (its app has a policy); held until finished."""
        route = self.apps[query.app]
        ctx = self.contexts[query.app]
        state = ctx.get(query.uid) if query.uid >= 0 else ctx.app_state
        selection = route.policy.select_with_probs(state, None, self.rng)
        ens = Ensemble(query, selection, tuple(route.models[i] for i in selection.models), route, ctx)
        self._ensembles[id(query)] = ens
        return ens

    def on_sub_answer(self, sub: Query, output: bytes | None, error: bytes | None) -> EnsembleAnswer | None:
        """One asked model answered `sub` (an output, an error cause, or neither); the answer
        to the whole query once it was the last one, else None."""
        ens = sub.parent
        sub.done = True
        if ens.query.done:
            return None
        if output is not None:
            ens.outputs[sub.model] = policy_input(output)
        elif error is not None and ens.error is None:
            ens.error = error
        ens.remaining -= 1
        if ens.remaining == 0:
            return self._finish(ens)
        return None

    def on_deadline(self, query: Query) -> EnsembleAnswer | None:
        """`query`'s deadline passed: the answer from what arrived, or None when `query` is no
        ensemble's (a plain query or a sub-query)."""
        ens = self._ensembles.get(id(query))
        return None if ens is None else self._finish(ens)

    def _finish(self, ens: Ensemble) -> EnsembleAnswer:
        q = ens.query
        self._ensembles.pop(id(q), None)
        route, ctx = ens.route, ens.ctx
        state = ctx.get(q.uid) if q.uid >= 0 else ctx.app_state
        asked = len(ens.selection.models)
        present = {k: v for k, v in ens.outputs.items() if v is not None}
        if self.contexts.get(q.app) is ctx:  # feedback can still join it (its app is unchanged)
            recent = self.recent[q.app]
            recent[q.query_id] = (q.uid, ens.selection, present)
            while len(recent) > RECENT_PREDICTIONS:
                recent.popitem(last=False)
        if not present:
            if ens.error is not None:
                return EnsembleAnswer(q, Verdict.ERROR, ens.error)
            return EnsembleAnswer(q, Verdict.NO_OUTPUT)
        try:
            combined = route.policy.combine(state, {k: present.get(k) for k in ens.selection.models})
        except (ValueError, TypeError, IndexError) as e:  # outputs the policy cannot combine
            return EnsembleAnswer(q, Verdict.ERROR, f"the models' outputs cannot be combined: {e}".encode())
        extra = b'"confidence":%s,"models_used":%d,"models_asked":%d' % (
            repr(round(float(combined.confidence), 6)).encode(), combined.contributors, asked)
        if combined.confidence < route.confidence_threshold:
            return EnsembleAnswer(q, Verdict.LOW_CONFIDENCE, b"", extra)
        return EnsembleAnswer(q, Verdict.COMBINED, _render(combined.output), extra)

    # -- learning -----------------------------------------------------------------------------

    def feedback(self, app: int, query_id: int, label: float) -> str | None:
        """Join `label` with a recent prediction of `app` and update its policy state.

        Returns None when applied, else why not. The uid's own state and the app-wide state
        both learn (new users start from what the population taught)."""
        route = self.apps[app] if app < len(self.apps) else None
        if route is None or route.policy is None:
            return None  # nothing to learn (a single-model app, or one just removed); Clipper answered ok too
        entry = self.recent[app].pop(query_id, None)
        if entry is None:
            return "the prediction to join this feedback with is no longer held"
        uid, selection, outputs = entry
        if not outputs:
            return None  # no model answered in time: nothing to learn from
        ctx = self.contexts[app]
        if uid >= 0:
            ctx.observe(route.policy, uid, outputs, label, selection)
        ctx.app_state = route.policy.observe(ctx.app_state, outputs, label, selection)
        self.changed = True
        return None

    def snapshot(self) -> dict[str, dict]:
        """JSON-able selection state of every policy app, by app name."""
        self.changed = False
        return {
            self.apps[i].name: {"policy": type(self.apps[i].policy).__name__, **c.to_json()}
            for i, c in self.contexts.items()
        }

    def restore(self, app_name: str, data: dict) -> bool:
        """Load a snapshot for `app_name`; False when it does not fit the app any more."""
        for i, c in self.contexts.items():
            if self.apps[i].name != app_name:
                continue
            if data.get("policy") != type(self.apps[i].policy).__name__:
                return False  # learned by another policy: start afresh
            try:
                restored = ContextStates.from_json(data)
                fresh = self.apps[i].policy.initial_state(len(self.apps[i].models))
            except (KeyError, TypeError, ValueError):
                return False
            if type(restored.app_state) is not type(fresh) or _n_models(restored.app_state) != _n_models(fresh):
                return False
            restored.max_contexts = c.max_contexts
            self.contexts[i] = restored
            return True
        return False


def _render(output) -> bytes:
    return orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY)


def _n_models(state) -> int:
    return getattr(state, "n_models", None) or len(getattr(state, "counts", ()) or ())
