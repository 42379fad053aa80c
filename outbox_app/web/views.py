"""Outbox pages on the Faust web server."""

from __future__ import annotations

from typing import Any


def install(app: Any, runtime: Any) -> None:
    """Register the outbox pages (filled in by the web view issue)."""
    return None
