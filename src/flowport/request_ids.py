"""Request ids, shared by the gateway and the instances: both answer with them."""

from __future__ import annotations

import random
import re
import uuid

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def new_request_id() -> str:
    """A random version-4 UUID (an id, not a secret: no system call per request)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def client_request_id(value: str | None) -> str | None:
    """``x-ms-client-request-id`` as Azure echoes it: 1-40 letters, digits, '-' or '_'; else None."""
    if value and _CLIENT_REQUEST_ID.fullmatch(value):
        return value
    return None
