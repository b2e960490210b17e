"""Model selection policies (Clipper's selection layer) on a stream of real predictions.

``python -m benchmarks selection [--quick]`` trains five classifiers of different kinds
and quality on half of scikit-learn's bundled digits data set (``load_digits``, no download),
then feeds a stream of queries drawn from the other half (the test rows, reshuffled on every
pass with a fixed seed) through each policy of ``schooner.engine.core.policies``, with
immediate feedback (the true label after every query). It prints one table, writes one JSON
file and one PNG under ``benchmarks/results/``. Nothing here judges a figure: no thresholds.

Models (each answers a class-score vector of shape (10,): ``predict_proba`` or a softmax):

  0 mlp        torch MLP 64-128-10, full-batch Adam, seed 0
  1 logreg     scikit-learn logistic regression
  2 tree3      scikit-learn decision tree, max_depth=3 (weak on purpose)
  3 nb_tiny    scikit-learn Gaussian naive Bayes fitted on 3 training rows per class (degraded)
  4 svc_breaks scikit-learn RBF SVC, Platt-scaled (CalibratedClassifierCV); from query N/2 on it
               answers with its scores for another query of the second half (a fixed random
               permutation of positions: a misrouted-output bug), so it drops to about chance

The models are deterministic functions of their input, so every model's answer for every stream
position is computed once up front; a one-model-per-query policy is shown, and observes, only
the answer of the model it chose, exactly as if only that model had been asked.

Policies, each run once per policy seed with its own ``random.Random(seed)``, at the library's
default hyperparameters plus one textbook Exp3 setting (all stated in the output):

  exp3, exp3_horizon, epsilon_greedy, ucb1   one model per query; ``observe`` gets that model's
                                             answer and the ``Selection`` (so Exp3's importance
                                             weight uses the probability it actually drew with)
  exp4                                       asks all models; answers ``combine``'s soft vote
  best_single (reference)                    the model with the best total accuracy over the
                                             whole stream, known only after the fact

Per policy: cumulative accuracy, cumulative regret (its cumulative 0/1 loss minus the best
single model's at each step), accuracy before and after the degradation point, how often the
broken model was still chosen after it, and for the weight-based policies how many queries
after the degradation it took for the probability (Exp3, epsilon-greedy) or weight (Exp4) of
the broken model to fall below 1/2, if it had been above.

Reused from the harness (not duplicated): git sha, host and package versions and the results
directory (``benchmarks.harness.results``).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np

from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.results import ResultWriter, package_version
from benchmarks.plots.selection import plot_selection
from schooner.engine.core.policies import (
    Exp4Policy,
    SelectionPolicy,
    make_policy,
    predicted_label,
)

N_CLASSES = 10
DEFAULT_QUERIES = 4000
QUICK_QUERIES = 2000
DEFAULT_POLICY_SEEDS = 10
QUICK_POLICY_SEEDS = 3
TEST_FRACTION = 0.5
SPLIT_SEED = 0  # train/test split
TRAIN_SEED = 0  # torch init, SVC's Platt CV, the tiny subset
STREAM_SEED = 1  # order of the test rows in the stream
CORRUPTION_SEED = 2  # which other query the broken model answers for
TINY_ROWS_PER_CLASS = 3
RECOVERY_THRESHOLD = 0.5
CURVE_POINTS = 400  # points per curve kept in the JSON
BROKEN_MODEL = 4

# The library's defaults, written out so the output states them.
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "exp3": {"eta": 0.1, "gamma": 0.1},
    "exp4": {"eta": 0.1},
    "epsilon_greedy": {"epsilon": 0.1},
    "ucb1": {},
}


def exp3_horizon_params(n_models: int, n_queries: int) -> dict[str, float]:
    """Auer et al. (2002), Cor. 3.2: gamma = min(1, sqrt(K ln K / ((e - 1) T))), eta = gamma / K.

    Needs the horizon T, which a server does not know; fixed from the formula, not searched.
    """
    gamma = min(1.0, math.sqrt(n_models * math.log(n_models) / ((math.e - 1.0) * n_queries)))
    return {"eta": gamma / n_models, "gamma": gamma}


@dataclass(frozen=True, slots=True)
class PolicySpec:
    label: str  # row name
    policy: str  # make_policy name
    params: dict[str, float]


@dataclass(frozen=True, slots=True)
class SelectionBenchConfig:
    n_queries: int
    degrade_at: int
    policy_seeds: tuple[int, ...]
    policies: tuple[PolicySpec, ...]
    test_fraction: float = TEST_FRACTION
    split_seed: int = SPLIT_SEED
    train_seed: int = TRAIN_SEED
    stream_seed: int = STREAM_SEED
    corruption_seed: int = CORRUPTION_SEED
    tiny_rows_per_class: int = TINY_ROWS_PER_CLASS
    recovery_threshold: float = RECOVERY_THRESHOLD
    loss: str = "zero_one"
    quick: bool = False


# ---------------------------------------------------------------------------------------------
# Models and stream


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    framework: str
    description: str
    test_accuracy: float  # on the test split, before any degradation


@dataclass(frozen=True, slots=True)
class Stream:
    """Every model's answer at every stream position, and the true labels."""

    scores: np.ndarray  # (n_queries, n_models, N_CLASSES) float64
    labels: np.ndarray  # (n_queries,) int
    rows: np.ndarray  # (n_queries,) index into the test split
    correct: np.ndarray  # (n_queries, n_models) bool: predicted_label == label
    models: tuple[ModelInfo, ...]
    n_train: int
    n_test: int

    @property
    def n_models(self) -> int:
        return self.scores.shape[1]


