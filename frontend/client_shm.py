"""Client system shared memory (Triton's `system_shared_memory` extension) for one frontend.

Clients register a region -- a byte range of a POSIX shared-memory object they created -- and
name it in tensors: inputs are read from it and outputs written into it, so tensor bytes never
cross the socket. This is a trust boundary, so it is off unless the server runs with
``--allow-client-shm``, and even then:

* the key must be a plain POSIX shm name (``/name``, not ``/.`` or ``/..``), opened without
  following a symbolic link, and name a regular file; it must not be one of Schooner's own
  segments, compared by inode (a hard link to a server segment is refused too);
* the region (offset, byte_size) must lie inside the object, checked against its real size;
* the object is never mapped: the owner may shrink it at any time, and touching a mapping
  past its new end would kill this process with SIGBUS. Inputs are read and outputs written
  through the file descriptor (`pread`/`pwrite`), the object's size checked at each use;
* names are bounded and the shared table must fit its board: a register that would overflow
  it is refused with 400, never cut short.

Registrations are shared by every frontend process through a small shared-memory board (JSON,
guarded by `flock`, which the kernel releases if a holder dies); each frontend opens an object
lazily the first time a request names its region and re-reads the board when it changed.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat

import orjson

from schooner.ipc.board import Board
from schooner.ipc.shm import PREFIX, SHM_DIR, Segment

_KEY = re.compile(r"^/(?!\.{1,2}$)[A-Za-z0-9_.-]{1,200}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class ShmError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _open(key: str) -> int:
    """A descriptor of the object named `key`; ShmError(400) naming why not."""
    try:
        fd = os.open(SHM_DIR + key, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ShmError(400, f"no shared memory object named {key!r}") from None
    except PermissionError:
        raise ShmError(400, f"no permission to open shared memory object {key!r}") from None
    except OSError as e:  # a symbolic link (ELOOP), a directory (EISDIR), ...
        raise ShmError(400, f"{key!r} is not a shared memory object this server may open ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ShmError(400, f"{key!r} is not a shared memory object")
    return fd


def _own_inodes() -> set[tuple[int, int]]:
    """(device, inode) of every Schooner segment on this machine."""
    out = set()
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return out
    for n in names:
        if n.startswith(PREFIX):
            try:
                st = os.stat(os.path.join(SHM_DIR, n), follow_symlinks=False)
            except OSError:
                continue
            out.add((st.st_dev, st.st_ino))
    return out


class _Open:
    __slots__ = ("key", "offset", "byte_size", "fd")

    def __init__(self, key: str, offset: int, byte_size: int, fd: int) -> None:
        self.key, self.offset, self.byte_size, self.fd = key, offset, byte_size, fd


class ClientShmRegistry:
    def __init__(self, board_name: str) -> None:
        self.board_path = SHM_DIR + board_name
        self.board = Board(Segment.attach(board_name).buf)
        self._seen = b""
        self._regions: dict[str, dict] = {}
        self._open: dict[str, _Open] = {}

    # -- the shared table -------------------------------------------------------------------

    def _refresh(self) -> None:
        raw = self.board.read()
        if raw == self._seen:
            return
        self._seen = raw
        self._regions = orjson.loads(raw) if raw else {}
        for name in list(self._open):
            r = self._regions.get(name)
            o = self._open[name]
            if r is None or (r["key"], r["offset"], r["byte_size"]) != (o.key, o.offset, o.byte_size):
                self._close(name)

    def _update(self, change) -> None:
        fd = os.open(self.board_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = self.board.read()
            table = orjson.loads(raw) if raw else {}
            change(table)
            text = orjson.dumps(table)
            if len(text) > self.board.capacity:
                raise ShmError(400, f"the registry is full ({len(table) - 1} regions registered); unregister some first")
            self.board.publish(text)
        finally:
            os.close(fd)  # releases the lock
        self._refresh()

    def _close(self, name: str) -> None:
        o = self._open.pop(name, None)
        if o is not None:
            os.close(o.fd)

    # -- requests ---------------------------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not _NAME.match(name):
            raise ShmError(400, f"region name {name[:64]!r} must be 1-128 letters, digits, '_', '.' or '-'")
        if not isinstance(key, str) or not _KEY.match(key) or key[1:].startswith(PREFIX):
            raise ShmError(400, f"key {str(key)[:64]!r} must be a POSIX shared memory name like '/my_region' (not one of the server's own)")
        if not isinstance(offset, int) or isinstance(offset, bool) or not isinstance(byte_size, int) \
                or isinstance(byte_size, bool) or offset < 0 or byte_size <= 0:
            raise ShmError(400, "offset must be an integer >= 0 and byte_size an integer > 0")
        fd = _open(key)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if (st.st_dev, st.st_ino) in _own_inodes():
            raise ShmError(400, f"key {key!r} is one of the server's own segments")
        if offset + byte_size > st.st_size:
            raise ShmError(400, f"region [{offset}, {offset + byte_size}) does not lie inside {key!r} of {st.st_size} bytes")
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

    def _bounds(self, name, offset, byte_size) -> tuple[int, int]:
        """(fd, absolute offset) of [offset, offset + byte_size) of a registered region,
        checked against the region and against the object's size now."""
        if not isinstance(name, str):
            raise ShmError(400, f"shared_memory_region must be a string, got {name!r}")
        self._refresh()
        r = self._regions.get(name)
        if r is None:
            raise ShmError(400, f"no shared memory region named '{name[:128]}' is registered")
        if not isinstance(offset, int) or isinstance(offset, bool) or not isinstance(byte_size, int) \
                or offset < 0 or byte_size < 0 or offset + byte_size > r["byte_size"]:
            raise ShmError(400, f"[{offset}, {offset}+{byte_size}) is outside region '{name}' of {r['byte_size']} bytes")
        o = self._open.get(name)
        if o is None:
            try:
                fd = _open(r["key"])
            except ShmError as e:
                raise ShmError(400, f"region '{name}': {e.message}") from None
            o = self._open[name] = _Open(r["key"], r["offset"], r["byte_size"], fd)
        start = o.offset + offset
        size = os.fstat(o.fd).st_size
        if start + byte_size > size:
            raise ShmError(400, f"the object {o.key!r} of region '{name}' shrank to {size} bytes, below the bytes asked for")
        return o.fd, start

    def check(self, name, offset, byte_size) -> None:
        """Raise ShmError unless the range can be read or written now."""
        self._bounds(name, offset, byte_size)

    def read(self, name, offset, byte_size) -> bytes:
        """A copy of [offset, offset + byte_size) of a registered region."""
        fd, start = self._bounds(name, offset, byte_size)
        data = os.pread(fd, byte_size, start)
        if len(data) != byte_size:  # it shrank between the check and the read
            raise ShmError(400, f"the object of region '{name}' shrank while it was read")
        return data

    def write(self, name, offset, data: bytes) -> None:
        """Write `data` at `offset` of a registered region."""
        fd, start = self._bounds(name, offset, len(data))
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, start)
            view = view[n:]
            start += n
