"""Image-sized benchmark models: a large input and almost no compute, so transport dominates.

Owns ``benchmarks.image_models:ImageMeanModel``, served by ``benchmarks.perf_analyzer_bench`` as
a Schooner model with ``input_shape = [3, 224, 224]`` (FP32, 602,112 bytes per query). Model
contract as in ``benchmarks.workloads``: ``setup(device)`` once, then ``predict(batch)`` with
``batch`` of shape (n, 3, 224, 224) float32 (a view of the shared-memory slot, valid during the
call only), returning shape (n,).
"""

from __future__ import annotations

import numpy as np

IMAGE_SHAPE = (3, 224, 224)


class ImageMeanModel:
    """The mean of each image: one pass over the input, tens of µs per image on one core."""

    def setup(self, device: str) -> None:
        if device != "cpu":
            raise ValueError(f"ImageMeanModel runs on cpu only, not {device!r}")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        rows = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        return rows.mean(axis=1, dtype=np.float32)
