"""`render_outputs` renders a whole batch with one orjson call and cuts it into rows: the
rows must be byte-identical to rendering each row on its own, for every shape and dtype a
model may answer (and the non-finite floats keep Triton's spelling)."""

import json

import numpy as np
import orjson
import pytest

from schooner.engine.scheduler_proc import render_outputs
from schooner.ipc import frames

RNG = np.random.default_rng(3)
CASES = [
    RNG.standard_normal(64).astype(np.float32),
    RNG.standard_normal((64, 10)).astype(np.float32),
    RNG.standard_normal((5, 3)).astype(np.float64),
    RNG.integers(-(2**62), 2**62, 9).astype(np.int64),
    RNG.integers(-5, 5, (7, 3)).astype(np.int64),
    np.zeros((6, 1), np.float32),
    np.zeros((5, 0), np.float32),
    np.zeros(0, np.float32),
    np.zeros((0, 4), np.float32),
    np.array([1e30, -1e-30, 0.0, -0.0, 3.4e38], np.float32),
    np.arange(12, dtype=np.int64).reshape(4, 3)[:, ::-1],  # not contiguous
    np.array([1.5, 2.5], np.float32),  # short batches take the per-row path
]


@pytest.mark.parametrize("scores", CASES, ids=[f"{c.dtype}{list(c.shape)}" for c in CASES])
def test_batch_rendering_equals_rendering_each_row(scores):
    expected = [orjson.dumps(np.ascontiguousarray(r) if np.ndim(r) else r, option=orjson.OPT_SERIALIZE_NUMPY)
                for r in scores]
    assert render_outputs(scores) == expected


def test_booleans_strings_and_non_finite_floats():
    assert render_outputs(np.array([1, 0, 1, 1, 0], np.uint8)) == [b"true", b"false", b"true", b"true", b"false"]
    rows = render_outputs(np.array([[np.nan, 1.0], [np.inf, -np.inf], [0, 0], [1, 2]], np.float32))
    assert [json.loads(r) for r in rows][3] == [1.0, 2.0] and rows[1] == b"[Infinity, -Infinity]"
    assert render_outputs(frames.TextRows("string", [b'say "hi"', b"b"])) == [b'"say \\"hi\\""', b'"b"']
