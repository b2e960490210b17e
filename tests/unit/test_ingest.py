"""The GPU ingest state machine, driven on the CPU through `NumpyBackend`.

The fake device queue runs a copy only when the test (or a wait) says so, and a copy reads its
source slot when it runs, as a DMA does -- so releasing a slot too early, publishing before a
copy finished, or reusing a buffer still in use each show up as wrong bytes or a wrong order.
"""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.channel import RingReader, RingWriter
from schooner.ipc.frames import ScoresCodec, model_input_schema
from schooner.ipc.ring import Ring, ring_nbytes
from schooner.ipc.shm import Segment
from schooner.model_procs.ingest import PAGE_NBYTES, DeviceIngest, NumpyBackend, registration

SHAPE = (4,)
SLOT = 4096


def make_ring(nslots=4):
    mm = mmap.mmap(-1, ring_nbytes(nslots, SLOT))
    Ring.create(mm, nslots, SLOT)
    return mm


class Producer:
    """The scheduler's side of the input ring."""

    def __init__(self, mm) -> None:
        self.ring = Ring(mm)
        self.codec = FrameCodec(model_input_schema("floats", SHAPE))

    def put(self, rows: np.ndarray) -> None:
        slot = self.ring.reserve()
        n = self.codec.write(slot, len(rows), [rows.astype(np.float32)])
        slot.release()
        self.ring.publish(n)

    def scribble_released(self, before_tail: int) -> None:
        """Overwrite every slot released since `before_tail`, as an eager producer would."""
        for seq in range(before_tail, self.ring.tail):
            off = self.ring._base + (seq % self.ring.nslots) * self.ring._stride
            self.ring._buf[off : off + SLOT] = b"\xee" * SLOT


class EagerReader(RingReader):
    """A reader whose producer rewrites a slot the moment it is released."""

    __slots__ = ("producer",)

    def release(self, count: int = 1) -> None:
        tail = self.ring.tail
        super().release(count)
        self.producer.scribble_released(tail)


@pytest.fixture
def rig():
    mm_in, mm_out = make_ring(), make_ring()
    producer = Producer(mm_in)
    reader = EagerReader(Segment("/in", len(mm_in), mm_in, False), None)
    reader.producer = producer
    backend = NumpyBackend(np.dtype("<f4"), 8 * 4)
    ingest = DeviceIngest(backend, FrameCodec(model_input_schema("floats", SHAPE)), SHAPE)
    ingest.attach([mm_in, mm_out])
    yield producer, reader, backend, ingest, mm_out
    ingest.detach()
    producer.ring.close()
    reader.close()
    mm_out.close()


def rows(value: float, n: int = 2) -> np.ndarray:
    return np.full((n, *SHAPE), value, np.float32) + np.arange(n, dtype=np.float32)[:, None]


def test_each_mapping_is_registered_once_page_aligned_and_unregistered_after_the_queue_drains():
    mm = make_ring()
    backend = NumpyBackend(np.dtype("<f4"), 32)
    ingest = DeviceIngest(backend, FrameCodec(model_input_schema("floats", SHAPE)), SHAPE)
    ingest.attach([mm])
    base, length = registration(mm)
    assert base % PAGE_NBYTES == 0 and length % PAGE_NBYTES == 0 and length >= len(mm)
    assert backend.registered == {base: length}
    with pytest.raises(RuntimeError, match="AlreadyRegistered"):
        ingest.attach([mm])  # a second registration of the same range fails, as in CUDA
    assert backend.registered == {base: length}
    backend.mark(0)  # work still queued: detach must wait for it before unregistering
    ingest.detach()
    assert backend.registered == {}
    assert backend.log[-2:] == ["queue mark 0", "unregister"] and not backend.queue.ops
    mm.close()  # nothing holds a view of it any more


def test_a_failed_attach_unregisters_what_it_had_registered():
    a, b = make_ring(), make_ring()
    backend = NumpyBackend(np.dtype("<f4"), 32)
    ingest = DeviceIngest(backend, FrameCodec(model_input_schema("floats", SHAPE)), SHAPE)
    backend.register(b)
    with pytest.raises(RuntimeError):
        ingest.attach([a, b])
    assert list(backend.registered) == [registration(b)[0]]  # a was rolled back
    backend.unregister(b)
    a.close()
    b.close()


