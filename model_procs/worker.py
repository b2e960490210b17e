"""The model process: one replica of one model version, reading batches zero-copy.

Loop: block on this process's doorbell and its control socket; drain every pending batch of
the input ring (numpy view over the slot, no copy), call the model, release the input slot,
write the scores (or the failure cause) to the output ring, post the scheduler's doorbell. An
exception in ``predict`` fails that batch only; the worker keeps serving. The control socket
closing means the supervisor is gone, and the worker exits.

When the scheduler dies and is replaced, the supervisor sends `Rebind` with fresh rings: the
worker drops the old ones with whatever they hold (a batch being written back is abandoned:
its queries were answered 503 already) and answers `Rebound`.
"""

from __future__ import annotations

import logging
import os
import socket

from schooner.engine.spawn import ModelArgs, setup_logging
from schooner.ipc import frames, protocol
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.channel import Doorbell, RingReader, RingWriter, wait_any
from schooner.ipc.shm import Segment
from schooner.model_procs.runner import ModelLoadError, ModelRunner

log = logging.getLogger(__name__)


class ModelProc:
    """Shell around a `ModelRunner`: rings in, rings out, nothing decided here."""

    def __init__(self, args: ModelArgs, runner: ModelRunner, name: str = "") -> None:
        cfg = args.config.models[args.model]
        self.cfg = cfg
        self.name = name
        self.generation = 0  # rings rebound so far
        self.runner = runner
        self.ctrl = socket.socket(fileno=args.control_fd)
        self.bell = Doorbell(args.bell_fd)
        sched_bell = Doorbell(args.scheduler_bell_fd)
        self.sched_bell = sched_bell
        numeric = frames.NUMPY_DTYPES[cfg.input_type] is not None
        self.numeric = numeric
        self.inputs = RingReader(Segment.attach(args.input_ring), sched_bell)
        self.input_codec = FrameCodec(frames.model_input_schema(cfg.input_type, cfg.input_shape))
        self.outputs = RingWriter(Segment.attach(args.output_ring), sched_bell)
        self.scores = frames.ScoresCodec()

    def serve(self) -> int:
        fds = [self.bell.fileno(), self.ctrl.fileno()]
        while True:
            ready = wait_any(fds, None)
            if self.ctrl.fileno() in ready and not self._control():
                return 0
            self.bell.clear()
            while self.inputs.pending():
                if not self._one_batch():
                    return 0

    def _control(self) -> bool:
        """Handle one control message; False when the worker must exit."""
        msg = protocol.recv(self.ctrl)
        if msg is None or isinstance(msg, protocol.Stop):
            return False
        if isinstance(msg, protocol.Rebind):
            old = (self.inputs, self.outputs)
            self.inputs = RingReader(Segment.attach(msg.ring_in), self.sched_bell)
            self.outputs = RingWriter(Segment.attach(msg.ring_out), self.sched_bell)
            for ring in old:
                ring.close()
            self.generation += 1
            protocol.send(self.ctrl, protocol.Rebound(self.name))
            log.info("rebound to a new scheduler's rings")
        return True

    def _one_batch(self) -> bool:
        reader = self.inputs
        view = reader.read(0)
        n, (col,) = self.input_codec.read(view)
        try:
            if self.numeric:
                x = col.reshape((n, *self.cfg.input_shape))  # a writable view of the slot
            else:
                x = frames.binary_items(*col)
                if self.cfg.input_type == "strings":
                    x = [b.decode() for b in x]
            scores = self.scores.normalize(self.runner.predict(x), n)
            error = None
        except Exception as e:  # the model's failure is this batch's answer, not ours
            scores, error = None, f"{type(e).__name__}: {e}"
        x = col = view = None  # the slot is ours until released; nothing may outlive that
        reader.release(1)
        return self._write(scores, error)

    def _write(self, scores, error: str | None) -> bool:
        writer = self.outputs
        if error is None:
            def encode(slot):
                return self.scores.write(slot, scores)
        else:
            def encode(slot):
                return self.scores.write_error(slot, error)
        generation = self.generation
        try:
            while not writer.try_write(encode):  # full: the scheduler posts our bell when it frees a slot
                ready = wait_any([self.bell.fileno(), self.ctrl.fileno()], None)
                if self.ctrl.fileno() in ready and not self._control():
                    return False
                if self.generation != generation:
                    return True  # rebound: this batch belonged to the dead scheduler
                self.bell.clear()
        except OverflowError as e:
            message = f"{e}; raise output_slot_nbytes for model {self.cfg.name}"
            writer.try_write(lambda slot: self.scores.write_error(slot, message))
        writer.flush()
        return True


def run_model(args: ModelArgs) -> int:
    cfg = args.config.models[args.model]
    name = f"model[{cfg.name}:{cfg.version}:{args.replica}]"
    setup_logging(name)
    ctrl = socket.socket(fileno=os.dup(args.control_fd))
    try:
        runner = ModelRunner.load(cfg.entry_point, cfg.device, cfg.init_args)
    except ModelLoadError as e:
        protocol.send(ctrl, protocol.Fatal(protocol.Role.MODEL, name, str(e)))
        return 2
    proc = ModelProc(args, runner, name)
    protocol.send(ctrl, protocol.Ready(protocol.Role.MODEL, name, os.getpid()))
    ctrl.close()
    log.info("serving %s (incarnation %d)", cfg.entry_point, args.incarnation)
    return proc.serve()
