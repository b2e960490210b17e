"""GPU ingest on a real GPU: registered shared memory, copies in and out, DLPack to torch, the
worker loop, one GPU per spawned child. Skipped (collected everywhere) without CuPy or a GPU.

Shared memory here is ``os.open("/dev/shm/...")`` + ``mmap`` and nothing at module level
imports posix_ipc or orjson: the GPU machine's image has neither. Tests that need the real
worker (which maps rings through posix_ipc) skip where it is missing.
"""

from __future__ import annotations

import mmap
import os
import secrets
import subprocess
import sys

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
try:
    _NGPUS = cp.cuda.runtime.getDeviceCount()
except Exception:  # no driver: CUDARuntimeError
    _NGPUS = 0
if _NGPUS < 1:
    pytest.skip("no CUDA device visible", allow_module_level=True)

from schooner.ipc.arrow_lite import FrameCodec  # noqa: E402
from schooner.ipc.ring import Ring, ring_nbytes  # noqa: E402
from schooner.model_procs.ingest import CupyBackend, DeviceIngest, registration  # noqa: E402

pytestmark = pytest.mark.gpu
SHAPE = (256,)
NSLOTS = 4
SLOT = 64 * 256 * 4 + 4096


class ShmMapping:
    """A POSIX shm segment opened and mapped without posix_ipc; unlinked at close."""

    def __init__(self, nbytes: int) -> None:
        self.path = f"/dev/shm/schooner-gputest-{os.getpid()}-{secrets.token_hex(3)}"
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            self.mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.mm.close()
        os.unlink(self.path)


@pytest.fixture
def shm():
    made = []

    def make(nbytes: int) -> ShmMapping:
        m = ShmMapping(nbytes)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
        assert not os.path.exists(m.path)


def input_codec() -> FrameCodec:
    import pyarrow as pa

    return FrameCodec(pa.schema([("input", pa.list_(pa.float32(), SHAPE[0]))]))


def test_register_and_unregister_a_real_shm_mapping(shm):
    m = shm(1 << 20)
    base, length = registration(m.mm)
    rt = cp.cuda.runtime
    rt.hostRegister(base, length, 0)
    try:
        assert rt.pointerGetAttributes(base).type == rt.memoryTypeHost
        assert rt.pointerGetAttributes(base + 12345).type == rt.memoryTypeHost  # any slot inside
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
            rt.hostRegister(base, length, 0)  # already registered
    finally:
        rt.hostUnregister(base)


def test_h2d_from_a_slot_equals_the_numpy_view(shm):
    m = shm(ring_nbytes(NSLOTS, SLOT))
    Ring.create(m.mm, NSLOTS, SLOT)
    ring = Ring(m.mm)
    codec = input_codec()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, *SHAPE), dtype=np.float32)
    slot = ring.reserve()
    ring.publish(codec.write(slot, len(x), [x]))
    slot.release()
    backend = CupyBackend(np.dtype("<f4"), 64 * SHAPE[0], torch_input=False)
    for b in backend.buffers:
        b.fill(np.nan)  # poison: a copy that did not happen cannot pass
    backend.register(m.mm)
    try:
        view = ring.peek(0)
        _, (col,) = codec.read(view)
        ev = backend.h2d(0, col.reshape(-1), None)
        dev = backend.device_batch(0, len(x), SHAPE, ev)
        ev.synchronize()
        assert np.array_equal(cp.asnumpy(dev), x)
        del view, col
    finally:
        backend.synchronize()
        backend.unregister(m.mm)
        ring.close()


def test_a_producer_rewriting_a_slot_right_after_release_never_corrupts_a_batch(shm):
    m = shm(ring_nbytes(NSLOTS, SLOT))
    Ring.create(m.mm, NSLOTS, SLOT)
    producer, consumer = Ring(m.mm), Ring(m.mm)
    codec = input_codec()

    class Reader:
        def pending(self):
            return consumer.pending()

        def read(self, i=0):
            return consumer.peek(i)

        def release(self, count=1):
            tail = consumer.tail
            consumer.release(count)
            for seq in range(tail, consumer.tail):  # the producer pounces on the freed slot
                off = consumer._base + (seq % NSLOTS) * consumer._stride
                consumer._buf[off : off + SLOT] = b"\xff" * SLOT

    backend = CupyBackend(np.dtype("<f4"), 64 * SHAPE[0], torch_input=False)
    ingest = DeviceIngest(backend, codec, SHAPE)
    ingest.attach([m.mm])
    reader, seen, sent = Reader(), [], []
    rng = np.random.default_rng(1)
    try:
        for i in range(40):
            x = rng.standard_normal((64, *SHAPE), dtype=np.float32)
            sent.append(x)
            slot = producer.reserve()
            producer.publish(codec.write(slot, len(x), [x]))
            slot.release()
            if producer.free() and i < 39:
                continue
            while reader.pending() or ingest.staged:
                ingest.stage(reader)
                s, dev = ingest.take()
                with backend.computing():
                    y = dev.sum(axis=1)
                ingest.release_copied(reader)
                seen.append(cp.asnumpy(y, stream=backend.compute))
                ingest.release_copied(reader, upto=s)
                ingest.finish(s)
        assert len(seen) == len(sent)
        for y, x in zip(seen, sent, strict=True):
            np.testing.assert_allclose(y, x.sum(axis=1), rtol=1e-4, atol=1e-3)
    finally:
        ingest.detach()
        producer.close()
        consumer.close()


