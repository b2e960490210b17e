"""A GPU asked for on a machine without one: the start fails naming the model, and nothing
is left behind (every machine this runs on in CI has no GPU; tests/gpu covers the rest)."""

import subprocess
import sys

import pytest

from schooner.engine.gpus import discover_gpus
from schooner.ipc.shm import list_segments
from tests.serving import ROOT

CONFIG = """
[[models]]
name = "ongpu"
entry_point = "tests.models:PickyModel"
input_type = "floats"
input_shape = [4]
device = "cuda"

[[apps]]
name = "a"
input_type = "floats"
input_shape = [4]
models = ["ongpu"]
"""


@pytest.mark.skipif(bool(discover_gpus(1)), reason="this machine has a GPU")
def test_a_gpu_model_without_a_gpu_fails_the_start_naming_the_model(tmp_path):
    cfg = tmp_path / "gpu.toml"
    cfg.write_text(CONFIG)
    before = set(list_segments())
    run = subprocess.run(
        [sys.executable, "-m", "schooner.engine.cli", "serve", "--port", "0", "--admin-port", "0", "--config", str(cfg),
         "--data-dir", str(tmp_path / "d")],
        cwd=ROOT, capture_output=True, timeout=120,
    )
    assert run.returncode == 1, run.stderr.decode()
    assert b"ongpu" in run.stderr and (b"GPU" in run.stderr or b"cupy" in run.stderr.lower())
    assert not set(list_segments()) - before
