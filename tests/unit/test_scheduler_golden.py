"""The core answers, counts and renders exactly as it did before the selection layer and the
plain statistics moved out of `SchedulerCore` (goldens written by that core, commit c18aba3):
every action byte for byte, the Triton statistics, the selection snapshots and the whole
Prometheus text (families, HELP/TYPE lines, labels, bucket bounds, values, order)."""

from pathlib import Path

import pytest

from schooner.engine.core.counters_render import render_scheduler_metrics
from tests import scheduler_trace

GOLDEN = Path(__file__).parent / "golden"


def render(core) -> str:
    return render_scheduler_metrics(core.counters)


def snapshot(core) -> dict:
    return core.selection.snapshot()


@pytest.mark.parametrize("name", ["rules", "selection", "serving"])
def test_trace_matches_the_golden(name):
    text = getattr(scheduler_trace, f"{name}_trace")(render, snapshot)
    expected = (GOLDEN / f"scheduler_{name}.txt").read_text()
    if text != expected:  # the first differing line says more than a 200 kB diff
        for i, (got, want) in enumerate(zip(text.splitlines(), expected.splitlines(), strict=False)):
            assert got == want, f"line {i + 1} differs"
    assert text == expected
