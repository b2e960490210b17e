"""Load generation with Triton's perf_analyzer: install it, build one point's command, parse it.

Owns every contact with perf_analyzer. The binary that runs on this machine (glibc 2.36) is the
one shipped inside the ``tritonclient==2.51.0`` wheel. That wheel pins numpy<2 and Schooner's
venv has numpy 2, so it lives in a virtualenv of its own, ``benchmarks/.venv-perf`` (not in git),
created on first use with ``tritonclient[http]==2.51.0`` and ``nvidia-cuda-runtime-cu12`` (the
binary links libcudart.so.12 even when no GPU is used; its lib directory goes on
LD_LIBRARY_PATH). libb64.so.0d comes from the Debian package ``libb64-0d``, installed with
apt-get when the dynamic loader cannot find it. Each step is printed before it runs.

A point is one perf_analyzer run at one concurrency:
``perf_analyzer -m M -u 127.0.0.1:P -i http --concurrency-range C:C --measurement-interval MS
--max-trials T --stability-percentage S -a --input-data FILE --input-tensor-format F
--output-tensor-format F -f CSV``: closed loop, C requests outstanding at all times, issued
asynchronously from perf_analyzer's thread pool (``-a``; without it, it starts C threads).
perf_analyzer repeats MS-long windows until the last three agree within S% (throughput, and
latency when the server reports statistics) and reports those three; after T windows it gives
up with "Failed to obtain stable measurement" (``PaUnstableError``). Figures come from its CSV
report (``-f``): inferences per second and client-side latency percentiles in µs.

Inputs come from a JSON ``--input-data`` file, not ``--input-data random``: perf_analyzer's random
FP32 data is random bytes, so it holds NaN and ±Inf, which its JSON tensor format writes as bare
``NaN``/``Infinity`` tokens that a standard JSON parser (Schooner's) refuses.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PERF_VENV = REPO_ROOT / "benchmarks" / ".venv-perf"
TRITONCLIENT_REQUIREMENT = "tritonclient[http]==2.51.0"
CUDART_REQUIREMENT = "nvidia-cuda-runtime-cu12"
LIBB64_PACKAGE = "libb64-0d"
PA_EXTRA_WAIT_S = 60  # on top of the worst-case measurement time: connecting, loading data
LOG_TAIL_CHARS = 4000


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer could not be installed, failed, or wrote no report."""


class PaUnstableError(PerfAnalyzerError):
    """perf_analyzer found no three consecutive windows within the stability percentage."""


UNSTABLE_MARKER = "Failed to obtain stable measurement"


@dataclass(frozen=True, slots=True)
class PerfAnalyzer:
    """An installed perf_analyzer and the environment it needs to start."""

    binary: Path
    env: dict[str, str]
    version: str


@dataclass(frozen=True, slots=True)
class PaPointConfig:
    """How one point is measured; every field goes onto the command line."""

    model: str
    concurrency: int
    tensor_format: str  # "binary" or "json", for both inputs and outputs
    input_data: Path  # perf_analyzer's JSON input-data file
    measurement_interval_ms: int
    max_trials: int
    stability_percent: int
    shared_memory: str = "none"  # "none" or "system"
    output_shm_nbytes: int = 1024  # --output-shared-memory-size, with system shared memory only


@dataclass(frozen=True, slots=True)
class PaResult:
    concurrency: int
    infer_per_s: float
    p50_us: int
    p90_us: int
    p95_us: int
    p99_us: int
    avg_us: int
    client_send_us: int
    client_recv_us: int
    csv_row: dict[str, str]
    command: list[str]
    output: str
    client_cpu_s: float = 0.0  # perf_analyzer's user+system CPU time for the whole run


