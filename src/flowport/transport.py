"""A lean HTTP/1.1 client for one origin, with pooled keep-alive connections.

The gateway reaches instances with it, and the llm tool reaches model APIs. httpx's client
and default transport spent about 2 ms of CPU per request on the gateway's path (its pool
rescans every connection for each request, URLs and headers are parsed again, a request goes
out in several writes, anyio cancel scopes wrap every step) and two thirds of a chat
instance's CPU on LLM calls. This transport keeps idle connections in a LIFO list, writes a
request in one call and parses answers with httptools (the C parser uvicorn uses). A
connection the server closes leaves the list as soon as the event loop sees it go.

``request()`` is the interface: raw header pairs in, an ``UpstreamResponse`` out (its header
names in lower case). Addresses
are ``unix:/path.sock``, ``http://host[:port]`` or ``https://host[:port]`` (TLS with the
given ``ssl.SSLContext``, else the default one). No proxies, no redirects, no compression.
Failures raise the ``TransportError`` family below, named after httpx's: ``ConnectError`` and
``ConnectTimeout``; ``RemoteProtocolError`` when the server closes before any response byte;
``ReadError`` when it breaks off an answer; ``ReadTimeout`` and ``WriteTimeout``. The module
does not import httpx: serving processes that load it stay small (httpx pulls in rich, click
and pygments for its command line).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import httptools

IDLE_SECONDS = 4.0
"""Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them from the other end."""
MAX_IDLE = 256
HIGH_WATER = 256 * 1024
"""Bytes of an answer buffered before reading from the server pauses."""


class TransportError(Exception):
    """The exchange with the server failed."""


class NetworkError(TransportError):
    """The connection could not be made or broke."""


class ConnectError(NetworkError):
    """No connection: refused, unresolvable host, TLS handshake failed, unreachable network.

    ``reason`` says which, in a few words (``connection refused``, ``cannot resolve host 'x'``).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class ReadError(NetworkError):
    pass


class RemoteProtocolError(TransportError):
    """The server broke HTTP: a malformed answer, or the connection closed before any byte."""


class StaleConnection(RemoteProtocolError):
    """A kept-alive connection closed before any byte of the answer: the server most likely
    dropped it while idle, just as it was reused, and never saw the request."""


class LocalProtocolError(TransportError):
    """The request cannot be sent as given (a header with a line break)."""


class TimeoutException(TransportError):
    pass


class ConnectTimeout(TimeoutException):
    pass


class ReadTimeout(TimeoutException):
    pass


class WriteTimeout(TimeoutException):
    pass


_SET_HERE = frozenset({b"host", b"content-length", b"transfer-encoding"})


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer, hands over body chunks."""

    def __init__(self, transport_owner: HTTP11Transport) -> None:
        self.owner = transport_owner
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.loop = asyncio.get_running_loop()
        """Kept: ``get_running_loop()`` costs a system call (a fork check) each time."""
        self.parser = httptools.HttpResponseParser(self)
        """One per connection: after a whole keep-alive answer it is ready for the next."""
        self._reset()
        self._write_ready: asyncio.Future[None] | None = None

    def _reset(self) -> None:
        self.head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = self.loop.create_future()
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"the server sent a malformed answer: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.forget(self)
        if not self.head.done():
            if self.received_any:
                self._fail(ReadError("the server closed the connection in the middle of its answer"))
            else:
                self._fail(RemoteProtocolError("the server closed the connection before answering"))
        elif not self.complete:
            self._fail(ReadError("the server closed the connection in the middle of its answer"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks ------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))  # lower case once, as the callers compare

    def on_headers_complete(self) -> None:
        if not self.head.done():
            self.head.set_result((self.parser.get_status_code(), self.headers))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- used by the transport ----------------------------------------------------

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: nobody may be waiting any more
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def send(self, data: bytes, write_timeout: float | None) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self._write_ready is not None:
            await self.drain(write_timeout)

    async def drain(self, write_timeout: float | None) -> None:
        """Wait until the transport takes more (it paused writing: its buffer is full)."""
        if self._write_ready is None:
            return
        try:
            async with asyncio.timeout(write_timeout):
                await self._write_ready
        except TimeoutError:
            self._close()
            raise WriteTimeout("the server did not take the request in time") from None

    async def read_head(self, read_timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        if read_timeout is None:
            return await self.head
        # A bare timer: asyncio.timeout() costs several times more on every request.
        timer = self.loop.call_later(read_timeout, self._head_timed_out)
        try:
            return await self.head
        finally:
            timer.cancel()

    def _head_timed_out(self) -> None:
        if not self.head.done():
            self._fail(ReadTimeout("the server did not answer in time"))
            self._close()

    async def body(self, read_timeout: float | None) -> AsyncIterator[bytes]:
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered <= HIGH_WATER // 4 and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(read_timeout):
                    await self.waiter
            except TimeoutError:
                self._close()
                raise ReadTimeout("the server stopped sending its answer") from None
            finally:
                self.waiter = None

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed


Headers = list[tuple[bytes, bytes]]


class UpstreamResponse:
    """A server's answer, headers read; the body is read with ``aiter_raw`` or ``aread``.

    ``aclose()`` must follow in all cases: it gives the connection back to the pool when the
    body was read to the end, and closes it otherwise.
    """

    __slots__ = ("_connection", "_done", "_owner", "_read_timeout", "headers", "status_code")

    def __init__(
        self,
        status: int,
        headers: Headers,
        connection: _Connection,
        owner: HTTP11Transport,
        read_timeout: float | None,
    ) -> None:
        self.status_code = status
        self.headers = headers
        self._connection = connection
        self._owner = owner
        self._read_timeout = read_timeout
        self._done = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case, as ``headers`` holds them)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._connection.body(self._read_timeout)

    def arrived(self) -> bytes | None:
        """The rest of the body when all of it has already arrived (taking it), else None.

        A small answer is relayed so, with no iteration; when this is None, read with ``aiter_raw``.
        """
        connection = self._connection
        if not connection.complete or connection.paused:
            return None
        chunks = connection.chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        connection.buffered = 0
        return body

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aiter_lines(self) -> AsyncIterator[bytes]:
        """The body split at line ends (``\n``, ``\r\n`` or ``\r``), without them."""
        pending = b""
        async for chunk in self.aiter_raw():
            lines = (pending + chunk).splitlines(keepends=True)
            # the last piece waits for more unless it ends in \n (a \r may be half of a \r\n)
            pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
            for line in lines:
                yield line.rstrip(b"\r\n")
        if pending:
            yield pending.rstrip(b"\r\n")

    def close(self) -> None:
        """Give the connection back (body read to the end) or close it; never waits."""
        if not self._done:
            self._done = True
            self._owner.release(self._connection)

    async def aclose(self) -> None:
        self.close()


class HTTP11Transport:
    """Keep-alive HTTP/1.1 to one address: ``unix:/path.sock``, ``http://host[:port]`` or ``https://...``."""

    def __init__(
        self,
        address: str,
        max_idle: int = MAX_IDLE,
        idle_seconds: float = IDLE_SECONDS,
        tls: ssl.SSLContext | None = None,
        fixed_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """``fixed_headers``: sent with every request (an instance's access key)."""
        self.address = address
        self.tls: ssl.SSLContext | None = None
        if address.startswith("unix:"):
            self.path: str | None = address.removeprefix("unix:")
            self.host, self.port = "", 0
            self.authority = b"localhost"
        else:
            url = urlsplit(address)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"not an http(s) address: {address!r}")
            self.path = None
            self.host = url.hostname
            default_port = 443 if url.scheme == "https" else 80
            self.port = url.port or default_port
            if url.scheme == "https":
                self.tls = tls or ssl.create_default_context()
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.authority = (host if self.port == default_port else f"{host}:{self.port}").encode("idna")
        if any(c in name + value for name, value in fixed_headers for c in (b"\r", b"\n")):
            raise ValueError("a fixed header holds a line break")
        self._host_line = self.authority + b"".join(b"\r\n" + n + b": " + v for n, v in fixed_headers)
        """The ``host`` header's value and the fixed headers' lines after it."""
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    async def request(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        *,
        fresh: bool = False,
    ) -> UpstreamResponse:
        """Send one request (``target``: path and query) and wait for the answer's headers.

        ``timeout`` bounds writing the request, the wait for the answer and then each read of
        its body. A ``host`` header is added; ``content-length`` is computed. ``fresh``: on a
        new connection, not a kept-alive one.
        """
        if self._closed:
            raise ConnectError(f"the transport to {self.address} is closed")
        data = self._encode(method, target, headers, body)
        connection = None if fresh else self._take_idle()
        reused = connection is not None
        if connection is None:
            connection = await self._connect(connect_timeout)
        else:
            connection._reset()
        try:
            assert connection.transport is not None
            connection.transport.write(data)  # not through send(): one coroutine less per request
            if connection._write_ready is not None:
                await connection.drain(timeout)
            status, returned = await connection.read_head(timeout)
        except RemoteProtocolError as exc:
            connection._close()
            self.forget(connection)
            if reused and not connection.received_any:
                raise StaleConnection(str(exc)) from exc
            raise
        except BaseException:
            connection._close()
            self.forget(connection)
            raise
        return UpstreamResponse(status, returned, connection, self, timeout)

    def _encode(self, method: str, target: bytes, headers: Headers, body: bytes | None) -> bytes:
        lines = [name + b": " + value for name, value in headers if name.lower() not in _SET_HERE]
        if body or method not in ("GET", "HEAD"):
            lines.append(b"content-length: " + str(len(body or b"")).encode())
        block = b"\r\n".join(lines)
        # One count of each over the whole block: a line break inside a name or value adds one.
        breaks = len(lines) - 1 if lines else 0
        if block.count(b"\n") != breaks or block.count(b"\r") != breaks:
            bad = next(n for n, v in headers if any(c in n + v for c in (b"\r", b"\n")))
            raise LocalProtocolError(f"header {bad!r} holds a line break")
        head = b" ".join((method.encode("ascii"), target, b"HTTP/1.1\r\nhost:", self._host_line))
        if lines:
            return b"".join((head, b"\r\n", block, b"\r\n\r\n", body or b""))
        return b"".join((head, b"\r\n\r\n", body or b""))

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if now - connection.idle_since > self.idle_seconds:
                connection._close()
                self._open.discard(connection)
                continue
            return connection
        return None

    async def _connect(self, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                if self.path is not None:
                    _, connection = await loop.create_unix_connection(lambda: _Connection(self), self.path)
                else:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self),
                        self.host,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.host if self.tls is not None else None,
                    )
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {self.address} timed out") from None
        except OSError as exc:
            reason = self._connect_failure(exc)
            raise ConnectError(f"cannot connect to {self.address}: {reason}", reason) from None
        self._open.add(connection)
        return connection

    def _connect_failure(self, exc: OSError) -> str:
        """What went wrong while connecting, in a few words."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed: {exc.reason or exc}"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host {self.host!r} ({exc.strerror or exc})"
        # asyncio reports several addresses that all failed (::1 and 127.0.0.1) as one OSError
        if isinstance(exc, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in str(exc):
            return "connection refused"
        return exc.strerror or str(exc)

    def release(self, connection: _Connection) -> None:
        """An answer is over: keep its connection for the next request, or close it."""
        if connection.reusable() and not self._closed and len(self._idle) < self.max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection._close()
            self.forget(connection)

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection._close()
        self._open.clear()
        self._idle.clear()
