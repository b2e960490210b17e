"""PredictionCache: digests, byte-bounded LRU, counters and single-flight misses."""

import numpy as np
import pytest

from schooner.engine.core.cache import (
    DEFAULT_CAPACITY_NBYTES,
    DIGEST_NBYTES,
    ENTRY_OVERHEAD_NBYTES,
    CacheKey,
    PredictionCache,
    entry_nbytes,
    input_digest,
)


def key(i, model=0, version="1"):
    return CacheKey(model, version, input_digest(i.to_bytes(4, "little"), "int32", (1,)))


def cost(value):
    return len(value) + DIGEST_NBYTES + ENTRY_OVERHEAD_NBYTES


# -- digest -----------------------------------------------------------------------------------


def test_digest_is_16_bytes_and_deterministic():
    d = input_digest(b"abcd", "float32", (1,))
    assert len(d) == DIGEST_NBYTES
    assert d == input_digest(b"abcd", "float32", (1,))
    assert d != input_digest(b"abce", "float32", (1,))


def test_equal_bytes_of_another_dtype_or_shape_do_not_collide():
    data = bytes(range(16))
    digests = {
        input_digest(data, "float32", (4,)),
        input_digest(data, "int32", (4,)),
        input_digest(data, "float32", (2, 2)),
        input_digest(data, "float64", (2,)),
        input_digest(data, "uint8", (16,)),
        input_digest(data, "uint8", (16, 1)),
    }
    assert len(digests) == 6


def test_header_is_prefix_free():
    # A naive "dtype + shape + data" concatenation would make these two equal.
    assert input_digest(b"2xyz", "f", (1,)) != input_digest(b"xyz", "f2", (1,))
    assert input_digest(b"", "int8", (0,)) != input_digest(b"", "int8", (0, 0))


def test_memoryview_and_bytes_of_a_numpy_array_agree():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    by_view = input_digest(memoryview(a), str(a.dtype), a.shape)
    assert by_view == input_digest(a.tobytes(), "float32", (2, 3))


# -- bounded LRU ------------------------------------------------------------------------------


def test_get_returns_last_put_and_counts():
    c = PredictionCache()
    assert c.capacity_nbytes == DEFAULT_CAPACITY_NBYTES
    assert c.get(key(1)) is None
    c.put(key(1), b"[1]")
    c.put(key(1), b"[2]")
    assert c.get(key(1)) == b"[2]"
    assert (c.hits, c.misses, c.evictions, len(c)) == (1, 1, 0, 1)
    assert c.nbytes == entry_nbytes(key(1), b"[2]") == cost(b"[2]")


def test_empty_value_is_a_hit_not_a_miss():
    c = PredictionCache()
    c.put(key(1), b"")
    assert c.get(key(1)) == b""
    assert c.hits == 1


def test_version_is_part_of_the_key():
    c = PredictionCache()
    c.put(key(1, version="1"), b"old")
    assert c.get(key(1, version="2")) is None
    assert c.get(key(1, model=1)) is None
    assert c.get(key(1, version="1")) == b"old"


def test_lru_eviction_by_bytes():
    v = b"x" * 10
    c = PredictionCache(capacity_nbytes=3 * cost(v))
    for i in range(3):
        c.put(key(i), v)
    assert c.nbytes == 3 * cost(v)
    assert c.get(key(0)) == v  # 0 becomes most recently used; 1 is now the LRU
    c.put(key(3), v)
    assert key(1) not in c
    assert all(key(i) in c for i in (0, 2, 3))
    assert c.evictions == 1
    assert c.nbytes == 3 * cost(v)


def test_big_value_evicts_several():
    small = b"s"
    big = b"b" * (2 * cost(small))
    c = PredictionCache(capacity_nbytes=cost(big) + cost(small))
    for i in range(3):
        c.put(key(i), small)
    c.put(key(9), big)
    assert c.evictions == 2 and len(c) == 2
    assert key(2) in c and key(9) in c
    assert c.nbytes <= c.capacity_nbytes


def test_entry_larger_than_capacity_is_not_cached_and_drops_the_old_value():
    c = PredictionCache(capacity_nbytes=cost(b"12345"))
    c.put(key(1), b"12345")
    assert c.get(key(1)) == b"12345"
    c.put(key(1), b"123456")
    assert key(1) not in c
    assert c.get(key(1)) is None
    assert c.nbytes == 0 and c.evictions == 0


def test_replacing_a_value_adjusts_bytes_without_evicting():
    c = PredictionCache(capacity_nbytes=2 * cost(b"ab"))
    c.put(key(1), b"ab")
    c.put(key(2), b"ab")
    c.put(key(1), b"a")
    assert c.nbytes == cost(b"ab") + cost(b"a")
    assert c.evictions == 0 and len(c) == 2


