"""``python -m benchmarks <suite> [options]``: run one benchmark suite (``--help`` lists them)."""

from __future__ import annotations

import importlib
import sys

from benchmarks.suites import SUITES


def usage() -> str:
    width = max(map(len, SUITES))
    lines = ["usage: python -m benchmarks <suite> [--help | options]", "", "suites:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in SUITES.items()]
    lines += ["", "Every suite writes benchmarks/results/<suite>-<UTC>.json; --publish also writes benchmarks/published/<suite>.json."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUITES:
        print(f"unknown suite {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(SUITES[name][0]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
