"""What every operator command shares: the operations on the ``OUTBOX_*`` database, a
clean exit (one line, no traceback) when the database is the problem, JSON output."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from outbox_app.ops.operations import Operations
from outbox_app.settings import Settings

Command = Callable[[argparse.Namespace], int]


def operator_context(*services: str) -> Operations:
    """Operations on the ``OUTBOX_*`` database; services are checked before connecting."""
    from sqlalchemy.exc import SQLAlchemyError

    from outbox_app.registry import default_registry

    settings = Settings.from_env()
    default_registry.load_modules(settings.handler_modules)
    for service in services:
        default_registry.route(service)  # UnknownService lists the known ones
    try:
        return Operations.from_env(settings)
    except SQLAlchemyError as exc:
        raise DatabaseError(settings, exc) from None


class DatabaseError(Exception):
    def __init__(self, settings: Settings, exc: Exception) -> None:
        # The masked URL only: the driver's message never carries the password.
        orig = getattr(exc, "orig", None) or exc
        super().__init__(f"database {settings.safe_database_url}: {type(orig).__name__}: {orig}")


def exits_cleanly(func: Command) -> Command:
    """Database trouble is exit 1 with one line, not a traceback."""

    @functools.wraps(func)
    def run(ns: argparse.Namespace) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(ns)
        except DatabaseError as exc:
            return fail(str(exc), 1)
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            where = Settings.from_env().safe_database_url
            if missing_table(orig):
                return fail(
                    f"the outbox tables are not in {where} ({orig}): the workers create them "
                    "at start-up; is OUTBOX_DATABASE_URL the right database?",
                    1,
                )
            # The masked URL only: the driver's message never carries the password.
            return fail(f"database {where}: {type(orig).__name__}: {orig}", 1)

    return run


def missing_table(orig: BaseException) -> bool:
    code = getattr(orig, "args", (None,))[0]
    return code == MYSQL_NO_SUCH_TABLE or "no such table" in str(orig)


MYSQL_NO_SUCH_TABLE = 1146


def fail(message: str, code: int) -> int:
    print(f"outbox-app: error: {message}", file=sys.stderr)
    return code


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))
