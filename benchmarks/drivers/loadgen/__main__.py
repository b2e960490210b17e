"""``python -m benchmarks.drivers.loadgen``: one open-loop run against a running server, printed and as JSON.

    python -m benchmarks.drivers.loadgen --url http://127.0.0.1:8000/w1/predict --rate 5000 --duration 5
    python -m benchmarks.drivers.loadgen --url ... --arrivals onoff --rate 2000 --burst-factor 4
    python -m benchmarks.drivers.loadgen --url ... --arrivals trace --trace arrivals.txt
    python -m benchmarks.drivers.loadgen --url ... --workers 2 --cpus 0,1 --bodies bodies.jsonl

Bodies: ``--bodies`` names a file of request bodies, one per line (as ``benchmarks.drivers.wrk``
writes them), sent in file order and cycled; without it, 4,096 rows of
``benchmarks.workloads.make_inputs`` (``{"input": [16 floats]}``, the W1/W2 contract).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson

from benchmarks.drivers.loadgen.driver import (
    LoadGenConfig,
    OpenLoopPlan,
    run_open_loop,
    summary_json,
)
from benchmarks.drivers.loadgen.schedule import ArrivalSpec, arrivals
from benchmarks.harness.machine import cpu_list
from benchmarks.workloads import make_inputs, request_body

DEFAULT_BODIES = 4096
SEED = 12345


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.drivers.loadgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="http://HOST:PORT/PATH of the POST endpoint")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="arrivals per second (onoff: the mean)"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="measured seconds (after --warmup)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not counted")
    parser.add_argument("--arrivals", choices=("poisson", "onoff", "trace"), default="poisson")
    parser.add_argument(
        "--burst-factor", type=float, default=4.0, help="onoff: on rate / mean rate"
    )
    parser.add_argument("--on-s", type=float, default=0.25)
    parser.add_argument("--off-s", type=float, default=0.75)
    parser.add_argument("--trace", help="trace: file of arrival times in seconds, one per line")
    parser.add_argument(
        "--trace-scale", type=float, default=1.0, help="trace: multiply times by this"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus", help="CPU list for the workers, e.g. 0 or 0,1 (default unpinned)")
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--slo-ms", type=float, default=20.0)
    parser.add_argument(
        "--drain",
        type=float,
        default=2.0,
        help="seconds to wait for answers after the last arrival",
    )
    parser.add_argument("--lag-limit-ms", type=float, default=1.0)
    parser.add_argument("--bodies", help="file of request bodies, one per line")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname or not url.port:
        parser.error("--url must be http://HOST:PORT/PATH")
    if args.arrivals == "trace" and not args.trace:
        parser.error("--arrivals trace needs --trace FILE")
    spec = ArrivalSpec(
        kind=args.arrivals,
        rate_per_s=args.rate,
        burst_factor=args.burst_factor,
        on_s=args.on_s,
        off_s=args.off_s,
        trace_path=args.trace,
        trace_time_scale=args.trace_scale,
    )
    end_s = args.warmup + args.duration
    offsets = arrivals(spec, end_s, np.random.default_rng(args.seed))
    if args.bodies:
        bodies = [line for line in Path(args.bodies).read_bytes().splitlines() if line]
    else:
        bodies = [request_body(row) for row in make_inputs(DEFAULT_BODIES, args.seed)]
    plan = OpenLoopPlan(
        host=url.hostname,
        port=url.port,
        path=url.path or "/",
        offsets_s=offsets,
        body_index=np.arange(len(offsets)) % len(bodies),
        bodies=bodies,
        warmup_s=args.warmup,
        end_s=end_s,
        slo_s=args.slo_ms / 1e3,
        description=spec.describe(),
    )
    config = LoadGenConfig(
        workers=args.workers,
        cpus=cpu_list(args.cpus),
        max_connections=args.max_connections,
        drain_s=args.drain,
        lag_limit_ms=args.lag_limit_ms,
    )
    result = run_open_loop(plan, config)
    s = result.summary
    print(f"{spec.describe()}, {args.workers} worker(s) on CPU {args.cpus or 'any'}: {s.line()}")
    for flag in s.generator_flags:
        print(f"  generator: {flag}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary_json(s), option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
