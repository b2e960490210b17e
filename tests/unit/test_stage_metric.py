"""`schooner_stage_seconds` as both the scheduler and a frontend render it, merged as /metrics is."""

from schooner.engine.core.metrics import STAGE_METRIC, merge_texts, stage_summary_text


def test_scheduler_and_frontend_stages_merge_into_one_summary_family():
    sched = stage_summary_text([("submit", 3_000, 2), ("queue", 0, 0)])
    fe = stage_summary_text([("deliver", 1_500_000_000, 3)], frontend="0")
    text = merge_texts([sched, fe])
    assert text.count(f"# TYPE {STAGE_METRIC} summary") == 1
    assert f'{STAGE_METRIC}_sum{{stage="submit"}} 0.000003000' in text
    assert f'{STAGE_METRIC}_count{{stage="queue"}} 0' in text
    assert f'{STAGE_METRIC}_sum{{stage="deliver",frontend="0"}} 1.500000000' in text
    assert f'{STAGE_METRIC}_count{{stage="deliver",frontend="0"}} 3' in text
