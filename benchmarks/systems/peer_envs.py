"""Virtual environments of the peer systems: one per peer, created and installed on first use.

Owns ``benchmarks/.venv-peers/<name>`` (not in git). Each peer (LitServe, Ray Serve) runs from a
virtualenv of its own, so its dependency tree (FastAPI, pydantic, Ray's grpc and protobuf, ...)
never touches Schooner's ``.venv``, and the peers cannot break each other. The packages that the
served models share with Schooner's venv (torch, numpy, orjson) are pinned to the versions
Schooner's venv has, so that W2's model runs the same torch build everywhere; the peer itself is
pinned to one release. Transitive dependencies are resolved by pip; the full ``pip freeze`` of
each environment is stored beside it and in every result JSON.

An environment is up to date when its marker file holds exactly the requirement list below; any
change to the list reinstalls it (into the same venv). Every step is printed before it runs, and
the install time is printed after it.

Run ``python -m benchmarks.systems.peer_envs [litserve rayserve]`` to install ahead of a benchmark.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS_VENV_ROOT = REPO_ROOT / "benchmarks" / ".venv-peers"
MARKER_NAME = "schooner-peer-requirements.txt"
FREEZE_NAME = "schooner-peer-freeze.txt"
INSTALL_RECORD_NAME = "schooner-peer-install.json"  # when and how long the last install took
GITIGNORE_TEXT = "# Written by benchmarks/peers/envs.py: peer virtualenvs are never committed.\n*\n"

# Shared with Schooner's .venv (pyproject / what `make bench` measured with).
TORCH = "torch==2.13.0"
NUMPY = "numpy==2.4.6"
ORJSON = "orjson==3.13.0"
PSUTIL = "psutil==7.2.2"  # the servers' leak checks; not on the hot path


class PeerEnvError(RuntimeError):
    """A peer's virtualenv could not be created or installed."""


@dataclass(frozen=True, slots=True)
class PeerEnvSpec:
    """One peer's environment: its directory name, pinned requirements, and the module proving it."""

    name: str
    requirements: tuple[str, ...]
    probe_module: str  # imported after installing: the install is good only if this imports

    @property
    def path(self) -> Path:
        return PEERS_VENV_ROOT / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


PEER_ENVS: Mapping[str, PeerEnvSpec] = MappingProxyType(
    {
        "litserve": PeerEnvSpec(
            "litserve", ("litserve==0.2.19", TORCH, NUMPY, ORJSON, PSUTIL), "litserve"
        ),
        "rayserve": PeerEnvSpec(
            "rayserve", ("ray[serve]==2.60.0", TORCH, NUMPY, ORJSON, PSUTIL), "ray.serve"
        ),
    }
)


@dataclass(frozen=True, slots=True)
class PeerEnv:
    """An installed peer environment."""

    spec: PeerEnvSpec
    python: Path
    freeze: tuple[str, ...]  # `pip freeze` lines
    installed_now: bool
    install_s: float | None  # this call's install; None when it was already installed
    last_install: dict[str, object]  # the record of the install that made this venv (may be {})

    def version_of(self, package: str) -> str | None:
        prefix = package.lower().replace("_", "-") + "=="
        for line in self.freeze:
            if line.lower().replace("_", "-").startswith(prefix):
                return line.split("==", 1)[1]
        return None


# pip's note for each configured local index directory that does not exist on this machine.
PIP_NOISE = re.compile(
    r"^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$"
)


def run_printed(command: list[str]) -> int:
    """Runs ``command``, echoing it and its output (less pip's missing-local-index notes)."""
    print(f"  $ {' '.join(command)}", flush=True)
    proc = subprocess.run(command, check=False, capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        if not PIP_NOISE.match(line):
            print(f"    {line}", flush=True)
    return proc.returncode


def is_current(spec: PeerEnvSpec) -> bool:
    marker = spec.path / MARKER_NAME
    try:
        return spec.python.exists() and marker.read_text().splitlines() == list(spec.requirements)
    except OSError:
        return False


def pip_freeze(python: Path) -> tuple[str, ...]:
    # Without PYTHONPATH: a harness started from the repository root would list schooner too.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    return tuple(line for line in proc.stdout.splitlines() if line.strip())


def install(spec: PeerEnvSpec) -> float:
    """Creates (if needed) and installs ``spec``'s venv; returns the seconds it took."""
    started = time.monotonic()
    print(
        f"peer env {spec.name}: installing {' '.join(spec.requirements)} into {spec.path}",
        flush=True,
    )
    if not spec.python.exists():
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        if run_printed([sys.executable, "-m", "venv", str(spec.path)]) != 0:
            raise PeerEnvError(f"could not create the virtualenv {spec.path}")
    (spec.path / MARKER_NAME).unlink(missing_ok=True)
    pip = [str(spec.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if run_printed([*pip, *spec.requirements]) != 0:
        raise PeerEnvError(f"pip could not install {' '.join(spec.requirements)} into {spec.path}")
    probe = [str(spec.python), "-c", f"import {spec.probe_module}"]
    if run_printed(probe) != 0:
        raise PeerEnvError(f"{spec.probe_module} does not import in {spec.path} after installing")
    elapsed_s = time.monotonic() - started
    (spec.path / MARKER_NAME).write_text("\n".join(spec.requirements) + "\n")
    record = {
        "installed_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "install_s": round(elapsed_s, 1),
        "requirements": list(spec.requirements),
    }
    (spec.path / INSTALL_RECORD_NAME).write_bytes(json.dumps(record).encode())
    return elapsed_s


def last_install(spec: PeerEnvSpec) -> dict[str, object]:
    try:
        return json.loads((spec.path / INSTALL_RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}


def ensure_env(name: str, announce: bool = True) -> PeerEnv:
    """The installed environment of peer ``name``, installing it first when missing or stale.

    An install is always printed; ``announce`` also prints an environment that was up to date.
    """
    spec = PEER_ENVS[name]
    install_s = None
    PEERS_VENV_ROOT.mkdir(parents=True, exist_ok=True)
    # Also listed in the repository's .gitignore; this keeps `git add -A` away from 2.4 GB
    # of wheels in any checkout whose .gitignore lacks the line.
    (PEERS_VENV_ROOT / ".gitignore").write_text(GITIGNORE_TEXT)
    # Two harnesses (run_peers, an open-loop study) may start at once: one installs, one waits.
    with (PEERS_VENV_ROOT / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(spec):
            install_s = install(spec)
    freeze = pip_freeze(spec.python)
    (spec.path / FREEZE_NAME).write_text("\n".join(freeze) + "\n")
    record = last_install(spec)
    env = PeerEnv(spec, spec.python, freeze, install_s is not None, install_s, record)
    if install_s is not None:
        print(f"peer env {name}: installed in {install_s:.0f} s", flush=True)
    elif record and announce:
        print(
            f"peer env {name}: up to date (installed {record.get('installed_utc')} "
            f"in {record.get('install_s')} s)",
            flush=True,
        )
    if not (announce or env.installed_now):
        return env
    main_package = spec.requirements[0].split("[")[0].split("==")[0]
    print(
        f"peer env {name}: {spec.path} — {main_package} {env.version_of(main_package)}, "
        f"torch {env.version_of('torch')}, numpy {env.version_of('numpy')}, "
        f"{len(freeze)} packages",
        flush=True,
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.peer_envs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: {' '.join(PEER_ENVS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(PEER_ENVS))
    if unknown:
        parser.error(f"unknown peer {unknown}: choose from {', '.join(PEER_ENVS)}")
    for name in args.names or PEER_ENVS:
        ensure_env(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