def train_mlp(x: np.ndarray, y: np.ndarray, seed: int):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, N_CLASSES)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()

    def scores(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(rows, dtype=torch.float32)), dim=1).numpy()

    return scores


def train_models(config: SelectionBenchConfig):
    """(test scores (n_models, n_test, 10), test labels, ModelInfos, n_train)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    digits = load_digits()
    x = digits.data / 16.0  # pixel intensities are 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        x,
        digits.target,
        test_size=config.test_fraction,
        stratify=digits.target,
        random_state=config.split_seed,
    )
    rng = np.random.default_rng(config.train_seed)
    tiny = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_tr == c), config.tiny_rows_per_class, replace=False)
            for c in range(N_CLASSES)
        ]
    )
    mlp = train_mlp(x_tr, y_tr, config.train_seed)
    logreg = LogisticRegression(max_iter=2000).fit(x_tr, y_tr)
    tree = DecisionTreeClassifier(max_depth=3, random_state=config.train_seed).fit(x_tr, y_tr)
    nb = GaussianNB().fit(x_tr[tiny], y_tr[tiny])
    # Platt-scaled SVC, as scikit-learn 1.9 recommends in place of SVC(probability=True).
    svc = CalibratedClassifierCV(SVC(), ensemble=False).fit(x_tr, y_tr)
    specs = [
        (
            "mlp",
            f"torch {package_version('torch')}",
            "MLP 64-128-10, Adam lr 1e-2, 200 full-batch epochs",
            mlp(x_te),
        ),
        ("logreg", "scikit-learn", "LogisticRegression(max_iter=2000)", logreg.predict_proba(x_te)),
        ("tree3", "scikit-learn", "DecisionTreeClassifier(max_depth=3)", tree.predict_proba(x_te)),
        (
            "nb_tiny",
            "scikit-learn",
            f"GaussianNB on {len(tiny)} training rows ({config.tiny_rows_per_class} per class)",
            nb.predict_proba(x_te),
        ),
        (
            "svc_breaks",
            "scikit-learn",
            "CalibratedClassifierCV(SVC(rbf), ensemble=False); from N/2 answers another query's scores",
            svc.predict_proba(x_te),
        ),
    ]
    test_scores = np.stack([s[3].astype(np.float64) for s in specs])
    assert test_scores.shape[2] == N_CLASSES  # every class is in every training set
    infos = tuple(
        ModelInfo(
            name,
            framework,
            desc,
            float(np.mean([predicted_label(v) == t for v, t in zip(sc, y_te, strict=True)])),
        )
        for name, framework, desc, sc in specs
    )
    return test_scores, y_te.astype(np.int64), infos, len(y_tr)


def build_stream(config: SelectionBenchConfig) -> Stream:
    test_scores, y_te, infos, n_train = train_models(config)
    n_test = len(y_te)
    rng = np.random.default_rng(config.stream_seed)
    passes = -(-config.n_queries // n_test)
    rows = np.concatenate([rng.permutation(n_test) for _ in range(passes)])[: config.n_queries]
    scores = np.ascontiguousarray(test_scores[:, rows, :].transpose(1, 0, 2))
    # The broken model answers, at each position of the second half, with its scores for the
    # query at another position of the second half.
    later = np.arange(config.degrade_at, config.n_queries)
    moved = np.random.default_rng(config.corruption_seed).permutation(later)
    scores[later, BROKEN_MODEL] = test_scores[BROKEN_MODEL, rows[moved]]
    labels = y_te[rows]
    correct = np.array(
        [
            [predicted_label(scores[t, i]) == labels[t] for i in range(scores.shape[1])]
            for t in range(config.n_queries)
        ]
    )
    return Stream(scores, labels, rows, correct, infos, n_train, n_test)


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


def downsample(curve: np.ndarray, n_points: int) -> list[float]:
    idx = np.unique(np.linspace(0, len(curve) - 1, n_points).astype(int))
    return [float(curve[i]) for i in idx]


def results_document(
    config: SelectionBenchConfig,
    stream: Stream,
    results: Sequence[PolicyResult],
    best: int,
    started: datetime,
    report: str,
    notes: list[str],
) -> dict[str, object]:
    n = config.n_queries
    idx = np.unique(np.linspace(0, n - 1, CURVE_POINTS).astype(int))
    return {
        "data": {
            "dataset": "sklearn.datasets.load_digits",
            "n_train": stream.n_train,
            "n_test": stream.n_test,
        },
        "models": [
            {
                **asdict(m),
                "stream_accuracy": float(stream.correct[:, i].mean()),
                "stream_accuracy_before": float(stream.correct[: config.degrade_at, i].mean()),
                "stream_accuracy_after": float(stream.correct[config.degrade_at :, i].mean()),
            }
            for i, m in enumerate(stream.models)
        ],
        "best_single_model": stream.models[best].name,
        "policies": [
            {
                "label": r.spec.label,
                "policy": r.spec.policy,
                "params": r.spec.params,
                "runs": [asdict(x) for x in r.runs],
            }
            for r in results
        ],
        "curves": {
            "query_index": [int(i) for i in idx],
            "models_cum_correct": {
                m.name: [int(v) for v in np.cumsum(stream.correct[:, i])[idx]]
                for i, m in enumerate(stream.models)
            },
            "policies_mean_cum_correct": {
                r.spec.label: [float(v) for v in r.mean_cum_correct[idx]] for r in results
            },
            "policies_mean_regret": {
                r.spec.label: [float(v) for v in r.regret_curves.mean(0)[idx]] for r in results
            },
            "policies_mean_broken_share": {
                r.spec.label: [float(v) for v in r.mean_share[idx]] for r in results
            },
        },
        "report": report,
        "findings": notes,
    }


def parse_config(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks selection", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--queries",
        type=int,
        help=f"stream length (default {DEFAULT_QUERIES}, --quick {QUICK_QUERIES})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help=f"policy seeds 0..S-1 (default {DEFAULT_POLICY_SEEDS}, --quick {QUICK_POLICY_SEEDS})",
    )
    add_common_flags(parser, repeats=1)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    n = args.queries or (QUICK_QUERIES if args.quick else DEFAULT_QUERIES)
    seeds = args.seeds or (QUICK_POLICY_SEEDS if args.quick else DEFAULT_POLICY_SEEDS)
    if n < 4 or seeds < 1:
        parser.error("--queries must be at least 4 and --seeds at least 1")
    n_models = 5
    policies = (
        PolicySpec("exp3", "exp3", DEFAULT_PARAMS["exp3"]),
        PolicySpec("exp3_horizon", "exp3", exp3_horizon_params(n_models, n)),
        PolicySpec("exp4", "exp4", DEFAULT_PARAMS["exp4"]),
        PolicySpec("epsilon_greedy", "epsilon_greedy", DEFAULT_PARAMS["epsilon_greedy"]),
        PolicySpec("ucb1", "ucb1", DEFAULT_PARAMS["ucb1"]),
    )
    return SelectionBenchConfig(
        n_queries=n,
        degrade_at=n // 2,
        policy_seeds=tuple(range(seeds)),
        policies=policies,
        quick=args.quick,
    ), common


def main(argv: list[str] | None = None) -> int:
    config, common = parse_config(argv)
    writer = ResultWriter("selection", asdict(config), {"scikit-learn": package_version("scikit-learn")})
    t0 = time.perf_counter()
    stream = build_stream(config)
    train_s = time.perf_counter() - t0
    c = stream.correct
    best = int(np.argmax(c.sum(0)))  # first maximum on ties
    best_loss = np.cumsum(~c[:, best])
    results = []
    for spec in config.policies:
        runs = [run_policy(spec, stream, seed, config.loss) for seed in config.policy_seeds]
        results.append(
            PolicyResult(
                spec,
                [summarise(r, best_loss, config) for r in runs],
                np.mean([np.cumsum(r.correct) for r in runs], axis=0),
                np.stack([np.cumsum(~r.correct) - best_loss for r in runs]),
                np.mean([r.broken_share for r in runs], axis=0),
            )
        )
    report = format_report(config, stream, results, best)
    notes = findings(config, stream, results, best)
    print(report)
    print()
    for line in notes:
        print(line)
    decide = ", ".join(
        f"{r.spec.label} {np.mean([x.decide_us_per_query for x in r.runs]):.0f}" for r in results
    )
    print(
        f"\ntraining + scoring {train_s:.1f} s; policy time per query (µs, select+combine+observe,"
        f" pure Python): {decide}"
    )
    document = results_document(config, stream, results, best, writer.started, report, notes)
    paths = writer.write(document, publish=common.publish)
    print("results: " + ", ".join(str(p) for p in paths))
    print(plot_selection(paths[0]))
    return 0
