"""What the scheduler core counts for /metrics, as plain data: ints, floats and bucket arrays.

Owns the records the core counts into and the order they were created in. No metric objects,
no rendering, no clock: the core adds to slot attributes on its hot path (an attribute add per
event, a list-index add per histogram observation), and the scheduler shell renders the
records as Prometheus text (`counters_render.render_scheduler_metrics`) when it publishes.

Records, each created once with its labels fixed and never removed:

* `ReplicaCounters` per replica: its AIMD controller, whose `limit` is the batch-limit gauge
  (read when rendered: it only changes when the core observes a batch).
* `ModelCounters` per model (version): batches sent by size (buckets of
  `metrics.BATCH_SIZE_BUCKETS`; their total is the batch count), queries sent (the sum of
  those sizes), batch latency and per-query queue delay (buckets of
  `metrics.LATENCY_BUCKETS_S` and the sum in seconds, added one observation at a time so the
  sum is the float a `metrics.Histogram` would hold), queries shed, readiness (0/1, set by
  `SchedulerCore.readiness`), and the model's Triton `ModelStats` (`triton`), whose cache hit and miss
  counts are the cache counters.
* `AppCounters` per app: queries received, defaults served by explanation, model errors.
* `CacheCounters`: evictions and bytes held, copied from the cache at each `poll`.

Invariant: `series` lists every record in creation order, which is the order today's
`MetricSet` registered the same series in, so the rendered text keeps its family and series
order. Records with equal labels (two model indices with one name and version, two apps of one
name) are one series, as they were: the renderer adds their counts.
"""

from __future__ import annotations

from schooner.engine.core.aimd import AimdController
from schooner.engine.core.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S


class ReplicaCounters:
    __slots__ = ("model", "version", "replica", "aimd")

    def __init__(self, model: str, version: str, replica: int, aimd: AimdController) -> None:
        self.model = model
        self.version = version
        self.replica = str(replica)
        self.aimd = aimd


class ModelCounters:
    __slots__ = ("model", "version", "batch_sizes", "queries", "latency", "latency_sum_s",
                 "queue_delay", "queue_delay_sum_s", "shed", "ready", "triton")  # fmt: skip

    def __init__(self, model: str, version: str, triton) -> None:
        self.model = model
        self.version = version
        self.batch_sizes = [0] * (len(BATCH_SIZE_BUCKETS) + 1)  # batches sent, by bucket of size
        self.queries = 0  # queries sent: the sum of the batch sizes
        self.latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0
        self.queue_delay = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.queue_delay_sum_s = 0.0
        self.shed = 0
        self.ready = 0
        self.triton = triton  # the model's Triton ModelStats: its cache hits and misses


class AppCounters:
    __slots__ = ("app", "queries", "defaults", "errors")

    def __init__(self, app: str, explanations) -> None:
        self.app = app
        self.queries = 0
        self.defaults = dict.fromkeys(explanations, 0)  # explanation -> defaults served
        self.errors = 0


class CacheCounters:
    __slots__ = ("evictions", "nbytes")

    def __init__(self) -> None:
        self.evictions = 0
        self.nbytes = 0


class SchedulerCounters:
    """Every counters record of one scheduler core, in creation order. See the module docstring."""

    __slots__ = ("series", "cache")

    def __init__(self) -> None:
        self.series: list[ReplicaCounters | ModelCounters | AppCounters | CacheCounters] = []
        self.cache = CacheCounters()

    def add(self, record):
        self.series.append(record)
        return record
