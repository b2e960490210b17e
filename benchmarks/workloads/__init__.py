"""The one workload registry: what each benchmark serves, and the requests every system gets.

Owns ``Workload`` (a model entry point with its init arguments, input shape and type, how its
request bodies are made, whether Schooner's cache is on) and ``WORKLOADS``:

  w1         sum of 16 floats: serving overhead only
  w2         torch MLP 16-256-256-10
  w3         torch CNN on 3×32×32 images (~3.6 ms per batch of 32)
  w4         W2 with 80 % Zipf(1.1)-repeated inputs over 1,000 hot ones, cache on
  synthetic  a + b·n seconds per batch (a = 5 ms, b = 0.5 ms; a sleep): AIMD's analytic n*
  image      the mean of a 3×224×224 FP32 image (602,112 bytes per query): transport only

``workload_from_config`` makes a Workload of any app of any Schooner config (``--config FILE
--app NAME``): that app's first model, its input shape, random inputs of that shape.

Every system (Schooner, the inline server, the peers, the in-process model limit) takes its
model through ``load_model`` and its bodies through ``request_stream``, so their figures compare
the same work. This module imports numpy and orjson only (the peers' venvs import it too).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import orjson

from benchmarks.workloads.models import CNN_INPUT_SHAPE, CNN_WIDTH, IMAGE_SHAPE, INPUT_DIM

MODELS = "benchmarks.workloads.models"
HOT_INPUTS = 1000
ZIPF_EXPONENT = 1.1
W4_REPEAT_FRACTION = 0.8
SYNTHETIC_A_S = 0.005
SYNTHETIC_B_S = 0.0005


def make_inputs(n: int, seed: int) -> np.ndarray:
    """``n`` deterministic rows, shape (n, 16) float32, uniform in [-1, 1)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, INPUT_DIM)).astype(np.float32)


def make_small_images(n: int, seed: int) -> np.ndarray:
    """``n`` images (n, 3, 32, 32) float32 in [0, 1), 3 decimals (a body of ~18 KB of JSON)."""
    return np.round(np.random.default_rng(seed).random((n, *CNN_INPUT_SHAPE)), 3).astype(np.float32)


