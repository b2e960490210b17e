"""The benchmark harness: what every suite shares, and nothing any one suite decides.

Owns the repository paths every suite writes to (``results/`` for scratch runs, git-ignored;
``published/`` for the small JSON files behind the README's figures, committed) and, in its
modules: ``results`` (the result document: git sha, host, versions, machine checks),
``machine`` (CPU pinning and the busy-machine check), ``progress`` (what point, how many left,
time left), ``stats`` (pure: capacity bisection, median with min-max, ratio spread), ``servers``
(a server process: start, readiness, stop, leak check), ``metrics`` (Schooner's ``/metrics``),
``cli`` (the flags every suite takes) and ``report`` (plain-text tables).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
PUBLISHED_DIR = REPO_ROOT / "benchmarks" / "published"
