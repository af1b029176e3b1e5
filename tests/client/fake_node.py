"""A stand-in for a phalanx node that answers a client exactly as a test scripts it.

`FakeNode` listens on 127.0.0.1, speaks the real wire format (`phalanx.transport.wire`)
and hands each request to `answer`, which returns the reply to send (or None to send
nothing, or `CLOSE` to drop the connection). It records when each request arrived, so a
test can count attempts and measure the gaps between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phalanx.transport.wire import (
    ClientReply,
    FrameError,
    FrameReader,
    Hello,
    OpenSessionRequest,
    Refused,
    ReplyStatus,
    Welcome,
    WireMessage,
    decode_message,
    encode_frame,
)

HOST = "127.0.0.1"
#: Returned by an `answer` function: close the connection instead of replying.
CLOSE = object()

Answer = Callable[[WireMessage], Any]


@dataclass
class Arrival:
    at_s: float
    connection: int
    message: WireMessage


@dataclass
class FakeNode:
    answer: Answer
    #: When set, every Hello is answered `Refused(refusal)` (and the connection closed).
    refusal: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    connections: int = 0
    address: str = ""
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> FakeNode:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.address = f"{HOST}:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Closing each connection ends its handler (its read sees the end), which
        # asyncio.run would otherwise cancel, noisily, on the way out.
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers)

    def requests(self, kind: type) -> list[Arrival]:
        return [arrival for arrival in self.arrivals if isinstance(arrival.message, kind)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        self.connections += 1
        connection = self.connections
        frames = FrameReader()
        try:
            while data := await reader.read(65536):
                for payload in frames.feed(data):
                    reply = self._reply_to(connection, decode_message(payload))
                    if reply is CLOSE:
                        return
                    if reply is not None:
                        writer.write(encode_frame(reply))
                    if isinstance(reply, Refused):
                        return  # as a node does: refuse, then close
        except (FrameError, ConnectionError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(handler)

    def _reply_to(self, connection: int, message: WireMessage) -> Any:
        if isinstance(message, Hello):
            return Refused(self.refusal) if self.refusal else Welcome(1)
        self.arrivals.append(Arrival(time.monotonic(), connection, message))
        return self.answer(message)


def sessions_then(answer: Answer, session_id: int = 7) -> Answer:
    """Opens every session at once as `session_id`, and answers the rest with `answer`."""

    def reply(message: WireMessage) -> Any:
        if isinstance(message, OpenSessionRequest):
            return ClientReply(message.request_id, ReplyStatus.OK, session_id=session_id)
        return answer(message)

    return reply


def always(status: ReplyStatus, **fields: Any) -> Answer:
    """Answers every request with one status (and the given `ClientReply` fields)."""

    def reply(message: WireMessage) -> Any:
        return ClientReply(message.request_id, status, **fields)  # type: ignore[union-attr]

    return reply
