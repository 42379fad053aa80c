"""The Faust entry point: ``faust -A outbox_app.app worker -l info`` (what ``outbox-app
worker`` runs). The app is built from ``OUTBOX_*`` settings on first access, so importing
this module does no work; see ``outbox_app.worker.app`` for what it holds."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from outbox_app.worker.app import build_app

        value = build_app()
        globals()["app"] = value
        return value
    raise AttributeError(name)
