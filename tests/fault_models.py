"""Models with unusual answers, for the contract and failure tests (imported by model processes)."""

from __future__ import annotations

import numpy as np

CLASSES = ["cat", "dog", "bird", "fish"]


class ClassNames:
    """Answers a class name per query, as Clipper's models often do (a numpy array of str)."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        idx = batch.reshape(len(batch), -1)[:, 0].astype(np.int64) % len(CLASSES)
        return np.array([CLASSES[i] for i in idx])


class Records:
    """Answers a JSON object per query (a list of dicts)."""

    def predict(self, batch: np.ndarray) -> list:
        return [{"sum": float(r.sum()), "first": float(r[0])} for r in batch.reshape(len(batch), -1)]


class NonFinite:
    """Answers [nan, inf, -inf, x0] per query."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), 4), dtype=np.float32)
        out[:, 0], out[:, 1], out[:, 2] = np.nan, np.inf, -np.inf
        out[:, 3] = batch.reshape(len(batch), -1)[:, 0]
        return out


class Huge:
    """Answers `width` float64 per query: an answer (1.6 MB of values, 3.8 MB of JSON) far
    larger than a small response slot."""

    def __init__(self, width: int = 200_000) -> None:
        self.width = width

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.full((len(batch), self.width), 1.0 / 3.0)


class Ints:
    """Answers the int64 row sum."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1).sum(axis=1).astype(np.int64)


class Offset:
    """Row sum plus `offset`: two versions with different offsets answer distinguishably."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1).sum(axis=1) + self.offset