def test_zero_capacity_caches_nothing_but_still_shares_flights():
    c = PredictionCache(capacity_nbytes=0)
    c.put(key(1), b"x")
    assert len(c) == 0
    assert c.lookup_or_join(key(1), "a") == (None, True)
    assert c.lookup_or_join(key(1), "b") == (None, False)
    assert c.complete(key(1), b"x") == ["a", "b"]
    assert len(c) == 0


def test_negative_capacity_is_refused():
    with pytest.raises(ValueError):
        PredictionCache(capacity_nbytes=-1)


# -- single flight ----------------------------------------------------------------------------


def test_first_miss_leads_later_misses_join_complete_answers_all():
    c = PredictionCache()
    k = key(1)
    assert c.lookup_or_join(k, "a") == (None, True)
    assert c.lookup_or_join(k, "b") == (None, False)
    assert c.lookup_or_join(k, "c") == (None, False)
    assert c.is_pending(k) and c.npending == 1
    assert c.waiters(k) == ("a", "b", "c")
    assert c.complete(k, b"[7]") == ["a", "b", "c"]
    assert not c.is_pending(k)
    assert c.lookup_or_join(k, "d") == (b"[7]", False)
    assert (c.hits, c.misses, c.joined) == (1, 3, 2)


def test_fail_answers_waiters_and_caches_nothing():
    c = PredictionCache()
    k = key(1)
    c.lookup_or_join(k, "a")
    c.lookup_or_join(k, "b")
    assert c.fail(k) == ["a", "b"]
    assert k not in c and not c.is_pending(k)
    assert c.lookup_or_join(k, "c") == (None, True)  # the next miss leads a new computation


def test_complete_or_fail_without_pending_returns_nothing():
    c = PredictionCache()
    assert c.fail(key(1)) == []
    assert c.complete(key(1), b"v") == []
    assert c.get(key(1)) == b"v"  # a fresh model output is still worth keeping


def test_leader_abandoned_keeps_flight_pending_for_the_others():
    c = PredictionCache()
    k = key(1)
    c.lookup_or_join(k, "lead")
    c.lookup_or_join(k, "b")
    c.abandon(k, "lead")
    assert c.is_pending(k)
    assert c.lookup_or_join(k, "c") == (None, False)  # still joins: no second computation
    assert c.complete(k, b"v") == ["b", "c"]
    assert c.get(k) == b"v"


def test_every_waiter_abandoned_still_fills_the_cache():
    c = PredictionCache()
    k = key(1)
    c.lookup_or_join(k, "a")
    c.abandon(k, "a")
    assert c.is_pending(k) and c.waiters(k) == ()
    assert c.complete(k, b"v") == []
    assert c.get(k) == b"v"


def test_abandon_is_by_identity_and_idempotent():
    c = PredictionCache()
    k = key(1)
    a, b = [1], [1]  # equal but distinct waiters
    c.lookup_or_join(k, a)
    c.lookup_or_join(k, b)
    c.abandon(k, b)
    c.abandon(k, b)
    c.abandon(key(2), a)  # not pending: no-op
    (only,) = c.complete(k, b"v")
    assert only is a


def test_hit_while_pending_is_a_hit():
    c = PredictionCache()
    k = key(1)
    c.lookup_or_join(k, "a")
    c.put(k, b"v")
    assert c.lookup_or_join(k, "b") == (b"v", False)
    assert c.complete(k, b"w") == ["a"]
    assert c.get(k) == b"w"


def test_pending_keys_are_independent():
    c = PredictionCache()
    assert c.lookup_or_join(key(1), "a") == (None, True)
    assert c.lookup_or_join(key(2), "b") == (None, True)
    assert c.lookup_or_join(key(1, version="2"), "c") == (None, True)
    assert c.npending == 3
    assert c.complete(key(2), b"v") == ["b"]
    assert c.fail(key(1)) == ["a"]
    assert c.waiters(key(1, version="2")) == ("c",)


def test_lookup_hit_refreshes_recency():
    v = b"v"
    c = PredictionCache(capacity_nbytes=2 * cost(v))
    c.put(key(0), v)
    c.put(key(1), v)
    assert c.lookup_or_join(key(0), "w") == (v, False)
    c.put(key(2), v)
    assert key(0) in c and key(1) not in c


def test_capacity_boundaries_are_exact():
    v = b"x" * 10
    c = PredictionCache(capacity_nbytes=cost(v))
    c.put(key(1), v)  # costing exactly the capacity: stored
    assert key(1) in c and c.nbytes == c.capacity_nbytes
    c = PredictionCache(capacity_nbytes=3 * cost(v) - 1)
    for i in range(3):
        c.put(key(i), v)
    assert len(c) == 2 and c.evictions == 1 and key(0) not in c
    assert c.nbytes == 2 * cost(v)


def test_digester_matches_input_digest():
    from schooner.engine.core.cache import digester

    d = digester("<f4", (2, 2))
    data = bytes(range(16))
    assert d(data) == input_digest(data, "<f4", (2, 2))
    assert d(data) != digester("<i4", (2, 2))(data)
