"""Control messages on the wire: encoding, checking, sending and receiving.

The messages themselves (small, typed, frozen dataclasses) and `PROTOCOL_VERSION` are defined
with every other wire type in `schooner.ipc.wire`; this module re-exports them, so callers say
``protocol.Ready``. Each travels as one ``SOCK_SEQPACKET`` datagram (no framing), encoded as an
orjson object tagged with ``"t"``; decoding checks the tag against `MESSAGE_TYPES`, so there is
no pickle and no dispatch by method name. Tensors never ride in control messages. A child's
first message is `Ready` (or `Fatal`) carrying `PROTOCOL_VERSION`; the supervisor refuses a
child that speaks another version.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import orjson

from schooner.ipc.wire import (  # noqa: F401 (re-exported: callers say protocol.Ready)
    MAX_CONTROL_NBYTES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Abort,
    ControlMessage,
    Drain,
    Drained,
    Fatal,
    Feedback,
    FeedbackDone,
    FrontendRings,
    Ready,
    Rebind,
    Rebound,
    Reconfigure,
    Reconfigured,
    ReplicaDown,
    ReplicaRetire,
    ReplicaRetired,
    ReplicaUp,
    Role,
    Stop,
)


class ProtocolError(RuntimeError):
    """A control message that is not one of ours, or a peer speaking another version."""


def encode(msg: ControlMessage) -> bytes:
    d = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
    d["t"] = type(msg).__name__
    return orjson.dumps(d)


def decode(data: bytes) -> ControlMessage:
    try:
        d = orjson.loads(data)
        cls = MESSAGE_TYPES[d.pop("t")]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ProtocolError(f"not a control message: {data[:80]!r}") from e
    try:
        msg = cls(**d)
    except TypeError as e:
        raise ProtocolError(f"bad fields for {cls.__name__}: {e}") from e
    if isinstance(msg, Ready):
        msg = dataclasses.replace(msg, role=Role(msg.role))
        if msg.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"{msg.name} speaks protocol {msg.protocol_version}, expected {PROTOCOL_VERSION}"
            )
    elif isinstance(msg, Fatal):
        msg = dataclasses.replace(msg, role=Role(msg.role))
    return msg


def control_pair() -> tuple[socket.socket, socket.socket]:
    """A connected (parent end, child end) pair for control messages."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.set_inheritable(False)
    return a, b


def send(sock: socket.socket, msg: ControlMessage, fds: tuple[int, ...] = ()) -> None:
    """Send one message; `fds` travel with it (SCM_RIGHTS), the receiver gets its own copies."""
    if fds:
        socket.send_fds(sock, [encode(msg)], list(fds))
    else:
        sock.send(encode(msg))


def recv(sock: socket.socket) -> ControlMessage | None:
    """One message, or None when the peer closed the socket (it exited). Descriptors sent
    with it are closed: use `recv_with_fds` where a message may carry some."""
    msg, fds = recv_with_fds(sock)
    for fd in fds:
        os.close(fd)
    return msg


def recv_with_fds(sock: socket.socket) -> tuple[ControlMessage | None, list[int]]:
    """One message and the descriptors that came with it (the caller owns them)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_CONTROL_NBYTES, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        return decode(data), fds
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise
