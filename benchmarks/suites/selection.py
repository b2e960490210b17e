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
directory (``benchmarks.harness.results``). The models and the stream live in
``benchmarks.suites.selection_data``, the policy runs and the report in
``benchmarks.suites.selection_runs``; this file plans, runs and records.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

import numpy as np

from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.results import ResultWriter, package_version
from benchmarks.plots.selection import plot_selection
from benchmarks.suites.selection_data import (
    CURVE_POINTS,
    DEFAULT_POLICY_SEEDS,
    DEFAULT_QUERIES,
    QUICK_POLICY_SEEDS,
    QUICK_QUERIES,
    PolicySpec,
    SelectionBenchConfig,
    Stream,
    build_stream,
)
from benchmarks.suites.selection_runs import (
    PolicyResult,
    findings,
    format_report,
    run_policy,
    summarise,
)

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
