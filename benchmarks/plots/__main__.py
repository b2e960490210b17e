"""``python -m benchmarks.plots RESULT.json``: redraw the PNGs of a result file from its JSON alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from benchmarks.plots.capacity import plot_capacity
from benchmarks.plots.scheduler import plot_results
from benchmarks.plots.selection import plot_selection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__.split("\n")[0])
    parser.add_argument("result", type=Path, help="a benchmarks/results/<suite>-<UTC>.json")
    args = parser.parse_args(argv)
    doc = orjson.loads(args.result.read_bytes())
    suite, stem = doc.get("suite"), args.result.with_suffix("")
    if suite == "capacity":
        lines = plot_capacity(doc, stem)
    elif suite == "scheduler":
        lines = plot_results(doc, stem)
    elif suite == "selection":
        lines = [plot_selection(args.result)]
    else:
        lines = [f"no plots for suite {suite!r}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
