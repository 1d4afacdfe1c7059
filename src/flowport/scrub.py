"""What counts as a secret, and JSON values with secrets replaced by ``******``.

Shared by the control plane (deployment variables shown scrubbed) and the gateway (recorded
answers of mirrored traffic): one rule for both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

SCRUBBED = "******"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|CONNECTION_STRING", re.IGNORECASE)
"""A variable named so holds a secret."""
_SECRET_FIELD = re.compile(SECRET_NAME.pattern + "|AUTHORIZATION", re.IGNORECASE)
MIN_MASKED = 4
"""Shorter secret values are not masked inside text: replacing every ``on`` would garble it."""


def scrub_json(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` with every secret value masked in its strings (in any letter case), and the text
    of fields named like secrets (``api_key``, ``Authorization``...) scrubbed; numbers stay
    (``total_tokens: 12``)."""
    parts = sorted({s for s in secrets if len(s) >= MIN_MASKED}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(p) for p in parts), re.IGNORECASE) if parts else None
    return _scrub(value, pattern)


def _scrub(value: Any, pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, dict):
        return {
            k: SCRUBBED if isinstance(v, str) and v and _SECRET_FIELD.search(str(k)) else _scrub(v, pattern)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v, pattern) for v in value]
    if isinstance(value, str) and pattern is not None:
        return pattern.sub(SCRUBBED, value)
    return value
