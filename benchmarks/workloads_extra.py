"""Study workloads beyond W1/W2: W3 (a model-bound torch CNN) and W4 (W2 with Zipf-repeated inputs).

Owns ``benchmarks.workloads_extra:CNNModel`` (a Schooner entry point), the image inputs it is
sent, the registry ``STUDY_WORKLOADS`` that ``benchmarks.study`` plans with (W1 and W2 come from
``benchmarks.workloads`` unchanged), and the in-process model limit of every study workload.

W3, ``CNNModel``: 3×32×32 float32 images (CIFAR-sized), conv(3→w, 3×3) → ReLU → max-pool 2 →
conv(w→2w) → ReLU → max-pool 2 → conv(2w→4w) → ReLU → global average pool → linear(4w→10),
weights from ``torch.manual_seed(0)``, one intra-op thread. ``CNN_WIDTH`` was chosen so a batch
of 32 takes roughly 1–5 ms on one core of the development VM (``python -m
benchmarks.workloads_extra --tune`` measures the candidates; see benchmarks/README.md).
Inputs are uniform in [0, 1) rounded to 3 decimals, so a request body (3,072 numbers, flat) is
about 18 KB of JSON rather than 30.

W4: W2's model with inputs that repeat: with probability ``W4_REPEAT_FRACTION`` a request carries
one of ``HOT_INPUTS`` inputs drawn Zipf(s = ``ZIPF_EXPONENT``) by rank, else an input sent once
(``benchmarks.scheduler_bench.zipf_input_ids``, the same draw the scheduler benchmark's cache
section uses). Served with the prediction cache on; W1–W3 are served with it off.

Model limit: ``python -m benchmarks.workloads_extra [--json]`` times ``predict`` in-process on one
thread at batch sizes 1, 8, 32, 64, as ``benchmarks.model_limit`` does for W1/W2 (which it calls
for those), so ``benchmarks.study`` can run it in a child process and keep torch out of the
harness. W4's limit is W2's (a cache hit can beat it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import orjson

from benchmarks.model_limit import CALLS_PER_CLOCK_READ, ModelLimitPoint, measure_model_limits
from benchmarks.workloads import INPUT_DIM, WORKLOADS, BatchModel, make_inputs, request_body

if TYPE_CHECKING:
    import torch

CNN_INPUT_SHAPE = (3, 32, 32)
CNN_CLASSES = 10
CNN_WIDTH = 8  # first conv's channels; measured: see module docstring
HOT_INPUTS = 1000
ZIPF_EXPONENT = 1.1
W4_REPEAT_FRACTION = 0.8
LIMIT_BATCH_SIZES = (1, 8, 32, 64)
LIMIT_INPUT_SEED = 7


class CNNModel:
    """W3: a small CNN on 3×32×32 images; ``width`` channels in the first conv (doubling after)."""

    def __init__(self, width: int = CNN_WIDTH) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, not {width}")
        self.width = width
        self._net: torch.nn.Module | None = None
        self._device: torch.device | None = None

    def setup(self, device: str) -> None:
        import torch
        from torch import nn

        torch.set_num_threads(1)
        torch.manual_seed(0)
        w = self.width
        net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, CNN_CLASSES),
        )
        self._device = torch.device(device)
        self._net = net.to(self._device).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._net is None or self._device is None:
            raise RuntimeError("CNNModel.predict called before setup()")
        x = np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), *CNN_INPUT_SHAPE)
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self._device.type != "cpu":
                t = t.to(self._device)
            return self._net(t).cpu().numpy()


def make_image_inputs(n: int, seed: int) -> np.ndarray:
    """``n`` deterministic images, shape (n, 3, 32, 32) float32, uniform in [0, 1), 3 decimals."""
    rng = np.random.default_rng(seed)
    return np.round(rng.random((n, *CNN_INPUT_SHAPE)), 3).astype(np.float32)


def flat_request_body(row: np.ndarray) -> bytes:
    """``{"input": [...]}`` with the row flattened (Schooner accepts a flat input of the right size)."""
    return request_body(np.ascontiguousarray(row).reshape(-1))


@dataclass(frozen=True, slots=True)
class StudyWorkload:
    """One workload as the study plans it: model, inputs, and how it is served."""

    name: str  # also the app name: POST /<name>/predict
    description: str
    entry_point: str  # Schooner entry point of the model
    model_workload: str  # the model's key for limits ("w4" uses "w2"'s)
    input_shape: tuple[int, ...]
    make_inputs: Callable[[int, int], np.ndarray]
    factory: Callable[[], BatchModel]
    cache: bool  # Schooner's prediction cache on for this app
    zipf_repeats: bool = False  # inputs repeat (W4)
    distinct_bodies: int = 4096  # pool of bodies cycled when inputs do not repeat
    sweep_start_per_s: float = 1000.0  # first rate of the study's sweep

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    def body(self, row: np.ndarray) -> bytes:
        return flat_request_body(row) if len(self.input_shape) > 1 else request_body(row)


STUDY_WORKLOADS: Mapping[str, StudyWorkload] = MappingProxyType(
    {
        "w1": StudyWorkload(
            "w1", WORKLOADS["w1"].description, WORKLOADS["w1"].entry_point, "w1",
            (INPUT_DIM,), make_inputs, WORKLOADS["w1"].factory, cache=False,
        ),
        "w2": StudyWorkload(
            "w2", WORKLOADS["w2"].description, WORKLOADS["w2"].entry_point, "w2",
            (INPUT_DIM,), make_inputs, WORKLOADS["w2"].factory, cache=False,
        ),
        "w3": StudyWorkload(
            "w3", f"torch CNN on 3x32x32 (width {CNN_WIDTH})", "benchmarks.workloads_extra:CNNModel",
            "w3", CNN_INPUT_SHAPE, make_image_inputs, CNNModel, cache=False,
            distinct_bodies=256, sweep_start_per_s=250.0,
        ),
        "w4": StudyWorkload(
            "w4", f"W2 with {W4_REPEAT_FRACTION:.0%} Zipf({ZIPF_EXPONENT:g})-repeated inputs over {HOT_INPUTS} hot ones, cache on",
            WORKLOADS["w2"].entry_point, "w2", (INPUT_DIM,), make_inputs, WORKLOADS["w2"].factory,
            cache=True, zipf_repeats=True,
        ),
    }
)  # fmt: skip


def request_stream(
    workload: StudyWorkload, count: int, seed: int
) -> tuple[list[bytes], np.ndarray]:
    """(distinct bodies, body index of each of ``count`` requests) for one run.

    Non-repeating workloads cycle a pool of ``distinct_bodies`` (served with the cache off, so
    repeats cost what a fresh input costs); W4 draws which input each request carries.
    """
    if not workload.zipf_repeats:
        pool = min(count, workload.distinct_bodies) or 1
        rows = workload.make_inputs(pool, seed)
        return [workload.body(r) for r in rows], np.arange(count) % pool
    from benchmarks.scheduler_bench import zipf_input_ids

    ids = zipf_input_ids(count, W4_REPEAT_FRACTION, HOT_INPUTS, ZIPF_EXPONENT, seed)
    distinct = int(ids.max()) + 1 if len(ids) else 1
    rows = workload.make_inputs(distinct, seed + 1)
    return [workload.body(r) for r in rows], ids


def ideal_hit_rate(body_index: np.ndarray) -> float | None:
    """Share of requests repeating an earlier one: a never-evicting cache's hit rate."""
    return 1.0 - len(np.unique(body_index)) / len(body_index) if len(body_index) else None


