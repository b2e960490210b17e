"""Schooner's ``GET /metrics``, as the suites read it: counters of one app and its model.

Owns the Prometheus text parser (samples of the same name and labels are summed: the merged
text of several frontends may repeat a series), a keep-alive client, ``settled`` (scrape until
one app's counters stop moving: the scheduler publishes at most every 100 ms under load, and
queries still queued when the load stops are answered up to one SLO later), the ``Counts`` of
one app+model and their per-stage breakdown, the engine's own time per stage
(``schooner_stage_seconds``: ``stage_means_us``, None for a stage the server does not expose),
and ``LimitSampler`` (the AIMD batch limit every ``interval_s`` on a thread). The app and its
model share one name in every suite's config.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.harness.servers import LOOPBACK

SETTLE_INTERVAL_S = 0.15
SETTLE_MAX_S = 5.0
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")  # optional timestamp
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# The engine's time per stage of a query (a summary, seconds): frontend in -> scheduler in
# (submit), scheduler in -> model in (queue), model in -> model out (model), model out ->
# scheduler out (return), scheduler out -> frontend out (deliver).
STAGES = ("submit", "queue", "model", "return", "deliver")
STAGE_SUM = "schooner_stage_seconds_sum"
STAGE_COUNT = "schooner_stage_seconds_count"

MetricSample = tuple[str, tuple[tuple[str, str], ...]]


def parse_metrics(text: str) -> dict[MetricSample, float]:
    """{(name, sorted label pairs): value} of a Prometheus text exposition.

    Samples with the same name and labels are summed (several processes' texts merged into one
    may each carry the series); comments, blank and malformed lines are skipped.
    """
    out: dict[MetricSample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        key = (name, tuple(sorted(_LABEL.findall(labels or ""))))
        out[key] = out.get(key, 0.0) + number
    return out


def total(metrics: dict[MetricSample, float], name: str, **labels: str) -> float:
    """Sum of ``name`` over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, pairs), v in metrics.items() if n == name and want <= set(pairs))


def exposes(metrics: dict[MetricSample, float], name: str, **labels: str) -> bool:
    """Whether any series of ``name`` has (at least) ``labels``."""
    want = set(labels.items())
    return any(n == name and want <= set(pairs) for n, pairs in metrics)


def stage_counts(metrics: dict[MetricSample, float]) -> tuple[float, ...]:
    """How many queries each stage has timed so far (0 for a stage not exposed)."""
    return tuple(total(metrics, STAGE_COUNT, stage=s) for s in STAGES)


def stage_means_us(before: dict[MetricSample, float], after: dict[MetricSample, float]) -> dict[str, float | None]:
    """Mean µs per query of each stage between two scrapes: Δ sum / Δ count over every series of
    the stage (any other labels, any frontend). None where ``after`` has no such series (the
    server does not expose it) or no query was timed in between."""
    out: dict[str, float | None] = {}
    for s in STAGES:
        if not (exposes(after, STAGE_COUNT, stage=s) and exposes(after, STAGE_SUM, stage=s)):
            out[s] = None
            continue
        count = total(after, STAGE_COUNT, stage=s) - total(before, STAGE_COUNT, stage=s)
        seconds = total(after, STAGE_SUM, stage=s) - total(before, STAGE_SUM, stage=s)
        out[s] = 1e6 * seconds / count if count > 0 else None
    return out


@dataclass(frozen=True, slots=True)
class Counts:
    """What /metrics says about one app and its model: totals, or a run's difference."""

    queries: float = 0.0  # received by the app
    defaults: float = 0.0  # answered with the app's default (any reason)
    model_queries: float = 0.0
    batches: float = 0.0
    batch_size_sum: float = 0.0
    model_latency_sum_s: float = 0.0
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    http_sum_s: float = 0.0
    http_count: float = 0.0
    queue_sum_s: float = 0.0

    def minus(self, other: Counts) -> Counts:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return Counts(*(a - b for a, b in pairs))

    @property
    def mean_batch(self) -> float | None:
        return self.batch_size_sum / self.batches if self.batches else None

    @property
    def hit_rate(self) -> float | None:
        looked_up = self.cache_hits + self.cache_misses
        return self.cache_hits / looked_up if looked_up else None

    @property
    def default_fraction(self) -> float | None:
        return self.defaults / self.queries if self.queries else None


