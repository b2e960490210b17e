"""The wake-up protocol across real processes: producers post only a consumer that may sleep,
and no message is ever left waiting behind a consumer asleep (a lost wake-up).

Two producer processes write to two rings read by one consumer (`Waiter`, as the scheduler
reads its submit rings), in bursts separated by short random pauses so that the consumer goes
to sleep and is woken tens of thousands of times, at every point of its announce-fence-recheck
step. A lost wake-up shows as a wait that times out while a message is pending; each wait is
bounded so that it fails the test instead of hanging it. The protocol itself is model-checked
over TSO store buffers in `tests/unit/test_wakeup_model.py`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from schooner.ipc.channel import Doorbell, ProcessSentinel, RingReader, Waiter
from schooner.ipc.ring import Ring, ring_nbytes
from schooner.ipc.shm import Segment, list_segments, new_instance_id, segment_name

PRODUCER = textwrap.dedent(
    """
    import random, sys, time
    from schooner.ipc.channel import Doorbell, RingWriter
    from schooner.ipc.shm import Segment

    class Counting(Doorbell):
        posts = 0
        def ring(self):
            Counting.posts += 1
            super().ring()

    name, bell_fd, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    w = RingWriter(Segment.attach(name), Counting(bell_fd))
    i = flushes = 0
    while i < count:
        for _ in range(rng.randint(1, 3)):  # a burst, then one flush (as a frontend's tick)
            if i == count:
                break
            while not w.try_write(lambda slot: (slot.__setitem__(slice(0, 8), i.to_bytes(8, "little")), 8)[1]):
                w.flush()
                time.sleep(0)  # full: the consumer is behind; let it run
            i += 1
        w.flush()
        flushes += 1
        pause = rng.random()
        if pause < 0.3:
            time.sleep(rng.random() * 50e-6)  # often long enough for the consumer to sleep
        elif pause < 0.35:
            time.sleep(0.001)
    print(Counting.posts, flushes)
    """
)
MESSAGES = 20_000
WAIT_S = 5.0  # one wait that long with a message pending is a lost wake-up


@pytest.fixture
def rings():
    instance = new_instance_id()
    segs = []
    for k in range(2):
        seg = Segment.create(segment_name(instance, f"wake{k}"), ring_nbytes(8, 64))
        Ring.create(seg.buf, 8, 64).close()
        segs.append(seg)
    yield segs
    for seg in segs:
        name = seg.name
        seg.unlink()
        assert name not in list_segments()


@pytest.mark.parametrize("spin_s", [0.0, 20e-6])
def test_no_wake_up_is_lost_and_busy_consumers_are_not_posted(rings, spin_s):
    bell = Doorbell.create()
    procs = [
        subprocess.Popen([sys.executable, "-c", PRODUCER, seg.name, str(bell.fd), str(MESSAGES), str(k)],
                         pass_fds=[bell.fd], stdout=subprocess.PIPE, text=True)
        for k, seg in enumerate(rings)
    ]
    try:
        readers = [RingReader(seg, None) for seg in rings]
        sentinels = [ProcessSentinel(p.pid) for p in procs]
        waiter = Waiter(bell, spin_s)
        expect = [0, 0]
        deadline = time.monotonic() + 120
        while expect != [MESSAGES, MESSAGES]:
            assert time.monotonic() < deadline, f"only {expect} of {MESSAGES} each after 120 s"
            before = time.monotonic()
            ready = waiter.wait(readers, [s.fileno() for s in sentinels if s.alive()], WAIT_S)
            got_any = False
            for k, r in enumerate(readers):
                n = r.pending()
                for i in range(n):
                    assert int.from_bytes(r.read(i)[:8], "little") == expect[k], "out of order or lost"
                    expect[k] += 1
                r.release(n)
                got_any |= n > 0
            if not got_any and not ready:
                assert time.monotonic() - before < WAIT_S, f"a wait timed out with nothing read: lost wake-up at {expect}"
        counts = [[int(x) for x in p.communicate(timeout=60)[0].split()] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert waiter.sleeps > 100, "the consumer never slept: the protocol was not exercised"
        posts, flushes = sum(c[0] for c in counts), sum(c[1] for c in counts)
        assert posts < flushes, f"{posts} posts for {flushes} flushes: a consumer awake was posted anyway"
        for r in readers:
            r.ring.close()
        for s in sentinels:
            s.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        bell.close()