def load_study_model(workload: StudyWorkload, device: str = "cpu") -> BatchModel:
    model = workload.factory()
    setup = getattr(model, "setup", None)
    if setup is not None:
        setup(device)
    return model


# ---------------------------------------------------------------------------------------------
# Model limit and width tuning


def time_batch(
    model: BatchModel,
    batch: np.ndarray,
    duration_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float]:
    """Calls ``predict(batch)`` for about ``duration_s``; (calls, elapsed_s)."""
    for _ in range(CALLS_PER_CLOCK_READ):
        model.predict(batch)
    calls, start, elapsed = 0, clock(), 0.0
    while elapsed < duration_s:
        for _ in range(CALLS_PER_CLOCK_READ):
            model.predict(batch)
        calls += CALLS_PER_CLOCK_READ
        elapsed = clock() - start
    return calls, elapsed


def study_model_limits(
    names: Sequence[str], batch_sizes: Sequence[int], duration_s: float
) -> list[ModelLimitPoint]:
    """Model limits of study workloads; W1/W2 through ``benchmarks.model_limit``, W4 as W2."""
    models = list(dict.fromkeys(STUDY_WORKLOADS[n].model_workload for n in names))
    base = [m for m in models if m in WORKLOADS]
    points = measure_model_limits(base, batch_sizes, duration_s) if base else []
    for m in models:
        if m in WORKLOADS:
            continue
        workload = STUDY_WORKLOADS[m]
        model = load_study_model(workload)
        for b in batch_sizes:
            calls, elapsed = time_batch(
                model, workload.make_inputs(b, LIMIT_INPUT_SEED), duration_s
            )
            points.append(
                ModelLimitPoint(m, b, calls, elapsed, calls * b / elapsed, elapsed / calls * 1e6)
            )
    by_model = {(p.workload, p.batch_size): p for p in points}
    out = []
    for n in names:
        src = STUDY_WORKLOADS[n].model_workload
        out += [dataclasses.replace(by_model[(src, b)], workload=n) for b in batch_sizes]
    return out


def tune_widths(
    widths: Sequence[int], batch_size: int, duration_s: float
) -> list[tuple[int, float]]:
    """(width, ms per batch of ``batch_size``) for each candidate width, one thread."""
    batch = make_image_inputs(batch_size, LIMIT_INPUT_SEED)
    out = []
    for w in widths:
        model = CNNModel(w)
        model.setup("cpu")
        calls, elapsed = time_batch(model, batch, duration_s)
        out.append((w, elapsed / calls * 1e3))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workloads_extra", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workloads", default=",".join(STUDY_WORKLOADS))
    parser.add_argument("--batch-sizes", default=",".join(map(str, LIMIT_BATCH_SIZES)))
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per point")
    parser.add_argument("--json", action="store_true", help="print the model limits as JSON")
    parser.add_argument(
        "--tune", help="comma-separated CNN widths: print ms per batch of 32 for each"
    )
    args = parser.parse_args(argv)
    if args.tune:
        for w, ms in tune_widths([int(x) for x in args.tune.split(",")], 32, args.duration):
            print(f"width {w:>3}: {ms:7.2f} ms per batch of 32 ({32 / ms * 1e3:,.0f} images/s)")
        return
    names = [n for n in args.workloads.split(",") if n]
    unknown = sorted(set(names) - set(STUDY_WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    points = study_model_limits(names, [int(b) for b in args.batch_sizes.split(",")], args.duration)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([asdict(p) for p in points]) + b"\n")
    else:
        for p in points:
            print(
                f"{p.workload:<4} b{p.batch_size:<3} {p.rows_per_s:>12,.0f} rows/s {p.us_per_call:>10.1f} us/call"
            )


if __name__ == "__main__":
    main()
