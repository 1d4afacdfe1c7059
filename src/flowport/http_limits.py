"""Bounded request heads, and answers in one write, for every server flowport runs with uvicorn.

uvicorn's httptools protocol reads a request's headers whole, however large. Here a request
line or header line over ``MAX_LINE_BYTES``, or a head (request line plus headers) over
``MAX_HEADER_BYTES``, is answered ``431 Request Header Fields Too Large`` and the connection
is closed before the rest arrives. ``flowport server``, ``flowport flow serve`` and the
instances pass ``uvicorn_options()`` to uvicorn.

uvicorn writes an answer's head as soon as the app starts it and its body with the next
message: two writes, two packets and two wake-ups of the reader for every small answer. Here
the head waits for the body's first bytes when they come in the same turn of the event loop
(a whole answer, the usual case), and goes alone at the end of that turn otherwise (a stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
"""The request line and all headers together (nginx and Node allow less, Apache about this much)."""
MAX_LINE_BYTES = 16 * 1024
"""One request line (method, path and query) or one header line."""


class HeadTooLarge(Exception):
    """Raised from a parser callback: the head broke a limit."""


def _refusal() -> tuple[bytes, bytes]:
    """The 431's status line and headers (without the blank line) and its JSON body."""
    message = (
        f"The request's headers are too large: at most {MAX_HEADER_BYTES} bytes in all and "
        f"{MAX_LINE_BYTES} bytes per line (the request line included). Send fewer or shorter headers."
    )
    body = orjson.dumps({"error": {"code": "RequestHeaderFieldsTooLarge", "message": message}})
    head = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n"
    )
    return head, body


class _HeadWithBody:
    """What one request's response cycle writes to: its first write (the head) is held until the
    next write, which carries it, or until the event loop's next turn, which sends it alone.

    Bytes leave in the order they were written, and all of them before a close.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._loop is not None:  # the first write of the cycle: its head (or a 100 Continue)
            self._held = data
            self._loop.call_soon(self.flush)
            self._loop = None
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that counts the bytes of each request's head.

    Chunks that end inside a head are counted as they arrive, so an endless header is cut off
    after at most one read past the limit; the head that completes within a chunk is counted
    line by line in the parser's callbacks (the rest of that chunk is body, not head).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        """Between the start of a request and the end of its headers (the parser holds a partial head)."""
        self._chunk_bytes = 0
        self._line_bytes = 0
        self._began_here = False
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # A listening socket handed to uvloop (``sockets=``) does not give its connections
        # TCP_NODELAY: the body, written after the head, would wait for the client's delayed
        # ACK (40 ms a request).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._began_here = False
        super().data_received(data)
        # A head still incomplete after this chunk: the parser buffers it, so it counts whole,
        # unless the head began inside the chunk (its start may be another request's body).
        if self._in_head and not self._refused and not self._began_here:
            self._chunk_bytes += len(data)
            if self._chunk_bytes > MAX_HEADER_BYTES:
                self._refuse()

    def on_message_begin(self) -> None:
        self._in_head = self._began_here = True
        self._chunk_bytes = self._line_bytes = 0
        super().on_message_begin()

    def _count(self, size: int) -> None:
        self._line_bytes += size
        if size > MAX_LINE_BYTES or self._line_bytes > MAX_HEADER_BYTES:
            self._refused = True
            raise HeadTooLarge

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))
        if len(self.url) > MAX_LINE_BYTES:
            self._refused = True
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        # _count inlined, and the parent called directly: this runs for every header line
        size = len(name) + len(value) + 4  # with ": " and CRLF
        self._line_bytes += size
        if size > MAX_LINE_BYTES or self._line_bytes > MAX_HEADER_BYTES:
            self._refused = True
            raise HeadTooLarge
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        # A new request's cycle (HEAD answers have no body to carry their head).
        if cycle is not None and cycle.transport is self.transport and self.scope["method"] != "HEAD":
            cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def _flush_held(self) -> None:
        """What the protocol writes itself goes after the head its cycle may hold."""
        held = self.cycle.transport if self.cycle is not None else None
        if isinstance(held, _HeadWithBody):
            held.flush()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = False

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: because a callback found a line too long, or the request was malformed."""
        self._flush_held()
        if self._refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        self._flush_held()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # else an answer is being written: just close
            head, body = _refusal()
            default = b"".join(
                name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
            )
            self.transport.write(head + default + b"\r\n" + body)
        self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that bound request heads."""
    return {"http": BoundedHttpToolsProtocol, "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
