"""Who may call an endpoint: a key (``auth_mode: key``) or a signed token (``aml_token``).

``aad_token`` endpoints take flowport's own signed tokens too: there is no Microsoft Entra ID
here, so ``get-credentials`` issues the token, as it does for ``aml_token``.
"""

from __future__ import annotations

import hmac

from flowport.gateway.errors import Refusal, unauthorized
from flowport.gateway.routes import EndpointRoute, key_digest
from flowport.gateway.tokens import TokenSigner

TOKEN_MODES = ("aml_token", "aad_token")
"""Auth modes whose callers present a token that ``get-credentials`` issued."""


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, else None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


def key_matches(digests: tuple[bytes, ...], key: str) -> bool:
    """Compare against every digest in constant time, so timing tells nothing about which matched."""
    presented = key_digest(key)
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(digest, presented)
    return matched


def authorize(route: EndpointRoute, authorization: str | None, tokens: TokenSigner) -> Refusal | None:
    """None when the caller may use the endpoint, else the 401 to answer."""
    credential = bearer(authorization)
    if credential is None:
        what = "key" if route.auth_mode == "key" else "token"
        return unauthorized(
            f"Endpoint {route.name!r} needs an 'Authorization: Bearer <{what}>' header. "
            f"Get one with `flowport online-endpoint get-credentials -n {route.name}`."
        )
    if route.auth_mode == "key":
        if key_matches(route.key_digests, credential):
            return None
        return unauthorized(
            f"The key is not valid for endpoint {route.name!r}. Use its primary or secondary key "
            f"(`flowport online-endpoint get-credentials -n {route.name}`)."
        )
    if route.auth_mode in TOKEN_MODES:
        if tokens.verify(credential, route.name, route.incarnation):
            return None
        return unauthorized(
            f"The token is not valid for endpoint {route.name!r}: it is expired, malformed or issued for "
            "another endpoint (or for an earlier endpoint of the same name). Get a fresh one with "
            f"`flowport online-endpoint get-credentials -n {route.name}`."
        )
    return unauthorized(
        f"Endpoint {route.name!r} has auth_mode {route.auth_mode!r}, which this gateway cannot check. "
        "Use auth_mode key, aml_token or aad_token."
    )
