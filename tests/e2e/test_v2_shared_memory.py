"""Triton's system shared memory extension, on with --allow-client-shm, driven by tritonclient."""

import os

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.utils.shared_memory as cshm
from tritonclient.utils import InferenceServerException

from schooner.ipc.shm import list_segments
from tests.e2e.test_v2_protocol import CONFIG
from tests.serving import SchoonerServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SchoonerServer(tmp_path_factory.mktemp("v2shm"), CONFIG, "--allow-client-shm", "--frontends", "2") as srv:
        yield srv
        assert srv.stop() == 0


@pytest.fixture
def regions():
    made = []

    def make(name, nbytes):
        key = f"/tst-{os.getpid()}-{name}"
        h = cshm.create_shared_memory_region(name, key, nbytes)
        made.append(h)
        return key, h

    yield make
    for h in made:
        cshm.destroy_shared_memory_region(h)


def test_round_trip_through_client_shared_memory(server, regions):
    client = triton.InferenceServerClient(f"{server.host}:{server.port}")
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    in_key, in_h = regions("in", x.nbytes + 16)
    out_key, out_h = regions("out", 64)
    cshm.set_shared_memory_region(in_h, [x], offset=16)
    client.register_system_shared_memory("in", in_key, x.nbytes, offset=16)
    client.register_system_shared_memory("out", out_key, 64)
    status = {r["name"]: r for r in client.get_system_shared_memory_status()}
    assert status["in"]["key"] == in_key and status["in"]["offset"] == 16
    for _ in range(3):  # more than one request: both frontends see the registrations
        inp = triton.InferInput("input", [3, 4], "FP32")
        inp.set_shared_memory("in", x.nbytes)
        out = triton.InferRequestedOutput("output")
        out.set_shared_memory("out", 12, offset=8)
        res = client.infer("sums", [inp], outputs=[out])
        o = res.get_output("output")
        assert "parameters" not in o and o["shape"] == [3] and "data" not in o
        got = cshm.get_contents_as_numpy(out_h, np.float32, [3], offset=8)
        np.testing.assert_allclose(got, x.sum(axis=1))
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []
    client.close()


def test_sizes_are_checked_exactly_and_regions_stay_inside_their_object(server, regions):
    client = triton.InferenceServerClient(f"{server.host}:{server.port}")
    key, h = regions("small", 32)
    with pytest.raises(InferenceServerException, match="does not lie inside"):
        client.register_system_shared_memory("bad", key, 64)
    with pytest.raises(InferenceServerException, match="no shared memory object"):
        client.register_system_shared_memory("ghost", "/tst-does-not-exist", 8)
    own = list_segments()[0]  # one of the server's own rings
    with pytest.raises(InferenceServerException, match="not one of the server's own"):
        client.register_system_shared_memory("evil", own, 8)
    client.register_system_shared_memory("small", key, 32)
    inp = triton.InferInput("input", [1, 4], "FP32")
    inp.set_shared_memory("small", 12)  # needs 16
    with pytest.raises(InferenceServerException, match="needs 16"):
        client.infer("sums", [inp])
    inp = triton.InferInput("input", [1, 4], "FP32")
    inp.set_shared_memory("small", 16, offset=24)  # past the end of the region
    with pytest.raises(InferenceServerException, match="outside region"):
        client.infer("sums", [inp])
    client.unregister_system_shared_memory("small")
    client.close()
