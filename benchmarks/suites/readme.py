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


def block(path: Path) -> str:
    doc = orjson.loads(path.read_bytes())
    host, machine = doc.get("host", {}), doc.get("machine", {})
    busy = machine.get("busy_checks", 0)
    worst = machine.get("max_others_cpu_percent")
    quiet = (f"other processes at most {worst:.0f}% of a CPU before any point" if busy == 0 and worst is not None
             else f"{busy} of {machine.get('checks')} points started on a busy machine (others up to {worst:.0f}% of a CPU)")
    head = (f"`{doc.get('command')}` — {doc.get('started_utc', '?')[:16].replace('T', ' ')} UTC, "
            f"{host.get('cpu_count')} × {host.get('cpu_model')}, {quiet}; "
            f"git {str(doc.get('git', {}).get('sha'))[:10]}; [`{path.relative_to(REPO_ROOT)}`]({path.relative_to(REPO_ROOT)})")
    tables = doc.get("tables") or ({"": doc["table"]} if "table" in doc else {})
    parts = [head]
    for name, table in tables.items():
        if name:
            parts.append(f"\nbatch wait {name} ms:\n")
        parts.append(table)
    if "report" in doc and not tables:
        parts.append("```\n" + doc["report"] + "\n```")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks readme", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="published JSON files (default: all)")
    args = parser.parse_args(argv)
    files = [f.resolve() for f in args.files] or sorted(PUBLISHED_DIR.glob("*.json"))
    for f in files:
        print(block(f) + "\n")
    return 0
