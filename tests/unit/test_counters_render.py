"""The scheduler's counters as Prometheus text: the same families, HELP/TYPE lines, labels,
bucket bounds and order as the `MetricSet` objects the core kept before (built here by hand
for the same events); records with equal labels are one series. The whole text of long event
traces is checked against the old core's in `test_scheduler_golden.py`."""

from schooner.engine.core.counters_render import render_scheduler_metrics
from schooner.engine.core.metrics import BATCH_SIZE_BUCKETS, MetricSet
from schooner.engine.core.scheduler import (
    NO_MODEL_EXPLANATION,
    SLO_EXPLANATION,
    AppRoute,
    ModelSpec,
    Query,
    SchedulerCore,
)

MS = 1_000_000


def old_way(limit_r0: int, batches: list[int], latencies_s: list[float], delays_s: list[float]) -> str:
    """What the core's MetricSet held for one model "m" v1 with one replica, one app "a" and
    the given events."""
    mx = MetricSet()
    labels = {"model": "m", "version": "1"}
    mx.gauge("schooner_batch_limit", "Current batch size limit (AIMD) of a replica", **labels, replica="0").set(limit_r0)
    b = mx.counter("schooner_model_batches_total", "Batches sent to model processes", **labels)
    bs = mx.histogram("schooner_model_batch_size", "Queries per batch", BATCH_SIZE_BUCKETS, **labels)
    lat = mx.histogram("schooner_model_latency_seconds", "Batch round trip from send to result", **labels)
    qd = mx.histogram("schooner_queue_delay_seconds", "Time a query waited before its batch was sent", **labels)
    mx.counter("schooner_cache_hits_total", "Queries answered from the prediction cache", **labels)
    mx.counter("schooner_cache_misses_total", "Cache lookups that missed (joined ones included)", **labels)
    q = mx.counter("schooner_model_queries_total", "Queries sent to model processes", **labels)
    mx.gauge("schooner_model_ready", "1 while some replica of the model is idle or answered its batch within model_stall_timeout_s", **labels).set(1)
    mx.counter("schooner_model_shed_total", "Queries answered with the default on arrival: the queue ahead could not finish before their deadline", **labels)
    aq = mx.counter("schooner_app_queries_total", "Queries received", app="a")
    for reason in ("slo", "no_model", "low_confidence"):
        mx.counter("schooner_app_defaults_total", "Default outputs served", app="a", reason=reason)
    mx.counter("schooner_app_errors_total", "Queries answered with a model error", app="a")
    mx.counter("schooner_cache_evictions_total", "Entries evicted from the prediction cache")
    mx.gauge("schooner_cache_bytes", "Bytes held by the prediction cache")
    for n in batches:
        b.inc()
        bs.observe(n)
        q.inc(n)
        aq.inc(n)
    for v in latencies_s:
        lat.observe(v)
    for v in delays_s:
        qd.observe(v)
    return mx.render()


def test_one_model_one_app_renders_as_the_metric_objects_did():
    core = SchedulerCore([AppRoute(0, b"-1", cache=False, name="a")],
                         [ModelSpec(8, 1, batch_size=4, name="m")])
    core.replica_up(0, 0)
    for i in range(6):
        core.submit(Query(0, i, 0, 100 * MS), i * MS)
    core.poll(6 * MS)  # 4 sent, having waited 6, 5, 4 and 3 ms
    core.batch_done(0, 0, [b"1"] * 4, None, 9 * MS)
    core.poll(9 * MS)  # the other 2, having waited 5 and 4 ms
    core.readiness(9 * MS)
    want = old_way(4, [4, 2], [0.003], [0.006, 0.005, 0.004, 0.003, 0.005, 0.004])
    assert render_scheduler_metrics(core.counters) == want


def test_equal_labels_are_one_series_and_family_order_follows_first_use():
    apps = [AppRoute(None, b"-1", name="x"), AppRoute(None, b"-1", name="x")]
    core = SchedulerCore(apps, [ModelSpec(4, 0, name="m"), ModelSpec(4, 1, name="m")])
    core.submit(Query(0, 1, 0, MS), 0)
    core.submit(Query(0, 2, 1, MS), 0)
    core.poll(2 * MS)
    text = render_scheduler_metrics(core.counters)
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert families[:2] == ["schooner_model_batches_total", "schooner_model_batch_size"]  # model 0 has no replica
    assert families.index("schooner_batch_limit") > families.index("schooner_model_shed_total")
    assert text.count('schooner_model_queries_total{model="m",version="1"}') == 1
    assert 'schooner_app_queries_total{app="x"} 2\n' in text
    assert 'schooner_app_defaults_total{app="x",reason="no_model"} 2\n' in text
    assert core.app_counters[0].defaults[NO_MODEL_EXPLANATION] == 1
    assert core.app_counters[1].defaults[SLO_EXPLANATION] == 0
