"""GPU discovery from NVML's and nvidia-smi's answers as data, replica placement, and the
`device` / `input_device` config keys. No NVML, no CUDA needed."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from schooner.engine.config import ConfigError, ServerConfig, parse_config
from schooner.engine.gpus import (
    GpuConfigError,
    GpuInfo,
    GpuPlacement,
    cpus_from_list,
    cpus_from_mask,
    gpus_from_nvml,
    gpus_from_smi,
    local_device,
    pin_cpus,
    visible_gpus,
)

UUIDS = ["GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-bbbb2222-0000-0000-0000-000000000000",
         "GPU-cccc3333-0000-0000-0000-000000000000"]


class FakeNvml:
    """The pynvml functions discovery calls, answering from data."""

    def __init__(self, devices, affinity_error=False) -> None:
        self.devices = devices
        self.affinity_error = affinity_error
        self.asked_words = None

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.devices[i]

    def nvmlDeviceGetUUID(self, h):
        return h["uuid"]

    def nvmlDeviceGetName(self, h):
        return h["name"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=h["mem"], used=h["mem"] // 4)

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=h["bus"])

    def nvmlDeviceGetCpuAffinity(self, h, words):
        self.asked_words = words
        if self.affinity_error:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return h["mask"][:words]


def nvml_devices():
    return [
        {"uuid": UUIDS[0], "name": b"NVIDIA H200", "mem": 141 << 30, "bus": b"00000000:17:00.0",
         "mask": [0x0F, 0]},
        {"uuid": UUIDS[1], "name": "NVIDIA H200", "mem": 141 << 30, "bus": "00000000:65:00.0",
         "mask": [0, 1 << 3]},
    ]


def gpus(n=3, cpus=((0, 1), (2, 3), (4, 5))):
    return tuple(GpuInfo(i, UUIDS[i], "H200", 1 << 30, f"0000:{i:02x}:00.0", cpus[i]) for i in range(n))


def test_nvml_answers_become_plain_gpu_infos_with_local_cpus():
    nvml = FakeNvml(nvml_devices())
    found = gpus_from_nvml(nvml, cpu_count=96)
    assert nvml.asked_words == 2  # 96 CPUs need two 64-bit words
    assert [g.uuid for g in found] == UUIDS[:2]
    assert found[0].name == "NVIDIA H200" and found[0].pci_bus_id == "00000000:17:00.0"
    assert found[0].memory_total_nbytes == 141 << 30
    assert found[0].cpus == (0, 1, 2, 3) and found[1].cpus == (67,)


def test_nvml_without_cpu_affinity_leaves_cpus_unknown():
    found = gpus_from_nvml(FakeNvml(nvml_devices(), affinity_error=True), cpu_count=8)
    assert [g.cpus for g in found] == [(), ()]


def test_nvidia_smi_csv_parses_with_cpus_from_sysfs_text():
    csv = f"0, {UUIDS[0]}, NVIDIA H200, 143771, 00000000:17:00.0\n1, {UUIDS[1]}, NVIDIA H200, 143771, 00000000:65:00.0\n"
    lists = {"00000000:17:00.0": "0-3,8\n"}
    found = gpus_from_smi(csv, lists.get)
    assert [g.index for g in found] == [0, 1] and found[1].uuid == UUIDS[1]
    assert found[0].memory_total_nbytes == 143771 * 1024 * 1024
    assert found[0].cpus == (0, 1, 2, 3, 8) and found[1].cpus == ()
    with pytest.raises(ValueError):
        gpus_from_smi("garbage line")


def test_cpu_masks_and_lists():
    assert cpus_from_mask([0b101, 1]) == (0, 2, 64)
    assert cpus_from_list("0-2,5,7-8") == (0, 1, 2, 5, 7, 8)
    assert pin_cpus((0, 1, 2, 3), allowed=(1, 3, 9)) == (1, 3)
    assert pin_cpus((0, 1), allowed=(4, 5)) == ()  # never pin to nothing


def test_cuda_spreads_replicas_round_robin_with_uuid_env_and_local_cpus():
    placement = GpuPlacement(gpus(), allowed_cpus=range(6))
    ps = placement.place("resnet", "cuda", 4, "gpu")
    assert [p.gpu.index for p in ps] == [0, 1, 2, 0]
    assert ps[1].env == {"CUDA_VISIBLE_DEVICES": UUIDS[1], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert ps[1].cpus == (2, 3) and ps[1].device == "cuda:0"
    assert [p.replica for p in ps] == [0, 1, 2, 3]


def test_cuda_n_and_lists_pick_those_gpus():
    placement = GpuPlacement(gpus(), allowed_cpus=range(6))
    assert [p.gpu.index for p in placement.place("m", "cuda:2", 2, "gpu")] == [2, 2]
    assert [p.gpu.index for p in placement.place("m", ("cuda:2", "cuda:0"), 3, "gpu")] == [2, 0, 2]
    assert [p.gpu.index for p in placement.place("m", ["cuda:1", "cuda"], 4, "gpu")] == [1, 0, 1, 2]


def test_cpu_models_get_no_gpu_no_env_no_pinning():
    (p,) = GpuPlacement((), allowed_cpus=range(2)).place("m", "cpu", 1)
    assert p.gpu is None and p.env == {} and p.cpus == () and p.device == "cpu"


def test_errors_name_the_model():
    with pytest.raises(GpuConfigError, match="model resnet: .*none is visible"):
        GpuPlacement((), allowed_cpus=range(2)).place("resnet", "cuda", 1)
    with pytest.raises(GpuConfigError, match=r"model resnet: device 'cuda:3' is out of range: 3 GPU\(s\)"):
        GpuPlacement(gpus(), allowed_cpus=range(2)).place("resnet", ["cuda:0", "cuda:3"], 1)
    with pytest.raises(GpuConfigError, match="model resnet: input_device = \"gpu\" needs CuPy"):
        GpuPlacement(gpus(), allowed_cpus=range(2), cupy_present=False).place("resnet", "cuda", 1, "gpu")
    with pytest.raises(GpuConfigError, match="model resnet: device 'tpu'"):
        GpuPlacement(gpus(), allowed_cpus=range(2)).place("resnet", "tpu", 1)
    assert issubclass(GpuConfigError, ValueError)
    # a model that places itself (input_device = "cpu") does not need cupy
    GpuPlacement(gpus(), allowed_cpus=range(2), cupy_present=False).place("resnet", "cuda", 1, "cpu")


def test_the_supervisors_own_cuda_visible_devices_filters_and_orders():
    all3 = gpus()
    assert [g.index for g in visible_gpus(all3, None)] == [0, 1, 2]
    assert [g.index for g in visible_gpus(all3, "2,0")] == [2, 0]
    assert [g.index for g in visible_gpus(all3, "bbbb2222")] == [1]
    assert [g.index for g in visible_gpus(all3, UUIDS[2] + ",7,0")] == [2]  # stops at the first unknown
    assert visible_gpus(all3, "") == ()
    placement = GpuPlacement(all3, allowed_cpus=range(6), cuda_visible_devices="2,1")
    assert [p.gpu.index for p in placement.place("m", "cuda:0", 1, "gpu")] == [2]
    with pytest.raises(GpuConfigError, match="out of range: 2 GPU"):
        placement.place("m", "cuda:2", 1, "gpu")


def test_local_device_is_cpu_or_the_only_visible_gpu():
    assert local_device("cpu") == "cpu"
    assert local_device("cuda:3") == "cuda:0" and local_device(("cuda:1", "cuda:2")) == "cuda:0"


def test_importing_gpus_and_ingest_imports_no_cuda_library_nor_orjson_or_posix_ipc():
    code = ("import sys, schooner.engine.gpus, schooner.model_procs.ingest; "
            "print(sorted(m for m in ('cupy', 'torch', 'pynvml', 'orjson', 'posix_ipc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- config keys ----------------------------------------------------------------------------

BASE = {
    "models": [{"name": "mlp", "entry_point": "pkg.mod:MLP", "input_type": "floats", "input_shape": [16]}],
    "apps": [{"name": "demo", "input_type": "floats", "input_shape": [16], "models": ["mlp"]}],
}


def model(**kv):
    d = {"models": [{**BASE["models"][0], **kv}], "apps": BASE["apps"]}
    return parse_config(d, "x.toml").models[0]


def test_device_defaults_and_input_device_defaults():
    m = model()
    assert m.device == "cpu" and m.input_device == "cpu"
    assert model(device="cuda").input_device == "gpu"
    assert model(device="cuda:1", input_device="cpu").input_device == "cpu"
    m = model(device=["cuda:0", "cuda:1"])
    assert m.device == ("cuda:0", "cuda:1") and m.input_device == "gpu"


def test_device_config_round_trips_through_json_with_tuples():
    cfg = parse_config({"models": [{**BASE["models"][0], "device": ["cuda:1", "cuda"]}], "apps": BASE["apps"]}, "x")
    back = ServerConfig.from_json(cfg.to_json())
    assert back == cfg and back.models[0].device == ("cuda:1", "cuda")


@pytest.mark.parametrize(
    "kv, fragment",
    [
        ({"device": "tpu"}, "models[0].device: expected \"cpu\", \"cuda\""),
        ({"device": "cuda:x"}, "models[0].device"),
        ({"device": []}, "models[0].device"),
        ({"device": ["cpu", "cuda:0"]}, "models[0].device: expected GPUs only"),
        ({"device": 3}, "models[0].device"),
        ({"input_device": "tpu", "device": "cuda"}, "models[0].input_device: expected \"cpu\" or \"gpu\""),
        ({"input_device": "gpu"}, "models[0].input_device: expected \"cpu\" for a model on device \"cpu\""),
        ({"input_device": "gpu", "device": "cuda", "input_type": "strings", "input_shape": []},
         "models[0].input_device: expected \"cpu\" for input_type strings"),
    ],
)
def test_bad_device_keys_are_refused_naming_the_key(kv, fragment):
    d = {"models": [{**BASE["models"][0], **kv}], "apps": BASE["apps"]}
    if kv.get("input_type") == "strings":
        d["apps"] = [{**BASE["apps"][0], "input_type": "strings", "input_shape": []}]
    with pytest.raises(ConfigError) as e:
        parse_config(d, "x.toml")
    assert fragment in str(e.value)


def test_bytes_models_on_a_gpu_default_to_cpu_input():
    d = {"models": [{**BASE["models"][0], "device": "cuda", "input_type": "bytes", "input_shape": []}],
         "apps": [{**BASE["apps"][0], "input_type": "bytes", "input_shape": []}]}
    assert parse_config(d, "x").models[0].input_device == "cpu"
