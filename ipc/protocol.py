"""Every wire type that crosses a process boundary, and the protocol version.

Two kinds of traffic exist and never mix:

* **Control messages** (this module's dataclasses): small, typed, frozen, travelling over a
  ``SOCK_SEQPACKET`` unix socket pair between the supervisor and each child (one datagram =
  one message, so no framing). Encoded as orjson objects tagged with ``"t"``; decoding checks
  the tag against `MESSAGE_TYPES`, so there is no pickle and no dispatch by method name.
* **Data** (queries, batches, scores): Arrow record batches in ring slots; their schemas are
  defined in `schooner.ipc.frames`. Tensors never ride in control messages.

A child's first message is `Ready` (or `Fatal`) carrying `PROTOCOL_VERSION`; the supervisor
refuses a child that speaks another version.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from enum import IntEnum

import orjson

PROTOCOL_VERSION = 2
MAX_CONTROL_NBYTES = 192 * 1024  # a Reconfigure carries the whole config; the socket buffer holds ~200 KiB


class Role(IntEnum):
    SUPERVISOR = 0
    FRONTEND = 1
    SCHEDULER = 2
    MODEL = 3


@dataclass(frozen=True, slots=True)
class Ready:
    """Child -> supervisor: start-up finished; the child serves from now on."""

    role: Role
    name: str
    pid: int
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Fatal:
    """Child -> supervisor: start-up failed; `message` says why (shown to the user)."""

    role: Role
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Drain:
    """Supervisor -> frontend/scheduler: stop taking new work, finish what is in flight."""


@dataclass(frozen=True, slots=True)
class Drained:
    """Frontend -> supervisor: every in-flight request has been answered."""

    name: str


@dataclass(frozen=True, slots=True)
class Abort:
    """Supervisor -> frontend: the scheduler is gone; answer everything in flight with 503
    and refuse new queries until `Rebind` names the rings of its successor."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rebind:
    """Supervisor -> frontend or model: a new scheduler serves you; drop your rings to the old
    one (with whatever they hold) and use these. For a frontend: its submit and response
    rings; for a model: its input and output rings. A model answers `Rebound`."""

    ring_in: str  # what this process reads: response ring (frontend) / input ring (model)
    ring_out: str  # what it writes: submit ring (frontend) / output ring (model)
    abort_reason: str = ""  # frontend: first answer everything in flight 503 with this (one step)


@dataclass(frozen=True, slots=True)
class Rebound:
    """Model -> supervisor: now on the rings of the last `Rebind`."""

    name: str


@dataclass(frozen=True, slots=True)
class FrontendRings:
    """Supervisor -> scheduler: frontend `index` was respawned on these rings; drop the old
    ones and anything waiting for them (answers to a dead frontend go nowhere)."""

    index: int
    submit_ring: str
    response_ring: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Supervisor -> child: exit now (after draining, or on a fatal error elsewhere)."""


@dataclass(frozen=True, slots=True)
class ReplicaDown:
    """Supervisor -> scheduler: a model process exited; its rings are dead from now on."""

    model: int
    replica: int
    exit_code: int


@dataclass(frozen=True, slots=True)
class ReplicaUp:
    """Supervisor -> scheduler: a (re)spawned model process is ready on these rings. The
    model process's doorbell (an eventfd) travels with it as SCM_RIGHTS ancillary data, so
    replicas and models added while serving need nothing passed at spawn time."""

    model: int
    replica: int
    incarnation: int
    input_ring: str
    output_ring: str


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """Supervisor -> scheduler and frontends: serve this configuration from now on (the whole
    `ServerConfig` as JSON; models and apps are only ever appended, removed ones stay as
    tombstones, so every index keeps its meaning). Answered with `Reconfigured`."""

    config: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Reconfigured:
    """Scheduler or frontend -> supervisor: configuration `epoch` is in force here."""

    epoch: int
    name: str


@dataclass(frozen=True, slots=True)
class ReplicaRetire:
    """Supervisor -> scheduler: send this replica no more batches (scale down)."""

    model: int
    replica: int


@dataclass(frozen=True, slots=True)
class ReplicaRetired:
    """Scheduler -> supervisor: a retiring replica holds no batch any more; stop its process."""

    model: int
    replica: int


@dataclass(frozen=True, slots=True)
class Feedback:
    """Frontend -> scheduler: the true label of a prediction of a selection-policy app."""

    app: int
    query_id: int
    label: float


@dataclass(frozen=True, slots=True)
class FeedbackDone:
    """Scheduler -> frontend: the feedback was applied (error empty) or why not."""

    query_id: int
    error: str = ""


ControlMessage = (Ready | Fatal | Drain | Drained | Abort | Rebind | Rebound | FrontendRings | Stop | ReplicaDown
                  | ReplicaUp | Reconfigure | Reconfigured | ReplicaRetire | ReplicaRetired | Feedback | FeedbackDone)
MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Ready, Fatal, Drain, Drained, Abort, Rebind, Rebound, FrontendRings, Stop, ReplicaDown, ReplicaUp,
                Reconfigure, Reconfigured, ReplicaRetire, ReplicaRetired, Feedback, FeedbackDone)
}


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
