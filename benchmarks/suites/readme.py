"""``python -m benchmarks readme``: the README's performance tables, rebuilt from ``published/``.

Prints, for each committed result file (or those named), a Markdown block: the command that
produced it, its date, the machine (CPU model and count), how busy other processes kept the
machine before its points, the file's name, and its table(s) as the suite printed them. The
README's "Benchmarks" section is this output, pasted; nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from benchmarks.harness import PUBLISHED_DIR, REPO_ROOT
from benchmarks.harness.machine import DEFAULT_THRESHOLD_PERCENT

_COSTS = (  # the serving suite's Schooner cost tables, in print order, with their captions
    ("cpu", "Schooner CPU per query, µs, by process (user + system of each process around each wrk run, / requests):"),
    ("cpu_goal", ""),
    ("added_p50", "Added p50 at c = 1 (Schooner − inline, paired over repeats):"),
    ("stages", "Time per stage at c = 1, mean µs (`schooner_stage_seconds`: Δ sum / Δ count over the run):"),
)


def _points(doc: dict) -> list[dict]:
    """Every point record of a document that has them (closed-loop points, open-loop probes)."""
    runs = doc.get("runs") or []
    if isinstance(runs, dict):
        runs = [r for v in runs.values() for r in v]
    runs = list(runs) + list(doc.get("inline_runs") or [])
    return [p for r in runs for p in (r.get("points") or r.get("probes") or [])]


def block(path: Path) -> str:
    doc = orjson.loads(path.read_bytes())
    host, machine = doc.get("host", {}), doc.get("machine", {})
    busy = machine.get("busy_checks", 0)
    worst = machine.get("max_others_cpu_percent")
    waited = sum(c.get("waited_s", 0) for c in machine.get("per_point", []))
    during = [p.get("others_cpu_percent") for p in _points(doc) if p.get("others_cpu_percent") is not None]
    if not machine.get("checks"):
        quiet = "no busy check (nothing timed against a server)"
    else:
        quiet = (f"the harness waited {waited:.0f} s in all for other processes to go idle; at start "
                 + (f"all {machine.get('checks')} checks found them under the threshold (at most {worst:.0f}% of a CPU)" if busy == 0
                    else f"{busy} of {machine.get('checks')} checks still found them busy (up to {worst:.0f}% of a CPU)"))
    if during:
        hit = sum(1 for d in during if d >= DEFAULT_THRESHOLD_PERCENT)
        quiet += (f"; during the points other processes used ≥ {DEFAULT_THRESHOLD_PERCENT:g}% of a CPU in {hit} of "
                  f"{len(during)} points (at most {max(during):.0f}%)")
    head = (f"`{doc.get('command')}` — {doc.get('started_utc', '?')[:16].replace('T', ' ')} UTC, "
            f"{host.get('cpu_count')} × {host.get('cpu_model')}, {quiet}; "
            f"git {str(doc.get('git', {}).get('sha'))[:10]}; [`{path.relative_to(REPO_ROOT)}`]({path.relative_to(REPO_ROOT)})")
    tables = doc.get("tables") or ({"": doc["table"]} if "table" in doc else {})
    parts = [head]
    for name, table in tables.items():
        if name:
            parts.append(f"batch wait {name} ms, max batch 64:")
        parts.append(table)
    costs = (doc.get("schooner_costs") or {}).get("tables") or {}
    for key, caption in _COSTS:
        if costs.get(key):
            parts.append(f"{caption}\n\n{costs[key]}" if caption else costs[key])
    if "report" in doc and not tables:
        parts.append("```\n" + doc["report"] + "\n```")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks readme", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="published JSON files (default: all)")
    args = parser.parse_args(argv)
    files = [f.resolve() for f in args.files] or sorted(PUBLISHED_DIR.glob("*.json"))
    for f in files:
        print(block(f) + "\n")
    return 0
