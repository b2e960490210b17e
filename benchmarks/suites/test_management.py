"""The management suite's pure pieces: telling versions apart by output, what the prober saw."""

from __future__ import annotations

from benchmarks.suites.management import ProbeAnswer, probe_seen, same_output, usual_output

V1 = (0.10, -0.20, 0.30)
V1_OTHER_BATCH = (0.1000001, -0.2000002, 0.2999999)  # the same version, another batch
V2 = (0.25, -0.05, 0.41)


def answer(sent_ms: int, done_ms: int, output=V1, status: int = 200, default: bool = False) -> ProbeAnswer:
    return ProbeAnswer(sent_ms * 1_000_000, done_ms * 1_000_000, status, output, default)


def test_same_output_tolerates_batching_noise_only() -> None:
    assert same_output(V1, V1_OTHER_BATCH)
    assert not same_output(V1, V2)
    assert not same_output(V1, None)
    assert not same_output(V1, V1[:2])


def test_usual_output_is_the_version_most_answers_agree_with() -> None:
    answers = [answer(0, 1), answer(1, 2, V1_OTHER_BATCH), answer(2, 3, V2), answer(3, 4, None, status=503),
               answer(4, 5, (-1.0,), default=True)]
    assert same_output(usual_output(answers), V1)
    assert usual_output([answer(0, 1, None, status=503)]) is None


def test_probe_seen_times_the_first_new_answer_from_the_call() -> None:
    answers = [answer(0, 2), answer(10, 12, V1_OTHER_BATCH), answer(20, 23, V2), answer(30, 31, V1), answer(40, 41, V2)]
    seen = probe_seen(answers, call_start_ns=5_000_000, call_end_ns=25_000_000, old=V1)
    assert seen.first_new_s == 0.018  # answered at 23 ms, the call began at 5 ms
    assert seen.old_after_return == 1  # sent at 30 ms, after the return at 25 ms, answered by V1
    assert (seen.probes, seen.failed, seen.defaults) == (5, 0, 0)


def test_probe_seen_counts_failures_and_defaults_apart() -> None:
    answers = [answer(0, 1), answer(1, 2, None, status=-1), answer(2, 3, None, status=500), answer(3, 4, (-1.0,), default=True)]
    seen = probe_seen(answers, None, None, None)
    assert (seen.probes, seen.failed, seen.defaults, seen.first_new_s, seen.old_after_return) == (4, 2, 1, None, 0)


def test_no_new_answer_before_the_call_counts() -> None:
    seen = probe_seen([answer(0, 1, V2), answer(10, 11)], call_start_ns=5_000_000, call_end_ns=6_000_000, old=V1)
    assert seen.first_new_s is None and seen.old_after_return == 1
