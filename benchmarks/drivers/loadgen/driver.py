"""``run_open_loop``: one open-loop run over one or more worker processes, merged into one result.

Owns the worker processes' lifecycle and the summary of their records. The driver writes the
plan to files (the pre-encoded requests once; per worker its due offsets and which request each
arrival sends, dealt round-robin), starts the workers (``benchmarks.drivers.loadgen.worker``), waits for
every ``ready``, then sends each the same ``go <t0_ns>`` with t0 a little in the future, so all
start on one schedule. Each worker writes its records; the driver puts them back in arrival
order, builds one latency and one send-lag histogram per worker and merges them.

Figures (``OpenLoopSummary``; only arrivals due in the measured window [warmup_s, end_s) count):
  offered_per_s    arrivals due in the window / window length.
  achieved_per_s   2xx answers to those arrivals / window length (defaults included).
  good_per_s       2xx, not a default, and latency ≤ SLO, per second.
  slo_attainment   good / arrivals due: dropped, failed and unanswered arrivals count against it.
  latency          answer complete − *due* time, over every arrival that got an HTTP answer.
  send lag         decision to send − due time: the generator's own delay. p99 above
                   ``lag_limit_ms`` (default 1 ms) flags the run ``generator-limited``: the
                   generator, not the server, was the bottleneck, and the latencies include its
                   delay.
Errors (non-2xx), defaults, dropped (no connection: the cap was reached), connect errors,
connections lost, bad responses and unanswered (no answer ``drain_s`` after the last arrival
was due) are counted apart.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from benchmarks.drivers.loadgen.histogram import LatencyHistogram
from benchmarks.drivers.loadgen.http1 import encode_post
from benchmarks.drivers.loadgen.schedule import split_round_robin
from benchmarks.drivers.loadgen.worker import (
    BAD_RESPONSE,
    CONNECT_ERROR,
    CONNECTION_LOST,
    DROPPED_NO_CONNECTION,
    UNANSWERED,
    WorkerSpec,
)
from benchmarks.harness import REPO_ROOT  # noqa: E402

READY_TIMEOUT_S = 60.0
START_MARGIN_S = 0.1  # t0 this far after the last worker said ready
EXIT_MARGIN_S = 30.0
DEFAULT_LAG_LIMIT_MS = 1.0
DEFAULT_MAX_CONNECTIONS = 1024
TIMELINE_WINDOW_S = 0.1
INITIAL_CONNECTIONS_S = 0.005


class LoadGenError(RuntimeError):
    """A worker failed to start, to finish, or to write its records."""


@dataclass(frozen=True, slots=True)
class LoadGenConfig:
    workers: int = 1
    cpus: tuple[int, ...] | None = None  # worker k runs on cpus[k % len(cpus)]; None: unpinned
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # in total, split evenly over workers
    initial_connections: int | None = None  # per worker, opened before t0; None: from the rate
    saturated_busy_fraction: float = 0.85  # a worker this busy is itself the bottleneck
    drain_s: float = 2.0
    lag_limit_ms: float = DEFAULT_LAG_LIMIT_MS

    def worker_cpus(self, k: int) -> tuple[int, ...] | None:
        return (self.cpus[k % len(self.cpus)],) if self.cpus else None

    def initial_per_worker(self, rate_per_s: float) -> int:
        """Connections each worker opens before t0: what ``INITIAL_CONNECTIONS_S`` of arrivals
        would keep busy (at least 16), so a run does not start with a burst of connects."""
        if self.initial_connections is not None:
            return self.initial_connections
        cap = max(1, self.max_connections // self.workers)
        return min(cap, max(16, math.ceil(rate_per_s / self.workers * INITIAL_CONNECTIONS_S)))


@dataclass(frozen=True, slots=True)
class OpenLoopPlan:
    """What to send and when: arrival i is due at ``offsets_s[i]`` and sends ``bodies[body_index[i]]``."""

    host: str
    port: int
    path: str
    offsets_s: np.ndarray
    body_index: np.ndarray
    bodies: Sequence[bytes]
    warmup_s: float
    end_s: float
    slo_s: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class Records:
    """Per arrival, in arrival order (ns; ``sent``/``done`` 0 when it did not happen)."""

    due_ns: np.ndarray  # offset from t0
    sent_ns: np.ndarray
    done_ns: np.ndarray
    status: np.ndarray
    is_default: np.ndarray
    worker: np.ndarray


@dataclass(slots=True)
class OpenLoopSummary:
    description: str
    window_s: float
    scheduled: int
    answered: int  # got an HTTP answer (any status)
    ok: int  # 2xx, defaults included
    defaults: int
    good: int  # 2xx, not default, within the SLO
    non_2xx: int
    dropped_no_connection: int
    connect_errors: int
    connection_lost: int
    bad_responses: int
    unanswered: int
    offered_per_s: float
    achieved_per_s: float
    good_per_s: float
    slo_s: float
    slo_attainment: float | None
    latency: dict[str, float | None]
    send_lag: dict[str, float | None]
    late_sends_over_limit: float | None  # share of sends with lag above lag_limit_ms
    generator_limited: (
        bool  # send lag p99 above the limit: the latencies include the generator's delay
    )
    generator_saturated: (
        bool  # and a worker was busy nearly all the time: the generator is the bottleneck
    )
    generator_flags: list[str]
    workers: list[dict[str, object]]
    connections_opened: int
    max_inflight: int
    status_counts: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        lat = self.latency
        att = "-" if self.slo_attainment is None else f"{100 * self.slo_attainment:.1f}%"
        parts = [
            f"offered {self.offered_per_s:,.0f}/s achieved {self.achieved_per_s:,.0f}/s",
            f"p50 {fmt_ms(lat.get('p50_ms'))} p99 {fmt_ms(lat.get('p99_ms'))} max {fmt_ms(lat.get('max_ms'))} ms",
            f"SLO {att}",
        ]
        extra = []
        if self.defaults:
            extra.append(f"{self.defaults} defaults")
        errors = self.non_2xx + self.connect_errors + self.connection_lost + self.bad_responses
        if errors:
            extra.append(f"{errors} errors")
        if self.dropped_no_connection:
            extra.append(f"{self.dropped_no_connection} dropped (no connection)")
        if self.unanswered:
            extra.append(f"{self.unanswered} unanswered")
        extra.append(f"lag p99 {fmt_ms(self.send_lag.get('p99_ms'))} ms")
        if self.generator_saturated:
            extra.append("GENERATOR-SATURATED")
        elif self.generator_limited:
            extra.append("generator-limited")
        return ", ".join(parts + extra)


@dataclass(slots=True)
class OpenLoopResult:
    summary: OpenLoopSummary
    latency_hist: LatencyHistogram
    lag_hist: LatencyHistogram
    records: Records
    t0_ns: int


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------
# Summary (pure)


def summarize(
    records: Records,
    warmup_s: float,
    end_s: float,
    slo_s: float,
    lag_limit_ms: float,
    workers_meta: Sequence[dict[str, object]],
    description: str = "",
    saturated_busy_fraction: float = 0.85,
) -> tuple[OpenLoopSummary, LatencyHistogram, LatencyHistogram]:
    window = (records.due_ns >= int(warmup_s * 1e9)) & (records.due_ns < int(end_s * 1e9))
    status, done = records.status, records.done_ns
    answered = window & (status > 0)
    ok = answered & (status >= 200) & (status < 300)
    latency_ns = done - records.due_ns
    defaults = ok & records.is_default
    good = ok & ~records.is_default & (latency_ns <= int(slo_s * 1e9))
    sent = window & (records.sent_ns > 0)
    lag_ns = records.sent_ns - records.due_ns
    n_workers = int(records.worker.max()) + 1 if len(records.worker) else 0
    lat_hist = LatencyHistogram.merged(
        LatencyHistogram.of(latency_ns[answered & (records.worker == k)]) for k in range(n_workers)
    )
    lag_hist = LatencyHistogram.merged(
        LatencyHistogram.of(lag_ns[sent & (records.worker == k)]) for k in range(n_workers)
    )
    window_s = max(end_s - warmup_s, 1e-9)
    scheduled = int(window.sum())
    lag = lag_hist.summary_ms()
    late = float((lag_ns[sent] > lag_limit_ms * 1e6).mean()) if sent.any() else None
    flags = []
    if lag.get("p99_ms") is not None and lag["p99_ms"] > lag_limit_ms:
        flags.append(f"send lag p99 {lag['p99_ms']:.2f} ms > {lag_limit_ms:g} ms")
    busy = [b for b in (w.get("cpu_busy_fraction") for w in workers_meta) if b is not None]
    busiest = max(busy, default=0.0)
    limited = bool(lag.get("p99_ms") is not None and lag["p99_ms"] > lag_limit_ms)
    saturated = limited and busiest >= saturated_busy_fraction
    if saturated:
        flags.append(f"saturated: a worker was {busiest:.0%} busy")
    elif limited:
        # the worker had idle time, so something else held it back: other processes on its CPU
        # (a shared machine), or bursts of connects when the server fell behind
        flags.append(
            f"not saturated (busiest worker {busiest:.0%} busy): preempted or opening connections"
        )
    codes, counts = np.unique(status[window], return_counts=True)
    summary = OpenLoopSummary(
        description=description,
        window_s=window_s,
        scheduled=scheduled,
        answered=int(answered.sum()),
        ok=int(ok.sum()),
        defaults=int(defaults.sum()),
        good=int(good.sum()),
        non_2xx=int((answered & ~ok).sum()),
        dropped_no_connection=int((window & (status == DROPPED_NO_CONNECTION)).sum()),
        connect_errors=int((window & (status == CONNECT_ERROR)).sum()),
        connection_lost=int((window & (status == CONNECTION_LOST)).sum()),
        bad_responses=int((window & (status == BAD_RESPONSE)).sum()),
        unanswered=int((window & (status == UNANSWERED)).sum()),
        offered_per_s=scheduled / window_s,
        achieved_per_s=int(ok.sum()) / window_s,
        good_per_s=int(good.sum()) / window_s,
        slo_s=slo_s,
        slo_attainment=int(good.sum()) / scheduled if scheduled else None,
        latency=lat_hist.summary_ms(),
        send_lag=lag,
        late_sends_over_limit=late,
        generator_limited=limited,
        generator_saturated=saturated,
        generator_flags=flags,
        workers=list(workers_meta),
        connections_opened=sum(int(w.get("connections_opened", 0)) for w in workers_meta),
        max_inflight=sum(int(w.get("max_inflight", 0)) for w in workers_meta),
        status_counts={str(int(c)): int(k) for c, k in zip(codes, counts, strict=True)},
    )
    return summary, lat_hist, lag_hist


def timeline(
    records: Records, end_s: float, window_s: float = TIMELINE_WINDOW_S
) -> dict[str, list[float | None]]:
    """Per window of due time: arrivals/s, 2xx answers/s, p50 and p99 latency (ms) of the arrivals
    due in it (None when none was answered)."""
    edges = np.arange(0.0, end_s + window_s / 2, window_s)
    due_s = records.due_ns / 1e9
    ok = (records.status >= 200) & (records.status < 300)
    latency_ms = (records.done_ns - records.due_ns) / 1e6
    which = np.digitize(due_s, edges) - 1
    out: dict[str, list[float | None]] = {
        "t_s": [],
        "offered_per_s": [],
        "ok_per_s": [],
        "p50_ms": [],
        "p99_ms": [],
    }
    for w in range(len(edges) - 1):
        inside = which == w
        answered = inside & (records.status > 0)
        out["t_s"].append(float(edges[w]))
        out["offered_per_s"].append(float(inside.sum()) / window_s)
        out["ok_per_s"].append(float((inside & ok).sum()) / window_s)
        if answered.any():
            lat = latency_ms[answered]
            out["p50_ms"].append(float(np.percentile(lat, 50)))
            out["p99_ms"].append(float(np.percentile(lat, 99)))
        else:
            out["p50_ms"].append(None)
            out["p99_ms"].append(None)
    return out


# ---------------------------------------------------------------------------------------------
# Process shell


def write_requests(path: Path, plan: OpenLoopPlan) -> None:
    encoded = [encode_post(plan.host, plan.port, plan.path, body) for body in plan.bodies]
    starts = np.zeros(len(encoded) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(r) for r in encoded])
    np.savez(path, blob=np.frombuffer(b"".join(encoded), dtype=np.uint8), starts=starts)


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def run_open_loop(
    plan: OpenLoopPlan, config: LoadGenConfig, work_dir: Path | None = None
) -> OpenLoopResult:
    """Runs ``plan`` on ``config.workers`` processes; raises LoadGenError if a worker fails."""
    with tempfile.TemporaryDirectory(prefix="loadgen-", dir=work_dir) as tmp:
        return _run(plan, config, Path(tmp))


def _run(plan: OpenLoopPlan, config: LoadGenConfig, tmp: Path) -> OpenLoopResult:
    n = len(plan.offsets_s)
    due_ns = np.round(np.asarray(plan.offsets_s) * 1e9).astype(np.int64)
    body_index = np.asarray(plan.body_index, dtype=np.int32)
    requests_path = tmp / "requests.npz"
    write_requests(requests_path, plan)
    shares = split_round_robin(n, config.workers)
    per_worker_cap = max(1, config.max_connections // config.workers)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    procs: list[subprocess.Popen[bytes]] = []
    specs = []
    try:
        for k, idx in enumerate(shares):
            arrays = tmp / f"arrays-{k}.npz"
            np.savez(arrays, due_offsets_ns=due_ns[idx], request_index=body_index[idx])
            spec = WorkerSpec(
                index=k,
                host=plan.host,
                port=plan.port,
                arrays_path=str(arrays),
                requests_path=str(requests_path),
                out_path=str(tmp / f"records-{k}.npz"),
                max_connections=per_worker_cap,
                initial_connections=config.initial_per_worker(
                    n / plan.end_s if plan.end_s > 0 else 0.0
                ),
                drain_s=config.drain_s,
                cpus=config.worker_cpus(k),
            )
            spec_path = tmp / f"spec-{k}.json"
            spec_path.write_bytes(spec.to_json())
            specs.append(spec)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.drivers.loadgen.worker", str(spec_path)],
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=(tmp / f"worker-{k}.log").open("wb"),
                )
            )
        for k, p in enumerate(procs):
            assert p.stdout is not None
            line = _readline(p, READY_TIMEOUT_S)
            if line != b"ready":
                raise LoadGenError(f"worker {k} did not start: {line!r}\n{_log(tmp, k)}")
        t0 = time.monotonic_ns() + int(START_MARGIN_S * 1e9)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"go {t0}\n".encode())
            p.stdin.flush()
        deadline = t0 / 1e9 + (plan.offsets_s[-1] if n else 0.0) + config.drain_s + EXIT_MARGIN_S
        for k, p in enumerate(procs):
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                raise LoadGenError(f"worker {k} did not finish\n{_log(tmp, k)}") from exc
            if p.returncode != 0:
                raise LoadGenError(f"worker {k} exited {p.returncode}\n{_log(tmp, k)}")
    finally:
        _stop(procs)
    sent = np.zeros(n, np.int64)
    done = np.zeros(n, np.int64)
    status = np.zeros(n, np.int16)
    is_default = np.zeros(n, np.bool_)
    worker = np.zeros(n, np.int16)
    metas = []
    for k, (spec, idx) in enumerate(zip(specs, shares, strict=True)):
        with np.load(spec.out_path) as f:
            sent[idx] = np.where(f["sent_ns"] > 0, f["sent_ns"] - t0, 0)
            done[idx] = np.where(f["done_ns"] > 0, f["done_ns"] - t0, 0)
            status[idx] = f["status"]
            is_default[idx] = f["is_default"]
            metas.append(orjson.loads(f["meta"].tobytes()))
        worker[idx] = k
    records = Records(due_ns, sent, done, status, is_default, worker)
    summary, lat_hist, lag_hist = summarize(
        records,
        plan.warmup_s,
        plan.end_s,
        plan.slo_s,
        config.lag_limit_ms,
        metas,
        plan.description,
        config.saturated_busy_fraction,
    )
    return OpenLoopResult(summary, lat_hist, lag_hist, records, t0)


def _readline(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One line of a worker's stdout within ``timeout_s`` (b"" on EOF or timeout)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout_s):
            return b""
        return proc.stdout.readline().strip()
    finally:
        sel.close()


def _log(tmp: Path, k: int) -> str:
    try:
        return (tmp / f"worker-{k}.log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def summary_json(summary: OpenLoopSummary) -> dict[str, object]:
    return asdict(summary)
