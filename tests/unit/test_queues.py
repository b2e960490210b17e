"""DeadlineQueue and batch_ready_at with integer fake times."""

from dataclasses import dataclass

from schooner.engine.core.queues import DeadlineQueue, batch_ready_at

MS = 1_000_000


@dataclass(eq=False)
class Item:
    name: str
    done: bool = False


def live(item):
    return not item.done


def names(items):
    return [i.name for i in items]


def test_pops_earliest_deadline_first_fifo_among_ties():
    q = DeadlineQueue()
    q.push(Item("c"), 30)
    q.push(Item("a1"), 10)
    q.push(Item("b"), 20)
    q.push(Item("a2"), 10)
    assert len(q) == 4 and q.earliest_deadline() == 10
    assert names(q.pop_batch(3, 0, live)) == ["a1", "a2", "b"]
    assert len(q) == 1 and q.earliest_deadline() == 30
    assert names(q.pop_batch(3, 0, live)) == ["c"]
    assert len(q) == 0 and q.earliest_deadline() is None
    assert q.pop_batch(3, 0, live) == []


def test_items_are_never_compared():
    q = DeadlineQueue()
    q.push(object(), 5)
    q.push(object(), 5)  # equal deadlines: the sequence number decides
    assert len(q.pop_batch(2, 0, lambda _: True)) == 2


def test_expired_items_are_dropped_never_returned():
    q = DeadlineQueue()
    q.push(Item("gone"), 10)
    q.push(Item("due_now"), 20)
    q.push(Item("ok"), 21)
    dropped = []
    assert names(q.pop_batch(5, 20, live, dropped)) == ["ok"]
    assert names(dropped) == ["gone", "due_now"]  # deadline <= now counts as passed
    assert len(q) == 0


def test_dead_items_are_dropped_lazily():
    q = DeadlineQueue()
    items = [Item(str(i)) for i in range(5)]
    for i, it in enumerate(items):
        q.push(it, 100 + i)
    items[0].done = True
    items[2].done = True
    assert len(q) == 5  # lazy: still counted until they reach the top
    assert q.earliest_deadline() == 100  # a dead entry's, never later than a live one's
    assert q.earliest_deadline(live) == 101
    assert len(q) == 4
    dropped = []
    assert names(q.pop_batch(2, 0, live, dropped)) == ["1", "3"]
    assert names(dropped) == ["2"]
    assert names(q.pop_batch(2, 0, live)) == ["4"]


def test_limit_bounds_the_batch_and_leaves_the_rest_unexamined():
    q = DeadlineQueue()
    for i in range(6):
        q.push(Item(str(i)), i + 1)
    seen = []

    def spy(item):
        seen.append(item.name)
        return True

    assert names(q.pop_batch(2, 0, spy)) == ["0", "1"]
    assert seen == ["0", "1"]
    assert len(q) == 4
    assert q.pop_batch(0, 0, spy) == []
    assert len(q) == 4


def test_interleaved_push_and_pop():
    q = DeadlineQueue()
    q.push(Item("late"), 50)
    assert names(q.pop_batch(1, 0, live)) == ["late"]
    q.push(Item("x"), 40)
    q.push(Item("y"), 30)
    assert names(q.pop_batch(5, 35, live)) == ["x"]


# -- batch_ready_at ---------------------------------------------------------------------------


def test_full_batch_is_due_at_once():
    assert batch_ready_at(8, 8, 100, 10_000, 50, 10) == 100
    assert batch_ready_at(9, 8, 100, 10_000, 50, 10) == 100


def test_no_batch_wait_is_due_at_once():
    assert batch_ready_at(1, 8, 100, 10_000, 0, 10) == 100


def test_partial_batch_waits_up_to_wait_ns():
    assert batch_ready_at(3, 8, 100 * MS, 200 * MS, 2 * MS, 5 * MS) == 102 * MS


def test_wait_never_passes_what_the_earliest_deadline_allows():
    # oldest at 100 ms may wait to 110 ms, but the earliest deadline (108 ms) minus the
    # expected latency (5 ms) says 103 ms.
    assert batch_ready_at(3, 8, 100 * MS, 108 * MS, 10 * MS, 5 * MS) == 103 * MS


def test_deadline_already_too_close_is_due_before_the_oldest_arrival():
    at = batch_ready_at(1, 8, 100 * MS, 102 * MS, 10 * MS, 5 * MS)
    assert at == 97 * MS and at <= 100 * MS  # <= now: send now


def test_wait_and_deadline_bound_agree_exactly():
    assert batch_ready_at(1, 4, 0, 15, 10, 5) == 10