def test_batches_alternate_buffers_and_at_most_two_are_staged(rig):
    producer, reader, backend, ingest, _ = rig
    for v in (10, 20, 30):
        producer.put(rows(v))
    assert ingest.stage(reader) == 2
    assert [s.k for s in ingest.staged] == [0, 1]
    assert ingest.stage(reader) == 0  # both buffers busy: batch 3 waits
    s0, x0 = ingest.take()
    assert np.array_equal(x0, rows(10))
    ingest.release_copied(reader, upto=s0)
    ingest.finish(s0)
    assert ingest.stage(reader) == 1
    assert [s.k for s in ingest.staged] == [1, 0]
    # buffer 0's new copy is queued after the mark that says batch 0 is done with it
    log = backend.log
    assert log.index("queue mark 0") < len(log) - 1 - log[::-1].index("queue h2d 0")
    s1, x1 = ingest.take()
    assert np.array_equal(x1, rows(20))
    ingest.release_copied(reader, upto=s1)
    ingest.finish(s1)
    s2, x2 = ingest.take()
    assert s2.k == 0 and np.array_equal(x2, rows(30))


def test_an_input_slot_is_released_only_after_its_copy_completed(rig):
    producer, reader, backend, ingest, _ = rig
    producer.put(rows(1))
    producer.put(rows(2))
    ingest.stage(reader)
    assert ingest.release_copied(reader) == 0 and producer.ring.tail == 0  # copies still queued
    backend.queue.run(1)  # batch 0's copy done, batch 1's not
    assert ingest.release_copied(reader) == 1 and producer.ring.tail == 1
    assert ingest.release_copied(reader) == 0 and producer.ring.tail == 1
    backend.queue.run()
    assert ingest.release_copied(reader) == 1 and producer.ring.tail == 2


def test_releases_go_oldest_first_even_when_a_later_copy_finished_first(rig):
    producer, reader, backend, ingest, _ = rig
    producer.put(rows(1))
    producer.put(rows(2))
    ingest.stage(reader)
    ingest.staged[1].copied.done = True  # the later copy reports done first
    assert ingest.release_copied(reader) == 0 and producer.ring.tail == 0


def test_release_upto_waits_for_that_copy_and_no_later_one(rig):
    producer, reader, backend, ingest, _ = rig
    producer.put(rows(1))
    producer.put(rows(2))
    ingest.stage(reader)
    s0 = ingest.staged[0]
    assert ingest.release_copied(reader, upto=s0) == 1
    assert s0.copied.done and not ingest.staged[1].copied.done and producer.ring.tail == 1


