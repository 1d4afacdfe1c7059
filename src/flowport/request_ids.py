"""Request ids, shared by the gateway and the instances: both answer with them.

A caller's ids are echoed (and forwarded) only when they are short, plain ASCII: anything
else is replaced (``x-request-id``) or dropped (``x-ms-client-request-id``), so no caller
can put long or control characters into answers, logs or other services' headers.
"""

from __future__ import annotations

import random
import re

MAX_REQUEST_ID_LENGTH = 128
_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")
"""Visible ASCII: letters, digits and punctuation; no spaces or control characters."""
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


_KEEP = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (4 << 76)
"""The version (4) and variant (RFC 4122) bits of a UUID, as ``uuid.UUID(version=4)`` sets them."""


def new_request_id() -> str:
    """A random version-4 UUID (an id, not a secret: no system call per request).

    Formatted here: building a ``uuid.UUID`` and its ``str`` cost several times more.
    """
    h = "%032x" % (random.getrandbits(128) & _KEEP | _SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def request_id(value: str | None) -> str:
    """The caller's ``x-request-id`` when it is 1-128 visible ASCII characters, else a fresh id."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def client_request_id(value: str | None) -> str | None:
    """``x-ms-client-request-id`` as Azure echoes it: 1-40 letters, digits, '-' or '_'; else None."""
    if value and _CLIENT_REQUEST_ID.fullmatch(value):
        return value
    return None
