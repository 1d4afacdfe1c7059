"""Raw-socket probes for what an HTTP client library would refuse to send."""

from __future__ import annotations

import socket
import threading

EIGHT_MB = 8 * 1024 * 1024


def send_head(host: str, port: int, head: bytes, timeout: float = 30) -> tuple[bytes, int]:
    """Send ``head`` (a request line and headers, maybe endless) while reading the answer.

    Returns everything the server sent until it closed the connection, and how many bytes of
    ``head`` went out before it did (a server that reads it all takes all of it).
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sent = 0

    def write() -> None:
        nonlocal sent
        view = memoryview(head)
        try:
            while sent < len(view):
                sent += sock.send(view[sent : sent + 65536])
        except OSError:  # the server closed: the rest is refused
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.join(timeout)
        sock.close()
    return bytes(received), sent


def big_header(path: bytes, size: int = EIGHT_MB) -> bytes:
    """A GET of ``path`` whose one header value is ``size`` bytes long."""
    return b"GET " + path + b" HTTP/1.1\r\nhost: probe\r\nx-big: " + b"a" * size + b"\r\n\r\n"


def many_headers(path: bytes, count: int, each: int) -> bytes:
    """A GET of ``path`` with ``count`` headers of ``each`` bytes; the connection closes after it."""
    lines = b"".join(b"x-h%d: %s\r\n" % (n, b"b" * each) for n in range(count))
    return b"GET " + path + b" HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n" + lines + b"\r\n"