def run_printed(
    command: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    print(f"perf_analyzer setup: running {' '.join(command)}", flush=True)
    return subprocess.run(command, env=env, check=False)


def venv_python() -> Path:
    return PERF_VENV / "bin" / "python"


def site_packages() -> Path:
    proc = subprocess.run(
        [str(venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(proc.stdout.strip())


def find_binary() -> Path | None:
    for candidate in (
        PERF_VENV / "bin" / "perf_analyzer",
        site_packages() / "tritonclient" / "bin" / "perf_analyzer",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def cudart_lib_dir() -> Path | None:
    lib = site_packages() / "nvidia" / "cuda_runtime" / "lib"
    return lib if any(lib.glob("libcudart.so.12*")) else None


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries the dynamic loader cannot find for ``binary`` (from ldd)."""
    proc = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, env=env, check=False
    )
    return [line.split("=>")[0].strip() for line in proc.stdout.splitlines() if "not found" in line]


def install_libb64() -> None:
    install = ["apt-get", "install", "-y", LIBB64_PACKAGE]
    if run_printed(install).returncode != 0:  # a fresh image may have no package lists yet
        run_printed(["apt-get", "update"])
        run_printed(install)


def pip_install() -> None:
    if not venv_python().exists():
        if run_printed([sys.executable, "-m", "venv", str(PERF_VENV)]).returncode != 0:
            raise PerfAnalyzerError(f"could not create the virtualenv {PERF_VENV}")
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet"]
    if run_printed([*pip, TRITONCLIENT_REQUIREMENT, CUDART_REQUIREMENT]).returncode != 0:
        raise PerfAnalyzerError(
            f"pip could not install {TRITONCLIENT_REQUIREMENT} {CUDART_REQUIREMENT} into {PERF_VENV}"
        )


def perf_analyzer_version(binary: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, env=env, check=False
    )
    return (proc.stdout + proc.stderr).strip() or "unknown"


def ensure_perf_analyzer() -> PerfAnalyzer:
    """perf_analyzer from its own virtualenv, installing what is missing first (and saying so)."""
    if not venv_python().exists() or find_binary() is None or cudart_lib_dir() is None:
        print(
            f"perf_analyzer not set up: installing {TRITONCLIENT_REQUIREMENT} and "
            f"{CUDART_REQUIREMENT} into {PERF_VENV.relative_to(REPO_ROOT)} "
            "(its own virtualenv: the wheel pins numpy<2)",
            flush=True,
        )
        pip_install()
    binary = find_binary()
    if binary is None:
        raise PerfAnalyzerError(f"no perf_analyzer binary in {PERF_VENV} after installing")
    lib_dir = cudart_lib_dir()
    if lib_dir is None:
        raise PerfAnalyzerError(
            f"no libcudart.so.12 under {site_packages()}/nvidia/cuda_runtime/lib"
        )
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(lib_dir), env.get("LD_LIBRARY_PATH", "")) if p
    )
    missing = missing_libraries(binary, env)
    if any(name.startswith("libb64") for name in missing):
        print(f"perf_analyzer needs libb64.so.0d: installing {LIBB64_PACKAGE}", flush=True)
        if shutil.which("apt-get") is None:
            raise PerfAnalyzerError("libb64.so.0d is missing and there is no apt-get to install it")
        install_libb64()
        missing = missing_libraries(binary, env)
    if missing:
        raise PerfAnalyzerError(f"{binary} cannot load: {', '.join(missing)} not found (ldd)")
    return PerfAnalyzer(binary, env, perf_analyzer_version(binary, env))


def pa_command(
    pa: PerfAnalyzer, url: str, point: PaPointConfig, csv_path: Path, cpus: str | None
) -> list[str]:
    """The perf_analyzer command line; ``cpus`` (a taskset list such as "0") pins it when given."""
    pin = ["taskset", "-c", cpus] if cpus else []
    command = pin + [
        str(pa.binary),
        "-m",
        point.model,
        "-u",
        url,
        "-i",
        "http",
        "--concurrency-range",
        f"{point.concurrency}:{point.concurrency}",
        "--measurement-interval",
        str(point.measurement_interval_ms),
        "--max-trials",
        str(point.max_trials),
        "--stability-percentage",
        str(point.stability_percent),
        "-a",  # asynchronous: C requests outstanding from a few threads, not C threads
        "--input-data",
        str(point.input_data),
        "--input-tensor-format",
        point.tensor_format,
        "--output-tensor-format",
        point.tensor_format,
        "-f",
        str(csv_path),
    ]
    if point.shared_memory != "none":
        command += [
            "--shared-memory",
            point.shared_memory,
            "--output-shared-memory-size",
            str(point.output_shm_nbytes),
        ]
    return command


def parse_csv_report(text: str, concurrency: int, command: list[str], output: str) -> PaResult:
    """Builds a PaResult from perf_analyzer's ``-f`` CSV (one header line, one row per point)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise PerfAnalyzerError(
            f"empty CSV report from {' '.join(command)}:\n{output[-LOG_TAIL_CHARS:]}"
        )
    row = rows[-1]

    def us(column: str) -> int:
        return int(float(row.get(column) or 0))

    return PaResult(
        concurrency=concurrency,
        infer_per_s=float(row["Inferences/Second"]),
        p50_us=us("p50 latency"),
        p90_us=us("p90 latency"),
        p95_us=us("p95 latency"),
        p99_us=us("p99 latency"),
        avg_us=us("Avg latency"),
        client_send_us=us("Client Send"),
        client_recv_us=us("Client Recv"),
        csv_row=dict(row),
        command=command,
        output=output,
    )


SHM_DIR = Path("/dev/shm")
PA_REGION = re.compile(r"^(input|output)_\d+_\d+$")  # perf_analyzer's --shared-memory system regions


def shm_names() -> set[str]:
    return set(os.listdir(SHM_DIR)) if SHM_DIR.is_dir() else set()


def remove_left_regions(before: set[str]) -> list[str]:
    """Unlink the perf_analyzer regions that appeared since `before` (it unlinks its own when
    it exits; not when it is killed). Returns the names removed."""
    removed = []
    for name in sorted(shm_names() - before):
        if PA_REGION.match(name):
            (SHM_DIR / name).unlink(missing_ok=True)
            removed.append(name)
    return removed


def worst_case_s(point: PaPointConfig) -> float:
    return point.max_trials * point.measurement_interval_ms / 1e3 + PA_EXTRA_WAIT_S


def run_perf_analyzer(
    pa: PerfAnalyzer, url: str, point: PaPointConfig, csv_path: Path, cpus: str | None
) -> PaResult:
    command = pa_command(pa, url, point, csv_path, cpus)
    csv_path.unlink(missing_ok=True)
    shm_before = shm_names()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=pa.env,
            timeout=worst_case_s(point),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        remove_left_regions(shm_before)  # a killed perf_analyzer leaves its system shm regions
        partial = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (exc.stdout, exc.stderr)
            if part
        )
        raise PerfAnalyzerError(
            f"perf_analyzer did not finish within {worst_case_s(point):.0f} s (killed): "
            f"{' '.join(command)}\n{partial[-LOG_TAIL_CHARS:]}"
        ) from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = proc.stdout + proc.stderr
    if UNSTABLE_MARKER in output:
        raise PaUnstableError(
            f"perf_analyzer exited {proc.returncode}: {' '.join(command)}\n{output[-LOG_TAIL_CHARS:]}"
        )
    if proc.returncode != 0:
        raise PerfAnalyzerError(
            f"perf_analyzer exited {proc.returncode}: {' '.join(command)}\n{output[-LOG_TAIL_CHARS:]}"
        )
    if not csv_path.exists():
        raise PerfAnalyzerError(f"perf_analyzer wrote no {csv_path}:\n{output[-LOG_TAIL_CHARS:]}")
    result = parse_csv_report(csv_path.read_text(), point.concurrency, command, output)
    return dataclasses.replace(result, client_cpu_s=cpu_s)