def counts_of(metrics: dict[MetricSample, float], name: str) -> Counts:
    model = {"model": name}
    return Counts(
        queries=total(metrics, "schooner_app_queries_total", app=name),
        defaults=total(metrics, "schooner_app_defaults_total", app=name),
        model_queries=total(metrics, "schooner_model_queries_total", **model),
        batches=total(metrics, "schooner_model_batches_total", **model),
        batch_size_sum=total(metrics, "schooner_model_batch_size_sum", **model),
        model_latency_sum_s=total(metrics, "schooner_model_latency_seconds_sum", **model),
        cache_hits=total(metrics, "schooner_cache_hits_total", **model),
        cache_misses=total(metrics, "schooner_cache_misses_total", **model),
        http_sum_s=total(metrics, "schooner_http_request_duration_seconds_sum"),
        http_count=total(metrics, "schooner_http_request_duration_seconds_count"),
        queue_sum_s=total(metrics, "schooner_queue_delay_seconds_sum", **model),
    )


def batch_limit(metrics: dict[MetricSample, float], name: str) -> float | None:
    return metrics.get(("schooner_batch_limit", (("model", name), ("replica", "0"), ("version", "1"))))


def stage_breakdown_ms(delta: Counts, client_mean_ms: float | None) -> dict[str, float | None]:
    """Mean per-request ms of each stage over a run, from counter differences.

    server_total: the frontend's parsed-to-answered time; queue: queue delay sum / requests;
    model: the mean batch round trip × the share of requests that reached the model (per batch,
    as sums allow); frontend_back: the rest of server_total (parse, hops, encoding);
    client_network: the load generator's mean − server_total (kernel, loopback, send lag).
    """
    keys = ("server_total", "queue", "model", "frontend_back", "client_network")
    if delta.http_count <= 0:
        return dict.fromkeys(keys)
    n = delta.http_count
    server_total = 1e3 * delta.http_sum_s / n
    queue = 1e3 * delta.queue_sum_s / n
    model = 1e3 * delta.model_latency_sum_s / delta.batches * (delta.model_queries / n) if delta.batches else 0.0
    return {
        "server_total": server_total,
        "queue": queue,
        "model": model,
        "frontend_back": server_total - queue - model,
        "client_network": None if client_mean_ms is None else client_mean_ms - server_total,
    }


class MetricsClient:
    """GET /metrics over one keep-alive connection (one per thread: http.client is not shared)."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5.0)

    def scrape(self) -> dict[MetricSample, float]:
        try:
            self._conn.request("GET", "/metrics")
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()  # reconnects on the next request
            raise
        if response.status != 200:
            raise RuntimeError(f"GET /metrics answered {response.status}: {body[:200]!r}")
        return parse_metrics(body.decode(errors="replace"))

    def close(self) -> None:
        self._conn.close()


def settled_by(client: MetricsClient, key: Callable[[dict[MetricSample, float]], object]) -> dict[MetricSample, float]:
    """/metrics once ``key`` of two scrapes ``SETTLE_INTERVAL_S`` apart agree (at most ``SETTLE_MAX_S``)."""
    previous = client.scrape()
    give_up = time.monotonic() + SETTLE_MAX_S
    while True:
        time.sleep(SETTLE_INTERVAL_S)
        current = client.scrape()
        if key(current) == key(previous) or time.monotonic() > give_up:
            return current
        previous = current


def app_counts(metrics: dict[MetricSample, float], name: str) -> Counts:
    """App ``name``'s counters without the HTTP ones (GET /metrics itself moves those)."""
    return dataclasses.replace(counts_of(metrics, name), http_sum_s=0, http_count=0)


def settled(client: MetricsClient, name: str) -> dict[MetricSample, float]:
    """/metrics once app ``name``'s counters stop moving (at most ``SETTLE_MAX_S``)."""
    return settled_by(client, lambda m: app_counts(m, name))


class LimitSampler:
    """Samples app ``name``'s batch limit and counters every ``interval_s`` on a thread."""

    def __init__(self, port: int, name: str, interval_s: float) -> None:
        self._port = port
        self._name = name
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler", daemon=True)
        self.t0 = 0.0
        self.samples: list[dict[str, float]] = []
        self.errors = 0

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def __enter__(self) -> LimitSampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        client = MetricsClient(self._port)
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    metrics = client.scrape()
                except (OSError, RuntimeError, http.client.HTTPException):
                    self.errors += 1
                else:
                    c = counts_of(metrics, self._name)
                    self.samples.append({
                        "t_s": self.now_s(),
                        "limit": batch_limit(metrics, self._name) or 0.0,
                        "batches": c.batches,
                        "batch_size_sum": c.batch_size_sum,
                        "queries": c.queries,
                        "defaults": c.defaults,
                    })
                next_at += self._interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            client.close()


def time_mean_limit(samples: Sequence[dict[str, float]], start_s: float, end_s: float) -> float | None:
    inside = [s["limit"] for s in samples if start_s <= s["t_s"] <= end_s]
    return sum(inside) / len(inside) if inside else None
