"""Client shared memory under a hostile or careless client: regions shrunk by their owner,
keys that are not plain objects, hard links to the server's own segments, a registry filled
to the brim. Each is a clear 400 and the frontend keeps serving."""

from __future__ import annotations

import os

import numpy as np
import posix_ipc
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.e2e.test_v2_protocol import CONFIG
from tests.serving import SchoonerServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with SchoonerServer(tmp_path_factory.mktemp("shm-abuse"), CONFIG, "--allow-client-shm") as srv:
        yield srv
        assert srv.stop() == 0


@pytest.fixture
def client(server):
    c = triton.InferenceServerClient(f"{server.host}:{server.port}")
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def objects():
    made = []

    def make(nbytes: int) -> posix_ipc.SharedMemory:
        shm = posix_ipc.SharedMemory(f"/tst-abuse-{os.getpid()}-{len(made)}", posix_ipc.O_CREX, size=nbytes)
        made.append(shm)
        return shm

    yield make
    for shm in made:
        shm.close_fd()
        try:
            shm.unlink()
        except posix_ipc.ExistentialError:
            pass


def _serving(client) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    t = triton.InferInput("input", [1, 4], "FP32")
    t.set_data_from_numpy(x)
    assert client.infer("sums", [t]).as_numpy("output").tolist() == [4.0]


def _register_status(server, name: str, body: dict) -> tuple[int, object]:
    status, doc, _ = server.request("POST", f"/v2/systemsharedmemory/region/{name}/register", body)
    return status, doc


def test_a_region_shrunk_by_its_owner_is_400_for_inputs_and_outputs(server, client, objects):
    src = objects(64)
    dst = objects(64)
    os.pwrite(src.fd, np.ones(4, dtype=np.float32).tobytes(), 0)
    client.register_system_shared_memory("src", src.name, 16)
    client.register_system_shared_memory("dst", dst.name, 64)
    inp = triton.InferInput("input", [1, 4], "FP32")
    inp.set_shared_memory("src", 16)
    out = triton.InferRequestedOutput("output")
    out.set_shared_memory("dst", 64)  # larger than the 4 bytes of output: accepted
    client.infer("sums", [inp], outputs=[out])
    assert np.frombuffer(os.pread(dst.fd, 4, 0), np.float32).tolist() == [4.0]
    os.ftruncate(src.fd, 0)  # the owner shrinks it: a mapping would SIGBUS the frontend
    with pytest.raises(InferenceServerException, match="shrank"):
        client.infer("sums", [inp])
    os.ftruncate(src.fd, 64)
    os.pwrite(src.fd, np.ones(4, dtype=np.float32).tobytes(), 0)
    os.ftruncate(dst.fd, 0)
    with pytest.raises(InferenceServerException, match="shrank"):
        client.infer("sums", [inp], outputs=[out])
    _serving(client)
    assert all(p.is_running() for p in server.children())


@pytest.mark.parametrize("key", ["/.", "/..", "/schooner-x", "/no-such-object", "relative", "/a/b"])
def test_keys_that_are_not_plain_objects_are_400(server, key):
    status, doc = _register_status(server, "r", {"key": key, "offset": 0, "byte_size": 4})
    assert status == 400, doc
    assert "error" in doc


def test_a_symlink_and_a_hard_link_to_a_server_segment_are_400(server, client, objects):
    own = server.segments()[0]
    link = f"/dev/shm/tst-abuse-link-{os.getpid()}"
    hard = f"/dev/shm/tst-abuse-hard-{os.getpid()}"
    target = objects(16)
    os.symlink("/dev/shm" + target.name, link)
    os.link("/dev/shm" + own, hard)
    try:
        status, doc = _register_status(server, "sym", {"key": "/" + os.path.basename(link), "byte_size": 4})
        assert status == 400, doc
        status, doc = _register_status(server, "hard", {"key": "/" + os.path.basename(hard), "byte_size": 4})
        assert status == 400 and "server's own" in doc["error"], doc
    finally:
        os.unlink(link)
        os.unlink(hard)
    _serving(client)


def test_the_registry_refuses_what_it_cannot_hold_and_keeps_working(server, client, objects):
    obj = objects(16)
    status, doc = _register_status(server, "n" * 5000, {"key": obj.name, "byte_size": 4})
    assert status == 400, doc
    registered = 0
    for i in range(2000):  # each entry ~240 bytes of JSON: the 64 KiB board fills first
        status, doc = _register_status(server, f"{'r' * 120}{i}", {"key": obj.name, "byte_size": 4})
        if status != 200:
            assert status == 400 and "full" in doc["error"], doc
            break
        registered += 1
    else:
        raise AssertionError("the registry never filled")
    assert registered > 10
    assert len(client.get_system_shared_memory_status()) == registered
    client.unregister_system_shared_memory(f"{'r' * 120}0")
    status, doc = _register_status(server, "again", {"key": obj.name, "byte_size": 4})
    assert status == 200, doc
    _serving(client)
