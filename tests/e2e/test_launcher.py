"""`import schooner`: the launcher drives an engine from Python (models, closures, saved
artifacts, apps, links, scaling), the CLI verbs drive the same API, and a dead engine raises
instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

import schooner
from schooner.ipc.shm import list_segments
from tests.serving import ROOT


def _predict(server: schooner.Server, app: str, x) -> dict:
    req = urllib.request.Request(f"{server.query_url}/{app}/predict", data=json.dumps({"input": x}).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    os.chdir(ROOT)  # model entry points import from here, as `schooner serve` started here would
    s = schooner.Server(data_dir=str(tmp_path_factory.mktemp("launcher")))
    with s:
        yield s
    assert s.proc.returncode == 0
    assert not [n for n in list_segments() if f"-{s.instance}-" in n]


def test_deploy_link_query_scale_from_python(server):
    assert server.ping() == "PONG"
    server.deploy_model("picky", "1", "floats", entry_point="tests.models:PickyModel", input_shape=[4])
    server.register_application("sums", "floats", default_output="-1", latency_slo_micros=20_000_000, input_shape=[4])
    server.link_model_to_app("sums", "picky")
    out = _predict(server, "sums", [1, 2, 3, 4])
    assert out["output"] == 10.0 and out["default"] is False
    server.set_num_replicas("picky", 2)
    assert sorted(server.get_all_model_replicas()) == ["picky:1:0", "picky:1:1"]
    assert "picky:1" in server.get_all_models()
    with pytest.raises(schooner.AdminCallError) as e:
        server.link_model_to_app("sums", "nope")
    assert e.value.status == 400 and "nope" in e.value.cause


def test_a_python_closure_is_a_model(server):
    scale = 3.0
    server.deploy_python_closure("triple", "1", lambda batch: batch.sum(axis=1) * scale, "floats", input_shape=[2])
    server.register_application("tri", "floats", latency_slo_micros=20_000_000, input_shape=[2], models=["triple"])
    assert _predict(server, "tri", [1, 2])["output"] == 9.0


def test_saved_artifacts_torchscript_sklearn_onnx(server, tmp_path):
    import joblib
    import onnx
    import torch
    from onnx import TensorProto, helper
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)
    # TorchScript
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3).eval()
    ts_path = tmp_path / "net.pt"
    torch.jit.trace(net, torch.zeros(1, 4)).save(str(ts_path))
    expected_ts = net(torch.from_numpy(x)).detach().numpy()[0]
    # scikit-learn
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(60, 4))
    clf = LogisticRegression().fit(xs, (xs[:, 0] > 0).astype(int))
    sk_path = tmp_path / "clf.joblib"
    joblib.dump(clf, sk_path)
    expected_sk = clf.predict_proba(x.astype(np.float64))[0]
    # ONNX: y = sum(x * w) over the row
    w = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["xw"]), helper.make_node("ReduceSum", ["xw", "axes"], ["y"], keepdims=0)],
        "dot", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4], w), helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = tmp_path / "dot.onnx"
    onnx.save(model, str(onnx_path))
    expected_onnx = float((x[0] * w).sum())

    for name, framework, path in (("ts", "torchscript", ts_path), ("sk", "sklearn", sk_path), ("ox", "onnx", onnx_path)):
        server.deploy_model(name, "1", "floats", framework=framework, model_path=str(path), input_shape=[4])
        server.register_application(f"{name}-app", "floats", latency_slo_micros=20_000_000, input_shape=[4], models=[name])
    np.testing.assert_allclose(_predict(server, "ts-app", x[0].tolist())["output"], expected_ts, rtol=1e-5)
    np.testing.assert_allclose(_predict(server, "sk-app", x[0].tolist())["output"], expected_sk, rtol=1e-5)
    np.testing.assert_allclose(_predict(server, "ox-app", x[0].tolist())["output"], expected_onnx, rtol=1e-5)
    with pytest.raises(schooner.AdminCallError) as e:  # a file that is not there: the cause names it
        server.deploy_model("missing", "1", "floats", framework="sklearn", model_path=str(tmp_path / "none.joblib"),
                            input_shape=[4])
    assert "none.joblib" in e.value.cause


def test_cli_verbs_drive_the_same_api(server):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "schooner.engine.cli", *args, "--admin", server.admin_url],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    run = cli("deploy", "picky", "2", "--entry-point", "tests.models:PickyModel", "--input-type", "floats",
              "--input-shape", "4")
    assert run.returncode == 0, run.stderr
    run = cli("models")
    assert run.returncode == 0 and "* picky:2" in run.stdout and "  picky:1" in run.stdout
    assert cli("set-version", "picky", "1").returncode == 0
    assert "* picky:1" in cli("models").stdout
    assert cli("scale", "picky", "1").returncode == 0
    run = cli("status")
    assert run.returncode == 0 and "PONG" in run.stdout and "picky:1:0" in run.stdout
    run = cli("apps")
    assert "sums" in run.stdout and "models=picky" in run.stdout
    run = cli("set-version", "picky", "9")
    assert run.returncode == 1 and "no version '9'" in run.stderr
    version = subprocess.run([sys.executable, "-m", "schooner.engine.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("schooner ")


def test_a_dead_engine_raises_instead_of_hanging(tmp_path):
    s = schooner.Server(data_dir=str(tmp_path)).start()
    try:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(30)
        with pytest.raises(schooner.EngineExited):
            s.get_all_models()
    finally:
        s.stop()
    subprocess.run([sys.executable, "-m", "schooner.engine.cli", "sweep"], cwd=ROOT, capture_output=True, timeout=60)
