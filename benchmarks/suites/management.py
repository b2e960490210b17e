"""Managing a running server under load: a version switch and a scale-up against the same steady load.

Plan, ``--repeats`` times, each on a fresh Schooner (W2, version 1 = the MLP of seed 0, one
replica, its own ``--data-dir``, admin API on a free port): wrk (64 connections, closed loop)
measures the server's throughput (recorded beside the rate; it counts default answers, so on a
busy machine it overstates capacity), and the steady load is ``--rate`` (default 2,000/s) or
``--fraction`` of that throughput: Poisson arrivals from ``benchmarks.drivers.loadgen``, latency from each request's *scheduled*
send time. Four windows follow on that server, each a warm-up and a measured span at that rate:

  baseline    nothing changes
  switch      ``add_model`` of version 2 (seed 1: other weights, other answers); current once Ready
  scale-up    ``set_num_replicas`` 1 -> 2
  scale-down  ``set_num_replicas`` 2 -> 1

The admin call is made from a thread about ``call_at_s`` into the measured span; its start and
return are placed on the load's timeline, and the arrivals due while it ran are summarized apart.
A prober (one client, one fixed input every 10 ms, in every window so the load is the same)
tells the versions apart by output: the time from ``add_model`` to its first answer from version
2, and how many probes sent after the call returned still got version 1's answer (a version is
told by its output within ``SAME_OUTPUT_TOL``: one input's answer moves in the last digits with
the batch it rode in).
Report per window: throughput (2xx answers/s), p50/p99, non-2xx and other failures, defaults,
p99 × baseline (paired by repeat), p99 while the call ran, the call's duration.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from benchmarks.drivers.closed_loop import BodiesFiles
from benchmarks.drivers.loadgen.driver import (
    LoadGenConfig,
    LoadGenError,
    OpenLoopPlan,
    run_open_loop,
    summarize,
)
from benchmarks.drivers.loadgen.schedule import ArrivalSpec, arrivals
from benchmarks.drivers.wrk import WrkError, ensure_wrk, run_wrk
from benchmarks.harness.cli import add_common_flags, common_config
from benchmarks.harness.machine import (
    DEFAULT_THRESHOLD_PERCENT,
    OthersMeter,
    cpu_list,
    wait_until_idle,
)
from benchmarks.harness.progress import Progress
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.servers import LOOPBACK, ServerStartError
from benchmarks.harness.stats import paired_ratio, ratio_text, spread
from benchmarks.systems import RunningSystem, StartContext
from benchmarks.systems.schooner import (
    add_model_body,
    admin_call,
    admin_url,
    entry_for,
    schooner_toml,
    start_schooner,
)
from benchmarks.workloads import WORKLOADS, request_stream

SUITE = "management"
SLO_MS = 20.0
RATE_PER_S = 2000.0
WRK_CONNECTIONS = 64
PROBE_INTERVAL_S = 0.01
STARTUP_S = 0.4  # run_open_loop's worker start-up before t0 (the call's real time is recorded)
SEED = 20261201
KINDS = ("baseline", "switch", "scale-up", "scale-down")
SAME_OUTPUT_TOL = 1e-3  # versions 1 and 2 differ by ~0.1 per output; batching moves one by ~1e-7


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    sent_ns: int  # time.monotonic_ns()
    done_ns: int
    status: int  # -1: no answer (connection failed)
    output: tuple[float, ...] | None  # the answer's "output"
    default: bool


@dataclass(frozen=True, slots=True)
class ProbeSeen:
    probes: int
    failed: int  # non-200 or no answer
    defaults: int
    first_new_s: float | None  # call start -> first answer whose output is not ``old``'s
    old_after_return: int  # probes sent after the call returned answered with ``old``


def same_output(a: tuple[float, ...] | None, b: tuple[float, ...] | None, tol: float = SAME_OUTPUT_TOL) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def usual_output(answers: Sequence[ProbeAnswer]) -> tuple[float, ...] | None:
    """The output most 200, non-default answers agree with (a version's answer to the probe)."""
    good = [a.output for a in answers if a.status == 200 and not a.default and a.output is not None]
    return max(good, key=lambda o: sum(same_output(o, x) for x in good), default=None)


def probe_seen(answers: Sequence[ProbeAnswer], call_start_ns: int | None, call_end_ns: int | None,
               old: tuple[float, ...] | None) -> ProbeSeen:
    """What the prober saw of a change from ``old`` (None: no version change to look for)."""
    good = [a for a in answers if a.status == 200 and not a.default]
    failed = sum(1 for a in answers if a.status != 200)
    first, old_after = None, 0
    if old is not None and call_start_ns is not None:
        new = [a.done_ns for a in good if not same_output(a.output, old) and a.done_ns >= call_start_ns]
        first = (min(new) - call_start_ns) / 1e9 if new else None
        if call_end_ns is not None:
            old_after = sum(1 for a in good if same_output(a.output, old) and a.sent_ns >= call_end_ns)
    return ProbeSeen(len(answers), failed, len(answers) - len(good) - failed, first, old_after)


class Prober:
    """One closed-loop client in a thread: ``body`` every ``interval_s``; every answer kept."""

    def __init__(self, port: int, path: str, body: bytes, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.port, self.path, self.body, self.interval_s = port, path, body, interval_s
        self.answers: list[ProbeAnswer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        while not self._stop.wait(self.interval_s):
            sent = time.monotonic_ns()
            try:
                conn.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                doc = orjson.loads(response.read())
                raw = doc.get("output") if isinstance(doc, dict) else None
                out = tuple(float(x) for x in (raw if isinstance(raw, list) else [raw])) if raw is not None else None
                self.answers.append(ProbeAnswer(sent, time.monotonic_ns(), response.status, out, bool(isinstance(doc, dict) and doc.get("default"))))
            except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
                self.answers.append(ProbeAnswer(sent, time.monotonic_ns(), -1, None, False))
                conn.close()
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        conn.close()


@dataclass(slots=True)
class AdminCall:
    endpoint: str
    body: dict[str, object]
    start_ns: int | None = None
    end_ns: int | None = None
    status: int | None = None
    answer: object = None

    def run(self, base_url: str) -> None:
        self.start_ns = time.monotonic_ns()
        try:
            self.status, self.answer = admin_call(base_url, self.endpoint, self.body)
        except OSError as exc:
            self.status, self.answer = -1, repr(exc)
        self.end_ns = time.monotonic_ns()

    @property
    def duration_s(self) -> float | None:
        return None if self.start_ns is None or self.end_ns is None else (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True, slots=True)
class Timing:
    warmup_s: float
    window_s: float
    call_at_s: float  # into the measured span
    drain_s: float
    slo_ms: float


@dataclass(slots=True)
class Window:
    kind: str
    repeat: int
    rate_per_s: float
    summary: dict[str, object] = field(default_factory=dict)  # the whole measured span
    during: dict[str, object] | None = None  # arrivals due while the call ran
    call: dict[str, object] | None = None  # endpoint, status, answer, on the load's timeline
    probe: dict[str, object] = field(default_factory=dict)
    others_cpu_percent: float | None = None
    error: str | None = None

    def failures(self) -> int:
        """Arrivals sent that got no 2xx answer (not sent ones: ``dropped_no_connection``)."""
        s = self.summary
        return sum(int(s.get(k) or 0) for k in ("non_2xx", "connect_errors", "connection_lost", "bad_responses", "unanswered"))


def run_window(kind: str, call: AdminCall | None, running: RunningSystem, admin: str, rate: float, t: Timing,
               gen: LoadGenConfig, seed: int, old: bytes | None, repeat: int) -> tuple[Window, list[ProbeAnswer]]:
    w = WORKLOADS["w2"]
    end_s = t.warmup_s + t.window_s
    offsets = arrivals(ArrivalSpec("poisson", rate), end_s, np.random.default_rng(seed))
    bodies, index = request_stream(w, len(offsets), seed)
    plan = OpenLoopPlan(host=LOOPBACK, port=running.port, path=f"/{w.app_name}/predict", offsets_s=offsets, body_index=index,
                        bodies=bodies, warmup_s=t.warmup_s, end_s=end_s, slo_s=t.slo_ms / 1e3, description=f"{kind} at {rate:,.0f}/s")
    win = Window(kind, repeat, rate)
    timer = threading.Timer(STARTUP_S + t.warmup_s + t.call_at_s, call.run, (admin,)) if call else None
    meter = OthersMeter()
    probe_body = request_stream(w, 1, SEED)[0][0]  # one input in every window: its answer names the version
    with Prober(running.port, plan.path, probe_body) as prober:
        try:
            if timer:
                timer.start()
            result = run_open_loop(plan, gen)
        except (LoadGenError, OSError) as exc:
            win.error = str(exc)
            return win, prober.answers
        finally:
            if timer:
                timer.join()
    win.others_cpu_percent = meter.stop()[0]
    win.summary = asdict(result.summary)
    if call is not None and call.start_ns is not None and call.end_ns is not None:
        start_s, end_s = (call.start_ns - result.t0_ns) / 1e9, (call.end_ns - result.t0_ns) / 1e9
        win.call = {"endpoint": call.endpoint, "status": call.status, "answer": call.answer, "start_s": start_s,
                    "end_s": end_s, "duration_s": call.duration_s, "inside_window": t.warmup_s <= start_s and end_s <= plan.end_s}
        during = summarize(result.records, start_s, max(end_s, start_s + 1e-3), plan.slo_s, gen.lag_limit_ms, result.summary.workers)[0]
        win.during = {k: v for k, v in asdict(during).items() if k not in ("workers", "send_lag", "generator_flags")}
        r = result.records
        due_s = r.due_ns[r.is_default & (r.status == 200)] / 1e9 - start_s
        win.call["defaults_due_s_from_call"] = [float(due_s.min()), float(due_s.max())] if len(due_s) else None
        if call.status != 200:
            win.error = f"{call.endpoint} answered {call.status}: {call.answer}"
    seen = probe_seen(prober.answers, call.start_ns if call else None, call.end_ns if call else None, old if kind == "switch" else None)
    win.probe = asdict(seen)
    return win, prober.answers


def describe(w: Window) -> str:
    if w.error and not w.summary:
        return f"{w.kind}: FAILED {w.error.splitlines()[0]}"
    s, lat = w.summary, w.summary.get("latency") or {}
    text = (f"{w.kind}: {s.get('achieved_per_s', 0):,.0f}/s, p50 {lat.get('p50_ms') or 0:.1f} p99 {lat.get('p99_ms') or 0:.1f} ms, "
            f"{w.failures()} failed, {s.get('dropped_no_connection')} not sent (connection cap), {s.get('defaults')} defaults; "
            f"probe {w.probe.get('failed')} failed, {w.probe.get('defaults')} defaults of {w.probe.get('probes')}")
    if w.call:
        text += f"; {w.call['endpoint']} {w.call['duration_s']:.2f} s"
        if w.during:
            text += (f" (while it ran: p99 {(w.during.get('latency') or {}).get('p99_ms') or 0:.1f} ms, {w.during.get('defaults')} defaults "
                     f"of {w.during.get('scheduled')} arrivals; defaults due {w.call.get('defaults_due_s_from_call')} s from the call)")
    if w.probe.get("first_new_s") is not None:
        text += f", first v2 answer after {w.probe['first_new_s']:.2f} s, {w.probe['old_after_return']} v1 answers after return"
    if (w.others_cpu_percent or 0) >= DEFAULT_THRESHOLD_PERCENT:
        text += f" BUSY (others {w.others_cpu_percent:.0f}% of a CPU)"
    return text + (f" ERROR {w.error.splitlines()[0]}" if w.error else "")


def one_repeat(repeat: int, ctx: StartContext, t: Timing, gen: LoadGenConfig, args, common, bodies: BodiesFiles,
               progress: Progress, writer: ResultWriter) -> tuple[dict[str, object], list[Window]]:
    w, label = WORKLOADS["w2"], f"#{repeat + 1}"
    wait = lambda: wait_until_idle(common.max_wait_idle_s, common.idle_threshold_percent,  # noqa: E731
                                   on_wait=lambda c: progress.note(f"{label}: waiting, {c.text()}"))
    writer.check(f"{label} start", wait())
    entry = entry_for(w, ctx)
    # a fresh registry per repeat (--data-dir): a stored one would keep version 2 current
    running = start_schooner(f"schooner w2 {repeat}", schooner_toml([entry]), None, ctx, w.name,
                             ("--data-dir", str(ctx.work_dir / f"data-{repeat}")))
    info: dict[str, object] = {"repeat": repeat, "settings": running.settings}
    windows: list[Window] = []
    try:
        admin = admin_url(running)
        path, _ = bodies.get(w, 0)
        with progress.running(f"{label} wrk", t.window_s):
            closed = run_wrk(ensure_wrk(), running.url(w), WRK_CONNECTIONS, 1.0 if common.quick else 2.0, path, common.client_cpus)
        rate = args.fraction * closed.req_per_s if args.fraction else args.rate
        info.update(closed_loop_per_s=closed.req_per_s, closed_loop_p99_ms=closed.p99_ms, rate_per_s=rate)
        progress.point(f"{label} closed loop ({WRK_CONNECTIONS} connections): {closed.req_per_s:,.0f}/s -> steady load {rate:,.0f}/s ({rate / closed.req_per_s:.0%} of it)")
        v2 = add_model_body(entry, "2", {"seed": 1})
        changes = {"baseline": None, "switch": ("add_model", v2), "scale-up": ("set_num_replicas", {"model_name": w.name, "num_replicas": 2}),
                   "scale-down": ("set_num_replicas", {"model_name": w.name, "num_replicas": 1})}
        old = None
        for k, kind in enumerate(KINDS):
            writer.check(f"{label} {kind}", wait())
            call = AdminCall(*changes[kind]) if changes[kind] else None
            with progress.running(f"{label} {kind}", STARTUP_S + t.warmup_s + t.window_s + t.drain_s):
                win, answers = run_window(kind, call, running, admin, rate, t, gen, SEED + 10 * repeat + k, old, repeat)
            if kind == "baseline":
                old = usual_output(answers)
                info["v1_output"] = old
            windows.append(win)
            progress.point(f"{label} {describe(win)}")
    except (WrkError, RuntimeError, OSError, ServerStartError) as exc:
        info["error"] = str(exc)
        progress.note(f"{label}: FAILED {str(exc).splitlines()[0]}")
    finally:
        stop = running.stop()
        info["stop"] = asdict(stop)
    return info, windows


def report(windows: list[Window], repeats: int) -> str:
    base = {w.repeat: w for w in windows if w.kind == "baseline" and w.summary}
    rows = []
    for kind in KINDS:
        mine = sorted((w for w in windows if w.kind == kind and w.summary), key=lambda w: w.repeat)
        lat = [w.summary.get("latency") or {} for w in mine]
        p99 = [x.get("p99_ms") for x in lat]
        ratio = paired_ratio(p99, [(base[w.repeat].summary.get("latency") or {}).get("p99_ms") if w.repeat in base else None for w in mine])
        during = spread([((w.during or {}).get("latency") or {}).get("p99_ms") for w in mine])
        call = spread([(w.call or {}).get("duration_s") for w in mine])
        first = spread([w.probe.get("first_new_s") for w in mine])
        cells = [spread([w.rate_per_s for w in mine]), spread([w.summary.get("achieved_per_s") for w in mine]),
                 spread([x.get("p50_ms") for x in lat]), spread(p99)]
        rows.append([kind, *(c.text() if c and i < 2 else (c.text(".1f") if c else "-") for i, c in enumerate(cells)),
                     ratio_text(ratio) if kind != "baseline" else "1", during.text(".1f") if during else "-",
                     f"{sum(w.failures() for w in mine)} / {sum(int(w.probe.get('failed') or 0) for w in mine)}",
                     str(sum(int(w.summary.get("dropped_no_connection") or 0) for w in mine)),
                     f"{sum(int(w.summary.get('defaults') or 0) for w in mine)} / {sum(int(w.probe.get('defaults') or 0) for w in mine)}",
                     call.text(".2f") if call else "-",
                     first.text(".2f") if first else "-", f"{len(mine)}/{repeats}"])
    head = ["window", "offered /s", "2xx /s", "p50 ms", "p99 ms", "p99 × baseline (paired)", "p99 while the call ran, ms",
            "failed: load / probe", "not sent", "defaults: load / probe", "call s", "add_model → first v2 answer, s", "repeats"]
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks management", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=RATE_PER_S, help=f"steady load in queries/s (default {RATE_PER_S:,.0f})")
    parser.add_argument("--fraction", type=float, help="steady load as this fraction of the closed-loop throughput instead")
    parser.add_argument("--slo-ms", type=float, default=SLO_MS, help=f"the app's latency_slo_micros, and the loadgen's SLO (default {SLO_MS:g})")
    parser.add_argument("--window-s", type=float, help="measured seconds per window (default 8; --quick 4)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    t = Timing(0.5 if common.quick else 1.0, args.window_s or (4.0 if common.quick else 8.0), 1.0, 1.0, args.slo_ms)
    gen = LoadGenConfig(workers=1, cpus=cpu_list(common.client_cpus), drain_s=t.drain_s)
    config = {"workload": "w2", "versions": {"1": {"seed": 0}, "2": {"seed": 1}}, "timing": asdict(t), "fraction": args.fraction,
              "rate_per_s": args.rate, "wrk_connections": WRK_CONNECTIONS, "probe_interval_s": PROBE_INTERVAL_S,
              "repeats": common.repeats, "client_cpus": common.client_cpus, "server_cpus": common.server_cpus}
    writer = ResultWriter(SUITE, config)
    progress = Progress(common.repeats * (1 + len(KINDS)), SUITE)
    load = f"{args.fraction:.0%} of the closed-loop throughput ({WRK_CONNECTIONS} connections)" if args.fraction else f"{args.rate:,.0f}/s"
    print(f"management: W2 under a steady Poisson load of {load}; windows {', '.join(KINDS)}: {t.warmup_s:g} s warm-up + "
          f"{t.window_s:g} s, the admin call ~{t.call_at_s:g} s in; SLO {t.slo_ms:g} ms; {common.repeats} repeats, each on a fresh server")
    runs, windows = [], []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="schooner-management-") as tmp:
        ctx = StartContext(Path(tmp), common.server_cpus, t.slo_ms)
        bodies = BodiesFiles(Path(tmp), WORKLOADS["w2"].distinct_bodies)
        for repeat in range(common.repeats):
            info, wins = one_repeat(repeat, ctx, t, gen, args, common, bodies, progress, writer)
            runs.append(info)
            windows += wins
    table = report(windows, common.repeats)
    print(f"\nSLO {t.slo_ms:g} ms; {common.repeats} repeats; {time.monotonic() - began:.0f} s\n{table}")
    print("Rates, latencies and times: median (min-max) over repeats, latency from the scheduled send time over the whole "
          "measured window; counts: totals over repeats (failed = sent, no 2xx answer; not sent = the generator's "
          "connection cap was reached; probe = the 100/s version prober).")
    paths = writer.write({"table": table, "runs": runs, "windows": [asdict(w) for w in windows]}, publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 1 if any(r.get("error") for r in runs) or any(w.error for w in windows) else 0