def make_large_images(n: int, seed: int) -> np.ndarray:
    """``n`` images (n, 3, 224, 224) float32 in [0, 1)."""
    return np.random.default_rng(seed).random((n, *IMAGE_SHAPE), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ShapedInputs:
    """Inputs of any shape for a config's app: uniform in [-1, 1) (floats) or [0, 100) (ints)."""

    shape: tuple[int, ...]
    dtype: str

    def __call__(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.dtype == "ints":
            return rng.integers(0, 100, size=(n, *self.shape), dtype=np.int32)
        return rng.uniform(-1.0, 1.0, size=(n, *self.shape)).astype(np.float32)


def request_body(row: np.ndarray) -> bytes:
    """Clipper's ``{"input": [...]}`` for one row, flattened (Schooner takes a flat input of the right size)."""
    return orjson.dumps({"input": np.ascontiguousarray(row).reshape(-1)}, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str  # the model's and, unless ``app`` says otherwise, the app's name
    description: str
    entry_point: str
    input_shape: tuple[int, ...]
    make_inputs: Callable[[int, int], np.ndarray]
    init_args: Mapping[str, object] = field(default_factory=dict)
    input_type: str = "floats"
    cache: bool = False  # Schooner's prediction cache on for this app
    zipf_repeats: bool = False  # inputs repeat (W4)
    distinct_bodies: int = 4096  # pool cycled when inputs do not repeat (open loop)
    start_rate_per_s: float = 1000.0  # first rate of an open-loop capacity search
    limit_of: str | None = None  # the model limit is this workload's (W4: W2's)
    app: str | None = None  # the app queries go to, when not ``name``
    config_path: str | None = None  # a user's config, served as it is (no generated TOML)
    slo_ms: float | None = None  # the app's own SLO (a user's config)

    @property
    def app_name(self) -> str:
        return self.app or self.name

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 1


WORKLOADS: Mapping[str, Workload] = MappingProxyType({
    "w1": Workload("w1", "sum of 16 floats", f"{MODELS}:SumModel", (INPUT_DIM,), make_inputs),
    "w2": Workload("w2", "torch MLP 16-256-256-10", f"{MODELS}:MLPModel", (INPUT_DIM,), make_inputs),
    "w3": Workload(
        "w3", f"torch CNN on 3x32x32 (width {CNN_WIDTH})", f"{MODELS}:CNNModel", CNN_INPUT_SHAPE,
        make_small_images, distinct_bodies=256, start_rate_per_s=250.0,
    ),
    "w4": Workload(
        "w4", f"W2 with {W4_REPEAT_FRACTION:.0%} Zipf({ZIPF_EXPONENT:g})-repeated inputs over {HOT_INPUTS} hot ones, cache on",
        f"{MODELS}:MLPModel", (INPUT_DIM,), make_inputs, cache=True, zipf_repeats=True, limit_of="w2",
    ),
    "synthetic": Workload(
        "synthetic", f"a + b*n per batch (a {SYNTHETIC_A_S * 1e3:g} ms, b {SYNTHETIC_B_S * 1e3:g} ms; a sleep)",
        f"{MODELS}:LinearLatencyModel", (INPUT_DIM,), make_inputs,
        init_args={"a_s": SYNTHETIC_A_S, "b_s": SYNTHETIC_B_S}, start_rate_per_s=250.0,
    ),
    "image": Workload(
        "image", "mean of a 3x224x224 FP32 image", f"{MODELS}:ImageMeanModel", IMAGE_SHAPE,
        make_large_images, distinct_bodies=4, start_rate_per_s=100.0,
    ),
})  # fmt: skip


def digits_rows(n: int, seed: int) -> np.ndarray:
    """The rows of scikit-learn's bundled digits (1,797), cycled: the built-in demo's inputs."""
    from sklearn.datasets import load_digits

    rows = load_digits().data.astype(np.float32)
    return rows[np.arange(n) % len(rows)]


# The built-in demo (``schooner serve`` with no config): its inputs repeat, so its cache answers.
DIGITS = Workload(
    "digits", "the built-in demo: digits rows, repeated (the cache answers)", "(built in)", (64,),
    digits_rows, cache=True, distinct_bodies=1797,
)


def workload_from_config(path: str, app: str) -> Workload:
    """A Workload for app ``app`` of the Schooner config at ``path``, served from that config as is."""
    from schooner.engine.config import load_config

    cfg = load_config(path)
    apps = {a.name: a for a in cfg.apps}
    if app not in apps:
        raise ValueError(f"{path}: no app named {app!r} (apps: {', '.join(apps) or 'none'})")
    a = apps[app]
    if not a.models:
        raise ValueError(f"{path}: app {app!r} links no model")
    if a.input_type not in ("floats", "doubles", "ints"):
        raise ValueError(f"{path}: app {app!r} takes {a.input_type}; only numeric inputs can be generated")
    model = next(m for m in cfg.models if m.name == a.models[0])
    shape = tuple(a.input_shape) or (1,)
    return Workload(
        name=model.name, description=f"app {app} of {path} (model {model.label})",
        entry_point=model.entry_point, input_shape=shape,
        make_inputs=ShapedInputs(shape, a.input_type), init_args=dict(model.init_args),
        input_type=a.input_type, cache=a.cache, app=app, config_path=path,
        slo_ms=a.latency_slo_micros / 1e3,
    )


def load_model(workload: Workload, device: str = "cpu"):
    """The workload's model, imported, built with its init arguments and set up as Schooner does."""
    module, _, attr = workload.entry_point.partition(":")
    target = getattr(importlib.import_module(module), attr)
    model = target(**workload.init_args) if isinstance(target, type) else target
    setup = getattr(model, "setup", None)
    if setup is not None:
        setup(device)
    return model


def zipf_input_ids(count: int, repeat_fraction: float, hot_inputs: int, exponent: float, seed: int) -> np.ndarray:
    """Which input each of ``count`` requests carries: with probability ``repeat_fraction`` one of
    ``hot_inputs`` (rank k drawn ∝ k^-exponent), else one sent once (ids from ``hot_inputs`` up)."""
    rng = np.random.default_rng(seed)
    repeat = rng.random(count) < repeat_fraction
    weights = 1.0 / np.arange(1, hot_inputs + 1, dtype=np.float64) ** exponent
    ids = np.empty(count, dtype=np.int64)
    ids[repeat] = rng.choice(hot_inputs, size=int(repeat.sum()), p=weights / weights.sum())
    ids[~repeat] = hot_inputs + np.arange(int((~repeat).sum()))
    return ids


def request_stream(workload: Workload, count: int, seed: int, repeat_fraction: float | None = None) -> tuple[list[bytes], np.ndarray]:
    """(distinct bodies, body index of each of ``count`` requests) for one run.

    Without repeats a pool of ``distinct_bodies`` is cycled (served with the cache off, a repeat
    costs what a fresh input costs); with repeats (W4, or ``repeat_fraction``) each request's
    input is drawn by ``zipf_input_ids``.
    """
    fraction = W4_REPEAT_FRACTION if workload.zipf_repeats and repeat_fraction is None else repeat_fraction
    if fraction is None:
        pool = max(1, min(count, workload.distinct_bodies))
        return [request_body(r) for r in workload.make_inputs(pool, seed)], np.arange(count) % pool
    ids = zipf_input_ids(count, fraction, HOT_INPUTS, ZIPF_EXPONENT, seed)
    distinct = int(ids.max()) + 1 if len(ids) else 1
    return [request_body(r) for r in workload.make_inputs(distinct, seed + 1)], ids


def ideal_hit_rate(body_index: np.ndarray) -> float | None:
    """Share of requests repeating an earlier one: a never-evicting cache's hit rate."""
    return 1.0 - len(np.unique(body_index)) / len(body_index) if len(body_index) else None
