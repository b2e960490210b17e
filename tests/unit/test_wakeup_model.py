"""The ring wake-up protocol, model-checked on x86-64 TSO memory (exhaustive search, hypothesis).

Pure logic: no shared memory, no processes, no eventfd. The model is small enough to search
exhaustively for a few messages; hypothesis draws schedules for larger configurations.

The protocol (to live in ipc/ring.py and ipc/channel.py). Each SPSC ring has three shared words:
``head`` (written by its producer only), ``tail`` and ``sleeping`` (written by the consumer
only; ``sleeping`` starts at 1). The consuming process owns one eventfd doorbell E: a post adds
1, a read returns the count and resets it to 0, a blocking wait returns once the count is > 0.
One consumer reads every ring (1 or 2 here); each ring has its own producer thread. Step names,
as the model's program counters use them:

    producer, per message:
      P1     store head = head + 1                        the publish
      P2     full fence
      P3     load sleeping; if it read 1, go to POST
      POST   post E
    consumer, forever:
      LOAD   load head of ring r                          the drain, one ring at a time:
      TAKE   consume [tail, head), store tail = head      LOAD, TAKE for r = 0, 1, ...
             (then `spins` more drain rounds: the optional spin phase, sleeping is 0)
      C1     store sleeping = 1 on every ring
      C2     full fence
      C3     load head of every ring; if any head != tail, go to CLEAR (do not sleep)
      C4     block until E > 0
      C5     read E (resets it to 0), go to CLEAR
      CLEAR  store sleeping = 0 on every ring, then back to LOAD

The consumer's per-ring steps (LOAD, TAKE, C1, C3, CLEAR) are one atomic action per ring. TAKE
stores ``tail`` only when it consumed something. The consumer keeps its own copy of ``tail``
(it is the only writer, so a load would forward its own newest store anyway). Producers never
load ``tail``: ring capacity is unbounded in this model, because back-pressure on a full ring
uses the producer's own doorbell and is a separate protocol.

Memory (x86-64 TSO). Each thread has a FIFO store buffer. A store appends (address, value) to
it. A load returns the thread's own newest buffered store to that address if there is one, else
shared memory. At any step the scheduler may flush the oldest entry of any thread's buffer to
memory. A full fence (MFENCE or a locked instruction) can only execute when its thread's buffer
is empty, so it waits for the flushes. The eventfd operations are syscalls acting directly on
shared state; they are deliberately NOT fences here. On real hardware they are serializing (the
kernel takes a lock), but the protocol should not lean on that, and the model shows it does not
have to: P2 alone orders the publish before the post.

An action is ("step", thread) or ("flush", thread); producers are threads 0 .. rings - 1 and the
consumer is thread ``rings``. A state is terminal when no action is enabled, which is exactly:
every producer has sent all its messages, every store buffer is empty, and the consumer is
blocked at C4 with E == 0. So "the consumer never sleeps forever while a message is pending"
(no lost wake-up) is: in every reachable terminal state, head == tail == messages on every ring.
Checked in every state on the way: tail <= head in memory, the consumer never takes a message
its producer has not published, and it took exactly 0, 1, ..., tail - 1 of each ring, in order.

How states are explored. `explore` visits every reachable state breadth-first (a few thousand
per configuration in these tests) and returns the shortest schedule to a lost wake-up, if any.
`run_choices` follows a hypothesis-drawn schedule of bursts (run one thread for k steps, or land
k of its stores), then a fair deterministic completion that steps every runnable thread in turn
and lands a store only when no thread can step: stores stay buffered as long as they can, the
adversarial case on TSO. With either fence removed both find a lost wake-up, and an explicit
schedule for each spells one out: the tests would catch a missing fence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import hypothesis.strategies as st
import pytest
from hypothesis import Phase, find, given, settings

HEAD, TAIL, SLEEPING = 0, 1, 2  # word offsets; ring r's words are 3r + word
Store = tuple[int, int]  # (address, value) in a store buffer
Action = tuple[str, int]  # ("step" | "flush", thread)


def addr(ring: int, word: int) -> int:
    return 3 * ring + word


def set_at(t: tuple, i: int, v: object) -> tuple:
    return t[:i] + (v,) + t[i + 1 :]


@dataclass(frozen=True)
class Config:
    rings: int = 1
    messages: int = 2  # per producer
    producer_fence: bool = True  # P2
    consumer_fence: bool = True  # C2
    clears_sleeping: bool = True  # False: the consumer skips C1-C3 and CLEAR (sleeping stays 1)
    spins: int = 0  # extra drain rounds before each wait


@dataclass(frozen=True)
class Producer:
    pc: str
    sent: int = 0  # messages published so far (P1 executed)
    buf: tuple[Store, ...] = ()


@dataclass(frozen=True)
class Consumer:
    pc: str
    ring: int  # the ring the current per-ring step acts on
    seen: tuple[int, ...]  # head of each ring as last loaded
    tail: tuple[int, ...]  # its own tail of each ring
    consumed: tuple[tuple[int, ...], ...]  # sequence numbers taken, per ring, in order
    spins_left: int
    buf: tuple[Store, ...] = ()


@dataclass(frozen=True)
class State:
    mem: tuple[int, ...]
    doorbell: int  # E's count
    posts: int  # posts ever made
    producers: tuple[Producer, ...]
    consumer: Consumer


def initial(cfg: Config) -> State:
    mem = [0] * (3 * cfg.rings)
    for r in range(cfg.rings):
        mem[addr(r, SLEEPING)] = 1
    zeros = (0,) * cfg.rings
    return State(
        mem=tuple(mem),
        doorbell=0,
        posts=0,
        producers=tuple(Producer("P1" if cfg.messages else "DONE") for _ in range(cfg.rings)),
        consumer=Consumer("LOAD", 0, zeros, zeros, ((),) * cfg.rings, cfg.spins),
    )


def load(mem: tuple[int, ...], buf: tuple[Store, ...], a: int) -> int:
    for where, value in reversed(buf):
        if where == a:
            return value
    return mem[a]


def buffer_of(s: State, thread: int) -> tuple[Store, ...]:
    return s.producers[thread].buf if thread < len(s.producers) else s.consumer.buf


def step_enabled(s: State, cfg: Config, thread: int) -> bool:
    if thread < cfg.rings:
        p = s.producers[thread]
        return p.pc != "DONE" and not (p.pc == "P2" and p.buf)
    c = s.consumer
    if c.pc == "C2":
        return not c.buf
    if c.pc == "C4":
        return s.doorbell > 0
    return True


def enabled(s: State, cfg: Config) -> list[Action]:
    threads = range(cfg.rings + 1)
    steps = [("step", t) for t in threads if step_enabled(s, cfg, t)]
    return steps + [("flush", t) for t in threads if buffer_of(s, t)]


def producer_step(s: State, cfg: Config, r: int) -> State:
    p = s.producers[r]
    after_message = "P1" if p.sent < cfg.messages else "DONE"
    if p.pc == "P1":
        store = (addr(r, HEAD), p.sent + 1)
        p = replace(
            p, pc="P2" if cfg.producer_fence else "P3", sent=p.sent + 1, buf=p.buf + (store,)
        )
    elif p.pc == "P2":
        p = replace(p, pc="P3")
    elif p.pc == "P3":
        asleep = load(s.mem, p.buf, addr(r, SLEEPING)) == 1
        p = replace(p, pc="POST" if asleep else after_message)
    elif p.pc == "POST":
        s = replace(s, doorbell=s.doorbell + 1, posts=s.posts + 1)
        p = replace(p, pc=after_message)
    else:
        raise AssertionError(p.pc)
    return replace(s, producers=set_at(s.producers, r, p))


def consumer_step(s: State, cfg: Config) -> State:
    c = s.consumer
    r = c.ring
    last = r == cfg.rings - 1
    nxt = 0 if last else r + 1
    if c.pc == "LOAD":
        c = replace(c, pc="TAKE", seen=set_at(c.seen, r, load(s.mem, c.buf, addr(r, HEAD))))
    elif c.pc == "TAKE":
        taken = tuple(range(c.tail[r], c.seen[r]))
        if taken:
            c = replace(
                c,
                tail=set_at(c.tail, r, c.seen[r]),
                consumed=set_at(c.consumed, r, c.consumed[r] + taken),
                buf=c.buf + ((addr(r, TAIL), c.seen[r]),),
            )
        if not last:
            c = replace(c, pc="LOAD", ring=nxt)
        elif c.spins_left:
            c = replace(c, pc="LOAD", ring=0, spins_left=c.spins_left - 1)
        else:
            c = replace(c, pc="C1" if cfg.clears_sleeping else "C4", ring=0)
    elif c.pc == "C1":
        done = "C2" if cfg.consumer_fence else "C3"
        c = replace(c, pc=done if last else "C1", ring=nxt, buf=c.buf + ((addr(r, SLEEPING), 1),))
    elif c.pc == "C2":
        c = replace(c, pc="C3")
    elif c.pc == "C3":
        seen = set_at(c.seen, r, load(s.mem, c.buf, addr(r, HEAD)))
        if not last:
            c = replace(c, seen=seen, ring=nxt)
        else:
            pending = any(h != t for h, t in zip(seen, c.tail, strict=True))
            c = replace(c, pc="CLEAR" if pending else "C4", ring=0, seen=seen)
    elif c.pc == "C4":
        c = replace(c, pc="C5")
    elif c.pc == "C5":
        s = replace(s, doorbell=0)
        c = replace(c, pc="CLEAR" if cfg.clears_sleeping else "LOAD", ring=0, spins_left=cfg.spins)
    elif c.pc == "CLEAR":
        store = (addr(r, SLEEPING), 0)
        c = replace(c, pc="LOAD" if last else "CLEAR", ring=nxt, buf=c.buf + (store,))
        c = replace(c, spins_left=cfg.spins)
    else:
        raise AssertionError(c.pc)
    return replace(s, consumer=c)


def flush(s: State, thread: int) -> State:
    buf = buffer_of(s, thread)
    (a, value), rest = buf[0], buf[1:]
    s = replace(s, mem=set_at(s.mem, a, value))
    if thread < len(s.producers):
        return replace(
            s, producers=set_at(s.producers, thread, replace(s.producers[thread], buf=rest))
        )
    return replace(s, consumer=replace(s.consumer, buf=rest))


def apply(s: State, cfg: Config, action: Action) -> State:
    kind, thread = action
    if kind == "flush":
        return flush(s, thread)
    return producer_step(s, cfg, thread) if thread < cfg.rings else consumer_step(s, cfg)


def check_invariants(s: State, cfg: Config) -> None:
    for r in range(cfg.rings):
        assert s.mem[addr(r, TAIL)] <= s.mem[addr(r, HEAD)], ("tail passed head", r, s)
        assert s.consumer.tail[r] <= s.producers[r].sent, ("took an unpublished message", r, s)
        assert s.consumer.consumed[r] == tuple(range(s.consumer.tail[r])), ("not once, in order", s)


def lost(s: State, cfg: Config) -> bool:
    """A terminal state (consumer asleep for good) with a message still pending."""
    return not enabled(s, cfg) and any(t != cfg.messages for t in s.consumer.tail)


def check_terminal(s: State, cfg: Config) -> None:
    assert not enabled(s, cfg)
    assert all(p.pc == "DONE" and not p.buf for p in s.producers)
    assert s.consumer.pc == "C4" and s.doorbell == 0 and not s.consumer.buf
    assert not lost(s, cfg), ("lost wake-up", s)
    for r in range(cfg.rings):
        assert s.mem[addr(r, HEAD)] == s.mem[addr(r, TAIL)] == cfg.messages


def at_fence(s: State, thread: int) -> bool:
    if thread < len(s.producers):
        return s.producers[thread].pc == "P2"
    return s.consumer.pc == "C2"


def complete(s: State, cfg: Config, bound: int = 10_000) -> State:
    """Fair deterministic completion, lazy about flushes (the adversarial choice on TSO).

    Each round steps every runnable thread once. Only when no thread can step does a store
    land: the oldest one of a thread waiting at a fence, else of the lowest-numbered thread.
    Programs are finite and the consumer only loops on a post or a pending message, so every
    buffered store lands eventually and the run reaches a terminal state.
    """
    threads = range(cfg.rings + 1)
    for _ in range(bound):
        if not enabled(s, cfg):
            return s
        runnable = [t for t in threads if step_enabled(s, cfg, t)]
        for t in runnable:
            if step_enabled(s, cfg, t):
                s = apply(s, cfg, ("step", t))
                check_invariants(s, cfg)
        if not runnable:
            buffered = [t for t in threads if buffer_of(s, t)]
            fenced = [t for t in buffered if at_fence(s, t)]
            s = flush(s, (fenced or buffered)[0])
            check_invariants(s, cfg)
    raise AssertionError(f"no terminal state after {bound} rounds: livelock? {s}")


Burst = tuple[int, int]  # (which enabled action, how many times in a row)


def run_choices(cfg: Config, bursts: Iterable[Burst]) -> State:
    """Follow drawn bursts, then `complete`.

    A burst (i, k) takes action i (modulo the number enabled) and repeats it up to k times while
    it stays enabled: run one thread for k steps, or land k of one thread's stores. Bursts match
    the shape of real interleavings and find a missing fence far sooner than single steps.
    """
    s = initial(cfg)
    for i, k in bursts:
        actions = enabled(s, cfg)
        if not actions:
            break
        action = actions[i % len(actions)]
        for _ in range(k):
            s = apply(s, cfg, action)
            check_invariants(s, cfg)
            if action not in enabled(s, cfg):
                break
    return complete(s, cfg)


def run_exact(cfg: Config, schedule: Sequence[Action]) -> State:
    """Apply `schedule` as written; every action must be enabled when its turn comes."""
    s = initial(cfg)
    for i, action in enumerate(schedule):
        assert action in enabled(s, cfg), (i, action, s)
        s = apply(s, cfg, action)
        check_invariants(s, cfg)
    return s


def explore(cfg: Config) -> tuple[int, list[Action] | None]:
    """Every reachable state, breadth-first: (states seen, shortest schedule to a lost wake-up)."""
    start = initial(cfg)
    parent: dict[State, tuple[State, Action] | None] = {start: None}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        check_invariants(s, cfg)
        actions = enabled(s, cfg)
        if lost(s, cfg):
            trace: list[Action] = []
            while (link := parent[s]) is not None:
                s, action = link
                trace.append(action)
            return len(parent), trace[::-1]
        if not actions:
            check_terminal(s, cfg)
        for action in actions:
            n = apply(s, cfg, action)
            if n not in parent:
                parent[n] = (s, action)
                queue.append(n)
    return len(parent), None


def step(thread: int) -> Action:
    return ("step", thread)


def flushes(thread: int, n: int = 1) -> list[Action]:
    return [("flush", thread)] * n


def label(cfg: Config) -> str:
    parts = [f"{cfg.rings}x{cfg.messages}"]
    parts += [] if cfg.producer_fence else ["no-P2"]
    parts += [] if cfg.consumer_fence else ["no-C2"]
    parts += [] if cfg.clears_sleeping else ["never-clears"]
    parts += [f"spins={cfg.spins}"] if cfg.spins else []
    return ",".join(parts)


P, C = 0, 1  # thread ids with one ring: its producer, the consumer

configs = st.builds(
    Config,
    rings=st.integers(1, 2),
    messages=st.integers(1, 3),
    spins=st.integers(0, 2),
    clears_sleeping=st.booleans(),
)
schedules = st.lists(st.tuples(st.integers(0, 7), st.integers(1, 6)), max_size=30)

# --- both fences: no lost wake-up -----------------------------------------------------------


@settings(max_examples=1_000, deadline=None, derandomize=True)
@given(cfg=configs, bursts=schedules)
def test_both_fences_never_lose_a_wake_up(cfg: Config, bursts: list[Burst]) -> None:
    check_terminal(run_choices(cfg, bursts), cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        Config(rings=1, messages=4),
        Config(rings=1, messages=2, spins=1),
        Config(rings=2, messages=1),
        Config(rings=1, messages=3, clears_sleeping=False),
    ],
    ids=label,
)
def test_both_fences_exhaustively(cfg: Config) -> None:
    states, trace = explore(cfg)
    assert trace is None, trace
    assert states > 500  # the search really branched


# --- each fence is needed: removing one loses a wake-up -------------------------------------


# Both schedules need two messages: sleeping starts at 1, so the first wait is safe without
# fences; the race needs the sleeping = 0 that a wake-up leaves behind.


def test_without_consumer_fence_an_explicit_schedule_loses_a_wake_up() -> None:
    cfg = Config(consumer_fence=False)
    schedule = [
        *[step(C)] * 2,  # LOAD head = 0, TAKE nothing
        step(C),  # C1: sleeping = 1 (buffered; memory holds the initial 1 anyway)
        step(C),  # C3: head = 0 == tail: sleep
        step(P),  # P1: head = 1 (buffered)
        *flushes(P),
        *[step(P)] * 3,  # P2; P3 reads sleeping = 1; POST: E = 1
        *[step(C)] * 3,  # C4 returns; C5: E = 0; CLEAR: sleeping = 0 (buffered)
        *flushes(C, 2),  # memory: sleeping = 1, then 0
        *[step(C)] * 2,  # LOAD head = 1, TAKE message 0: tail = 1 (buffered)
        step(C),  # C1: sleeping = 1, still in the consumer's buffer
        step(C),  # C3, with no C2 before it: head = 1 == tail: sleep
        step(P),  # P1: head = 2 (buffered)
        *flushes(P),
        step(P),  # P2
        step(P),  # P3: memory still says sleeping = 0: no post; producer done
        *flushes(C, 2),  # tail = 1, sleeping = 1 land too late
    ]
    s = run_exact(cfg, schedule)
    assert lost(s, cfg) and s.consumer.pc == "C4" and s.mem[addr(0, HEAD)] == 2


def test_without_producer_fence_an_explicit_schedule_loses_a_wake_up() -> None:
    cfg = Config(producer_fence=False)
    schedule = [
        step(P),  # P1: head = 1 (buffered)
        *flushes(P),
        *[step(P)] * 2,  # P3 reads sleeping = 1 (initial); POST: E = 1
        *[step(C)] * 2,  # LOAD head = 1, TAKE message 0: tail = 1 (buffered)
        step(C),  # C1: sleeping = 1 (buffered)
        *flushes(C, 2),
        *[step(C)] * 2,  # C2; C3: head = 1 == tail: sleep
        *[step(C)] * 3,  # C4 returns (message 0 was already taken); C5: E = 0; CLEAR
        *flushes(C),  # memory: sleeping = 0
        *[step(C)] * 2,  # LOAD head = 1, TAKE nothing
        step(P),  # P1: head = 2, stays in the producer's buffer (no P2 to drain it)
        step(P),  # P3: sleeping = 0: no post; producer done
        step(C),  # C1: sleeping = 1
        *flushes(C),
        *[step(C)] * 2,  # C2; C3: head = 1 (the 2 is still buffered) == tail: sleep
        *flushes(P),  # head = 2 lands too late
    ]
    s = run_exact(cfg, schedule)
    assert lost(s, cfg) and s.consumer.pc == "C4" and s.mem[addr(0, HEAD)] == 2


@pytest.mark.parametrize(
    "cfg",
    [
        Config(consumer_fence=False),
        Config(producer_fence=False),
        Config(producer_fence=False, consumer_fence=False),
        Config(rings=2, messages=1, consumer_fence=False),
        Config(rings=2, messages=1, producer_fence=False),
        # sleeping stays 1 and every message is posted, yet without P2 the post can overtake the
        # publish: the consumer wakes, loads the old head, and sleeps again (eventfd is no fence)
        Config(messages=1, producer_fence=False, clears_sleeping=False),
    ],
    ids=label,
)
def test_without_a_fence_exhaustive_search_finds_a_lost_wake_up(cfg: Config) -> None:
    _, trace = explore(cfg)
    assert trace is not None
    assert lost(run_exact(cfg, trace), cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        Config(consumer_fence=False),
        Config(producer_fence=False),
        Config(rings=2, consumer_fence=False),
        Config(rings=2, producer_fence=False),
    ],
    ids=label,
)
def test_without_a_fence_hypothesis_finds_a_lost_wake_up(cfg: Config) -> None:
    """The schedules the tests above draw are strong enough to catch a missing fence.

    No shrinking: it costs seconds and the test only needs one example.
    """
    bursts = find(
        schedules,
        lambda bursts: lost(run_choices(cfg, bursts), cfg),
        settings=settings(
            max_examples=2_000,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.generate],
        ),
    )
    assert lost(run_choices(cfg, bursts), cfg)


# --- sleeping starts at 1; two rings ---------------------------------------------------------


def test_initial_sleeping_means_every_message_is_posted_before_the_consumer_runs() -> None:
    cfg = Config(rings=2, messages=3)
    s = initial(cfg)
    for r in (0, 1):
        for _ in range(cfg.messages):
            s = apply(s, cfg, step(r))  # P1
            s = apply(s, cfg, ("flush", r))
            for _ in range(3):  # P2; P3 reads the initial sleeping = 1; POST
                s = apply(s, cfg, step(r))
    assert all(p.pc == "DONE" for p in s.producers)
    assert s.posts == s.doorbell == 2 * cfg.messages
    check_terminal(complete(s, cfg), cfg)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rings=st.integers(1, 2), messages=st.integers(1, 3), bursts=schedules)
def test_a_consumer_that_never_clears_sleeping_gets_every_post(
    rings: int, messages: int, bursts: list[Burst]
) -> None:
    cfg = Config(rings=rings, messages=messages, clears_sleeping=False)
    s = run_choices(cfg, bursts)
    check_terminal(s, cfg)
    assert s.posts == rings * messages


def test_two_rings_one_pending_ring_keeps_the_consumer_awake() -> None:
    cfg = Config(rings=2, messages=1)
    schedule = [
        *[step(2)] * 4,  # drain both rings: nothing
        *[step(2)] * 2,  # C1 on both rings
        *flushes(2, 2),
        step(2),  # C2
        step(1),  # ring 1's producer: P1 head = 1
        *flushes(1),
        step(2),  # C3 ring 0: head = 0
        step(2),  # C3 ring 1: head = 1 != tail: do not sleep
    ]
    s = run_exact(cfg, schedule)
    assert s.consumer.pc == "CLEAR"
    check_terminal(complete(s, cfg), cfg)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(messages=st.integers(1, 4), spins=st.integers(0, 2), bursts=schedules)
def test_two_rings_two_producers(messages: int, spins: int, bursts: list[Burst]) -> None:
    cfg = Config(rings=2, messages=messages, spins=spins)
    check_terminal(run_choices(cfg, bursts), cfg)
