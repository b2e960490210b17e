"""PredictionCache against a dict and a model of its pending flights (hypothesis state machine).

The cache must behave like a bounded dict: a get answers None or the value last put for that
key; the byte total is the sum of the stored entries' costs and never exceeds the capacity; an
entry costing more than the capacity is never stored. Single flight: one leader per pending
key, and every waiter is handed back exactly once by complete/fail unless it was abandoned.
"""

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from schooner.engine.core.cache import CacheKey, PredictionCache, entry_nbytes, input_digest

KEYS = [
    CacheKey(model, version, input_digest(bytes([i]), "uint8", (1,)))
    for model in (0, 1)
    for version in ("1", "2")
    for i in range(3)
]
MAX_VALUE = 80
FULL_COST = entry_nbytes(KEYS[0], b"x" * MAX_VALUE)

keys = st.sampled_from(KEYS)
# A few sizes (so that capacities can be exact sums of entry costs) and a few fills (so that a
# stale value differs from the last one put).
SIZES = (0, 8, 40, MAX_VALUE)
values = st.builds(
    lambda size, fill: bytes([fill]) * size, st.sampled_from(SIZES), st.integers(0, 3)
)
COSTS = [entry_nbytes(KEYS[0], bytes(n)) for n in SIZES]
# Capacities that straddle one entry's cost or fit a few entries exactly (off by one either way),
# and arbitrary ones.
capacities = st.one_of(
    st.integers(min_value=0, max_value=4 * FULL_COST),
    st.builds(
        lambda costs, delta: max(0, sum(costs) + delta),
        st.lists(st.sampled_from(COSTS), min_size=1, max_size=4),
        st.sampled_from((-1, 0, 1)),
    ),
)


class Waiter:
    """An opaque waiter; distinct instances never compare equal."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"W{self.n}"


class CacheVsDict(RuleBasedStateMachine):
    waiters = Bundle("waiters")

    def __init__(self) -> None:
        super().__init__()
        self.cache = PredictionCache(0)
        self.last: dict[CacheKey, bytes] = {}  # the last cacheable value put per key
        self.pending: dict[CacheKey, list[Waiter]] = {}
        self.registered: list[Waiter] = []
        self.answered: dict[int, int] = {}  # waiter n -> times handed back
        self.abandoned: set[int] = set()

    @initialize(capacity=capacities)
    def make_cache(self, capacity):
        self.cache = PredictionCache(capacity)

    def _stored_value_model(self, key, value):
        if entry_nbytes(key, value) <= self.cache.capacity_nbytes:
            self.last[key] = value
            assert key in self.cache  # the value just put is the most recent: never evicted
        else:
            self.last.pop(key, None)
            assert key not in self.cache

    def _hand_back(self, key, returned):
        expected = self.pending.pop(key, [])
        assert len(returned) == len(expected)
        assert all(r is e for r, e in zip(returned, expected, strict=True))
        for w in returned:
            assert w.n not in self.abandoned
            self.answered[w.n] = self.answered.get(w.n, 0) + 1
            assert self.answered[w.n] == 1

    # -- plain cache --------------------------------------------------------------------------

    @rule(key=keys, value=values)
    def put(self, key, value):
        self.cache.put(key, value)
        self._stored_value_model(key, value)

    @rule(key=keys)
    def get(self, key):
        stored = key in self.cache
        got = self.cache.get(key)
        if stored:
            assert got == self.last[key]
            assert key in self.cache
        else:
            assert got is None

    # -- single flight ------------------------------------------------------------------------

    @rule(target=waiters, key=keys)
    def lookup_or_join(self, key):
        w = Waiter(len(self.registered))
        stored = key in self.cache
        hits, misses, joined = self.cache.hits, self.cache.misses, self.cache.joined
        value, leader = self.cache.lookup_or_join(key, w)
        if stored:
            assert (value, leader) == (self.last[key], False)
            assert self.cache.hits == hits + 1
            return (key, None)
        assert value is None
        assert self.cache.misses == misses + 1
        self.registered.append(w)
        if key in self.pending:
            assert not leader  # exactly one leader per pending key
            assert self.cache.joined == joined + 1
            self.pending[key].append(w)
        else:
            assert leader
            self.pending[key] = [w]
        return (key, w)

    def _complete(self, key, value):
        returned = self.cache.complete(key, value)
        self._stored_value_model(key, value)
        self._hand_back(key, returned)

    def _fail(self, key):
        was_stored = key in self.cache
        returned = self.cache.fail(key)
        assert (key in self.cache) == was_stored  # fail caches nothing and drops nothing
        self._hand_back(key, returned)

    @rule(key=keys, value=values)
    def complete(self, key, value):
        self._complete(key, value)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), value=values)
    def complete_a_pending_key(self, data, value):
        self._complete(data.draw(st.sampled_from(sorted(self.pending, key=KEYS.index))), value)

    @rule(key=keys)
    def fail(self, key):
        self._fail(key)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def fail_a_pending_key(self, data):
        self._fail(data.draw(st.sampled_from(sorted(self.pending, key=KEYS.index))))

    @rule(entry=waiters)
    def abandon(self, entry):
        key, w = entry
        if w is None:  # that lookup was a hit: abandoning something unknown is a no-op
            w = Waiter(-1)
        self.cache.abandon(key, w)
        if w in self.pending.get(key, []):
            self.pending[key] = [x for x in self.pending[key] if x is not w]
            self.abandoned.add(w.n)
        assert self.cache.is_pending(key) == (key in self.pending)  # abandon never clears

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def bytes_within_capacity_and_match_the_model(self):
        c = self.cache
        stored = [k for k in KEYS if k in c]
        assert len(c) == len(stored)
        assert all(k in self.last for k in stored)
        assert c.nbytes == sum(entry_nbytes(k, self.last[k]) for k in stored)
        assert c.nbytes <= c.capacity_nbytes
        assert all(entry_nbytes(k, self.last[k]) <= c.capacity_nbytes for k in stored)

    @invariant()
    def pending_matches_the_model(self):
        c = self.cache
        assert c.npending == len(self.pending)
        for k in KEYS:
            assert c.waiters(k) == tuple(self.pending.get(k, ()))

    @invariant()
    def counters_add_up(self):
        c = self.cache
        assert c.hits >= 0 and c.misses >= c.joined >= 0

    def teardown(self):
        for key in list(self.pending):
            self._hand_back(key, self.cache.fail(key))
        for w in self.registered:
            handed = self.answered.get(w.n, 0)
            assert handed == (0 if w.n in self.abandoned else 1), w


CacheVsDict.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCacheVsDict = CacheVsDict.TestCase
