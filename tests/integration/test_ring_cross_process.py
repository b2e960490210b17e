"""A ring in real POSIX shared memory, written by another process, woken by an eventfd."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from schooner.ipc import frames
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.channel import Doorbell, ProcessSentinel, RingReader, wait_any
from schooner.ipc.ring import Ring, ring_nbytes
from schooner.ipc.shm import Segment, list_segments, new_instance_id, segment_name

PRODUCER = textwrap.dedent(
    """
    import sys, time, numpy as np, pyarrow as pa
    from schooner.ipc import frames
    from schooner.ipc.arrow_lite import FrameCodec
    from schooner.ipc.channel import Doorbell, RingWriter, wait_any
    from schooner.ipc.shm import Segment
    name, bell_fd, my_fd, count, hang = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    deadline = time.monotonic() + float(sys.argv[6])  # a lost wake-up ends the producer, never hangs it
    codec = FrameCodec(pa.schema([("i", pa.int64()), ("s", pa.binary())]))
    w = RingWriter(Segment.attach(name), Doorbell(bell_fd))
    me = Doorbell(my_fd)
    for i in range(count):
        cols = [np.array([i, -i]), frames.binary_column([b"x" * (i % 50), b""])]
        while not w.try_write(lambda slot: codec.write(slot, 2, cols)):
            w.flush()
            if not wait_any([me.fileno()], max(0.0, deadline - time.monotonic())):  # consumer posts when it frees a full ring
                sys.exit(f"producer: no wake-up from the consumer before the deadline ({i} of {count} written)")
            me.clear()
        w.flush()
    if hang:
        import time; time.sleep(3600)
    """
)
DEADLINE_S = 60.0  # overall, per test: a lost wake-up fails the test instead of hanging it
SCHEMA = pa.schema([("i", pa.int64()), ("s", pa.binary())])
CODEC = FrameCodec(SCHEMA)


@pytest.fixture
def ring_segment():
    name = segment_name(new_instance_id(), "test-ring")
    seg = Segment.create(name, ring_nbytes(4, 4096))
    Ring.create(seg.buf, 4, 4096).close()
    yield name, seg
    seg.unlink()
    assert name not in list_segments()


_PRODUCERS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_producer_left():
    """A test that fails mid-way leaves no producer process behind."""
    yield
    while _PRODUCERS:
        proc = _PRODUCERS.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE_S)


def spawn_producer(name, bell, mine, count, hang=False):
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, name, str(bell.fd), str(mine.fd), str(count), "1" if hang else "0", str(DEADLINE_S)],
        pass_fds=[bell.fd, mine.fd],
    )
    _PRODUCERS.append(proc)
    return proc


def test_messages_arrive_in_order_with_backpressure(ring_segment):
    name, seg = ring_segment
    bell, producer_bell = Doorbell.create(), Doorbell.create()
    proc = spawn_producer(name, bell, producer_bell, 300)
    reader = RingReader(seg, producer_bell)
    got = []
    sentinel = ProcessSentinel(proc.pid)
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 300:
        ready = wait_any([bell.fileno(), sentinel.fileno()], max(0.0, deadline - time.monotonic()))
        assert ready, f"no wake-up before the deadline: {len(got)} of 300 read, {reader.pending()} pending (a lost wake-up?)"
        bell.clear()
        n = reader.pending()
        for i in range(n):
            view = reader.read(i)
            assert pa.ipc.read_record_batch(pa.py_buffer(view), SCHEMA).num_rows == 2  # real Arrow IPC
            _, (ints, blobs) = CODEC.read(view)
            got.append(int(ints[0]))
            assert int(ints[1]) == -got[-1]
            assert frames.binary_items(*blobs) == [b"x" * (got[-1] % 50), b""]
            ints = blobs = view = None
        reader.release(n)
        if not n and not sentinel.alive():
            break
    assert got == list(range(300))
    assert proc.wait(DEADLINE_S) == 0
    sentinel.close()
    bell.close()
    producer_bell.close()


def test_a_dead_producer_is_detected_not_waited_on(ring_segment):
    name, seg = ring_segment
    bell, producer_bell = Doorbell.create(), Doorbell.create()
    proc = spawn_producer(name, bell, producer_bell, 2, hang=True)
    sentinel = ProcessSentinel(proc.pid)
    reader = RingReader(seg, producer_bell)
    seen = 0
    deadline = time.monotonic() + DEADLINE_S
    while seen < 2:
        ready = wait_any([bell.fileno()], max(0.0, deadline - time.monotonic()))
        assert ready, f"no wake-up before the deadline: {reader.pending()} of 2 pending (a lost wake-up?)"
        bell.clear()
        seen = reader.pending()
    reader.release(seen)
    os.kill(proc.pid, signal.SIGKILL)
    # the consumer's blocking wait includes the producer's sentinel: it returns (the deadline is
    # only there so that a sentinel that never fires fails the test instead of hanging it)
    while True:
        ready = wait_any([bell.fileno(), sentinel.fileno()], max(0.0, deadline - time.monotonic()))
        assert ready, "the producer's death was not seen before the deadline"
        if sentinel.fileno() in ready:
            break
        bell.clear()  # the producer posts after it publishes: a post may trail the messages seen
    assert not sentinel.alive()
    assert reader.pending() == 0  # a killed producer leaves whole messages or none
    proc.wait()
    sentinel.close()
    bell.close()
    producer_bell.close()
