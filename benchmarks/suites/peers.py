"""Peers: Schooner against LitServe and Ray Serve (and the inline server), configured like for like.

Plan, for each batch wait of ``--waits`` (default 0 and 2 ms; one table each): ``--repeats``
times, interleaved, for each workload (W1, W2) and system, a fresh server with the table's
batching (the same maximum batch, 64, and the same batch wait for Schooner's
``batch_wait_timeout_micros``, LitServe's ``batch_timeout`` and Ray's ``batch_wait_timeout_s``),
one contract request (its answer must be the model's own), a 1 s warm-up, one closed-loop wrk run
per concurrency, stop and leak check. The inline server does not batch: it runs in the first
table only and is the base of both. LitServe runs with and without ``fast_queue``; each table
keeps, per point, the better of the two (median req/s), and says which. Ray Serve runs in its own
network and PID namespaces, loaded by wrk started inside them (no forward on the measured path),
with ``num_cpus`` = the CPUs the servers may use. By default every server is pinned to the CPUs
wrk does not use. The settings printed are read back from each server as started.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson

from benchmarks.drivers.closed_loop import BodiesFiles, TargetRun, drive
from benchmarks.drivers.wrk import ensure_wrk, whole_seconds, wrk_version
from benchmarks.harness.cli import add_common_flags, common_config, csv_ints, csv_names
from benchmarks.harness.machine import default_server_cpus
from benchmarks.harness.progress import Progress
from benchmarks.harness.results import ResultWriter, markdown_table
from benchmarks.harness.stats import paired_ratio, ratio_text, spread
from benchmarks.systems import Batching, RunningSystem, StartContext
from benchmarks.systems.registry import SYSTEMS
from benchmarks.workloads import WORKLOADS, Workload, load_model, request_body

SUITE = "peers"
SYSTEM_NAMES = ("inline", "schooner", "litserve", "litserve-fq", "rayserve")
SLO_MS = 100.0
MAX_BATCH_SIZE = 64
CONTRACT_SEED = 999
CONTRACT_RTOL = 1e-5
CONTRACT_ATOL = 1e-6
CONTRACT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """One request through ``base_url`` compared with the model's own answer."""

    system: str
    workload: str
    url: str
    status: int | None
    response: str
    expected_output: object
    ok: bool
    problem: str | None


def expected_output(workload: Workload, row: np.ndarray) -> object:
    """The model's answer for ``row``, as JSON would carry it (float or list of floats)."""
    return load_model(workload).predict(row.reshape(1, *workload.input_shape))[0].tolist()


def check_contract(system: str, base_url: str, workload: Workload) -> ContractCheck:
    row = workload.make_inputs(1, CONTRACT_SEED)[0]
    expected = expected_output(workload, row)
    url = f"{base_url}/{workload.app_name}/predict"
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=CONTRACT_TIMEOUT_S)
    status, text = None, ""

    def result(problem: str | None) -> ContractCheck:
        return ContractCheck(
            system, workload.name, url, status, text, expected, problem is None, problem
        )

    try:
        conn.request("POST", parts.path, request_body(row), {"Content-Type": "application/json"})
        response = conn.getresponse()
        status, text = response.status, response.read().decode(errors="replace")
    except OSError as exc:
        return result(f"request failed: {exc!r}")
    finally:
        conn.close()
    if status != 200:
        return result(f"status {status}")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return result(f"not JSON: {exc}")
    if not isinstance(doc, dict) or set(doc) != {"query_id", "output", "default"}:
        return result(f"keys {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}")
    if type(doc["query_id"]) is not int or doc["default"] is not False:
        return result("query_id is not an integer or default is not false")
    got = np.asarray(doc["output"], dtype=np.float64)
    want = np.asarray(expected, dtype=np.float64)
    if got.shape != want.shape or not np.allclose(
        got, want, rtol=CONTRACT_RTOL, atol=CONTRACT_ATOL
    ):
        return result(f"output {doc['output']} differs from the model's {expected}")
    return result(None)



def best_litserve(runs: list[TargetRun], workload: str, c: int) -> str:
    """The LitServe variant with the higher median req/s at this point."""
    medians = {}
    for name in ("litserve", "litserve-fq"):
        s = spread([r.rate(c) for r in runs if r.system == name and r.workload == workload])
        if s:
            medians[name] = s.median
    return max(medians, key=medians.get) if medians else "litserve"


def table(runs: list[TargetRun], base: list[TargetRun], concurrencies: tuple[int, ...]) -> str:
    rows = []
    for w in dict.fromkeys(r.workload for r in runs):
        for c in concurrencies:
            lit = best_litserve(runs, w, c)
            row: list[object] = [w, c]
            base_runs = sorted((r for r in base if r.workload == w), key=lambda r: r.repeat)
            b = spread([r.rate(c) for r in base_runs])
            row.append(b.text() if b else "-")
            p99s = [spread([r.latency(c, "p99_ms") for r in base_runs])]
            for name in ("schooner", lit, "rayserve"):
                mine = sorted((r for r in runs if r.system == name and r.workload == w), key=lambda r: r.repeat)
                s = spread([r.rate(c) for r in mine])
                ratio = paired_ratio([r.rate(c) for r in mine], [r.rate(c) for r in base_runs])
                label = f" [{'fast_queue' if name == 'litserve-fq' else 'no fast_queue'}]" if name.startswith("litserve") else ""
                row.append(f"{s.text()} ({ratio_text(ratio)}){label}" if s and ratio else (s.text() if s else "-"))
                p99s.append(spread([r.latency(c, "p99_ms") for r in mine]))
            row.append(" / ".join(f"{p.median:.1f}" if p else "-" for p in p99s))
            rows.append(row)
    head = ["workload", "c", "inline req/s", "Schooner req/s (× inline)", "LitServe req/s (× inline)", "Ray Serve req/s (× inline)", "p99 ms inline / Schooner / LitServe / Ray"]
    return markdown_table(head, rows)


