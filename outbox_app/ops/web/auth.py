"""The admin token that guards mutating endpoints. No configured token: they are off.

The token is compared in constant time and never logged or echoed back.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from outbox_app.ops.web.params import ApiError

log = logging.getLogger(__name__)

HEADER = "X-Outbox-Admin-Token"


class AdminGate:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def enabled(self) -> bool:
        return bool(self._token)

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


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
