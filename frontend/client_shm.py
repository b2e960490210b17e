"""Client system shared memory (Triton's `system_shared_memory` extension) for one frontend.

Clients register a region -- a byte range of a POSIX shared-memory object they created -- and
name it in tensors: inputs are read from it and outputs written into it, so tensor bytes never
cross the socket. This is a trust boundary, so it is off unless the server runs with
``--allow-client-shm``, and even then:

* the key must be a plain POSIX shm name (``/name``) and never one of Schooner's own segments;
* the region (offset, byte_size) must lie inside the object, checked against its real size;
* a tensor's region slice must hold exactly the tensor's bytes (checked by the routes).

Registrations are shared by every frontend process through a small shared-memory board (JSON,
guarded by `flock`, which the kernel releases if a holder dies); each frontend maps an object
lazily the first time a request names its region and re-reads the board when it changed.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re

import orjson
import posix_ipc

from schooner.ipc.board import Board
from schooner.ipc.shm import PREFIX, SHM_DIR

_KEY = re.compile(r"^/[A-Za-z0-9_.-]{1,200}$")


class ShmError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Mapped:
    __slots__ = ("key", "offset", "byte_size", "map")

    def __init__(self, key: str, offset: int, byte_size: int, m: mmap.mmap) -> None:
        self.key, self.offset, self.byte_size, self.map = key, offset, byte_size, m


class ClientShmRegistry:
    def __init__(self, board_name: str) -> None:
        self.board_path = SHM_DIR + board_name
        from schooner.ipc.shm import Segment

        self.board = Board(Segment.attach(board_name).buf)
        self._seen = b""
        self._regions: dict[str, dict] = {}
        self._maps: dict[str, _Mapped] = {}

    # -- the shared table -------------------------------------------------------------------

    def _refresh(self) -> None:
        raw = self.board.read()
        if raw == self._seen:
            return
        self._seen = raw
        self._regions = orjson.loads(raw) if raw else {}
        for name in list(self._maps):
            r = self._regions.get(name)
            m = self._maps[name]
            if r is None or (r["key"], r["offset"], r["byte_size"]) != (m.key, m.offset, m.byte_size):
                self._drop(name)

    def _update(self, change) -> None:
        fd = os.open(self.board_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = self.board.read()
            table = orjson.loads(raw) if raw else {}
            change(table)
            self.board.publish(orjson.dumps(table))
        finally:
            os.close(fd)  # releases the lock
        self._refresh()

    def _drop(self, name: str) -> None:
        m = self._maps.pop(name, None)
        if m is not None:
            try:
                m.map.close()
            except BufferError:  # a request still reads it; the mapping goes with its last view
                pass

    # -- requests ---------------------------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not _KEY.match(key) or key[1:].startswith(PREFIX):
            raise ShmError(400, f"key {key!r} must be a POSIX shared memory name like '/my_region' (not one of the server's own)")
        if not isinstance(offset, int) or not isinstance(byte_size, int) or offset < 0 or byte_size <= 0:
            raise ShmError(400, "offset must be an integer >= 0 and byte_size an integer > 0")
        try:
            shm = posix_ipc.SharedMemory(key)
        except posix_ipc.ExistentialError:
            raise ShmError(400, f"no shared memory object named {key!r}") from None
        except posix_ipc.PermissionsError:
            raise ShmError(400, f"no permission to open shared memory object {key!r}") from None
        try:
            size = os.fstat(shm.fd).st_size
        finally:
            shm.close_fd()
        if offset + byte_size > size:
            raise ShmError(400, f"region [{offset}, {offset + byte_size}) does not lie inside {key!r} of {size} bytes")
        self._refresh()
        if name in self._regions:
            raise ShmError(400, f"a region named '{name}' is already registered")
        self._update(lambda t: t.__setitem__(name, {"key": key, "offset": offset, "byte_size": byte_size}))

    def unregister(self, name: str | None) -> None:
        def change(table):
            if name is None:
                table.clear()
            else:
                table.pop(name, None)

        self._update(change)

    def status(self, name: str | None) -> list[dict]:
        self._refresh()
        if name is not None:
            if name not in self._regions:
                raise ShmError(404, f"no region named '{name}' is registered")
            return [{"name": name, **self._regions[name]}]
        return [{"name": n, **r} for n, r in self._regions.items()]

    def view(self, name: str, offset: int, byte_size: int) -> memoryview:
        """The bytes [offset, offset + byte_size) of a registered region, writable, no copy."""
        self._refresh()
        r = self._regions.get(name)
        if r is None:
            raise ShmError(400, f"no shared memory region named '{name}' is registered")
        if not isinstance(offset, int) or offset < 0 or offset + byte_size > r["byte_size"]:
            raise ShmError(400, f"[{offset}, {offset + byte_size}) is outside region '{name}' of {r['byte_size']} bytes")
        m = self._maps.get(name)
        if m is None:
            try:
                shm = posix_ipc.SharedMemory(r["key"])
            except posix_ipc.ExistentialError:
                raise ShmError(400, f"the object {r['key']!r} of region '{name}' no longer exists") from None
            try:
                size = os.fstat(shm.fd).st_size
                if r["offset"] + r["byte_size"] > size:
                    raise ShmError(400, f"the object {r['key']!r} shrank below region '{name}'")
                mm = mmap.mmap(shm.fd, size)
            finally:
                shm.close_fd()
            m = self._maps[name] = _Mapped(r["key"], r["offset"], r["byte_size"], mm)
        start = m.offset + offset
        return memoryview(m.map)[start : start + byte_size]
