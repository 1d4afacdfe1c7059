"""Secret encryption at rest: Fernet, keyed by FLOWPORT_SECRET_KEY or a 0600 key file.

``cryptography`` (9 MiB) is imported only when something is encrypted or decrypted: serving
processes that are handed their connections never load it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

KEY_ENV = "FLOWPORT_SECRET_KEY"
KEY_FILE = "secret.key"


class SecretKeyError(RuntimeError):
    """Secrets cannot be decrypted with the key at hand."""


def _fernet_key(text: str) -> bytes:
    """Use a Fernet key as is; derive one from any other passphrase."""
    raw = text.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


def load_or_create_key(home: Path) -> bytes:
    """The key from the environment, else from ``home/secret.key`` (created 0600 once)."""
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return _fernet_key(from_env)
    path = home / KEY_FILE
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _fernet_key(path.read_text())
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.urlsafe_b64encode(os.urandom(32)).decode())
    return _fernet_key(path.read_text())


class Cipher:
    """Encrypts and decrypts small secrets."""

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self._fernet = Fernet(key)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "stored secrets cannot be decrypted: FLOWPORT_SECRET_KEY or the key file "
                "differs from the one they were written with"
            ) from None
