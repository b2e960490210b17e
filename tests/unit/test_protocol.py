"""Control messages: typed round trip, no pickle, version checked."""

import pytest

from schooner.ipc import protocol as p


@pytest.mark.parametrize(
    "msg",
    [
        p.Ready(p.Role.MODEL, "model[m:1:0]", 123),
        p.Fatal(p.Role.FRONTEND, "frontend[0]", "boom"),
        p.Drain(), p.Drained("frontend[1]"), p.Stop(),
        p.ReplicaDown(0, 1, -9), p.ReplicaUp(0, 1, 2, "/a", "/b"),
    ],
)
def test_round_trip(msg):
    assert p.decode(p.encode(msg)) == msg


def test_version_mismatch_is_refused():
    data = p.encode(p.Ready(p.Role.MODEL, "m", 1, protocol_version=p.PROTOCOL_VERSION + 1))
    with pytest.raises(p.ProtocolError, match="speaks protocol"):
        p.decode(data)


@pytest.mark.parametrize("data", [b"\x80\x04pickle", b'{"t": "Shell"}', b'{"t": "Stop", "x": 1}', b"[]"])
def test_foreign_messages_are_refused(data):
    with pytest.raises(p.ProtocolError):
        p.decode(data)


def test_over_a_real_socket_pair():
    a, b = p.control_pair()
    p.send(a, p.ReplicaDown(1, 0, 137))
    assert p.recv(b) == p.ReplicaDown(1, 0, 137)
    a.close()
    assert p.recv(b) is None  # peer gone
    b.close()
