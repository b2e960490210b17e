"""The result document every suite writes: what ran, where, with what, and what it measured.

Owns the JSON envelope (suite, command, UTC start and end, git sha and dirty flag, host, package
versions, every busy-machine check) and where it goes: ``benchmarks/results/<suite>-<UTC>.json``
for scratch runs (git-ignored), and with ``--publish`` also ``benchmarks/published/<suite>.json``,
the small committed file the README's table names. A published file holds no absolute path of
this machine (paths are made relative to the repository) and no bulky raw output.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil

from benchmarks.harness import PUBLISHED_DIR, REPO_ROOT, RESULTS_DIR

BASE_PACKAGES = ("numpy", "torch", "pyarrow", "uvloop", "httptools", "orjson", "schooner")
BULKY_KEYS = frozenset({"output", "cdf_ms", "samples", "timeline", "limit_samples", "command_output"})


def git_info() -> dict[str, object]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return proc.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def host_info() -> dict[str, object]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(extra: dict[str, str | None] | None = None) -> dict[str, str | None]:
    found = {name: package_version(name) for name in BASE_PACKAGES}
    return {"python": platform.python_version(), **found, **(extra or {})}


def command_line() -> str:
    """How this run was started, as a reader would type it."""
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("__main__.py") else sys.argv[1:]
    return "python -m benchmarks " + shlex.join(argv) if argv else "python -m benchmarks"


def relative_paths(value: object) -> object:
    """Strings holding the repository's absolute path, made relative (published files)."""
    root = str(REPO_ROOT) + "/"
    if isinstance(value, str):
        return value.replace(root, "").replace(str(REPO_ROOT), ".")
    if isinstance(value, dict):
        return {k: relative_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [relative_paths(v) for v in value]
    return value


def without_bulk(value: object) -> object:
    """Raw outputs, per-point command lines and long responses dropped; floats to 5 digits."""
    if isinstance(value, dict):
        return {
            k: without_bulk(v) for k, v in value.items()
            if k not in BULKY_KEYS and not (k == "command" and isinstance(v, list))
        }
    if isinstance(value, list | tuple):
        return [without_bulk(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, str) and len(value) > 2000:
        return value[:2000] + " ..."
    return value


def published_copy(document: dict[str, object]) -> bytes:
    """The committed form of a result document: small, and without this machine's paths."""
    small = relative_paths(without_bulk(document))
    return orjson.dumps(small, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS) + b"\n"


class ResultWriter:
    """Collects a suite's busy checks beside its figures and writes the document once."""

    def __init__(self, suite: str, config: object, version_extra: dict[str, str | None] | None = None) -> None:
        self.suite = suite
        self.started = datetime.now(UTC)
        self.config = config
        self.version_extra = version_extra or {}
        self.machine_checks: list[dict[str, object]] = []

    def check(self, what: str, check) -> None:
        self.machine_checks.append({"what": what, **check.as_dict()})

    def document(self, body: dict[str, object]) -> dict[str, object]:
        busy = [c for c in self.machine_checks if c.get("busy")]
        return {
            "suite": self.suite,
            "command": command_line(),
            "started_utc": self.started.isoformat(timespec="seconds"),
            "ended_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": git_info(),
            "host": host_info(),
            "versions": versions(self.version_extra),
            "config": self.config,
            "machine": {
                "checks": len(self.machine_checks),
                "busy_checks": len(busy),
                "max_others_cpu_percent": max(
                    (c["others_cpu_percent"] for c in self.machine_checks), default=None
                ),
                "per_point": self.machine_checks,
            },
            **body,
        }

    def write(self, body: dict[str, object], publish: bool = False) -> list[Path]:
        doc = self.document(body)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        paths = [RESULTS_DIR / f"{self.suite}-{stamp}.json"]
        paths[0].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
        if publish:
            PUBLISHED_DIR.mkdir(parents=True, exist_ok=True)
            path = PUBLISHED_DIR / f"{self.suite}.json"
            path.write_bytes(published_copy(doc))
            paths.append(path)
        return paths


def markdown_table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table (what the README quotes is printed exactly so)."""
    head = list(headers)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
