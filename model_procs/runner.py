"""Loading a user's model from its entry point and turning its scores into an Arrow batch.

An entry point is ``package.module:attr``. `attr` may be

* a class: instantiated with the model's ``init_args`` as keyword arguments; its optional ``setup(device)`` runs once, then
  its ``predict(batch)`` answers each batch;
* an object with a ``predict`` method (used as is, ``setup`` called if present);
* a plain function ``f(batch) -> scores``.

``batch`` is a numpy array of shape ``(n, *input_shape)`` (a zero-copy view of the input ring
slot, valid only during the call) for numeric input types, or a list of ``bytes``/``str`` for
``bytes``/``strings``. With ``input_device = "gpu"`` the batch is instead a ``cupy.ndarray``
(or a ``torch.Tensor`` when the model prefers torch, see `ModelRunner.prefers_torch`) of the same
shape on the process's GPU, valid only during the call; a result on the device is copied back
without a host round trip. ``scores`` is anything ``numpy.asarray`` accepts (torch tensors too) with
``n`` rows: shape ``(n,)`` gives one JSON value per query, ``(n, k)`` a JSON array.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The entry point could not be imported or set up; the message says which and why."""


class ModelRunner:
    """A loaded model: `predict(batch) -> np.ndarray` with one row per query."""

    def __init__(self, predict: Callable, obj: object = None) -> None:
        self._predict = predict
        self.obj = obj

    @classmethod
    def load(cls, entry_point: str, device: str, init_args: dict | None = None) -> ModelRunner:
        module_name, _, attr_path = entry_point.partition(":")
        try:
            target = importlib.import_module(module_name)
        except Exception as e:
            raise ModelLoadError(f"cannot import {module_name!r} for entry point {entry_point}: {_describe(e)}") from e
        try:
            for part in attr_path.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise ModelLoadError(f"{module_name!r} has no attribute {attr_path!r} (entry point {entry_point})") from None
        try:
            if isinstance(target, type):
                target = target(**(init_args or {}))
            if hasattr(target, "predict"):
                if hasattr(target, "setup"):
                    target.setup(device)
                return cls(target.predict, target)
        except Exception as e:
            log.exception("setting up %s on %s failed", entry_point, device)
            raise ModelLoadError(f"setting up {entry_point} on {device} failed: {_describe(e)}") from e
        if callable(target):
            return cls(target)
        raise ModelLoadError(f"{entry_point} is neither a class, an object with predict, nor a function")

    @property
    def prefers_torch(self) -> bool:
        """Whether a model with ``input_device = "gpu"`` gets a ``torch.Tensor`` (else a
        ``cupy.ndarray``): the model says ``input_array = "torch"``, or is a torch module.
        Decided without importing torch."""
        obj = self.obj
        if obj is None:
            return getattr(self._predict, "input_array", "") == "torch"
        declared = getattr(obj, "input_array", "")
        if declared:
            return declared == "torch"
        return any(c.__module__.split(".")[0] == "torch" for c in type(obj).__mro__)

    def predict(self, batch) -> np.ndarray:
        return self._predict(batch)


def _describe(e: BaseException) -> str:
    """Type, message and, for a file that could not be opened, its name (str() of an OSError
    carries it; repr() does not)."""
    return f"{type(e).__name__}: {e}"
