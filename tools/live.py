"""``python -m tools.live``: a live view of a running Schooner server, from its shared memory only.

Every interval it maps the server's segments read-only (``tools.shm_view``) and prints: each
ring's slots in use and messages per second (submit, input, output and response rings: where
queries wait), and from the scheduler's metrics board each model's AIMD batch limit, its queue
delay and batch size since the last refresh, and each app's queries, defaults and errors per
second. Nothing is sent to the server and nothing is written: it cannot disturb what it watches.

    python -m tools.live                  # the only running instance (or --instance ID)
    python -m tools.live --once --json    # one snapshot as JSON
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from benchmarks.harness.metrics import parse_metrics, total
from tools.shm_view import SegmentName, board_text, instances, mapped, ring_state


def snapshot(segments: list[SegmentName]) -> dict[str, object]:
    rings, metrics = {}, {}
    for seg in segments:
        try:
            with mapped(seg.name) as buf:
                if seg.purpose == "metrics-scheduler":
                    metrics = parse_metrics(board_text(buf))
                elif not seg.is_board and (state := ring_state(buf)) is not None:
                    rings[seg.purpose] = state
        except (OSError, ValueError):  # the server unlinked it meanwhile
            continue
    models: dict[str, dict[str, float]] = {}
    for (name, labels), value in metrics.items():
        lab = dict(labels)
        if name == "schooner_batch_limit":
            models.setdefault(f"{lab.get('model')}:{lab.get('version')}", {})[f"limit r{lab.get('replica')}"] = value
    apps = sorted({dict(lab).get("app") for (n, lab) in metrics if n == "schooner_app_queries_total"} - {None})
    counters = {
        "apps": {a: {k: total(metrics, f"schooner_app_{k}_total", app=a) for k in ("queries", "defaults", "errors")} for a in apps},
        "queue_delay": {m: (total(metrics, "schooner_queue_delay_seconds_sum", model=m.split(":")[0]),
                            total(metrics, "schooner_queue_delay_seconds_count", model=m.split(":")[0])) for m in models},
        "batches": {m: (total(metrics, "schooner_model_batch_size_sum", model=m.split(":")[0]),
                        total(metrics, "schooner_model_batches_total", model=m.split(":")[0])) for m in models},
    }
    return {"t": time.monotonic(), "rings": rings, "models": models, "counters": counters}


def render(now: dict, before: dict | None) -> str:
    dt = (now["t"] - before["t"]) if before else None
    lines = [f"{'ring':<24}{'slots':>7}{'in use':>8}{'msgs/s':>10}"]
    for name, r in sorted(now["rings"].items()):
        prev = before["rings"].get(name) if before else None
        rate = f"{(r.head - prev.head) / dt:,.0f}" if prev and dt else "-"
        lines.append(f"{name:<24}{r.nslots:>7}{r.in_use:>8}{rate:>10}")
    lines.append("")
    lines.append(f"{'model':<20}{'AIMD limit':>22}{'queue ms':>10}{'batch':>8}")
    for m, limits in sorted(now["models"].items()):
        qs, qn = now["counters"]["queue_delay"][m]
        bs, bn = now["counters"]["batches"][m]
        if before and m in before["counters"]["queue_delay"]:
            pqs, pqn = before["counters"]["queue_delay"][m]
            pbs, pbn = before["counters"]["batches"][m]
            qs, qn, bs, bn = qs - pqs, qn - pqn, bs - pbs, bn - pbn
        queue = f"{1e3 * qs / qn:.2f}" if qn else "-"
        batch = f"{bs / bn:.1f}" if bn else "-"
        lim = ", ".join(f"{k} {v:.0f}" for k, v in sorted(limits.items()))
        lines.append(f"{m:<20}{lim:>22}{queue:>10}{batch:>8}")
    lines.append("")
    lines.append(f"{'app':<20}{'queries/s':>11}{'defaults/s':>12}{'errors/s':>10}")
    for a, c in sorted(now["counters"]["apps"].items()):
        prev = before["counters"]["apps"].get(a) if before else None
        cells = [f"{(c[k] - prev[k]) / dt:,.0f}" if prev and dt else f"{c[k]:,.0f} total" for k in ("queries", "defaults", "errors")]
        lines.append(f"{a:<20}{cells[0]:>11}{cells[1]:>12}{cells[2]:>10}")
    return "\n".join(lines)


def as_json(snap: dict) -> bytes:
    rings = {k: {"nslots": r.nslots, "in_use": r.in_use, "head": r.head, "tail": r.tail} for k, r in snap["rings"].items()}
    return orjson.dumps({**snap, "rings": rings}, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.live", description=__doc__.split("\n")[0])
    parser.add_argument("--instance", help="instance id <pid>x<tag>, or the supervisor's pid (default: the only one running)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("--once", action="store_true", help="one snapshot, then exit")
    parser.add_argument("--json", action="store_true", help="print snapshots as JSON")
    args = parser.parse_args(argv)
    found = instances()
    if args.instance:
        match = [i for i in found if i == args.instance or i.startswith(f"{args.instance}x")]
        args.instance = match[0] if len(match) == 1 else args.instance
        if args.instance not in found:
            parser.error(f"no segments of instance {args.instance} (running: {', '.join(found) or 'none'})")
        segments = found[args.instance]
    elif len(found) == 1:
        segments = next(iter(found.values()))
    else:
        parser.error(f"{len(found)} instances have segments ({', '.join(found) or 'none'}): pick one with --instance")
    before = None
    try:
        while True:
            now = snapshot(segments)
            if args.json:
                sys.stdout.buffer.write(as_json(now) + b"\n")
            else:
                if sys.stdout.isatty() and not args.once:
                    sys.stdout.write("\033[H\033[J")
                print(f"schooner instance {segments[0].instance} ({len(segments)} segments)\n" + render(now, before), flush=True)
            if args.once:
                return 0
            before = now
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
