"""The ring's index logic against a deque, over a plain bytearray (hypothesis state machine)."""

from collections import deque

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from schooner.ipc.ring import Ring, RingFullError, RingLayoutError, ring_nbytes

SLOT = 48


class RingVsDeque(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.nslots = 3
        self.buf = bytearray(ring_nbytes(self.nslots, SLOT))
        self.producer = Ring.create(self.buf, self.nslots, SLOT)
        self.consumer = Ring(self.buf)  # a second view, as the other process would attach
        self.model: deque[bytes] = deque()

    @rule(data=st.binary(max_size=SLOT))
    def write(self, data):
        if len(self.model) == self.nslots:
            with pytest.raises(RingFullError):
                self.producer.write(data)
        else:
            seq = self.producer.write(data)
            assert seq == self.producer.head - 1
            self.model.append(data)

    @rule(data=st.binary(min_size=SLOT + 1, max_size=SLOT + 8))
    def oversized_write_is_refused_and_changes_nothing(self, data):
        before = (self.producer.head, self.producer.tail)
        with pytest.raises(ValueError):
            self.producer.write(data)
        assert (self.producer.head, self.producer.tail) == before

    @precondition(lambda self: self.model)
    @rule(i=st.integers(min_value=0, max_value=5))
    def peek(self, i):
        if i < len(self.model):
            assert bytes(self.consumer.peek(i)) == self.model[i]
        else:
            with pytest.raises(IndexError):
                self.consumer.peek(i)

    @rule(count=st.integers(min_value=0, max_value=4))
    def release(self, count):
        if count > len(self.model):
            with pytest.raises(ValueError):
                self.consumer.release(count)
            return
        was_full = len(self.model) == self.nslots
        assert self.consumer.release(count) == was_full
        for _ in range(count):
            self.model.popleft()

    @invariant()
    def counts_agree(self):
        assert len(self.consumer) == len(self.model) == self.consumer.pending()
        assert self.producer.free() == self.nslots - len(self.model)
        assert 0 <= self.producer.head - self.producer.tail <= self.nslots


TestRingVsDeque = RingVsDeque.TestCase
TestRingVsDeque.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_attach_refuses_a_foreign_buffer():
    with pytest.raises(RingLayoutError):
        Ring(bytearray(4096))


def test_attach_refuses_a_truncated_buffer():
    buf = bytearray(ring_nbytes(4, 128))
    Ring.create(buf, 4, 128)
    with pytest.raises(RingLayoutError, match="does not fit"):
        Ring(buf[: len(buf) - 64])


def test_sequence_numbers_keep_growing_across_wraps():
    buf = bytearray(ring_nbytes(2, 8))
    r = Ring.create(buf, 2, 8)
    for i in range(7):
        assert r.write(bytes([i])) == i
        assert bytes(r.peek(0)) == bytes([i])
        r.release(1)
