"""HTTP/1.1 for the load generator: pre-encoded requests and a minimal response parser (sans-IO).

Owns the bytes on the wire. Requests are encoded once, before the run, so sending one is a
single ``transport.write`` of a ready buffer. Responses are parsed only as far as the report
needs: the status code, the body length (``Content-Length``, or chunked transfer encoding), and
whether the body says ``"default":true`` (a Clipper-style default answer: the server gave up on
the SLO). One request is outstanding per connection (no pipelining), so a connection's buffer
holds at most one response.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MARKERS = (b'"default":true', b'"default": true')
_CRLF2 = b"\r\n\r\n"


def encode_post(
    host: str, port: int, path: str, body: bytes, content_type: str = "application/json"
) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    consumed: int  # bytes of the buffer this response used
    status: int
    is_default: bool
    keep_alive: bool


class BadResponse(ValueError):
    """The bytes are not an HTTP/1.x response this parser understands."""


def _header_value(head_lower: bytes, name: bytes) -> bytes | None:
    at = head_lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    end = head_lower.find(b"\r\n", start)
    return head_lower[start : end if end >= 0 else len(head_lower)].strip()


def _chunked_end(buf: bytes, body_start: int) -> tuple[int, bytes] | None:
    """(index just past the last chunk's trailer, the payload), or None while incomplete."""
    pos = body_start
    payload = []
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        try:
            size = int(buf[pos:line_end].split(b";", 1)[0], 16)
        except ValueError as exc:
            raise BadResponse(f"bad chunk size line {buf[pos:line_end][:40]!r}") from exc
        if size == 0:
            end = buf.find(_CRLF2, line_end)
            return None if end < 0 else (end + 4, b"".join(payload))
        payload.append(buf[line_end + 2 : line_end + 2 + size])
        pos = line_end + 2 + size + 2
        if pos > len(buf):
            return None


def parse_response(buf: bytes) -> ParsedResponse | None:
    """The first complete response in ``buf``, or None while it is incomplete."""
    head_end = buf.find(_CRLF2)
    if head_end < 0:
        if len(buf) > 65536:
            raise BadResponse("no end of headers within 64 KiB")
        return None
    if not buf.startswith(b"HTTP/1."):
        raise BadResponse(f"not an HTTP/1.x status line: {buf[:40]!r}")
    try:
        status = int(buf[9:12])
    except ValueError as exc:
        raise BadResponse(f"bad status line {buf[:40]!r}") from exc
    head = buf[:head_end].lower()
    body_start = head_end + 4
    length = _header_value(head, b"content-length")
    if length is not None:
        end = body_start + int(length)
        if len(buf) < end:
            return None
        body = buf[body_start:end]
    elif _header_value(head, b"transfer-encoding") == b"chunked":
        found = _chunked_end(buf, body_start)
        if found is None:
            return None
        end, body = found
    elif status in (204, 304) or 100 <= status < 200:
        end, body = body_start, b""
    else:
        raise BadResponse("response without Content-Length or chunked encoding")
    is_default = any(m in body for m in DEFAULT_MARKERS)
    keep_alive = _header_value(head, b"connection") != b"close"
    return ParsedResponse(end, status, is_default, keep_alive)
