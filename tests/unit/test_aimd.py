"""AimdController with scripted observations (latencies are plain integers, no clock)."""

import pytest

from schooner.engine.core.aimd import AimdConfig, AimdController

MS = 1_000_000
SLO = 10 * MS  # target = 9 ms with the default target_fraction
FAST = 1 * MS
SLOW = 20 * MS


def ctl(max_batch=64, slo=SLO, fixed=-1, **cfg):
    return AimdController(AimdConfig(**cfg), max_batch, slo, fixed)


def test_defaults_are_clippers():
    c = AimdConfig()
    assert (c.additive_step, c.backoff_factor, c.target_fraction, c.initial) == (2, 0.9, 0.9, 1)
    a = ctl()
    assert a.limit == 1 and a.target_ns == 9 * MS and a.adaptive


def test_full_fast_batches_grow_by_the_step_up_to_max():
    a = ctl(max_batch=6)
    seen = []
    for _ in range(5):
        a.observe(a.limit, FAST)
        seen.append(a.limit)
    assert seen == [3, 5, 6, 6, 6]


def test_under_full_fast_batch_does_not_grow():
    a = ctl(initial=10)
    a.observe(4, FAST)
    assert a.limit == 10
    a.observe(10, FAST)
    assert a.limit == 12
    a.observe(13, FAST)  # more than the limit (the core should not, but it is still full)
    assert a.limit == 14


def test_latency_exactly_at_target_counts_as_fast():
    a = ctl(initial=4)
    a.observe(4, 9 * MS)
    assert a.limit == 6
    a.observe(6, 9 * MS + 1)
    assert a.limit == 5


def test_slow_batch_cuts_multiplicatively():
    a = ctl(initial=50)
    a.observe(50, SLOW)
    assert a.limit == 45
    a.observe(3, SLOW)  # cut whatever the batch size
    assert a.limit == 40


def test_cut_always_bites_and_floors_at_one():
    a = ctl(initial=5)
    seq = []
    for _ in range(6):
        a.observe(a.limit, SLOW)
        seq.append(a.limit)
    assert seq == [4, 3, 2, 1, 1, 1]


def test_cut_with_factor_near_one_still_reduces_by_one():
    a = ctl(initial=50, backoff_factor=0.99)
    seq = []
    for _ in range(3):
        a.observe(a.limit, SLOW)
        seq.append(a.limit)
    assert seq == [49, 48, 47]
    a = ctl(initial=2, backoff_factor=0.99)
    a.observe(2, SLOW)
    assert a.limit == 1


def test_initial_above_max_is_clamped():
    assert ctl(max_batch=8, initial=100).limit == 8


def test_fixed_batch_size_disables_adaptation():
    a = ctl(max_batch=32, fixed=16)
    assert a.limit == 16 and not a.adaptive
    a.observe(16, SLOW)
    a.observe(16, FAST)
    assert a.limit == 16
    assert ctl(max_batch=8, fixed=16).limit == 8


def test_set_slo_moves_the_target_not_the_limit():
    a = ctl(initial=10)
    a.set_slo(2 * MS)
    assert a.target_ns == 1_800_000 and a.limit == 10
    a.observe(10, 2 * MS)  # fast for the old SLO, slow for the new one
    assert a.limit == 9
    a.set_slo(100 * MS)
    a.observe(9, 2 * MS)
    assert a.limit == 11


def test_scripted_sawtooth_against_a_linear_model():
    # latency = 1 ms + 1 ms * n, target 9 ms: n* = 8.
    a = ctl()
    seen = []
    for _ in range(12):
        n = a.limit
        a.observe(n, MS + MS * n)
        seen.append(a.limit)
    assert seen == [3, 5, 7, 9, 8, 10, 9, 8, 10, 9, 8, 10]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"additive_step": 0},
        {"backoff_factor": 1.0},
        {"backoff_factor": 0.0},
        {"target_fraction": 0.0},
        {"target_fraction": 1.5},
        {"initial": 0},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        AimdConfig(**kwargs)


@pytest.mark.parametrize("args", [(0, SLO, -1), (8, 0, -1), (8, SLO, 0), (8, SLO, -2)])
def test_bad_controller_arguments_are_refused(args):
    with pytest.raises(ValueError):
        AimdController(AimdConfig(), *args)


def test_bad_slo_update_is_refused_and_changes_nothing():
    a = ctl()
    with pytest.raises(ValueError):
        a.set_slo(0)
    assert a.slo_ns == SLO and a.target_ns == 9 * MS
