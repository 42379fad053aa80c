"""The tokens that guard the web view: the admin token for mutating endpoints (no
configured token: they are off), and the read token for payloads (business data).

Tokens are compared in constant time and never logged or echoed back.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from outbox_app.ops.web.params import ApiError

log = logging.getLogger(__name__)

HEADER = "X-Outbox-Admin-Token"
READ_HEADER = "X-Outbox-Read-Token"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class AdminGate:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def accepts(self, headers: Mapping[str, str]) -> bool:
        """True when the request carries the admin token; raises and logs nothing."""
        given = headers.get(HEADER) or _bearer(headers.get("Authorization", ""))
        return bool(self._token and given) and hmac.compare_digest(given.encode(), self._token)

    def check(self, headers: Mapping[str, str], remote: str | None) -> None:
        """Raise 403 when off or wrong, 401 when no token was sent."""
        if not self._token:
            raise ApiError(
                403, "mutating endpoints are off: OUTBOX_ADMIN_TOKEN is not set on this worker"
            )
        given = headers.get(HEADER) or _bearer(headers.get("Authorization", ""))
        if not given:
            raise ApiError(401, f"admin token required in the {HEADER} header")
        if not hmac.compare_digest(given.encode(), self._token):
            log.warning("web: request with a wrong admin token from %s refused", remote or "?")
            raise ApiError(403, "wrong admin token")


class ReadGate:
    """Who may read payloads (business data: dead letters' payloads, ``/outbox/messages/``):
    anyone when the web view listens on loopback only; else a caller with the read token
    (``OUTBOX_READ_TOKEN``) or the admin token. Counts, errors and ids stay readable."""

    def __init__(self, read_token: str, admin_token: str, bind_host: str) -> None:
        self._tokens = [t.encode() for t in (read_token, admin_token) if t]
        self.open = bind_host.strip() in LOOPBACK

    def allowed(self, headers: Mapping[str, str]) -> bool:
        if self.open:
            return True
        given = (
            headers.get(READ_HEADER)
            or headers.get(HEADER)
            or _bearer(headers.get("Authorization", ""))
        )
        return bool(given) and any(hmac.compare_digest(given.encode(), t) for t in self._tokens)

    def check(self, headers: Mapping[str, str]) -> None:
        if not self.allowed(headers):
            raise ApiError(
                403,
                "payloads are business data: send the read token (X-Outbox-Read-Token, "
                "OUTBOX_READ_TOKEN) or the admin token; a web view bound to 127.0.0.1 serves "
                "them to anyone who can reach it",
            )


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