def settings_line(runs: list[TargetRun]) -> str:
    seen = {}
    for r in runs:
        seen.setdefault(r.system, r.settings)
    return "; ".join(f"{k}: {v}" for k, v in seen.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per point (default 3; --quick 1)")
    parser.add_argument("--concurrency", default="1,16,64", help="wrk connections (default 1,16,64)")
    parser.add_argument("--systems", default=",".join(SYSTEM_NAMES), help=f"subset of {','.join(SYSTEM_NAMES)}")
    parser.add_argument("--workloads", default="w1,w2", help="subset of w1,w2,w3,w4,synthetic")
    parser.add_argument("--waits-ms", default="0,2", help="batch waits, one table each (default 0,2)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    common = common_config(args, parser)
    concurrencies = csv_ints(args.concurrency, parser, "--concurrency")
    systems = csv_names(args.systems, SYSTEM_NAMES, parser, "--systems")
    workloads = [WORKLOADS[w] for w in csv_names(args.workloads, WORKLOADS, parser, "--workloads")]
    waits = tuple(float(x) / 1e3 for x in args.waits_ms.split(",") if x)
    server_cpus = common.server_cpus or default_server_cpus(common.client_cpus)
    duration_s = float(whole_seconds(args.duration or (1.0 if common.quick else 3.0)))
    batching_systems = [s for s in systems if s != "inline"]
    per_table = len(workloads) * len(batching_systems) * len(concurrencies) * common.repeats
    inline_points = len(workloads) * len(concurrencies) * common.repeats if "inline" in systems else 0
    progress = Progress(per_table * len(waits) + inline_points, SUITE)
    wrk = ensure_wrk()
    config = {
        "systems": systems, "workloads": [w.name for w in workloads], "concurrencies": concurrencies,
        "duration_s": duration_s, "repeats": common.repeats, "max_batch_size": MAX_BATCH_SIZE,
        "batch_waits_s": waits, "slo_ms": SLO_MS, "client_cpus": common.client_cpus, "server_cpus": server_cpus,
    }
    writer = ResultWriter(SUITE, config, {"wrk": wrk_version(wrk)})
    print(f"peers: {', '.join(systems)} on {', '.join(w.name for w in workloads)}; c {concurrencies}; {duration_s:g} s per point; "
          f"{common.repeats} repeats; batch waits {', '.join(f'{w * 1e3:g} ms' for w in waits)}; max batch {MAX_BATCH_SIZE}; "
          f"wrk on CPU {common.client_cpus or 'any'}, servers on CPU {server_cpus or 'any'}")
    checks: list[ContractCheck] = []

    def check(running: RunningSystem, workload: Workload) -> str | None:
        if running.name == "inline":
            return None
        result = check_contract(running.name, running.base_url, workload)
        checks.append(result)
        return result.problem

    tables: dict[str, list[TargetRun]] = {}
    base: list[TargetRun] = []
    with tempfile.TemporaryDirectory(prefix="schooner-peers-") as tmp:
        work = Path(tmp)
        bodies = BodiesFiles(work, 20_000)
        for t, wait in enumerate(waits):
            ctx = StartContext(work, server_cpus, SLO_MS, Batching(MAX_BATCH_SIZE, wait))
            runs: list[TargetRun] = []
            names = systems if t == 0 else tuple(batching_systems)
            for repeat in range(common.repeats):
                for w in workloads:
                    for name in names:
                        r = drive(SYSTEMS[name], w, ctx, concurrencies, duration_s, wrk, common.client_cpus, bodies,
                                  progress, writer, repeat, common.max_wait_idle_s, common.idle_threshold_percent,
                                  check=lambda running, w=w: check(running, w))
                        (base if name == "inline" else runs).append(r)
            tables[f"{wait * 1e3:g}"] = runs
    out = {}
    for wait_ms, runs in tables.items():
        text = table(runs, base, concurrencies)
        out[wait_ms] = text
        print(f"\nbatch wait {wait_ms} ms, max batch {MAX_BATCH_SIZE} (median (min-max) of {common.repeats}; ratios paired by repeat):")
        print(text)
        print("settings as started: " + settings_line(runs + base))
    paths = writer.write({
        "tables": out, "contract_checks": [asdict(c) for c in checks],
        "inline_runs": [asdict(r) for r in base],
        "runs": {k: [asdict(r) for r in v] for k, v in tables.items()},
    }, publish=common.publish)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 1 if any(r.error for v in tables.values() for r in v) else 0
