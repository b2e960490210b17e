"""Benchmark workloads: the models served, and the inputs every system is sent.

Owns the model classes used as Schooner entry points (``benchmarks.workloads:SumModel``,
``benchmarks.workloads:MLPModel``) and the deterministic request inputs. Every system under
test (Schooner, the inline baseline, the in-process model limit) takes its model and its inputs
from here, so their figures compare the same work.

Model contract (the one Schooner loads): an optional ``setup(device)`` called once in the model
process, then ``predict(batch)`` with ``batch`` of shape (n, 16) float32, returning an array of
shape (n,) or (n, k).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import orjson

# torch is imported inside MLPModel only, so loading SumModel (or the harness) stays light.
if TYPE_CHECKING:
    import torch

INPUT_DIM = 16
MLP_HIDDEN = 256
MLP_CLASSES = 10


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
    """W2: a small torch MLP (16→256→256→10, ReLU), fixed weights from ``torch.manual_seed(0)``.

    One intra-op thread, as one replica per core is how it is served.
    """

    def __init__(self) -> None:
        self._net: torch.nn.Module | None = None
        self._device: torch.device | None = None

    def setup(self, device: str) -> None:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
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


@dataclass(frozen=True, slots=True)
class Workload:
    """One benchmark workload: its Schooner model/app name, entry point and model factory."""

    name: str
    description: str
    entry_point: str
    factory: Callable[[], BatchModel]


WORKLOADS: Mapping[str, Workload] = MappingProxyType(
    {
        "w1": Workload("w1", "sum of 16 floats", "benchmarks.workloads:SumModel", SumModel),
        "w2": Workload("w2", "torch MLP 16-256-256-10", "benchmarks.workloads:MLPModel", MLPModel),
    }
)


def load_model(workload: str, device: str = "cpu") -> BatchModel:
    """Build and set up the model of ``workload`` as Schooner would."""
    model = WORKLOADS[workload].factory()
    setup = getattr(model, "setup", None)
    if setup is not None:
        setup(device)
    return model


def make_inputs(n: int, seed: int) -> np.ndarray:
    """``n`` deterministic input rows, shape (n, 16) float32, uniform in [-1, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, INPUT_DIM)).astype(np.float32)


def request_body(row: np.ndarray) -> bytes:
    """The Clipper-style JSON body ``{"input": [...]}`` for one input row, as every system gets it."""
    return orjson.dumps({"input": row}, option=orjson.OPT_SERIALIZE_NUMPY)
