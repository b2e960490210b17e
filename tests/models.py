"""Real models for the integration and end-to-end tests (imported by model processes).

`TorchMLP` is a real torch network. `SlowTorchMLP` runs the same network and then holds the
batch for `hold_s`, so a test can kill the process while a batch is certainly in flight; it
touches `marker_path` when a batch starts so the test knows when that is (no guessing sleeps).
`PickyModel` raises inside predict for inputs whose first value is negative, to exercise the
model-error path.
"""

from __future__ import annotations

import os
import time

import numpy as np


class TorchMLP:
    def __init__(self, width: int = 16, classes: int = 4) -> None:
        self.width, self.classes = width, classes

    def setup(self, device: str) -> None:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.torch = torch
        self.net = torch.nn.Sequential(
            torch.nn.Linear(self.width, 32), torch.nn.ReLU(), torch.nn.Linear(32, self.classes)
        ).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.net(self.torch.from_numpy(batch)).numpy()


class SlowTorchMLP(TorchMLP):
    def __init__(self, hold_s: float = 0.5, marker_path: str = "", **kw) -> None:
        super().__init__(**kw)
        self.hold_s = hold_s
        self.marker_path = marker_path

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = super().predict(batch)
        if self.marker_path:
            with open(self.marker_path, "a") as f:
                f.write(f"{os.getpid()} {len(batch)}\n")
        time.sleep(self.hold_s)
        return out


class NanPayload:
    """Answers a float32 NaN whose bits are not the one NaN JSON gives back (0x7fc00001): a V2
    binary answer keeps them only if it travelled as a typed row."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.frombuffer(b"\x01\x00\xc0\x7f" * len(batch), np.float32).copy()


class PickyModel:
    def predict(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(len(batch), -1)
        if (flat[:, 0] < 0).any():
            raise ValueError("negative first feature")
        return flat.sum(axis=1)


class LinearLatencyModel:
    """Takes a + b*n seconds for a batch of n (a stand-in for a model whose cost is known
    exactly, so a test can compute the batch size AIMD must find); answers row sums."""

    def __init__(self, a_s: float, b_s: float) -> None:
        self.a_s, self.b_s = a_s, b_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.a_s + self.b_s * len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1)


class StringLengths:
    """For `strings` apps: the length of each string (batch is a list of str)."""

    def predict(self, batch: list[str]) -> np.ndarray:
        return np.array([len(s) for s in batch], dtype=np.int64)


class DigitsProba:
    """A real classifier of scikit-learn's digits: class probabilities (n, 10)."""

    def setup(self, device: str) -> None:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        d = load_digits()
        self.clf = LogisticRegression(max_iter=500).fit(d.data[:1000], d.target[:1000])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(batch.reshape(len(batch), -1)).astype(np.float32)


class AlwaysZero:
    """A useless model for the same task: all its probability on class 0."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), 10), dtype=np.float32)
        out[:, 0] = 1.0
        return out


class ConstantClass:
    """Always predicts class `label` of `classes` (one-hot scores): with two of these behind a
    bandit app, feedback has a model that is always right and one that is always wrong."""

    def __init__(self, label: int = 0, classes: int = 4) -> None:
        self.label, self.classes = label, classes

    def predict(self, batch) -> np.ndarray:
        out = np.zeros((len(batch), self.classes), dtype=np.float32)
        out[:, self.label] = 1.0
        return out


class OrderRecorder:
    """Serves one batch at a time in the order the scheduler sends them: appends each row's
    first value (a tag) to `marker_path` when the batch starts, then holds the batch for the
    largest second value of its rows, in milliseconds. Answers row sums."""

    def __init__(self, marker_path: str) -> None:
        self.marker_path = marker_path

    def predict(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(len(batch), -1)
        with open(self.marker_path, "a") as f:
            f.write("".join(f"{int(r[0])}\n" for r in flat))
        time.sleep(float(flat[:, 1].max()) / 1000.0)
        return flat.sum(axis=1)


class SumModel:
    """The cheapest model there is (numpy's sum of each row): answers come back within tens of
    microseconds, the timing that races the frontend's tick against the scheduler's answers."""

    def setup(self, device: str) -> None:
        pass

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.sum(axis=1, dtype=np.float32)
