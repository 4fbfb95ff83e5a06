"""The exec protocol's frames: a 4-byte big-endian length, then a MessagePack map whose ``t``
says what it is. ``docs/PROTOCOL.md`` ("Steps in any language") is the reference."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO, Dict, Optional

import msgpack

PROTOCOL = 1
MAX_FRAME = 64 << 20

__all__ = ["PROTOCOL", "MAX_FRAME", "read_frame", "write_frame", "ProtocolError"]


class ProtocolError(Exception):
    """A frame that is not one of the protocol's."""


def write_frame(out: BinaryIO, frame: Dict[str, Any]) -> None:
    """Writes one frame and flushes it."""
    body = msgpack.packb(frame, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(body)} bytes is above the limit of {MAX_FRAME}")
    out.write(struct.pack(">I", len(body)) + body)
    out.flush()


def _read_exact(inp: BinaryIO, n: int) -> Optional[bytes]:
    chunks = []
    while n:
        chunk = inp.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(inp: BinaryIO) -> Optional[Dict[str, Any]]:
    """The next frame, or None when the pipe closed."""
    head = _read_exact(inp, 4)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame of {length} bytes is above the limit of {MAX_FRAME}")
    body = _read_exact(inp, length)
    if body is None:
        return None
    frame = msgpack.unpackb(body, raw=False)
    if not isinstance(frame, dict) or "t" not in frame:
        raise ProtocolError(f"not a frame: {frame!r}")
    return frame
