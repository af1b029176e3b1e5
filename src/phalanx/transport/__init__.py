"""Framing and asyncio TCP for nodes and clients."""

from phalanx.transport.tcp import Connection, NodeTransport
from phalanx.transport.wire import FrameError, FrameReader, encode_frame

__all__ = ["Connection", "FrameError", "FrameReader", "NodeTransport", "encode_frame"]
