"""Browser sessions for the studio: sign in with the admin token, then a cookie.

The cookie is ``HttpOnly`` and ``SameSite=Strict``; every state-changing API call made with it
must also carry the session's CSRF token in ``X-CSRF-Token``. ``flowport server`` prints a
one-time login link (as Jupyter does): its code works once, within ``LOGIN_CODE_SECONDS``.
Sessions live in memory: a server restart signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "flowport_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
LOGIN_CODE_SECONDS = 600


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    def __init__(self, admin_token: str) -> None:
        self._expected = admin_token.encode()
        self._sessions: dict[str, Session] = {}
        self._codes: dict[str, float] = {}

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(token.strip().encode(), self._expected)

    def open(self) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        self._forget_expired()
        sid = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=time.time() + SESSION_SECONDS)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires < time.time():
            self._sessions.pop(sid, None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), session.csrf.encode())

    def login_code(self) -> str:
        """A one-time code for the login link the server prints."""
        code = secrets.token_urlsafe(24)
        self._codes[code] = time.time() + LOGIN_CODE_SECONDS
        return code

    def redeem(self, code: str) -> bool:
        expires = self._codes.pop(code, None)
        return expires is not None and expires >= time.time()

    def _forget_expired(self) -> None:
        now = time.time()
        for sid in [s for s, session in self._sessions.items() if session.expires < now]:
            del self._sessions[sid]
