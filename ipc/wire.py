"""Every type that crosses a process boundary, in one place, and the protocol version.

Schooner's processes talk over three kinds of channel, and everything that travels on them is
defined here:

* **Control sockets** (supervisor <-> each child, frontend <-> scheduler for feedback): the
  frozen dataclasses below, one per ``SOCK_SEQPACKET`` datagram, encoded and checked by
  `schooner.ipc.protocol` (orjson tagged with ``"t"``; no pickle). A child's first message is
  `Ready` carrying `PROTOCOL_VERSION`; the supervisor refuses a child that speaks another one.
* **Rings** (shared memory): Arrow IPC messages of the schemas below -- `SUBMIT_SCHEMA`
  (frontend -> scheduler), `RESPONSE_SCHEMA` (scheduler -> frontend), `model_input_schema`
  (scheduler -> model), and the model output (model -> scheduler): `MODEL_STAMPS_NBYTES` of
  timestamps, then an Arrow stream whose schema the model's answer decides. The codecs live in
  `schooner.ipc.frames` and `schooner.ipc.arrow_lite`; the ring's own header and slot layout
  (`LAYOUT_VERSION`) and the wake-up protocol are in `schooner.ipc.ring`; the metrics boards'
  seqlock layout in `schooner.ipc.board`.
* **Spawn arguments**: one of the `*Args` dataclasses per child, written by the supervisor to
  a memfd and read by `schooner.engine.spawn` in the child.

Bump `PROTOCOL_VERSION` whenever anything defined here changes shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from schooner.engine.config import ServerConfig

# -- control messages -----------------------------------------------------------------------

PROTOCOL_VERSION = 4  # 3: stage timestamps in the rings, answers as enums, the sleeping word in the ring header; 4: typed answer rows (ipc/rows.py)
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



# -- ring messages --------------------------------------------------------------------------

SUBMIT_SCHEMA = pa.schema(
    [
        ("query_id", pa.uint64()),
        ("app", pa.uint16()),
        ("deadline_ns", pa.int64()),
        ("priority", pa.uint8()),  # 0: the default level; 1 is served first
        ("uid", pa.int64()),  # the user, for per-user selection state; -1: none
        ("start_ns", pa.int64()),  # CLOCK_MONOTONIC when the frontend parsed the request (stage timing)
        ("input", pa.binary()),
        ("typed", pa.uint8()),  # 1: answer with a typed row (the V2 route), 0: with JSON text (ipc/rows.py)
    ]
)

# Answers travel as small enums; the frontend alone turns them into HTTP statuses and sentences.
class AnswerStatus(IntEnum):
    OK = 0
    MODEL_ERROR = 1  # the model failed on the batch (or the answer did not fit): HTTP 500
    UNAVAILABLE = 2  # the app is being reconfigured: HTTP 503


HTTP_STATUS = (200, 500, 503)  # by AnswerStatus


SLO_EXPLANATION = "Failed to retrieve a prediction response within the specified latency SLO"
NO_MODEL_EXPLANATION = "No connected models found for query"
LOW_CONFIDENCE_EXPLANATION = "Prediction confidence is below the app's confidence_threshold"


class DefaultReason(IntEnum):
    NONE = 0  # not a default
    SLO = 1
    NO_MODEL = 2
    LOW_CONFIDENCE = 3


REASON_TEXT = ("", SLO_EXPLANATION, NO_MODEL_EXPLANATION, LOW_CONFIDENCE_EXPLANATION)  # by DefaultReason

# `output`: the answer row when status is OK (a typed row or JSON text: `schooner.ipc.rows`), else the error cause (utf-8).
RESPONSE_SCHEMA = pa.schema(
    [
        ("query_id", pa.uint64()),
        ("status", pa.uint8()),  # AnswerStatus
        ("reason", pa.uint8()),  # DefaultReason: why a default was answered, NONE otherwise
        ("output", pa.binary()),
        ("extra", pa.binary()),  # more JSON members, e.g. confidence of an ensemble; b"" if none
        ("sent_ns", pa.int64()),  # CLOCK_MONOTONIC when the scheduler wrote this message (stage timing)
    ]
)

# Model output slots start with this many bytes: the model's (batch in, scores out) CLOCK_MONOTONIC
# stamps as two little-endian u64, then padding so the Arrow stream stays 64-byte aligned.
MODEL_STAMPS_NBYTES = 64


NUMPY_DTYPES = {
    "doubles": np.dtype("<f8"),
    "floats": np.dtype("<f4"),
    "ints": np.dtype("<i4"),
    "bytes": None,
    "strings": None,
}


def model_input_schema(input_type: str, input_shape: tuple[int, ...]) -> pa.Schema:
    """Schema of a model's input ring: one tensor column, one row per query."""
    dtype = NUMPY_DTYPES[input_type]
    if dtype is None:
        col = pa.binary() if input_type == "bytes" else pa.string()
    else:
        width = int(np.prod(input_shape)) if input_shape else 1
        col = pa.list_(pa.from_numpy_dtype(dtype), width)
    return pa.schema([("input", col)])



# -- spawn arguments ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FrontendArgs:
    index: int
    config: ServerConfig
    control_fd: int
    bell_fd: int  # this frontend's doorbell
    scheduler_bell_fd: int
    submit_ring: str
    response_ring: str
    listen_fd: int  # the SO_REUSEPORT socket bound by the supervisor
    metrics_boards: tuple[str, ...]  # every process's published metrics: scheduler, then frontends
    stats_board: str  # the scheduler's per-model statistics (JSON)
    client_shm_board: str  # registered client shared memory regions (JSON), shared by frontends
    feedback_fd: int  # SOCK_SEQPACKET to the scheduler: Feedback out, FeedbackDone back
    incarnation: int = 0  # times this frontend index was respawned


@dataclass(frozen=True, slots=True)
class SchedulerArgs:
    config: ServerConfig
    control_fd: int
    bell_fd: int
    frontend_bell_fds: tuple[int, ...]
    submit_rings: tuple[str, ...]
    response_rings: tuple[str, ...]
    metrics_board: str
    stats_board: str
    feedback_fds: tuple[int, ...]  # one per frontend


@dataclass(frozen=True, slots=True)
class ModelArgs:
    config: ServerConfig
    model: int
    replica: int
    incarnation: int
    control_fd: int
    bell_fd: int
    scheduler_bell_fd: int
    input_ring: str
    output_ring: str


ROLES = {"frontend": FrontendArgs, "scheduler": SchedulerArgs, "model": ModelArgs}
