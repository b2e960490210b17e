"""The models every benchmark serves: Schooner entry points ``benchmarks.workloads.models:<Class>``.

Owns the model classes only (the registry of workloads that serve them is
``benchmarks.workloads``). Each follows Schooner's model contract: an optional ``setup(device)``
once in the model process, then ``predict(batch)`` with ``batch`` a numpy array (n, *input_shape)
returning n rows. torch is imported inside the torch models only, so the harness stays light.

  SumModel          W1: the sum of 16 floats, so that serving overhead is all that is measured.
  MLPModel          W2 (and W4): torch MLP 16→256→256→10, ReLU, seed 0, one intra-op thread.
  CNNModel          W3: a small torch CNN on 3×32×32 images (width ``CNN_WIDTH``).
  ImageMeanModel    the mean of a 3×224×224 FP32 image: a large input, almost no compute.
  LinearLatencyModel  a + b·n seconds per batch of n (a sleep, no CPU): AIMD's analytic n*.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np

# torch is imported inside the torch models only, so loading SumModel (or the harness) stays light.
if TYPE_CHECKING:
    import torch

INPUT_DIM = 16
MLP_HIDDEN = 256
MLP_CLASSES = 10
CNN_INPUT_SHAPE = (3, 32, 32)
CNN_CLASSES = 10
CNN_WIDTH = 8  # first conv's channels: ~3.6 ms per batch of 32 on one core of the development VM
IMAGE_SHAPE = (3, 224, 224)


class BatchModel(Protocol):
    """What Schooner calls: ``setup`` once (optional), then ``predict`` per batch."""

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class SumModel:
    """W1: the cheapest possible model, so that serving overhead is all that is measured."""

    def setup(self, device: str) -> None:
        if device != "cpu":
            raise ValueError(f"SumModel runs on cpu only, not {device!r}")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.sum(axis=1, dtype=np.float32)


class MLPModel:
    """W2: a small torch MLP (16→256→256→10, ReLU), fixed weights from ``torch.manual_seed(seed)``.

    One intra-op thread, as one replica per core is how it is served. ``seed`` (default 0) gives
    another set of weights: a second version whose answers differ (the management suite).
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._net: torch.nn.Module | None = None
        self._device: torch.device | None = None

    def setup(self, device: str) -> None:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(self._seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(INPUT_DIM, MLP_HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(MLP_HIDDEN, MLP_CLASSES),
        )
        self._device = torch.device(device)
        self._net = net.to(self._device).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._net is None or self._device is None:
            raise RuntimeError("MLPModel.predict called before setup()")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self._device.type != "cpu":
                x = x.to(self._device)
            return self._net(x).cpu().numpy()


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


class ImageMeanModel:
    """The mean of each image: one pass over the input, tens of µs per image on one core."""

    def setup(self, device: str) -> None:
        if device != "cpu":
            raise ValueError(f"ImageMeanModel runs on cpu only, not {device!r}")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        rows = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        return rows.mean(axis=1, dtype=np.float32)


class LinearLatencyModel:
    """Sleeps ``a_s + b_s * n`` seconds for a batch of n rows; answers the row sums."""

    def __init__(self, a_s: float, b_s: float) -> None:
        if a_s < 0 or b_s < 0:
            raise ValueError(f"a_s and b_s must be >= 0, not {a_s}, {b_s}")
        self.a_s = a_s
        self.b_s = b_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.a_s + self.b_s * len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1)


def analytic_batch_size(a_s: float, b_s: float, slo_s: float, target_fraction: float = 0.9) -> int:
    """n* = floor((target_fraction · SLO − a) / b): the largest batch whose model latency stays
    within the AIMD target (Schooner's default target is 90% of the SLO). Round trip and sleep
    overshoot are not counted, so the limit AIMD measures may settle a little below."""
    if b_s <= 0:
        raise ValueError("b_s must be > 0 for a finite n*")
    # the epsilon keeps float rounding (34.999999...) from costing an exact n* one
    return math.floor((target_fraction * slo_s - a_s) / b_s + 1e-9)
