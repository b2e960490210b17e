"""GPU discovery without CUDA, and the placement of model replicas on GPUs.

Owns: what GPUs this machine has (read through NVML from ``nvidia-ml-py``, else from
``nvidia-smi`` output, else none) and the pure decision of which GPU each replica of a model
gets, with the environment and CPU set its process must be spawned with.

Invariants:

* Nothing here imports cupy, torch or any CUDA runtime, and nothing creates a CUDA context:
  the supervisor calls it before spawning children, and a process that touched CUDA must never
  fork (CUDA does not support fork). NVML is a management library; it creates no context.
* `GpuPlacement.place` is pure: the discovered GPUs, the supervisor's own
  ``CUDA_VISIBLE_DEVICES`` and the set of CPUs it may use are arguments, never read here.
* A model process on a GPU sees exactly that GPU: ``CUDA_VISIBLE_DEVICES`` holds its UUID
  (UUIDs cannot be confused by CUDA's FASTEST_FIRST ordering), so inside the child the GPU is
  always device 0 (``"cuda:0"``).
* ``"cuda:N"`` counts the GPUs visible to the supervisor in NVML's (PCI bus) order, after its
  own ``CUDA_VISIBLE_DEVICES`` filter, the same order ``nvidia-smi`` prints.

Callers: the supervisor (discover once at start-up, place each model, spawn each replica with
`Placement.env` and `Placement.cpus`), the V2 config route (`Placement.gpu.index` for
``KIND_GPU``'s ``gpus``) and the metrics route (`gpu_gauges`). The model process uses
`local_device` only.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

_CUDA = re.compile(r"^cuda(?::(\d+))?$")
SMI_QUERY = "index,uuid,name,memory.total,pci.bus_id"


class GpuConfigError(ValueError):
    """A model asks for a GPU this machine cannot give it; the message names the model.

    Not a subclass of `schooner.engine.config.ConfigError` so that this module imports without
    orjson (the GPU machine's image lacks it); the supervisor refuses to start on either."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as NVML reports it. Plain data: safe to log, send and compare."""

    index: int  # NVML / nvidia-smi index (PCI bus order)
    uuid: str  # "GPU-xxxxxxxx-...": what CUDA_VISIBLE_DEVICES is set to
    name: str
    memory_total_nbytes: int
    pci_bus_id: str = ""  # "00000000:17:00.0"
    cpus: tuple[int, ...] = ()  # CPUs local to the GPU (its NUMA node); () = not known


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one replica of one model runs."""

    model: str
    replica: int
    gpu: GpuInfo | None  # None: a CPU replica
    env: dict  # variables to set in the child's environment (nothing to remove)
    cpus: tuple[int, ...]  # CPUs to pin the child to; () = leave the affinity alone

    @property
    def device(self) -> str:
        """The device string as the child sees it ("cpu" or "cuda:0")."""
        return "cpu" if self.gpu is None else "cuda:0"


# -- discovery ------------------------------------------------------------------------------


def cpus_from_mask(words: Sequence[int], bits_per_word: int = 64) -> tuple[int, ...]:
    """CPU numbers set in NVML's affinity bitmask (word 0 holds CPUs 0..63)."""
    return tuple(
        w * bits_per_word + b
        for w, word in enumerate(words)
        for b in range(bits_per_word)
        if int(word) >> b & 1
    )


def cpus_from_list(text: str) -> tuple[int, ...]:
    """CPU numbers of a kernel cpulist ("0-3,8,10-11"), as in sysfs ``local_cpulist``."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(out)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def gpus_from_nvml(nvml, cpu_count: int) -> tuple[GpuInfo, ...]:
    """Every GPU through an NVML module (``pynvml`` from nvidia-ml-py, or a fake with the same
    functions). `cpu_count` sizes the affinity mask. The caller has called ``nvmlInit``."""
    words = max(1, (cpu_count + 63) // 64)
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        try:
            cpus = cpus_from_mask(nvml.nvmlDeviceGetCpuAffinity(h, words))
        except Exception:  # not supported on this platform / virtualised: leave affinity alone
            cpus = ()
        try:
            bus = _text(nvml.nvmlDeviceGetPciInfo(h).busId)
        except Exception:
            bus = ""
        gpus.append(GpuInfo(
            index=i,
            uuid=_text(nvml.nvmlDeviceGetUUID(h)),
            name=_text(nvml.nvmlDeviceGetName(h)),
            memory_total_nbytes=int(nvml.nvmlDeviceGetMemoryInfo(h).total),
            pci_bus_id=bus,
            cpus=cpus,
        ))
    return tuple(gpus)


def gpus_from_smi(csv: str, local_cpulist: Callable[[str], str | None] = lambda bus: None) -> tuple[GpuInfo, ...]:
    """GPUs from ``nvidia-smi --query-gpu=<SMI_QUERY> --format=csv,noheader,nounits`` output.

    nvidia-smi does not print CPU affinity in that query; `local_cpulist(bus_id)` supplies the
    kernel's cpulist text for a PCI bus id (sysfs in production), or None.
    """
    gpus = []
    for line in csv.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        index, uuid, name, mem_mib, bus = fields
        cpulist = local_cpulist(bus)
        gpus.append(GpuInfo(int(index), uuid, name, int(float(mem_mib)) * 1024 * 1024, bus,
                            cpus_from_list(cpulist) if cpulist else ()))
    return tuple(gpus)


def _sysfs_cpulist(bus_id: str) -> str | None:
    """The kernel's local CPU list of a PCI device ("00000000:17:00.0" -> 0000:17:00.0)."""
    domain, _, rest = bus_id.lower().partition(":")
    path = f"/sys/bus/pci/devices/{domain[-4:]}:{rest}/local_cpulist"
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def discover_gpus(cpu_count: int) -> tuple[GpuInfo, ...]:
    """Every GPU of this machine, without initialising CUDA: NVML, else nvidia-smi, else ().

    A missing library, a missing driver, or an NVML error all mean "no GPU" (logged once).
    """
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        nvml = None
    if nvml is not None:
        try:
            nvml.nvmlInit()
            try:
                return gpus_from_nvml(nvml, cpu_count)
            finally:
                nvml.nvmlShutdown()
        except Exception as e:
            log.info("NVML present but unusable (%s); trying nvidia-smi", e)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return gpus_from_smi(out, _sysfs_cpulist)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.info("nvidia-smi failed (%s); no GPU will be used", e)
        return ()


def gpu_gauges() -> list[tuple[GpuInfo, int, int]]:
    """(gpu, memory used in bytes, utilization %) per GPU through NVML; [] without NVML.

    For ``/metrics``, from the supervisor or a frontend: NVML needs no CUDA context. One
    nvmlInit/nvmlShutdown per call, so call it once per scrape, not per gauge.
    """
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:
        return []
    try:
        out = []
        for g in gpus_from_nvml(nvml, 1):
            h = nvml.nvmlDeviceGetHandleByIndex(g.index)
            used = int(nvml.nvmlDeviceGetMemoryInfo(h).used)
            util = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            out.append((g, used, util))
        return out
    except Exception:
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def cupy_installed() -> bool:
    """Whether cupy can be imported, found without importing it (no CUDA in the caller)."""
    return importlib.util.find_spec("cupy") is not None


# -- placement (pure) -----------------------------------------------------------------------


def parse_device(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The device entries of a model's ``device`` value: ("cpu",), ("cuda",), ("cuda:N", ...).

    Raises ValueError (the config turns it into a ConfigError) for anything else; a list must
    hold only ``cuda``/``cuda:N`` entries.
    """
    entries = (spec,) if isinstance(spec, str) else tuple(spec)
    if not entries:
        raise ValueError("an empty device list")
    for e in entries:
        if not isinstance(e, str) or (e != "cpu" and not _CUDA.match(e)):
            raise ValueError(f"unknown device {e!r}")
    if len(entries) > 1 and "cpu" in entries:
        raise ValueError("a device list holds GPUs only (\"cuda\", \"cuda:N\"); use \"cpu\" alone")
    return entries


def is_gpu_device(spec: str | Sequence[str]) -> bool:
    """True when the model's ``device`` asks for any GPU."""
    return parse_device(spec) != ("cpu",)


def local_device(spec: str | Sequence[str]) -> str:
    """The device a model process passes to its model's ``setup``: "cpu", or "cuda:0" because
    the process sees exactly its own GPU."""
    return "cuda:0" if is_gpu_device(spec) else "cpu"


def visible_gpus(gpus: Sequence[GpuInfo], cuda_visible_devices: str | None) -> tuple[GpuInfo, ...]:
    """The GPUs the supervisor may use: all, or those its own ``CUDA_VISIBLE_DEVICES`` names
    (NVML indices or UUID prefixes; CUDA stops at the first entry it cannot resolve, and so
    does this)."""
    if cuda_visible_devices is None:
        return tuple(gpus)
    out: list[GpuInfo] = []
    for item in (s.strip() for s in cuda_visible_devices.split(",")):
        match = None
        if item.isdigit():
            match = next((g for g in gpus if g.index == int(item)), None)
        elif item:
            uuid = item if item.startswith(("GPU-", "MIG-")) else f"GPU-{item}"
            found = [g for g in gpus if g.uuid.startswith(uuid)]
            match = found[0] if len(found) == 1 else None
        if match is None or match in out:
            break
        out.append(match)
    return tuple(out)


def pin_cpus(local: Sequence[int], allowed: Sequence[int]) -> tuple[int, ...]:
    """The GPU-local CPUs this process may use; () (do not pin) when none are, or none known."""
    allowed_set = set(allowed)
    return tuple(sorted(c for c in local if c in allowed_set))


class GpuPlacement:
    """Decides the GPU, environment and CPUs of every replica of a model. Pure."""

    def __init__(self, gpus: Sequence[GpuInfo], allowed_cpus: Sequence[int],
                 cuda_visible_devices: str | None = None, cupy_present: bool = True) -> None:
        self.gpus = visible_gpus(gpus, cuda_visible_devices)
        self.allowed_cpus = tuple(allowed_cpus)
        self.cupy_present = cupy_present

    def gpus_for(self, model: str, device: str | Sequence[str], replicas: int) -> tuple[GpuInfo | None, ...]:
        """The GPU of each replica (None for CPU replicas). ``cuda`` spreads replicas round
        robin over every visible GPU; a list of ``cuda:N`` is used round robin in its order."""
        try:
            entries = parse_device(device)
        except ValueError as e:
            raise GpuConfigError(f"model {model}: device {device!r}: {e}") from None
        if entries == ("cpu",):
            return (None,) * replicas
        if not self.gpus:
            raise GpuConfigError(
                f"model {model}: device {device!r} asks for a GPU, but none is visible "
                "(NVML and nvidia-smi found none, or CUDA_VISIBLE_DEVICES hides them all)")
        pool: list[GpuInfo] = []
        for e in entries:
            n = _CUDA.match(e).group(1)
            if n is None:
                pool.extend(self.gpus)
            elif int(n) >= len(self.gpus):
                raise GpuConfigError(
                    f"model {model}: device {e!r} is out of range: {len(self.gpus)} GPU(s) visible "
                    f"(cuda:0..cuda:{len(self.gpus) - 1})")
            else:
                pool.append(self.gpus[int(n)])
        return tuple(pool[r % len(pool)] for r in range(replicas))

    def check(self, model: str, device: str | Sequence[str], input_device: str) -> None:
        """Start-up checks beyond placement: a GPU ingest needs cupy in the model's interpreter."""
        if input_device == "gpu" and not self.cupy_present:
            raise GpuConfigError(
                f"model {model}: input_device = \"gpu\" needs CuPy, which is not installed "
                "(pip install 'schooner[gpu]' for CUDA 13, or cupy-cuda12x for CUDA 12)")

    def place(self, model: str, device: str | Sequence[str], replicas: int,
              input_device: str = "cpu") -> tuple[Placement, ...]:
        """One `Placement` per replica; raises GpuConfigError naming the model."""
        gpus = self.gpus_for(model, device, replicas)
        if any(g is not None for g in gpus):
            self.check(model, device, input_device)
        return tuple(self._placement(model, r, g) for r, g in enumerate(gpus))

    def _placement(self, model: str, replica: int, gpu: GpuInfo | None) -> Placement:
        if gpu is None:
            return Placement(model, replica, None, {}, ())
        env = {"CUDA_VISIBLE_DEVICES": gpu.uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return Placement(model, replica, gpu, env, pin_cpus(gpu.cpus, self.allowed_cpus))
