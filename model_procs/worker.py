"""The model process: one replica of one model version, reading batches zero-copy.

Loop: wait for a batch (`Waiter`: an adaptive spin, then the doorbell and the control socket); drain every pending batch of
the input ring (numpy view over the slot, no copy), call the model, release the input slot,
write the scores (or the failure cause) to the output ring, post the scheduler's doorbell. An
exception in ``predict`` fails that batch only; the worker keeps serving. The control socket
closing means the supervisor is gone, and the worker exits.

When the scheduler dies and is replaced, the supervisor sends `Rebind` with fresh rings: the
worker drops the old ones with whatever they hold (a batch being written back is abandoned:
its queries were answered 503 already) and answers `Rebound`.

With ``input_device = "gpu"`` the batch goes through `schooner.model_procs.ingest`: both ring
mappings are page-locked at start (and again after a `Rebind`, the old ones unregistered
before they are closed), each batch is copied to a device buffer while the previous one
computes, the input slot is released once its copy has completed, and a device result is
copied straight into the output slot, which is published after that copy. ``input_device =
"cpu"`` hands the model the numpy view of the slot, as before.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from schooner.engine.gpus import local_device
from schooner.engine.spawn import ModelArgs, setup_logging
from schooner.ipc import frames, protocol
from schooner.ipc.arrow_lite import FrameCodec
from schooner.ipc.channel import Doorbell, RingReader, RingWriter, Waiter, wait_any
from schooner.ipc.shm import Segment
from schooner.model_procs.ingest import CupyBackend, DeviceBackend, DeviceIngest
from schooner.model_procs.runner import ModelLoadError, ModelRunner

log = logging.getLogger(__name__)
FAILURE_LOG_INTERVAL_S = 10.0
STAMPS = frames.MODEL_STAMPS_NBYTES


class ModelProc:
    """Shell around a `ModelRunner`: rings in, rings out, nothing decided here."""

    def __init__(self, args: ModelArgs, runner: ModelRunner, name: str = "",
                 backend: DeviceBackend | None = None) -> None:
        cfg = args.config.models[args.model]
        self.cfg = cfg
        self.name = name
        self.generation = 0  # rings rebound so far
        self.failures = 0  # failed batches not logged yet
        self.failure_logged = -FAILURE_LOG_INTERVAL_S
        self.runner = runner
        self.ctrl = socket.socket(fileno=args.control_fd)
        self.bell = Doorbell(args.bell_fd)
        self.waiter = Waiter(self.bell, args.config.spin_us / 1e6)
        sched_bell = Doorbell(args.scheduler_bell_fd)
        self.sched_bell = sched_bell
        numeric = frames.NUMPY_DTYPES[cfg.input_type] is not None
        self.numeric = numeric
        self.inputs = RingReader(Segment.attach(args.input_ring), sched_bell)
        self.input_codec = FrameCodec(frames.model_input_schema(cfg.input_type, cfg.input_shape))
        self.outputs = RingWriter(Segment.attach(args.output_ring), sched_bell)
        self.scores = frames.ScoresCodec()
        self.ingest: DeviceIngest | None = None  # set: batches go to the device (input_device = "gpu")
        if backend is not None:
            self.ingest = DeviceIngest(backend, self.input_codec, cfg.input_shape)
            self.ingest.attach([self.inputs.segment.buf, self.outputs.segment.buf])

    def serve(self) -> int:
        fds = [self.ctrl.fileno()]
        one_batch = self._one_batch if self.ingest is None else self._one_batch_on_device
        waiter = self.waiter
        try:
            while True:
                ready = waiter.wait([self.inputs], fds, None)  # the doorbell only when it must sleep
                if ready and not self._control():
                    return 0
                while self.inputs.pending():
                    if not one_batch():
                        return 0
        finally:
            if self.ingest is not None:
                self.ingest.detach()  # unregister before the mappings go away with the process

    def _log_failure(self, n: int) -> None:
        """The traceback of a failed predict goes to the log: the first one, then at most one
        every FAILURE_LOG_INTERVAL_S with the count of those not shown (a model failing on
        every batch must not flood the log)."""
        self.failures += 1
        now = time.monotonic()
        if now - self.failure_logged < FAILURE_LOG_INTERVAL_S:
            return
        more = f" ({self.failures - 1} more failed batches since the last one logged)" if self.failures > 1 else ""
        log.exception("predict failed on a batch of %d%s", n, more)
        self.failure_logged = now
        self.failures = 0

    def _control(self) -> bool:
        """Handle one control message; False when the worker must exit."""
        msg = protocol.recv(self.ctrl)
        if msg is None or isinstance(msg, protocol.Stop):
            return False
        if isinstance(msg, protocol.Rebind):
            old = (self.inputs, self.outputs)
            self.inputs = RingReader(Segment.attach(msg.ring_in), self.sched_bell)
            self.outputs = RingWriter(Segment.attach(msg.ring_out), self.sched_bell)
            if self.ingest is not None:  # unregister the old mappings, close them, register the new
                self.ingest.rebind([self.inputs.segment.buf, self.outputs.segment.buf],
                                   lambda: [ring.close() for ring in old])
            else:
                for ring in old:
                    ring.close()
            self.generation += 1
            protocol.send(self.ctrl, protocol.Rebound(self.name))
            log.info("rebound to a new scheduler's rings")
        return True

    def _one_batch(self) -> bool:
        reader = self.inputs
        t_in = time.monotonic_ns()
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
            self._log_failure(n)
        x = col = view = None  # the slot is ours until released; nothing may outlive that
        t_out = time.monotonic_ns()
        reader.release(1)
        return self._write(scores, error, t_in, t_out)

    def _one_batch_on_device(self) -> bool:
        ingest = self.ingest
        t_in = time.monotonic_ns()
        ingest.stage(self.inputs)  # this batch and the next: the next copy overlaps this compute
        staged, x = ingest.take()
        on_device = False
        try:
            with ingest.backend.computing():
                y = self.runner.predict(x)
                on_device = ingest.is_device_array(y)
                scores = ingest.prepare_output(y, staged.n) if on_device else self.scores.normalize(y, staged.n)
            error = None
        except Exception as e:  # the model's failure is this batch's answer, not ours
            scores, error = None, f"{type(e).__name__}: {e}"
            self._log_failure(staged.n)
        x = y = None
        ingest.release_copied(self.inputs, upto=staged)
        generation = self.generation
        ok = self._write(scores, error, t_in, time.monotonic_ns(), on_device)
        if self.generation == generation:
            ingest.finish(staged)
        return ok

    def _write(self, scores, error: str | None, t_in: int, t_out: int, on_device: bool = False) -> bool:
        writer = self.outputs
        if on_device and error is None:
            def body(slot):
                return self.ingest.write_output(slot, scores)
        elif error is None:
            def body(slot):
                return self.scores.write(slot, scores)
        else:
            def body(slot):
                return self.scores.write_error(slot, error)

        def stamped(body):
            def encode(slot):
                frames.write_model_stamps(slot, t_in, t_out)
                return STAMPS + body(slot[STAMPS:])
            return encode

        encode = stamped(body)
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
            writer.try_write(stamped(lambda slot: self.scores.write_error(slot, message)))
        writer.flush()
        return True


def run_model(args: ModelArgs) -> int:
    cfg = args.config.models[args.model]
    name = f"model[{cfg.name}:{cfg.version}:{args.replica}]"
    setup_logging(name)
    ctrl = socket.socket(fileno=os.dup(args.control_fd))
    try:
        runner = ModelRunner.load(cfg.entry_point, local_device(cfg.device), cfg.init_args)
    except ModelLoadError as e:
        protocol.send(ctrl, protocol.Fatal(protocol.Role.MODEL, name, str(e)))
        return 2
    backend = None
    if cfg.input_device == "gpu":
        try:
            backend = CupyBackend(frames.NUMPY_DTYPES[cfg.input_type], cfg.max_batch_size * cfg.input_width,
                                  torch_input=runner.prefers_torch)
        except ImportError as e:
            why = f"model {cfg.name}: input_device = \"gpu\" needs CuPy ({e}); pip install 'schooner[gpu]'"
            protocol.send(ctrl, protocol.Fatal(protocol.Role.MODEL, name, why))
            return 2
        except Exception as e:  # no driver, no visible GPU, out of device memory
            why = f"model {cfg.name}: no usable GPU for input_device = \"gpu\": {type(e).__name__}: {e}"
            protocol.send(ctrl, protocol.Fatal(protocol.Role.MODEL, name, why))
            return 2
    try:
        proc = ModelProc(args, runner, name, backend)
    except Exception as e:
        if backend is None:
            raise
        why = f"model {cfg.name}: page-locking the rings failed: {type(e).__name__}: {e}"
        protocol.send(ctrl, protocol.Fatal(protocol.Role.MODEL, name, why))
        return 2
    protocol.send(ctrl, protocol.Ready(protocol.Role.MODEL, name, os.getpid()))
    ctrl.close()
    log.info("serving %s (incarnation %d)", cfg.entry_point, args.incarnation)
    return proc.serve()
