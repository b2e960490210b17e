"""The selection suite's policy runs and what they show: per-run summaries, the table, findings.

Owns ``run_policy`` (one policy, one seed, over the whole stream with immediate feedback),
``summarise`` (accuracy before and after the degradation, regret, recovery) and the printed
report (``format_report``, ``findings``). Used by ``benchmarks.suites.selection``; never run itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmarks.suites.selection_data import (
    BROKEN_MODEL,
    PolicySpec,
    SelectionBenchConfig,
    Stream,
)
from schooner.engine.core.policies import (
    Exp4Policy,
    SelectionPolicy,
    make_policy,
    predicted_label,
)

# ---------------------------------------------------------------------------------------------
# Running a policy


@dataclass(slots=True)
class PolicyRun:
    label: str
    seed: int
    correct: np.ndarray  # (n_queries,) bool: the policy's answer was right
    chosen: np.ndarray  # (n_queries,) int: the model asked; -1 when all were asked
    broken_share: np.ndarray  # (n_queries,) float: p (or weight) of the broken model at selection
    decide_s: float  # wall time of select + combine + observe over the stream


def broken_share(policy: SelectionPolicy, state, chosen: int) -> float:
    """What the policy gives the broken model when it selects: its probability (Exp3,
    epsilon-greedy), its normalised weight (Exp4), or whether it was picked (UCB1)."""
    if isinstance(policy, Exp4Policy):
        return state.weights()[BROKEN_MODEL]
    if hasattr(policy, "probabilities"):
        return policy.probabilities(state)[BROKEN_MODEL]
    return float(chosen == BROKEN_MODEL)


def run_policy(spec: PolicySpec, stream: Stream, seed: int, loss: str) -> PolicyRun:
    policy = make_policy(spec.policy, **spec.params, loss=loss)
    rng = random.Random(seed)
    state = policy.initial_state(stream.n_models)
    n = len(stream.labels)
    correct = np.zeros(n, dtype=bool)
    chosen = np.full(n, -1, dtype=np.int64)
    share = np.zeros(n)
    started = time.perf_counter()
    for t in range(n):
        sel = policy.select_with_probs(state, None, rng)
        outputs = {i: stream.scores[t, i] for i in sel.models}
        answer = policy.combine(state, outputs)
        label = int(stream.labels[t])
        correct[t] = predicted_label(answer.output) == label
        if len(sel.models) == 1:
            chosen[t] = sel.models[0]
        share[t] = broken_share(policy, state, int(chosen[t]))
        state = policy.observe(state, outputs, label, selection=sel)
    return PolicyRun(spec.label, seed, correct, chosen, share, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass(frozen=True, slots=True)
class RunSummary:
    seed: int
    accuracy: float
    accuracy_before: float
    accuracy_after: float
    final_regret: float  # cumulative loss minus the best single model's, at the end
    regret_at_degradation: float
    broken_picks_after: int | None  # queries after the degradation that asked the broken model
    share_at_degradation: float
    recovery_queries: int | None  # first query after the degradation with share < threshold
    stays_recovered_after: int | None  # queries until share stays below threshold to the end
    decide_us_per_query: float


def first_below(share: np.ndarray, start: int, threshold: float) -> tuple[int | None, int | None]:
    after = share[start:] < threshold
    if not after.any():
        return None, None
    first = int(np.argmax(after))
    above = np.flatnonzero(~after)
    stays = 0 if len(above) == 0 else int(above[-1]) + 1
    return first, (stays if stays < len(after) else None)


def summarise(run: PolicyRun, best_loss: np.ndarray, config: SelectionBenchConfig) -> RunSummary:
    d = config.degrade_at
    loss = np.cumsum(~run.correct)
    one_model = bool((run.chosen >= 0).all())
    first, stays = first_below(run.broken_share, d, config.recovery_threshold)
    return RunSummary(
        seed=run.seed,
        accuracy=float(run.correct.mean()),
        accuracy_before=float(run.correct[:d].mean()),
        accuracy_after=float(run.correct[d:].mean()),
        final_regret=float(loss[-1] - best_loss[-1]),
        regret_at_degradation=float(loss[d - 1] - best_loss[d - 1]),
        broken_picks_after=int((run.chosen[d:] == BROKEN_MODEL).sum()) if one_model else None,
        share_at_degradation=float(run.broken_share[d]),
        recovery_queries=first,
        stays_recovered_after=stays,
        decide_us_per_query=run.decide_s / len(run.correct) * 1e6,
    )


@dataclass(slots=True)
class PolicyResult:
    spec: PolicySpec
    runs: list[RunSummary] = field(default_factory=list)
    mean_cum_correct: np.ndarray | None = None  # mean over seeds of cumulative correct answers
    regret_curves: np.ndarray | None = None  # (n_seeds, n_queries)
    mean_share: np.ndarray | None = None


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0.0:  # a policy that draws nothing: identical every seed
        return float(a[0]), 0.0
    return float(a.mean()), float(a.std(ddof=1))


def fmt_ms(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    m, s = mean_sd([v * scale for v in values])
    return f"{m:.{digits}f}" if s == 0.0 else f"{m:.{digits}f}±{s:.{digits}f}"


def fmt_recovery(runs: Sequence[RunSummary], threshold: float) -> str:
    """Median queries to fall below the threshold, over the seeds where the share was above it
    at the degradation; "(k/n above)" says how many such seeds there were."""
    above = [r for r in runs if r.share_at_degradation >= threshold]
    if not above:
        return f"was below ({np.mean([r.share_at_degradation for r in runs]):.2f})"
    got = [r.recovery_queries for r in above if r.recovery_queries is not None]
    stays = [r.stays_recovered_after for r in above if r.stays_recovered_after is not None]
    never = len(above) - len(got)
    text = f"{int(np.median(got))}" if got else "never"
    if stays:
        text += f"/{int(np.median(stays))}"
    if never and got:
        text += f", {never} never"
    return f"{text} ({len(above)}/{len(runs)} above)"


# ---------------------------------------------------------------------------------------------
# Report


def format_report(
    config: SelectionBenchConfig,
    stream: Stream,
    results: Sequence[PolicyResult],
    best: int,
) -> str:
    d, n = config.degrade_at, config.n_queries
    c = stream.correct
    best_loss_total = int((~c[:, best]).sum())
    lines = [
        f"{'row':<16} {'acc %':>10} {'before %':>10} {'after %':>10} {'regret':>11} "
        f"{'regret@N/2':>11} {'broken picks':>13} {'p|w broken':>10}  {'queries to p|w<1/2':<22}",
    ]
    for i, m in enumerate(stream.models):
        regret = int((~c[:, i]).sum()) - best_loss_total
        regret_d = int((~c[:d, i]).sum()) - int((~c[:d, best]).sum())
        tag = " (best single)" if i == best else ""
        lines.append(
            f"{'model ' + m.name:<16} {100 * c[:, i].mean():>10.1f} {100 * c[:d, i].mean():>10.1f} "
            f"{100 * c[d:, i].mean():>10.1f} {regret:>11d} {regret_d:>11d} {'':>13} {'':>10}  {tag}"
        )
    oracle = np.concatenate([c[:d, np.argmax(c[:d].mean(0))], c[d:, np.argmax(c[d:].mean(0))]])
    lines.append(
        f"{'best per half':<16} {100 * oracle.mean():>10.1f} {100 * oracle[:d].mean():>10.1f} "
        f"{100 * oracle[d:].mean():>10.1f} {int((~oracle).sum()) - best_loss_total:>11d} "
        f"{int((~oracle[:d]).sum()) - int((~c[:d, best]).sum()):>11d} {'':>13} {'':>10}  "
        "(reference: knows the switch)"
    )
    for r in results:
        runs = r.runs
        picks = [x.broken_picks_after for x in runs]
        picks_s = "all asked" if picks[0] is None else fmt_ms(picks, digits=0)
        deterministic = r.spec.policy in ("exp4", "ucb1")
        ucb = r.spec.policy == "ucb1"  # no probability to report, only a pick
        rec = "—" if ucb else fmt_recovery(runs, config.recovery_threshold)
        share_s = "—" if ucb else fmt_ms([x.share_at_degradation for x in runs], digits=2)
        lines.append(
            f"{r.spec.label:<16} {fmt_ms([x.accuracy for x in runs], 100):>10} "
            f"{fmt_ms([x.accuracy_before for x in runs], 100):>10} "
            f"{fmt_ms([x.accuracy_after for x in runs], 100):>10} "
            f"{fmt_ms([x.final_regret for x in runs], digits=0):>11} "
            f"{fmt_ms([x.regret_at_degradation for x in runs], digits=0):>11} "
            f"{picks_s:>13} {share_s:>10}  {rec}"
            + ("" if not deterministic else "   [draws nothing: same every seed]")
        )
    params = "; ".join(
        f"{r.spec.label} {', '.join(f'{k}={v:.4g}' for k, v in r.spec.params.items()) or '(none)'}"
        for r in results
    )
    header = [
        f"Selection policies on digits: {stream.n_train} training rows, {stream.n_test} test rows "
        f"streamed as {n} queries (each pass reshuffled, stream seed {config.stream_seed}); "
        f"feedback after every query; 0/1 loss.",
        f"Degradation: from query {d} (N/2) model {stream.models[BROKEN_MODEL].name} answers "
        f"with its scores for another query of the second half (corruption seed "
        f"{config.corruption_seed}).",
        f"Policy seeds {config.policy_seeds[0]}..{config.policy_seeds[-1]} "
        f"({len(config.policy_seeds)} runs each; mean±sd over seeds). Hyperparameters: {params}.",
        f"Best single model in hindsight (over the whole stream): {stream.models[best].name}. "
        "regret = policy's cumulative 0/1 loss − that model's (negative: fewer errors than it).",
        "broken picks: queries after N/2 that asked the broken model. p|w broken: its selection "
        "probability (Exp3, ε-greedy) or weight (Exp4) at query N/2. Last column: "
        "median queries after N/2 until that first falls below 1/2 / stays below 1/2 to the end, "
        "over the seeds where it was above 1/2 at N/2.",
        "",
    ]
    return "\n".join(header + lines)


def findings(
    config: SelectionBenchConfig, stream: Stream, results: Sequence[PolicyResult], best: int
) -> list[str]:
    """Plain statements of what the numbers say for the two questions the benchmark asks."""
    d = config.degrade_at
    c = stream.correct
    best_loss = int((~c[:, best]).sum())
    out = []
    by_label = {r.spec.label: r for r in results}
    exp4 = by_label.get("exp4")
    if exp4 is not None:
        run = exp4.runs[0]  # Exp4 draws nothing: every seed is the same run
        loss = best_loss + run.final_regret
        verdict = (
            "beats" if loss < best_loss else "matches" if loss == best_loss else "does NOT match"
        )
        best_before = int(np.argmax(c[:d].mean(0)))
        before_gap = run.accuracy_before - c[:d, best_before].mean()
        out.append(
            f"exp4 vs best single ({stream.models[best].name}): {int(loss)} vs {best_loss} errors "
            f"over the stream ({verdict}); regret {run.regret_at_degradation:+.0f} at N/2, "
            f"{run.final_regret:+.0f} at the end. Before N/2 its accuracy is "
            f"{100 * before_gap:+.1f} points vs the best model of the first half "
            f"({stream.models[best_before].name})."
        )
    for label in ("exp3", "exp3_horizon"):
        r = by_label.get(label)
        if r is None:
            continue
        above = [x for x in r.runs if x.share_at_degradation >= config.recovery_threshold]
        recovered = [x for x in above if x.recovery_queries is not None]
        after_acc = c[d:].mean(0)
        after_best = float(after_acc.max())
        acc_after, _ = mean_sd([x.accuracy_after for x in r.runs])
        # Even with all its weight on the best model, Exp3 draws uniformly with probability gamma.
        gamma = r.spec.params["gamma"]
        cap = (1.0 - gamma) * after_best + gamma * float(after_acc.mean())
        out.append(
            f"{label}: p(broken) at N/2 was >= 1/2 in {len(above)}/{len(r.runs)} seeds; of those, "
            f"{len(recovered)} fell below 1/2 after the degradation"
            + (
                f" (median {int(np.median([x.recovery_queries for x in recovered]))} queries)"
                if recovered
                else ""
            )
            + f"; accuracy after N/2 {100 * acc_after:.1f}% vs {100 * after_best:.1f}% for the "
            f"best model of the second half; the most Exp3 can score there with gamma={gamma:.3g} "
            f"(all weight on that model, uniform exploration only) is {100 * cap:.1f}%."
        )
    return out
