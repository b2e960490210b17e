"""The built-in demo model: a scikit-learn classifier of the 8x8 digit images.

The data set ships inside scikit-learn (`load_digits`, no download). The model is trained at
first start in the model process and cached at `model_path` (written atomically), so later
starts load it in milliseconds. Each query is 64 floats (pixel intensities 0..16); the answer
is the predicted digit.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile

import numpy as np

log = logging.getLogger(__name__)


def train_digits_classifier():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    clf = LogisticRegression(max_iter=2000)
    clf.fit(digits.data, digits.target)
    return clf


class DigitsModel:
    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.clf = None

    def setup(self, device: str) -> None:
        try:
            with open(self.model_path, "rb") as f:
                self.clf = pickle.load(f)
            log.info("loaded the digits classifier from %s", self.model_path)
            return
        except (FileNotFoundError, pickle.UnpicklingError, EOFError):
            pass
        self.clf = train_digits_classifier()
        os.makedirs(os.path.dirname(self.model_path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.model_path) or ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(self.clf, f)
        os.replace(tmp, self.model_path)
        log.info("trained the digits classifier and cached it at %s", self.model_path)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.clf.predict(batch.reshape(len(batch), -1))
