"""Models without a class of their own: saved artifacts and Python closures.

Each loader is an ordinary model class (`setup(device)` + batched `predict`), named by an entry
point like any other, so the worker treats them alike. The admin API and the config accept
`framework` + `model_path` and turn them into one of these (`FRAMEWORKS`):

* `torchscript`: `torch.jit.load(model_path)`, called on a tensor made from the batch (no copy);
* `sklearn`: a scikit-learn estimator saved with joblib (or pickle): `predict_proba` when it has
  one and `method` is not set, else `predict`;
* `onnx`: an ONNX graph run by onnxruntime on the CPU, its first input fed the batch;
* `Closure`: a function serialized with cloudpickle by `schooner.Server.deploy_python_closure`.

An artifact that cannot be loaded fails `setup`, so the model process reports it at start-up
(type, message and the path) and the admin call that deployed it answers with that error.
"""

from __future__ import annotations

import numpy as np

FRAMEWORKS = {
    "torchscript": "schooner.model_procs.loaders:TorchScript",
    "sklearn": "schooner.model_procs.loaders:Sklearn",
    "onnx": "schooner.model_procs.loaders:Onnx",
}


class TorchScript:
    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, device: str) -> None:
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.device = device
        self.module = torch.jit.load(self.path, map_location=device).eval()

    def predict(self, batch: np.ndarray):
        with self.torch.inference_mode():
            x = self.torch.from_numpy(batch).to(self.device)
            return self.module(x).detach().cpu().numpy()


class Sklearn:
    def __init__(self, path: str, method: str = "") -> None:
        self.path, self.method = path, method

    def setup(self, device: str) -> None:
        import joblib

        est = joblib.load(self.path)
        name = self.method or ("predict_proba" if hasattr(est, "predict_proba") else "predict")
        if not hasattr(est, name):
            raise AttributeError(f"{type(est).__name__} loaded from {self.path} has no method {name}")
        self.fn = getattr(est, name)

    def predict(self, batch: np.ndarray):
        return self.fn(batch.reshape(len(batch), -1))


class Onnx:
    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, device: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray):
        return self.session.run(None, {self.input: batch})[0]


class Closure:
    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, device: str) -> None:
        import cloudpickle

        with open(self.path, "rb") as f:
            self.fn = cloudpickle.load(f)

    def predict(self, batch):
        return self.fn(batch)
