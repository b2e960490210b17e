"""Test helper: one real `ModelProc` (the model process's loop) over real shared-memory rings,
driven batch by batch from the test, with any ingest backend.

Everything that needs posix_ipc or orjson (the worker, the config, the rings' segments) is
imported when a rig is built, not when this module is imported: the GPU machine's image lacks
both, and tests/gpu must still be collected there. `close` unregisters, unmaps and unlinks
every segment the rig made, and closes every descriptor.
"""

from __future__ import annotations

import numpy as np

SHAPE = (4,)
NSLOTS = 4


class WorkerRig:
    """Input producer, output consumer and control end of one in-process `ModelProc`."""

    def __init__(self, predict, backend, max_batch_size: int = 8) -> None:
        from schooner.engine.config import ModelConfig, ServerConfig
        from schooner.engine.spawn import ModelArgs
        from schooner.ipc import protocol
        from schooner.ipc.arrow_lite import FrameCodec
        from schooner.ipc.channel import Doorbell
        from schooner.ipc.frames import MODEL_STAMPS_NBYTES, ScoresCodec, model_input_schema
        from schooner.ipc.shm import new_instance_id
        from schooner.model_procs.runner import ModelRunner
        from schooner.model_procs.worker import ModelProc

        self.protocol = protocol
        self.instance = new_instance_id()
        self.segments = []
        self.gen = 0
        model = ModelConfig("m", "1", "tests.models:X", "floats", SHAPE, max_batch_size=max_batch_size,
                            device="cuda", input_device="gpu", output_slot_nbytes=64 * 1024)
        cfg = ServerConfig(models=(model,), apps=())
        self.codec = FrameCodec(model_input_schema("floats", SHAPE))
        self.scores = ScoresCodec()
        self.stamps = MODEL_STAMPS_NBYTES  # the model's timestamps before the scores stream
        self.bell, self.sched_bell = Doorbell.create(), Doorbell.create()
        self.ctrl, child = protocol.control_pair()
        rin, rout = self._rings(max_batch_size)
        args = ModelArgs(cfg, 0, 0, 0, child.detach(), self.bell.fd, self.sched_bell.fd, rin, rout)
        self.proc = ModelProc(args, ModelRunner(predict), "model[m:1:0]", backend)

    def _rings(self, max_batch_size: int) -> tuple[str, str]:
        from schooner.ipc.ring import Ring, ring_nbytes
        from schooner.ipc.shm import Segment, segment_name

        names = []
        for purpose, slot in (("in", max_batch_size * 16 * 4 + 4096), ("out", 64 * 1024)):
            seg = Segment.create(segment_name(self.instance, f"{purpose}{self.gen}"), ring_nbytes(NSLOTS, slot))
            Ring.create(seg.buf, NSLOTS, slot)
            self.segments.append(seg)
            names.append(seg.name)
        self.gen += 1
        self.producer = Ring(self.segments[-2].buf)
        self.consumer = Ring(self.segments[-1].buf)
        return names[0], names[1]

    def mapped(self) -> list:
        """The worker's own mappings of its current rings (what it must have registered)."""
        return [self.proc.inputs.segment.buf, self.proc.outputs.segment.buf]

    def put(self, rows: np.ndarray) -> None:
        slot = self.producer.reserve()
        n = self.codec.write(slot, len(rows), [np.ascontiguousarray(rows, np.float32)])
        slot.release()
        self.producer.publish(n)

    def run(self) -> int:
        """Serve every pending batch as `serve` does after a wake-up; returns how many."""
        done = 0
        while self.proc.inputs.pending():
            assert self.proc._one_batch_on_device()
            done += 1
        return done

    def take(self):
        """(scores, error) of the oldest output, released."""
        view = self.consumer.peek(0)
        scores, error = self.scores.read(view[self.stamps:])
        scores = None if scores is None else np.array(scores)
        del view
        self.consumer.release(1)
        return scores, error

    def rebind(self) -> None:
        """A new scheduler: fresh rings, `Rebind` over the control socket, `Rebound` back."""
        old_producer, old_consumer = self.producer, self.consumer
        rin, rout = self._rings(self.proc.cfg.max_batch_size)
        self.protocol.send(self.ctrl, self.protocol.Rebind(rin, rout))
        assert self.proc._control()
        assert isinstance(self.protocol.recv(self.ctrl), self.protocol.Rebound)
        old_producer.close()
        old_consumer.close()

    def close(self) -> None:
        from schooner.ipc.shm import list_segments

        proc = self.proc
        if proc.ingest is not None:
            proc.ingest.detach()
        proc.inputs.close()
        proc.outputs.close()
        self.producer.close()
        self.consumer.close()
        for seg in self.segments:
            seg.close()
            seg.unlink()
        proc.ctrl.close()
        self.ctrl.close()
        self.bell.close()
        self.sched_bell.close()
        left = [s for s in list_segments() if self.instance in s]
        assert not left, f"segments left behind: {left}"
