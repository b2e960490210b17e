"""The selection suite's data: its constants and config, five trained models and the query stream.

Owns ``SelectionBenchConfig``, the five classifiers trained on half of scikit-learn's bundled
digits (``train_models``) and the stream of test rows with every model's answer for every position
computed once up front, the broken model's misrouted answers included (``build_stream``). Used by
``benchmarks.suites.selection`` and ``benchmarks.suites.selection_runs``; never run itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.harness.results import package_version
from schooner.engine.core.policies import (
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
