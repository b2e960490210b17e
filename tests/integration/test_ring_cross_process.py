"""A ring in real POSIX shared memory, written by another process, woken by an eventfd."""

import os
import signal
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from schooner.ipc import frames
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.channel import Doorbell, ProcessSentinel, RingReader, wait_any
from schooner.ipc.ring import Ring, ring_nbytes
from schooner.ipc.shm import Segment, list_segments, new_instance_id, segment_name

PRODUCER = textwrap.dedent(
    """
    import sys, numpy as np, pyarrow as pa
    from schooner.ipc import frames
    from schooner.ipc.arrow_lite import FrameCodec
    from schooner.ipc.channel import Doorbell, RingWriter, wait_any
    from schooner.ipc.shm import Segment
    name, bell_fd, my_fd, count, hang = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    codec = FrameCodec(pa.schema([("i", pa.int64()), ("s", pa.binary())]))
    w = RingWriter(Segment.attach(name), Doorbell(bell_fd))
    me = Doorbell(my_fd)
    for i in range(count):
        cols = [np.array([i, -i]), frames.binary_column([b"x" * (i % 50), b""])]
        while not w.try_write(lambda slot: codec.write(slot, 2, cols)):
            w.flush()
            wait_any([me.fileno()], None)  # consumer posts when it frees a full ring
            me.clear()
        w.flush()
    if hang:
        import time; time.sleep(3600)
    """
)
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


def spawn_producer(name, bell, mine, count, hang=False):
    return subprocess.Popen(
        [sys.executable, "-c", PRODUCER, name, str(bell.fd), str(mine.fd), str(count), "1" if hang else "0"],
        pass_fds=[bell.fd, mine.fd],
    )


def test_messages_arrive_in_order_with_backpressure(ring_segment):
    name, seg = ring_segment
    bell, producer_bell = Doorbell.create(), Doorbell.create()
    proc = spawn_producer(name, bell, producer_bell, 300)
    reader = RingReader(seg, producer_bell)
    got = []
    sentinel = ProcessSentinel(proc.pid)
    while len(got) < 300:
        wait_any([bell.fileno(), sentinel.fileno()], 30)
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
    assert proc.wait(30) == 0
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
    while seen < 2:
        wait_any([bell.fileno()], 30)
        bell.clear()
        seen = reader.pending()
    reader.release(seen)
    os.kill(proc.pid, signal.SIGKILL)
    # the consumer's blocking wait includes the producer's sentinel: it returns, with no timeout
    ready = wait_any([bell.fileno(), sentinel.fileno()], None)
    assert sentinel.fileno() in ready and not sentinel.alive()
    assert reader.pending() == 0  # a killed producer leaves whole messages or none
    proc.wait()
    sentinel.close()
    bell.close()
    producer_bell.close()