def test_a_producer_rewriting_a_slot_right_after_release_never_corrupts_a_batch(rig):
    producer, reader, backend, ingest, _ = rig
    seen = []
    for v in range(6):
        producer.put(rows(100 + v, n=1 + v % 3))
        if reader.pending() < 3 and v < 5:
            continue
        while reader.pending() or ingest.staged:
            ingest.stage(reader)
            s, x = ingest.take()
            ingest.release_copied(reader)  # opportunistic: whatever finished copying
            seen.append(x.copy())
            ingest.release_copied(reader, upto=s)
            ingest.finish(s)
    expected = [rows(100 + v, n=1 + v % 3) for v in range(6)]
    assert len(seen) == 6 and all(np.array_equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_the_fake_device_does_read_the_slot_late_so_an_early_release_would_be_caught(rig):
    producer, reader, backend, ingest, _ = rig
    producer.put(rows(7))
    ingest.stage(reader)
    reader.release(1)  # the bug the ingest avoids: release before the copy ran
    s, x = ingest.take()
    assert not np.array_equal(x, rows(7))  # the copy read the producer's new bytes
    s.released = True
    ingest.finish(s)


class CheckedRing:
    """An output ring whose publish checks that the slot holds the finished copy."""

    def __init__(self, ring: Ring, backend: NumpyBackend, expect) -> None:
        self.ring, self.backend, self.expect, self.published = ring, backend, expect, 0

    def reserve(self):
        return self.ring.reserve()

    def publish(self, nbytes: int) -> int:
        assert not self.backend.queue.ops, "published while the device-to-host copy was queued"
        view = self.ring._slot(self.ring.head, nbytes)
        scores, error = ScoresCodec().read(view)
        assert error is None and np.array_equal(scores, self.expect)
        view.release()
        self.published += 1
        return self.ring.publish(nbytes)


@pytest.mark.parametrize(
    "y, wire",
    [
        (np.arange(6, dtype=np.float32), np.float32),
        (np.arange(12, dtype=np.float64).reshape(6, 2), np.float64),
        (np.arange(6, dtype=np.int32), np.int64),
        (np.array([True, False] * 3), np.uint8),
        (np.arange(24, dtype=np.float16).reshape(6, 2, 2), np.float32),
    ],
)
def test_a_device_result_is_framed_copied_into_the_slot_and_published_after_the_copy(y, wire):
    mm = make_ring()
    backend = NumpyBackend(np.dtype("<f4"), 32)
    ingest = DeviceIngest(backend, FrameCodec(model_input_schema("floats", SHAPE)), SHAPE)
    ingest.attach([mm])
    writer = RingWriter(Segment("/out", len(mm), mm, False), type("Bell", (), {"ring": lambda self: None})())
    expect = np.ascontiguousarray(y, dtype=wire).reshape(6, -1) if y.ndim > 2 else y.astype(wire)
    checked = CheckedRing(writer.ring, backend, expect)
    writer.ring = checked
    prepared = ingest.prepare_output(y, 6)
    assert writer.try_write(lambda slot: ingest.write_output(slot, prepared))
    assert checked.published == 1
    # the bytes are exactly what the host path writes
    host = bytearray(SLOT)
    n = ScoresCodec().write(memoryview(host), ScoresCodec.normalize(y, 6))
    consumer = Ring(mm)
    view = consumer.peek(0)
    assert bytes(view) == bytes(host[:n])
    view.release()
    consumer.close()
    writer.ring = checked.ring
    ingest.detach()
    writer.close()


def test_a_device_result_with_the_wrong_rows_or_too_big_fails_before_any_copy():
    backend = NumpyBackend(np.dtype("<f4"), 32)
    ingest = DeviceIngest(backend, FrameCodec(model_input_schema("floats", SHAPE)), SHAPE)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        ingest.prepare_output(np.zeros(4, np.float32), 3)
    with pytest.raises(ValueError, match="numbers or booleans"):
        ingest.prepare_output(np.array(["a", "b"]), 2)
    big = ingest.prepare_output(np.zeros((3, 1000), np.float32), 3)
    with pytest.raises(OverflowError):
        ingest.write_output(memoryview(bytearray(1024)), big)
    assert not backend.queue.ops and backend.log == []


def test_finish_refuses_a_batch_whose_slot_was_not_released(rig):
    producer, reader, backend, ingest, _ = rig
    producer.put(rows(1))
    ingest.stage(reader)
    s, _ = ingest.take()
    with pytest.raises(RuntimeError, match="not released"):
        ingest.finish(s)
    ingest.release_copied(reader, upto=s)
    ingest.finish(s)


def test_rebind_drains_forgets_staged_batches_unregisters_then_closes_then_registers(rig):
    producer, reader, backend, ingest, mm_out = rig
    producer.put(rows(1))
    producer.put(rows(2))
    ingest.stage(reader)
    old = dict(backend.registered)
    new_in, new_out = make_ring(), make_ring()
    order = []

    def close_old():
        order.append(("closed", dict(backend.registered)))

    ingest.rebind([new_in, new_out], close_old)
    assert order == [("closed", {})]  # the old mappings were unregistered before closing
    assert not ingest.staged and not backend.queue.ops and ingest.next_k == 0
    assert set(backend.registered) == {registration(new_in)[0], registration(new_out)[0]}
    assert not set(old) & set(backend.registered)
    ingest.detach()
    ingest.attach([reader.segment.buf, mm_out])  # for the fixture's teardown
    new_in.close()
    new_out.close()
