"""The scheduler core's counters (`counters.SchedulerCounters`) as Prometheus text.

Pure: the scheduler shell calls `render_scheduler_metrics` when it publishes (at most every
20 ms, never on the path of an answer) and puts the text on its metrics board. Owns the names,
HELP texts, types, labels and bucket bounds of the scheduler's metric families; the text
format itself is `metrics.MetricSet.render`'s, so it is the one every other process uses.

Records are visited in creation order, so families and series come out in the order the
scheduler registered them when it kept `MetricSet` objects (first use of a family, then first
use of each label set). Records with equal labels are one series: counters and histograms add,
a gauge takes the last record's value (`schooner_model_ready`: the last model index, as
`readiness` set them in index order).
"""

from __future__ import annotations

from schooner.engine.core.counters import (
    AppCounters,
    CacheCounters,
    ModelCounters,
    ReplicaCounters,
    SchedulerCounters,
)
from schooner.engine.core.metrics import BATCH_SIZE_BUCKETS, Histogram, MetricSet
from schooner.engine.core.scheduler import DEFAULT_REASONS

_DEFAULTS_HELP = "Default outputs served"
_READY_HELP = "1 while some replica of the model is idle or answered its batch within model_stall_timeout_s"
_SHED_HELP = "Queries answered with the default on arrival: the queue ahead could not finish before their deadline"


def render_scheduler_metrics(counters: SchedulerCounters) -> str:
    """Prometheus text (exposition format 0.0.4) of every series the core counts."""
    mx = MetricSet()
    for rec in counters.series:
        if isinstance(rec, ReplicaCounters):
            mx.gauge("schooner_batch_limit", "Current batch size limit (AIMD) of a replica",
                     model=rec.model, version=rec.version, replica=rec.replica).value = rec.aimd.limit
        elif isinstance(rec, ModelCounters):
            _model(mx, rec)
        elif isinstance(rec, AppCounters):
            _app(mx, rec)
        elif isinstance(rec, CacheCounters):
            mx.counter("schooner_cache_evictions_total", "Entries evicted from the prediction cache").value += rec.evictions
            mx.gauge("schooner_cache_bytes", "Bytes held by the prediction cache").value = rec.nbytes
    return mx.render()


def _model(mx: MetricSet, c: ModelCounters) -> None:
    labels = {"model": c.model, "version": c.version}
    batches = sum(c.batch_sizes)
    mx.counter("schooner_model_batches_total", "Batches sent to model processes", **labels).value += batches
    _add(mx.histogram("schooner_model_batch_size", "Queries per batch", BATCH_SIZE_BUCKETS, **labels),
         c.batch_sizes, c.queries)
    _add(mx.histogram("schooner_model_latency_seconds", "Batch round trip from send to result", **labels),
         c.latency, c.latency_sum_s)
    _add(mx.histogram("schooner_queue_delay_seconds", "Time a query waited before its batch was sent", **labels),
         c.queue_delay, c.queue_delay_sum_s)
    mx.counter("schooner_cache_hits_total", "Queries answered from the prediction cache",
               **labels).value += c.triton.cache_hit_count
    mx.counter("schooner_cache_misses_total", "Cache lookups that missed (joined ones included)",
               **labels).value += c.triton.cache_miss_count
    mx.counter("schooner_model_queries_total", "Queries sent to model processes", **labels).value += c.queries
    mx.gauge("schooner_model_ready", _READY_HELP, **labels).value = c.ready
    mx.counter("schooner_model_shed_total", _SHED_HELP, **labels).value += c.shed


def _add(h: Histogram, counts: list[int], total: float) -> None:
    for i, n in enumerate(counts):
        h.counts[i] += n
    h.total += total
    h.count += sum(counts)


def _app(mx: MetricSet, a: AppCounters) -> None:
    mx.counter("schooner_app_queries_total", "Queries received", app=a.app).value += a.queries
    for explanation, n in a.defaults.items():
        mx.counter("schooner_app_defaults_total", _DEFAULTS_HELP, app=a.app,
                   reason=DEFAULT_REASONS[explanation]).value += n
    mx.counter("schooner_app_errors_total", "Queries answered with a model error", app=a.app).value += a.errors
