"""The supervisor (`schooner serve`): owns every process and every shared-memory segment.

Start-up: remove segments of dead instances; create doorbells (eventfds), rings (POSIX shared
memory, pre-faulted) and the listening sockets; spawn the scheduler and every model replica,
wait for their typed `Ready` (with a deadline), then spawn the frontends and wait for theirs.

Running: one `poll` over the children's process sentinels (pidfds), their control sockets and
a signal wake-up pipe. Every child that dies is replaced; nothing else stops:

* a model replica: the scheduler is told (`ReplicaDown`) so it retries that replica's queries,
  a fresh ring pair is created for the new incarnation, and `ReplicaUp` follows its `Ready`
  (respawns back off while a replica fails before it is ready);
* the scheduler: a new one is spawned on fresh rings; the frontends answer what they had in
  flight with 503 and move to the new rings in one step (`Rebind` with an abort reason), and
  the model processes move too (`Rebind`; a model's `Rebound` is followed by `ReplicaUp`). Feedback sockets, doorbells and
  metric boards are the supervisor's and outlive it;
* a frontend: a new one is spawned on the same listening socket (connections that arrived
  meanwhile wait in its backlog) with fresh rings, which the scheduler is told about
  (`FrontendRings`); its siblings never notice.

A scheduler or frontend that dies `max_restarts` times within `restart_window_s` stops the
server with a log line saying so, rather than flapping. Restarts per role are counted on
`/metrics` (`schooner_process_restarts_total`).

Shutdown (SIGTERM/SIGINT/SIGHUP): RUNNING -> DRAINING -> STOPPED. Frontends get `Drain`
(readiness turns false at once) and report `Drained` when every in-flight request is
answered; then every child gets `Stop`, with a bounded join and SIGKILL after it; finally
every segment this instance created is unlinked.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from schooner.engine.admin import AdminServer
from schooner.engine.config import ServerConfig
from schooner.engine.core.metrics import MetricSet
from schooner.engine.gpus import (
    GpuConfigError,
    GpuPlacement,
    cupy_installed,
    discover_gpus,
    is_gpu_device,
)
from schooner.engine.management import Manager
from schooner.engine.spawn import FrontendArgs, ModelArgs, SchedulerArgs, argv_summary, encode_args
from schooner.ipc import protocol
from schooner.ipc.board import Board, board_nbytes
from schooner.ipc.channel import Doorbell, ProcessSentinel, wait_any
from schooner.ipc.frames import MODEL_STAMPS_NBYTES, NUMPY_DTYPES
from schooner.ipc.ring import Ring, ring_nbytes
from schooner.ipc.shm import Segment, new_instance_id, segment_name, sweep_stale, unlink_segment

log = logging.getLogger(__name__)

MODEL_SLOTS = 2
METRICS_BOARD_NBYTES = 1 << 20
STOP_TIMEOUT_S = 5.0
RESPAWN_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)


class SupervisorState(IntEnum):
    STARTING = 0
    RUNNING = 1
    DRAINING = 2
    STOPPED = 3


_TRANSITIONS = {
    SupervisorState.STARTING: {SupervisorState.RUNNING, SupervisorState.DRAINING, SupervisorState.STOPPED},
    SupervisorState.RUNNING: {SupervisorState.DRAINING, SupervisorState.STOPPED},
    SupervisorState.DRAINING: {SupervisorState.STOPPED},
    SupervisorState.STOPPED: set(),
}


class StartupError(RuntimeError):
    """A child failed to start; the message says which and why."""


@dataclass(eq=False)
class Child:
    role: protocol.Role
    name: str
    popen: subprocess.Popen
    ctrl: socket.socket
    sentinel: ProcessSentinel
    ready_deadline: float
    ready: bool = False
    drained: bool = False
    model: int = -1
    replica: int = -1
    incarnation: int = 0
    rings: tuple[str, str] = ("", "")
    exit_code: int | None = None
    index: int = -1  # a frontend's index
    rebinding: bool = False  # a model sent `Rebind`, its `Rebound` not back yet
    fatal: str = ""  # why it could not start, as it said
    stale_rings: list = field(default_factory=list)  # superseded while it started: unlinked once up or gone


@dataclass
class _ReplicaSlot:
    incarnation: int = 0
    failures: int = 0
    respawn_at: float | None = None
    child: Child | None = None
    rings: list[str] = field(default_factory=list)
    ring_gen: int = 0  # ring pairs created for this replica so far (names must not repeat)
    retired: bool = False  # scaled down: never respawned
    last_error: str = ""  # why its last process died before it was ready


class Supervisor:
    """Creates, watches and tears down one Schooner instance. Not a singleton: a process may
    hold several (tests do), each with its own instance id, segments and ports."""

    def __init__(self, config: ServerConfig, admin_token: str | None = None, registry=None) -> None:
        self.cfg = config
        self.admin_token = admin_token
        self.admin: AdminServer | None = None
        self.manager = Manager(self, registry, config.warm_versions)
        self.instance = new_instance_id()
        self.state = SupervisorState.STARTING
        self.segments: set[str] = set()
        self.children: list[Child] = []
        self.bells: list[Doorbell] = []
        self.listen_socks: list[socket.socket] = []
        self.port = config.port
        self.replicas: list[list[_ReplicaSlot]] = [[_ReplicaSlot() for _ in range(m.replicas)] for m in config.models]
        self._sig_r, self._sig_w = socket.socketpair()
        self._sig_r.setblocking(False)
        self._sig_w.setblocking(False)
        self._stop_requested = False
        self.exit_code = 0
        self.fe_rings: list[tuple[str, str]] = []  # per frontend: (submit, response)
        self.fe_ring_gen: list[int] = []
        self.fe_incarnation: list[int] = []
        self.feedback: list[tuple[socket.socket, socket.socket]] = []  # (frontend end, scheduler end)
        self.deaths: dict[protocol.Role, deque[float]] = {r: deque() for r in protocol.Role}
        self.metrics = MetricSet()
        self.m_restarts = {
            r: self.metrics.counter("schooner_process_restarts_total", "Child processes respawned after they died",
                                    role=r.name.lower())
            for r in (protocol.Role.SCHEDULER, protocol.Role.FRONTEND, protocol.Role.MODEL)
        }
        self.board: Board | None = None
        self._board_seg: Segment | None = None
        self.scheduler: Child | None = None
        self.gpu_placer: GpuPlacement | None = None
        self.epoch = 0
        self.pending_acks: dict[int, set[Child]] = {}
        self.pending_text: dict[int, str] = {}  # epochs the frontends have not been sent yet

    # -- state ------------------------------------------------------------------------------

    def _move(self, new: SupervisorState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal supervisor transition {self.state.name} -> {new.name}")
        self.state = new

    def request_stop(self, *_: object) -> None:
        """Signal-safe: only sets a flag and wakes the loop."""
        self._stop_requested = True
        try:
            self._sig_w.send(b"\0")
        except OSError:
            pass

    # -- resources --------------------------------------------------------------------------

    def _bell(self) -> Doorbell:
        b = Doorbell.create()
        self.bells.append(b)
        return b

    def _ring(self, purpose: str, nslots: int, slot_nbytes: int) -> str:
        name = segment_name(self.instance, purpose)
        seg = Segment.create(name, ring_nbytes(nslots, slot_nbytes))
        self.segments.add(name)
        Ring.create(seg.buf, nslots, slot_nbytes).close()
        seg.close()  # the supervisor only owns the name; children map it
        return name

    def _segment(self, purpose: str, nbytes: int) -> str:
        name = segment_name(self.instance, purpose)
        Segment.create(name, nbytes).close()
        self.segments.add(name)
        return name

    def _unlink(self, name: str) -> None:
        unlink_segment(name)
        self.segments.discard(name)

    def _listen_sockets(self) -> list[socket.socket]:
        """One listening socket per frontend, sharing the port through SO_REUSEPORT. A port
        that anything else holds fails the start: the probe binds without SO_REUSEPORT, which
        no listening socket lets through, so a second instance never joins this one's group.
        Each socket listens at once, so the port is taken from here on."""
        port = self.cfg.port
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        if port != 0:
            probe = socket.socket(family, socket.SOCK_STREAM)
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self.cfg.host, port))
            finally:
                probe.close()
        socks = []
        try:
            for _ in range(self.cfg.frontends):
                s = socket.socket(family, socket.SOCK_STREAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.bind((self.cfg.host, port))
                s.listen(4096)
                port = s.getsockname()[1]  # port 0: the first bind picks, the others share it
        except OSError:
            for s in socks:
                s.close()
            raise
        self.port = port
        return socks

    def _model_input_slot_nbytes(self, mi: int) -> int:
        m = self.cfg.models[mi]
        dtype = NUMPY_DTYPES[m.input_type]
        if dtype is None:
            return self.cfg.submit_slot_nbytes
        return m.max_batch_size * m.input_width * dtype.itemsize + 64 * m.max_batch_size + 4096

    # -- spawning ---------------------------------------------------------------------------

    def _spawn(self, role: protocol.Role, name: str, make_args, fds: list[int],
               extra_env: dict[str, str] | None = None, cpus: tuple[int, ...] = ()) -> Child:
        parent, child_end = protocol.control_pair()
        args = make_args(child_end.fileno())
        env = dict(os.environ)
        env.update(extra_env or {})
        path = [*self.cfg.python_path, os.getcwd()]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        args_fd = os.memfd_create("schooner-spawn-args")
        try:
            os.write(args_fd, encode_args(args).encode())
            popen = subprocess.Popen(
                [sys.executable, "-m", "schooner.engine.spawn", argv_summary(args, args_fd)],
                pass_fds=[child_end.fileno(), args_fd, *fds],
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_signals if not cpus else lambda: _child_signals(cpus),
            )
        finally:
            os.close(args_fd)
        child_end.close()
        child = Child(role, name, popen, parent, ProcessSentinel(popen.pid), time.monotonic() + self.cfg.ready_timeout_s)
        self.children.append(child)
        return child

    def _model_rings(self, mi: int, ri: int) -> tuple[str, str]:
        """A fresh (input, output) ring pair for a replica (new names: old ones may be mapped)."""
        m = self.cfg.models[mi]
        slot = self.replicas[mi][ri]
        g = slot.ring_gen
        slot.ring_gen += 1
        rin = self._ring(f"model{mi}-r{ri}-g{g}-in", MODEL_SLOTS, self._model_input_slot_nbytes(mi))
        rout = self._ring(f"model{mi}-r{ri}-g{g}-out", MODEL_SLOTS, m.output_slot_nbytes + MODEL_STAMPS_NBYTES)
        slot.rings = [rin, rout]
        return rin, rout

    def _frontend_rings(self, i: int) -> tuple[str, str]:
        """A fresh (submit, response) ring pair for frontend `i`."""
        cfg = self.cfg
        g = self.fe_ring_gen[i]
        self.fe_ring_gen[i] += 1
        pair = (self._ring(f"fe{i}-g{g}-submit", cfg.submit_slots, cfg.submit_slot_nbytes),
                self._ring(f"fe{i}-g{g}-response", cfg.response_slots, cfg.response_slot_nbytes))
        self.fe_rings[i] = pair
        return pair

    def _spawn_model(self, mi: int, ri: int) -> Child:
        m = self.cfg.models[mi]
        slot = self.replicas[mi][ri]
        inc = slot.incarnation
        rin, rout = self._model_rings(mi, ri)
        bell = self.model_bells[mi][ri]
        place = self._placement(mi, ri)
        child = self._spawn(
            protocol.Role.MODEL, f"model[{m.name}:{m.version}:{ri}]",
            lambda fd: ModelArgs(self.cfg, mi, ri, inc, fd, bell.fd, self.sched_bell.fd, rin, rout),
            [bell.fd, self.sched_bell.fd], place.env if place else None,
            place.cpus if place else self.cfg.model_cpus,
        )
        child.model, child.replica, child.incarnation, child.rings = mi, ri, inc, (rin, rout)
        slot.child = child
        slot.respawn_at = None
        return child

    def _placement(self, mi: int, ri: int):
        """Where replica `ri` of model `mi` runs (GPU env and CPUs), or None on the CPU."""
        m = self.cfg.models[mi]
        if not is_gpu_device(m.device):
            return None
        return self.gpu_placer.place(m.name, m.device, max(ri + 1, m.replicas), m.input_device)[ri]

    def _place_gpus(self, cfg: ServerConfig) -> ServerConfig:
        """Check every GPU model against the machine (never touching CUDA here) and record
        each replica's GPU in the config the children get. Raises GpuConfigError."""
        if not any(is_gpu_device(m.device) for m in cfg.models):
            return cfg
        if self.gpu_placer is None:
            self.gpu_placer = GpuPlacement(discover_gpus(os.cpu_count() or 1), sorted(os.sched_getaffinity(0)),
                                           os.environ.get("CUDA_VISIBLE_DEVICES"), cupy_installed())
        models = []
        for m in cfg.models:
            if is_gpu_device(m.device) and not m.deleted:
                placed = self.gpu_placer.place(m.name, m.device, max(m.replicas, 1), m.input_device)
                m = dataclasses.replace(m, gpus=tuple(p.gpu.index for p in placed if p.gpu is not None))
            models.append(m)
        return dataclasses.replace(cfg, models=tuple(models))

    def _spawn_scheduler(self) -> Child:
        cfg = self.cfg
        fe_fds = tuple(b.fd for b in self.fe_bells)
        fb_fds = tuple(p[1].fileno() for p in self.feedback)
        self.scheduler = self._spawn(
            protocol.Role.SCHEDULER, "scheduler",
            lambda fd: SchedulerArgs(cfg, fd, self.sched_bell.fd, fe_fds,
                                     tuple(r[0] for r in self.fe_rings), tuple(r[1] for r in self.fe_rings),
                                     self.sched_board, self.stats_board, fb_fds),
            [self.sched_bell.fd, *fe_fds, *fb_fds], cpus=cfg.scheduler_cpus,
        )
        return self.scheduler

    def _spawn_frontend(self, i: int) -> Child:
        cfg = self.cfg
        sock = self.listen_socks[i]
        submit, response = self.fe_rings[i]
        bell = self.fe_bells[i]
        fb = self.feedback[i][0]
        child = self._spawn(
            protocol.Role.FRONTEND, f"frontend[{i}]",
            lambda fd: FrontendArgs(i, cfg, fd, bell.fd, self.sched_bell.fd, submit, response, sock.fileno(),
                                    self.boards, self.stats_board, self.shm_board, fb.fileno(),
                                    self.fe_incarnation[i]),
            [bell.fd, self.sched_bell.fd, sock.fileno(), fb.fileno()], cpus=cfg.frontend_cpus,
        )
        child.index = i
        return child

    def start(self) -> None:
        """Bring every process up; returns when all are Ready. Raises StartupError."""
        sweep_stale(keep_instance=self.instance)
        try:
            self.cfg = self._place_gpus(self.cfg)
        except GpuConfigError as e:
            raise StartupError(str(e)) from None
        check_cpus(self.cfg, os.sched_getaffinity(0))
        cfg = self.cfg
        try:
            self.listen_socks = self._listen_sockets()
        except OSError as e:
            why = "address in use (another server, or another schooner, holds it)" if e.errno == errno.EADDRINUSE else e.strerror
            raise StartupError(f"cannot listen on {cfg.host}:{cfg.port}: {why}") from None
        try:
            self.admin = AdminServer(cfg.admin_host, cfg.admin_port, self.admin_token)
        except OSError as e:
            why = "address in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise StartupError(f"cannot listen on the admin port {cfg.admin_host}:{cfg.admin_port}: {why}") from None
        self.sched_bell = self._bell()
        self.fe_bells = [self._bell() for _ in range(cfg.frontends)]
        self.model_bells = [[self._bell() for _ in range(m.replicas)] for m in cfg.models]
        self.fe_rings = [("", "")] * cfg.frontends
        self.fe_ring_gen = [0] * cfg.frontends
        self.fe_incarnation = [0] * cfg.frontends
        for i in range(cfg.frontends):
            self._frontend_rings(i)
        self.sched_board = self._segment("metrics-scheduler", board_nbytes(METRICS_BOARD_NBYTES))
        self.stats_board = self._segment("stats-scheduler", board_nbytes(METRICS_BOARD_NBYTES))
        self.shm_board = self._segment("client-shm", board_nbytes(1 << 16))
        sup_board = segment_name(self.instance, "metrics-supervisor")
        self._board_seg = Segment.create(sup_board, board_nbytes(1 << 16))
        self.segments.add(sup_board)
        self.board = Board(self._board_seg.buf)
        self._publish_metrics()
        self.boards = (self.sched_board,
                       *(self._segment(f"metrics-fe{i}", board_nbytes(METRICS_BOARD_NBYTES)) for i in range(cfg.frontends)),
                       sup_board)
        # kept for the whole run: a respawned scheduler or frontend gets the same sockets
        self.feedback = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(cfg.frontends)]
        self._spawn_scheduler()
        for mi, m in enumerate(cfg.models):
            for ri in range(m.replicas):
                self._spawn_model(mi, ri)
        self._await_ready([c for c in self.children])
        for i in range(cfg.frontends):
            self._spawn_frontend(i)
        self._await_ready([c for c in self.children if not c.ready])
        self._move(SupervisorState.RUNNING)

    def _await_ready(self, waiting: list[Child]) -> None:
        pending = set(waiting)
        while pending:
            if self._stop_requested:
                raise StartupError("interrupted during start-up")
            now = time.monotonic()
            deadline = min(c.ready_deadline for c in pending)
            if now >= deadline:
                late = ", ".join(c.name for c in pending if c.ready_deadline <= now)
                raise StartupError(f"{late} did not report ready within {self.cfg.ready_timeout_s:g} s")
            fds = [self._sig_r.fileno()]
            for c in pending:
                fds += [c.ctrl.fileno(), c.sentinel.fileno()]
            readable = set(wait_any(fds, deadline - now))
            for c in list(pending):
                if c.ctrl.fileno() in readable:
                    msg = self._recv(c)
                    if isinstance(msg, protocol.Fatal):
                        raise StartupError(f"{c.name} failed to start: {msg.message}")
                    if isinstance(msg, protocol.Ready):
                        self._on_ready(c)
                        pending.discard(c)
                        continue
                if c.sentinel.fileno() in readable and not c.sentinel.alive():
                    code = c.popen.wait()
                    raise StartupError(f"{c.name} exited with code {code} before it was ready (see its log above)")
            self._drain_signal_pipe()

    def _recv(self, c: Child):
        try:
            return protocol.recv(c.ctrl)
        except (OSError, protocol.ProtocolError) as e:
            log.error("%s: bad control message: %s", c.name, e)
            return None

    def _announce(self, c: Child) -> None:
        """Tell the scheduler a model replica serves on `c.rings` (its doorbell goes along)."""
        bell = self.model_bells[c.model][c.replica]
        self._send(self.scheduler, protocol.ReplicaUp(c.model, c.replica, c.incarnation, *c.rings), (bell.fd,))

    def _on_ready(self, c: Child) -> None:
        c.ready = True
        self._unlink_stale(c)
        if c.role is protocol.Role.MODEL:
            slot = self.replicas[c.model][c.replica]
            slot.failures = 0
            if slot.retired:
                self._send(c, protocol.Stop())  # scaled down while it started
            elif not c.rebinding:  # else its `Rebound` announces it, on the rings it moved to
                self._announce(c)

    def _publish_metrics(self) -> None:
        if self.board is not None:
            self.board.publish(self.metrics.render().encode())

    # -- running ----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a stop signal or a child that keeps dying; then drain and clean up."""
        try:
            while self.state is SupervisorState.RUNNING:
                self._step()
                if self._stop_requested:
                    self.shutdown()
        finally:
            self.close()
        return self.exit_code

    def _step(self) -> None:
        now = time.monotonic()
        timeouts = [s.respawn_at for row in self.replicas for s in row if s.respawn_at is not None]
        timeouts += [c.ready_deadline for c in self.children if not c.ready]
        op = self.manager.timeout_s()
        if op is not None:
            timeouts.append(now + op)
        if self.admin is not None and self.admin.pending():
            timeouts.append(now)  # a pipelined admin request is ready: do not block
        timeout = max(0.0, min(timeouts) - now) if timeouts else None
        fds = [self._sig_r.fileno()]
        for c in self.children:
            fds += [c.ctrl.fileno(), c.sentinel.fileno()]
        if self.admin is not None:
            fds += self.admin.fds()
        readable = set(wait_any(fds, timeout))
        self._drain_signal_pipe()
        if self.admin is not None:
            for req in self.admin.on_readable(readable):
                self.manager.submit(req)
        for c in list(self.children):
            if c not in self.children:
                continue  # replaced while this turn handled another child
            if c.ctrl.fileno() in readable:
                msg = self._recv(c)
                if isinstance(msg, protocol.Ready):
                    self._on_ready(c)
                elif isinstance(msg, protocol.Rebound):
                    c.rebinding = False
                    if c.ready and not self.replicas[c.model][c.replica].retired:
                        self._announce(c)
                elif isinstance(msg, protocol.Fatal):
                    c.fatal = msg.message
                    log.error("%s failed to start: %s", c.name, msg.message)
                elif isinstance(msg, protocol.Reconfigured):
                    self.pending_acks.get(msg.epoch, set()).discard(c)
                elif isinstance(msg, protocol.ReplicaRetired):
                    self._on_retired(msg.model, msg.replica)
            if c.sentinel.fileno() in readable and not c.sentinel.alive():
                self._on_exit(c)
                if self.state is not SupervisorState.RUNNING:
                    return
            elif not c.ready and time.monotonic() > c.ready_deadline:
                log.error("%s did not report ready in time; killing it", c.name)
                c.popen.kill()
        now = time.monotonic()
        for mi, row in enumerate(self.replicas):
            for ri, slot in enumerate(row):
                if slot.respawn_at is not None and now >= slot.respawn_at:
                    self._spawn_model(mi, ri)
        self.manager.step()

    def _died_too_often(self, role: protocol.Role) -> bool:
        """Record a death of `role`; True when it died `max_restarts` times in the window."""
        now = time.monotonic()
        d = self.deaths[role]
        d.append(now)
        while d and d[0] < now - self.cfg.restart_window_s:
            d.popleft()
        return len(d) >= self.cfg.max_restarts

    def _on_exit(self, c: Child) -> None:
        c.exit_code = c.popen.wait()
        self._forget(c)
        if c.role is protocol.Role.MODEL:
            self._on_model_exit(c)
            return
        if self._died_too_often(c.role):
            log.critical(
                "%s exited with code %s, the %d%s death of a %s within %g s; stopping the server instead of restarting it again",
                c.name, c.exit_code, self.cfg.max_restarts, _ordinal(self.cfg.max_restarts), c.role.name.lower(),
                self.cfg.restart_window_s)  # fmt: skip
            self.exit_code = 1
            if c.role is protocol.Role.SCHEDULER:  # nothing in flight can be answered any more
                self._abort_frontends(f"the scheduler process exited (code {c.exit_code})")
            self.shutdown()
            return
        self.m_restarts[c.role].value += 1
        self._publish_metrics()
        if c.role is protocol.Role.SCHEDULER:
            self._restart_scheduler(c)
        else:
            self._restart_frontend(c)

    def _on_model_exit(self, c: Child) -> None:
        slot = self.replicas[c.model][c.replica]
        if slot.retired:  # scaled down: its rings go, nothing comes back
            if c.ready and not c.rebinding:  # died with its last batch: the scheduler retries it
                self._send(self.scheduler, protocol.ReplicaDown(c.model, c.replica, c.exit_code))
            for name in c.rings:
                self._unlink(name)
            slot.child = None
            slot.respawn_at = None
            log.info("%s stopped (scaled down)", c.name)
            return
        if not c.ready:
            slot.last_error = c.fatal or f"exited with code {c.exit_code} before it was ready"
        if c.ready:
            self._send(self.scheduler, protocol.ReplicaDown(c.model, c.replica, c.exit_code))
            slot.failures = 0
        else:
            slot.failures += 1
        for name in c.rings:
            self._unlink(name)  # the scheduler keeps its mapping until it has drained it
        slot.child = None
        slot.incarnation += 1
        delay = RESPAWN_BACKOFF_S[min(slot.failures, len(RESPAWN_BACKOFF_S) - 1)]
        slot.respawn_at = time.monotonic() + delay
        self.m_restarts[protocol.Role.MODEL].value += 1
        self._publish_metrics()
        log.warning("%s exited with code %s; respawning in %.1f s", c.name, c.exit_code, delay)

    # -- changes while serving (used by the management layer) ------------------------------

    def broadcast(self, cfg: ServerConfig) -> int:
        """Make `cfg` the configuration of every process; returns its epoch, in force
        everywhere once `configured(epoch)`. The scheduler gets it first and the frontends
        only once it has acknowledged, so a frontend never sends a query on a route the
        scheduler does not know yet. Raises ValueError (a GPU it cannot have, or a
        configuration too large for one control message)."""
        cfg = self._place_gpus(cfg)
        text = cfg.to_json().decode()
        if len(text) > protocol.MAX_CONTROL_NBYTES - 1024:
            raise ValueError(f"the configuration ({len(text)} bytes of JSON) no longer fits one control message; "
                             "delete unused model versions or apps")
        self.cfg = cfg
        self.epoch += 1
        self._send(self.scheduler, protocol.Reconfigure(text, self.epoch))
        self.pending_acks[self.epoch] = {self.scheduler}
        self.pending_text[self.epoch] = text
        return self.epoch

    def configured(self, epoch: int) -> bool:
        """Every process that got `epoch` acknowledged it (or died: its successor starts
        with the newer configuration)."""
        waiting = self.pending_acks.get(epoch, set())
        waiting.intersection_update(self.children)
        if waiting:
            return False
        text = self.pending_text.pop(epoch, None)
        if text is not None:  # the scheduler has it: now the frontends
            frontends = {c for c in self.children if c.role is protocol.Role.FRONTEND}
            for c in frontends:
                self._send(c, protocol.Reconfigure(text, epoch))
            self.pending_acks[epoch] = frontends
            return not frontends and self.configured(epoch)
        self.pending_acks.pop(epoch, None)
        return True

    def start_replicas(self, mi: int, ris: range) -> None:
        """Spawn replicas `ris` of model `mi` (slots and doorbells created as needed)."""
        while len(self.replicas) <= mi:
            self.replicas.append([])
            self.model_bells.append([])
        for ri in ris:
            while len(self.replicas[mi]) <= ri:
                self.replicas[mi].append(_ReplicaSlot())
                self.model_bells[mi].append(self._bell())
            slot = self.replicas[mi][ri]
            slot.retired, slot.failures, slot.last_error = False, 0, ""
            if slot.child is None:
                self._spawn_model(mi, ri)

    def replicas_state(self, mi: int, ris: range) -> tuple[bool, str]:
        """(all ready, the first start-up error): how a start of `ris` is going."""
        ready = True
        for ri in ris:
            slot = self.replicas[mi][ri]
            if slot.last_error:
                return False, slot.last_error
            if slot.child is None or not slot.child.ready:
                ready = False
        return ready, ""

    def retire_replicas(self, mi: int, ris: range) -> None:
        """Scale down: the scheduler sends them no more batches; each stops after its batch."""
        for ri in ris:
            if ri >= len(self.replicas[mi]):
                continue
            slot = self.replicas[mi][ri]
            slot.retired = True
            slot.respawn_at = None
            if slot.child is None:
                continue
            if slot.child.ready and not slot.child.rebinding:
                self._send(self.scheduler, protocol.ReplicaRetire(mi, ri))
            else:  # not serving yet: nothing to finish
                slot.child.popen.kill()

    def retired(self, mi: int, ris: range) -> bool:
        return all(ri >= len(self.replicas[mi]) or self.replicas[mi][ri].child is None for ri in ris)

    def _on_retired(self, mi: int, ri: int) -> None:
        slot = self.replicas[mi][ri]
        if slot.child is not None:
            self._send(slot.child, protocol.Stop())

    def _abort_frontends(self, reason: str) -> None:
        for f in self.children:
            if f.role is protocol.Role.FRONTEND:
                self._send(f, protocol.Abort(reason))

    def _restart_scheduler(self, dead: Child) -> None:
        """Replace a dead scheduler: every ring it touched is replaced too, since what they
        hold belongs to queries that were answered 503 (`Abort`) or to batches nobody awaits."""
        reason = f"the scheduler process exited (code {dead.exit_code})"
        log.error("%s; respawning it", reason)
        # the frontends answer what they held 503 and move to the new rings in one step, so
        # every query refused is one that was in flight at the death
        old = []
        for i in range(self.cfg.frontends):
            f = next((c for c in self.children if c.role is protocol.Role.FRONTEND and c.index == i), None)
            if f is not None and not f.ready:
                f.stale_rings += self.fe_rings[i]  # it attaches them at start-up: unlinked once it is up
            else:
                old += self.fe_rings[i]
            self._frontend_rings(i)
        rebinds = []
        for mi, row in enumerate(self.replicas):
            for ri, slot in enumerate(row):
                c = slot.child
                if c is None:
                    continue  # respawned later, on fresh rings
                if slot.retired:  # being scaled down: nothing to move, it just stops
                    self._send(c, protocol.Stop())
                    continue
                if not c.ready:
                    continue  # still starting: its rings are untouched; its Ready announces them
                old += slot.rings
                c.rings = self._model_rings(mi, ri)
                c.rebinding = True
                rebinds.append(c)
        self._spawn_scheduler()
        for c in rebinds:
            self._send(c, protocol.Rebind(*c.rings))
        for f in self.children:
            if f.role is protocol.Role.FRONTEND:
                submit, response = self.fe_rings[f.index]
                self._send(f, protocol.Rebind(response, submit, reason))  # abort and move in one step
        for name in old:
            self._unlink(name)  # unmapped by their holders as they move

    def _restart_frontend(self, dead: Child) -> None:
        i = dead.index
        log.error("%s exited with code %s; respawning it", dead.name, dead.exit_code)
        old = self.fe_rings[i]
        submit, response = self._frontend_rings(i)
        self._send(self.scheduler, protocol.FrontendRings(i, submit, response))
        self.fe_incarnation[i] += 1
        self._spawn_frontend(i)
        for name in old:
            self._unlink(name)

    def _unlink_stale(self, c: Child) -> None:
        for name in c.stale_rings:
            self._unlink(name)
        c.stale_rings = []

    def _forget(self, c: Child) -> None:
        self._unlink_stale(c)
        if c in self.children:
            self.children.remove(c)
        c.sentinel.close()
        c.ctrl.close()

    def _drain_signal_pipe(self) -> None:
        try:
            while self._sig_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- shutdown ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drain the frontends, stop every child, bounded; safe to call more than once."""
        if self.state in (SupervisorState.DRAINING, SupervisorState.STOPPED):
            return
        self._move(SupervisorState.DRAINING)
        frontends = [c for c in self.children if c.role is protocol.Role.FRONTEND]
        for c in frontends:
            self._send(c, protocol.Drain())
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        waiting = {c for c in frontends}
        sched = self.scheduler if self.scheduler in self.children else None
        while waiting and time.monotonic() < deadline:
            fds = []
            for c in waiting:
                fds += [c.ctrl.fileno(), c.sentinel.fileno()]
            if sched is not None:
                fds.append(sched.sentinel.fileno())
            readable = set(wait_any(fds, deadline - time.monotonic()))
            if sched is not None and sched.sentinel.fileno() in readable and not sched.sentinel.alive():
                # nobody will answer what the frontends wait for: they answer it 503 and report
                self._abort_frontends(f"the scheduler process exited (code {sched.popen.wait()})")
                sched = None
            for c in list(waiting):
                if c.ctrl.fileno() in readable and isinstance(self._recv(c), protocol.Drained):
                    waiting.discard(c)
                elif c.sentinel.fileno() in readable and not c.sentinel.alive():
                    waiting.discard(c)
        if waiting:
            log.warning("drain timed out with %d frontend(s) still busy", len(waiting))
        self._stop_children()
        self._move(SupervisorState.STOPPED)

    def _send(self, c: Child | None, msg, fds: tuple[int, ...] = ()) -> None:
        if c is None:
            return
        try:
            protocol.send(c.ctrl, msg, fds)
        except OSError:
            pass

    def _stop_children(self) -> None:
        order = [protocol.Role.FRONTEND, protocol.Role.SCHEDULER, protocol.Role.MODEL]
        for role in order:
            for c in self.children:
                if c.role is role:
                    self._send(c, protocol.Stop())
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for c in list(self.children):
            try:
                c.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", c.name, STOP_TIMEOUT_S)
                c.popen.kill()
                c.popen.wait()
            self._forget(c)

    def close(self) -> None:
        """Release everything this instance owns. Idempotent; also used after a failed start."""
        if self.children:
            self._stop_children()
        for s in self.listen_socks:
            s.close()
        self.listen_socks = []
        if self.admin is not None:
            self.manager.abandon("the server is stopping")
            self.admin.close()
            self.admin = None
        for pair in self.feedback:
            for sock in pair:
                sock.close()
        self.feedback = []
        self.board = None
        if self._board_seg is not None:
            self._board_seg.close()
            self._board_seg = None
        for name in list(self.segments):
            self._unlink(name)
        for b in self.bells:
            b.close()
        self.bells = []
        if self.state is not SupervisorState.STOPPED:
            self.state = SupervisorState.STOPPED


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def check_cpus(cfg: ServerConfig, allowed: set[int]) -> None:
    """Every CPU named by the placement settings must be one this process may run on."""
    for key in ("frontend_cpus", "scheduler_cpus", "model_cpus"):
        bad = sorted(set(getattr(cfg, key)) - allowed)
        if bad:
            raise StartupError(f"{cfg.source}: server.{key}: CPUs {bad} are not available here; "
                               f"expected CPUs from {sorted(allowed)} (this process's affinity)")


def _child_signals(cpus: tuple[int, ...] = ()) -> None:
    """In the child before exec: the supervisor alone decides when children stop, so a
    terminal's Ctrl-C (sent to the whole process group) does not kill them mid-drain. A GPU
    model process is pinned to its GPU's local CPUs (the supervisor never touched CUDA, so
    the fork is safe)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the supervisor drains
