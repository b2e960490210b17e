"""The model process's device path (input_device = "gpu") through the real worker loop over
real shared memory, with `NumpyBackend` standing in for the GPU: batches in order, errors as
data, a Rebind onto new rings, and every segment registered exactly while it is mapped."""

from __future__ import annotations

import numpy as np
import pytest

from schooner.model_procs.ingest import NumpyBackend, registration
from tests.ingest_rig import SHAPE, WorkerRig


def double(x):
    return x.sum(axis=1) * 2


@pytest.fixture
def rig():
    backend = NumpyBackend(np.dtype("<f4"), 8 * SHAPE[0], autorun=False)
    r = WorkerRig(double, backend)
    yield r, backend
    r.close()
    assert backend.registered == {}, "a mapping was left registered"


def batch(v: float, n: int) -> np.ndarray:
    return np.arange(n * SHAPE[0], dtype=np.float32).reshape(n, *SHAPE) + v


def test_batches_round_trip_through_the_worker_loop_in_order(rig):
    r, backend = rig
    assert set(backend.registered) == {registration(m)[0] for m in r.mapped()}
    sent = [batch(10 * i, 1 + i % 3) for i in range(3)]
    for b in sent:
        r.put(b)
    assert r.run() == 3
    for b in sent:
        scores, error = r.take()
        assert error is None and np.array_equal(scores, b.sum(axis=1) * 2)
    assert r.producer.tail == 3  # every input slot released
    assert all(op is None for op, _ in backend.queue.ops)  # no copy pending, only buffer marks


def test_a_failing_model_and_a_host_result_both_answer(rig):
    r, backend = rig
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return (x.sum(axis=1)).tolist()  # a host result: the host path writes it

    r.proc.runner._predict = flaky
    r.put(batch(0, 2))
    r.put(batch(1, 2))
    assert r.run() == 2
    assert r.take() == (None, "RuntimeError: boom")
    scores, error = r.take()
    assert error is None and np.allclose(scores, batch(1, 2).sum(axis=1))


def test_rebind_moves_the_registrations_to_the_new_rings(rig):
    r, backend = rig
    r.put(batch(0, 1))
    r.run()
    r.take()
    r.rebind()
    assert set(backend.registered) == {registration(m)[0] for m in r.mapped()}
    r.put(batch(5, 2))
    assert r.run() == 1
    scores, error = r.take()
    assert error is None and np.array_equal(scores, batch(5, 2).sum(axis=1) * 2)
