"""Counters, gauges and histograms as plain data, rendered in the Prometheus text format.

Pure: no clock, no I/O. Each process keeps its own `MetricSet`; its shell renders it with
`render` and publishes the text, and whoever answers ``GET /metrics`` concatenates the texts.
The scheduler core keeps none: it counts into plain records (`counters`), which its shell turns
into a `MetricSet` and renders when it publishes through its shared-memory board
(`counters_render`). Base units only: seconds, bytes, counts.
Labels are low-cardinality (app, model, version, replica, reason) and fixed at registration.

Cost on the hot path: `Counter.inc` is an attribute add; `Histogram.observe` one `bisect` and
two adds. Histograms are per batch where they can be (batch size, model latency); queue delay
is per query because that is what it measures.
"""

from __future__ import annotations

from bisect import bisect_left

# sub-millisecond resolution where serving latencies live, up to 10 s
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int | float = 1) -> None:
        self.value += n


class Gauge:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def set(self, v: float) -> None:
        self.value = v


class Histogram:
    """Cumulative-bucket histogram; `counts[i]` is the number of observations in bucket i."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, v: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, v)] += n
        self.total += v * n
        self.count += n


class MetricSet:
    """A process's metric families: name -> (type, help, {label tuple: metric})."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, dict[tuple, object]]] = {}

    def _get(self, kind: str, name: str, help_text: str, labels: dict[str, str], factory):
        fam = self._families.get(name)
        if fam is None:
            fam = (kind, help_text, {})
            self._families[name] = fam
        elif fam[0] != kind:
            raise ValueError(f"metric {name} registered as {fam[0]}, not {kind}")
        key = tuple(sorted(labels.items()))
        m = fam[2].get(key)
        if m is None:
            m = fam[2][key] = factory()
        return m

    def counter(self, name: str, help_text: str, **labels: str) -> Counter:
        return self._get("counter", name, help_text, labels, Counter)

    def gauge(self, name: str, help_text: str, **labels: str) -> Gauge:
        return self._get("gauge", name, help_text, labels, Gauge)

    def histogram(self, name: str, help_text: str, bounds: tuple[float, ...] = LATENCY_BUCKETS_S, **labels: str) -> Histogram:
        return self._get("histogram", name, help_text, labels, lambda: Histogram(bounds))

    def render(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        for name, (kind, help_text, series) in self._families.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for key, m in series.items():
                labels = dict(key)
                if kind == "histogram":
                    cum = 0
                    for bound, c in zip(m.bounds, m.counts, strict=False):
                        cum += c
                        out.append(f"{name}_bucket{_labels({**labels, 'le': _num(bound)})} {cum}")
                    out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {m.count}")
                    out.append(f"{name}_sum{_labels(labels)} {_num(m.total)}")
                    out.append(f"{name}_count{_labels(labels)} {m.count}")
                else:
                    out.append(f"{name}{_labels(labels)} {_num(m.value)}")
        return "\n".join(out) + "\n"


STAGE_METRIC = "schooner_stage_seconds"  # a summary (sum, count) per stage, written by the scheduler and the frontends
STAGE_HELP = ("Time queries spend in each stage: submit (frontend in -> scheduler in), queue (-> model in), "
              "model (-> model out), return (-> answer written), deliver (-> answer handed to the socket)")


def stage_summary_text(stages: list[tuple[str, int, int]], **labels: str) -> str:
    """`STAGE_METRIC` as Prometheus text: per (stage, total ns, queries) a _sum in seconds and
    a _count, with `labels` on every sample (a frontend labels its own)."""
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    lines = [f"# HELP {STAGE_METRIC} {STAGE_HELP}", f"# TYPE {STAGE_METRIC} summary"]
    for stage, total_ns, count in stages:
        lines.append(f'{STAGE_METRIC}_sum{{stage="{stage}"{extra}}} {total_ns / 1e9:.9f}')
        lines.append(f'{STAGE_METRIC}_count{{stage="{stage}"{extra}}} {count}')
    return "\n".join(lines) + "\n"


def merge_texts(texts: list[str]) -> str:
    """Merge Prometheus texts from several processes: each family's HELP/TYPE once, then the
    samples of every source. Sources must use distinct label values for the same series (the
    frontends label theirs with ``frontend``)."""
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for text in texts:
        family = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                if name not in heads:
                    heads[name] = []
                    samples[name] = []
                    order.append(name)
                if line not in heads[name]:
                    heads[name].append(line)
                family = name
            elif not line.startswith("#") and family is not None:
                samples[family].append(line)
    out: list[str] = []
    for name in order:
        out += heads[name]
        out += samples[name]
    return "\n".join(out) + "\n"
