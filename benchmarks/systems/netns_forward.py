"""A TCP port forward from this namespace's loopback into another network namespace's loopback.

Owns one forwarding process. It listens on ``127.0.0.1:<listen port>`` of the network namespace
it was started in, then moves itself into the target namespace (``setns`` on
``/proc/<pid>/ns/net``); every connection it accepts is relayed, byte for byte, to
``127.0.0.1:<target port>`` there. The listening socket stays in the namespace it was created
in, every upstream socket is created in the target one: that is how one process bridges two
loopbacks without any other interface.

Used by ``benchmarks.systems.peers`` so that a server confined to its own loopback-only
namespace (Ray Serve) still has a base URL that any client on the host's loopback can use (the
readiness poll, the contract check, an open-loop load generator). The relay is one more hop:
benchmarks that can enter the namespace (wrk under ``nsenter``) bypass it.

Run: ``python -m benchmarks.systems.netns_forward --netns /proc/PID/ns/net --target-port P
--listen-port Q``; prints ``ready`` once listening; SIGTERM or SIGINT stops it. Needs
CAP_SYS_ADMIN (root), as ``setns`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import sys

LOOPBACK = "127.0.0.1"
CLONE_NEWNET = 0x40000000
RELAY_CHUNK_BYTES = 65536


def enter_netns(path: str) -> None:
    """Moves the calling thread (the only one: call before any other starts) into ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass


def nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve(listen_port: int, netns: str, target_port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, listen_port))
    listener.listen(1024)
    # After the bind: the listener stays here, every later socket is created over there.
    enter_netns(netns)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(LOOPBACK, target_port)
        except OSError:
            client_w.close()
            return
        nodelay(client_w)
        nodelay(upstream_w)
        # Either side closing ends both: HTTP/1.1 keep-alive needs no half-close.
        done, pending = await asyncio.wait(
            [
                asyncio.ensure_future(pump(client_r, upstream_w)),
                asyncio.ensure_future(pump(upstream_r, client_w)),
            ],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
        for writer in (upstream_w, client_w):
            writer.close()

    server = await asyncio.start_server(relay, sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.netns_forward", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--netns", required=True, help="e.g. /proc/PID/ns/net")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--listen-port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen_port, args.netns, args.target_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
