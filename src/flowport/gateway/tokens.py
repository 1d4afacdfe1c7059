"""Expiring bearer tokens for ``auth_mode: aml_token`` endpoints: HS256 JWTs.

The control plane issues them (``get-credentials``); the gateway verifies them with the same
secret and no store access: the signature, the audience (the endpoint's name), the endpoint's
incarnation (a random id created with it, so a deleted and re-created endpoint of the same
name refuses the old tokens) and expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

ISSUER = "flowport"
INCARNATION = "flowport_endpoint_id"
"""The claim naming the endpoint's incarnation."""
DEFAULT_TTL_SECONDS = 3600


def signing_key(secret: bytes) -> bytes:
    """A key for tokens only, derived from the store's secret key."""
    return hmac.new(secret, b"flowport endpoint tokens", hashlib.sha256).digest()


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_at: int
    refresh_after: int

    def as_credentials(self) -> dict[str, str]:
        """The shape ``az ml online-endpoint get-credentials`` prints for token endpoints."""
        return {
            "accessToken": self.access_token,
            "tokenType": "Bearer",
            "expiryTimeUtc": _iso(self.expires_at),
            "refreshAfterTimeUtc": _iso(self.refresh_after),
        }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenSigner:
    def __init__(self, key: bytes, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.key = key
        self.ttl_seconds = ttl_seconds

    def issue(self, endpoint: str, incarnation: str = "", now: float | None = None) -> IssuedToken:
        issued = int(time.time() if now is None else now)
        expires = issued + self.ttl_seconds
        claims = {"iss": ISSUER, "aud": endpoint, INCARNATION: incarnation, "iat": issued, "exp": expires}
        token = jwt.encode(claims, self.key, algorithm="HS256")
        return IssuedToken(token, expires, issued + self.ttl_seconds // 2)

    def verify(self, token: str, endpoint: str, incarnation: str = "") -> bool:
        """True when the token was signed here, for this incarnation of the endpoint, and has not expired."""
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=endpoint, issuer=ISSUER)
        except jwt.PyJWTError:
            return False
        presented = claims.get(INCARNATION)
        return isinstance(presented, str) and hmac.compare_digest(presented, incarnation)
