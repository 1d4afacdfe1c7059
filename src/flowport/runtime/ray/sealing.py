"""Sealing an instance's config (its connections' secrets) for one Ray actor.

Each instance actor makes an X25519 key pair when it starts and keeps the private key in its
memory only. The runtime seals the config to the actor's public key (an ephemeral X25519
exchange, HKDF-SHA256, AES-256-GCM), so what travels through Ray's task specs, object store,
spill files and logs is ciphertext that only that actor can open.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"flowport instance config v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
KEY_BYTES, NONCE_BYTES = 32, 12


def _key(shared: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=INFO).derive(shared)


def seal(public_key: bytes, data: bytes) -> bytes:
    """``data`` readable only by the holder of ``public_key``'s private key."""
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public_key))
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(_key(shared)).encrypt(nonce, data, INFO)
    return ephemeral.public_key().public_bytes(*_RAW) + nonce + body


class Opener:
    """The receiving side: a private key that never leaves this object."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public_key = self._private.public_key().public_bytes(*_RAW)

    def open(self, sealed: bytes) -> bytes:
        """The data; ``cryptography.exceptions.InvalidTag`` if it was not sealed for this key."""
        peer, nonce = sealed[:KEY_BYTES], sealed[KEY_BYTES : KEY_BYTES + NONCE_BYTES]
        body = sealed[KEY_BYTES + NONCE_BYTES :]
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer))
        return AESGCM(_key(shared)).decrypt(nonce, body, INFO)