def test_dlpack_hands_torch_the_same_device_pointer():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    backend = CupyBackend(np.dtype("<f4"), 1024, torch_input=True)
    for t, b in zip(backend.torch_buffers, backend.buffers, strict=True):
        assert t.data_ptr() == b.data.ptr and t.is_cuda


def test_d2h_into_the_registered_output_slot_equals_y_cpu(shm):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    m = shm(1 << 20)
    backend = CupyBackend(np.dtype("<f4"), 1024, torch_input=True)
    ingest = DeviceIngest(backend, input_codec(), SHAPE)
    ingest.attach([m.mm])
    try:
        with backend.computing():
            y = torch.randn(50, 10, device="cuda") * 3
            prepared = ingest.prepare_output(y, 50)
        slot = memoryview(m.mm)[4096:]
        n = ingest.write_output(slot, prepared)
        import pyarrow as pa

        reader = pa.ipc.open_stream(pa.py_buffer(bytes(slot[:n])))
        got = reader.read_next_batch().column(0).flatten().to_numpy().reshape(50, 10)
        assert np.array_equal(got, y.cpu().numpy())
        del slot
    finally:
        ingest.detach()


def test_the_worker_loop_round_trips_through_registered_shm():
    pytest.importorskip("posix_ipc")
    pytest.importorskip("orjson")
    from tests.ingest_rig import SHAPE as RIG_SHAPE
    from tests.ingest_rig import WorkerRig

    backend = CupyBackend(np.dtype("<f4"), 8 * RIG_SHAPE[0], torch_input=False)
    rig = WorkerRig(lambda x: x.sum(axis=1) * 2, backend)
    try:
        sent = [np.random.default_rng(i).standard_normal((1 + i % 8, *RIG_SHAPE), dtype=np.float32)
                for i in range(10)]
        for i in range(0, 10, 3):
            for x in sent[i : i + 3]:
                rig.put(x)
            rig.run()
            for x in sent[i : i + 3]:
                scores, error = rig.take()
                assert error is None
                np.testing.assert_allclose(scores, x.sum(axis=1) * 2, rtol=1e-5, atol=1e-5)
        rig.rebind()
        rig.put(sent[0])
        rig.run()
        scores, error = rig.take()
        assert error is None
        np.testing.assert_allclose(scores, sent[0].sum(axis=1) * 2, rtol=1e-5, atol=1e-5)
    finally:
        rig.close()


def test_a_spawned_child_sees_exactly_its_one_gpu():
    from schooner.engine.gpus import discover_gpus

    gpus = discover_gpus(os.cpu_count() or 1)
    assert gpus, "NVML or nvidia-smi should see the GPU CUDA sees"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus[-1].uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    code = "import cupy; print(cupy.cuda.runtime.getDeviceCount())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_discovery_does_not_load_cuda_in_the_caller():
    code = ("import os, sys; from schooner.engine.gpus import discover_gpus; g = discover_gpus(os.cpu_count()); "
            "print(len(g), 'cupy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    n, cupy_loaded, torch_loaded = out.stdout.split()
    assert int(n) >= 1 and cupy_loaded == "False" and torch_loaded == "False"


SERVE = """
[[models]]
name = "mlp"
entry_point = "tests.gpu.gpu_models:TorchCudaMLP"
input_type = "floats"
input_shape = [16]
device = "cuda"
max_batch_size = 8

[[apps]]
name = "mlp"
input_type = "floats"
input_shape = [16]
latency_slo_micros = 10000000
default_output = "-1"
models = ["mlp"]
"""


def test_schooner_serve_answers_over_http_with_a_torch_model_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    pytest.importorskip("posix_ipc")
    pytest.importorskip("orjson")
    from tests.serving import SchoonerServer

    with SchoonerServer(tmp_path, SERVE) as srv:
        for i in range(5):
            status, body = srv.predict("mlp", {"input": [float(i)] * 16})
            assert status == 200, body
            assert body["default"] is False and len(body["output"]) == 4
        assert srv.stop() == 0
