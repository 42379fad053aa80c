"""Operator commands: stats, dead letters (list, show, requeue), purge.

Human tables by default, ``--json`` for scripts (the same documents as the web view's
JSON endpoints). Bad input exits 2 with ``outbox-app: error: ...``; a row that does
not exist exits 1; a database that cannot be reached exits 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from outbox_app.errors import OutboxError
from outbox_app.ops.operations import (
    MAX_IDS,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_PURGE_BATCH,
    Operations,
    row_document,
)
from outbox_app.settings import Settings, parse_duration

Command = Callable[[argparse.Namespace], int]


def add_commands(sub: Any) -> None:
    p = sub.add_parser("stats", help="rows per service and status")
    p.add_argument("--json", action="store_true", help="the JSON document of /outbox/stats/")
    p.set_defaults(func=cmd_stats)

    dead = sub.add_parser("dead", help="dead letters: list, show, requeue")
    actions = dead.add_subparsers(metavar="action", required=True)

    p = actions.add_parser("list", help="dead letters of a service, newest first")
    _service_arg(p)
    p.add_argument("--event-type", help="only this event type")
    p.add_argument("--limit", type=_bounded(1, MAX_PAGE), default=50, help="rows (default 50)")
    p.add_argument("--offset", type=_bounded(0, MAX_OFFSET), default=0, help="rows to skip")
    _json_arg(p)
    p.set_defaults(func=cmd_dead_list)

    p = actions.add_parser("show", help="one outbox row, whatever its status")
    _service_arg(p)
    p.add_argument("id", type=_bounded(1, 2**63 - 1), help="outbox id")
    _json_arg(p)
    p.set_defaults(func=cmd_dead_show)

    p = actions.add_parser("requeue", help="dead -> pending with a fresh attempt budget")
    _requeue_args(p)

    p = actions.add_parser(
        "skip", help="dead -> skipped: an ordered key goes on without these rows"
    )
    _service_arg(p)
    p.add_argument(
        "--id",
        type=_bounded(1, 2**63 - 1),
        action="append",
        dest="ids",
        required=True,
        help="repeatable",
    )
    _json_arg(p)
    p.set_defaults(func=cmd_skip)

    p = sub.add_parser("blocked", help="ordered keys waiting for a dead or failing head")
    _service_arg(p)
    p.add_argument("--limit", type=_bounded(1, MAX_PAGE), default=50, help="keys (default 50)")
    _json_arg(p)
    p.set_defaults(func=cmd_blocked)

    # ``outbox-app requeue ...`` is the same command, as DESIGN lists it.
    p = sub.add_parser("requeue", help="same as `dead requeue`")
    _requeue_args(p)

    p = sub.add_parser("purge", help="delete consumed rows older than an age")
    p.add_argument(
        "--older-than", required=True, type=_duration, metavar="AGE", help="e.g. 7d, 12h, 90m"
    )
    p.add_argument("--dry-run", action="store_true", help="count the rows, delete nothing")
    p.add_argument(
        "--batch",
        type=_bounded(1, MAX_PURGE_BATCH),
        default=None,
        help="rows per delete transaction (default OUTBOX_PURGE_BATCH)",
    )
    p.add_argument("--service", action="append", help="only this service (repeatable)")
    _json_arg(p)
    p.set_defaults(func=cmd_purge)


def _service_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", required=True, help="the service, e.g. agent")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _requeue_args(p: argparse.ArgumentParser) -> None:
    _service_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", type=_bounded(1, 2**63 - 1), action="append", dest="ids", help="repeatable"
    )
    which.add_argument("--all", action="store_true", help="every dead row of the service")
    which.add_argument("--event-type", help="every dead row of this event type")
    _json_arg(p)
    p.set_defaults(func=cmd_requeue)


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _duration(raw: str) -> float:
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {raw!r}")
    return seconds


# -- context -----------------------------------------------------------------------------
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


def _exits_cleanly(func: Command) -> Command:
    """Database trouble is exit 1 with one line, not a traceback."""

    @functools.wraps(func)
    def run(ns: argparse.Namespace) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(ns)
        except DatabaseError as exc:
            return _fail(str(exc), 1)
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            where = Settings.from_env().safe_database_url
            if missing_table(orig):
                return _fail(
                    f"the outbox tables are not in {where} ({orig}): the workers create them "
                    "at start-up; is OUTBOX_DATABASE_URL the right database?",
                    1,
                )
            # The masked URL only: the driver's message never carries the password.
            return _fail(f"database {where}: {type(orig).__name__}: {orig}", 1)

    return run


def missing_table(orig: BaseException) -> bool:
    code = getattr(orig, "args", (None,))[0]
    return code == MYSQL_NO_SUCH_TABLE or "no such table" in str(orig)


MYSQL_NO_SUCH_TABLE = 1146


def _fail(message: str, code: int) -> int:
    print(f"outbox-app: error: {message}", file=sys.stderr)
    return code


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


# -- commands ----------------------------------------------------------------------------
@_exits_cleanly
def cmd_stats(ns: argparse.Namespace) -> int:
    ops = operator_context()
    doc = ops.stats()
    if ns.json:
        _print_json(doc)
        return 0
    rows = [
        [name, c["pending"], c["published"], c["consumed"], c["dead"], _age(c)]
        for name, c in doc["services"].items()
    ]
    print(_table(["service", "pending", "published", "consumed", "dead", "oldest pending"], rows))
    return 0


@_exits_cleanly
def cmd_dead_list(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    doc = ops.dead_page(ns.service, ns.limit, ns.offset, ns.event_type)
    if ns.json:
        _print_json(doc)
        return 0
    if not doc["items"]:
        print(f"no dead letters in service {ns.service}" + (" at this offset" if ns.offset else ""))
        return 0
    rows = [
        [
            d["id"],
            d["event_type"],
            d["key"] or "-",
            f"{d['attempts']}/{d['max_retry']}",
            d["updated_at"],
            _one_line(d["last_error"], 70),
        ]
        for d in doc["items"]
    ]
    print(_table(["id", "event type", "key", "attempts", "died at (UTC)", "last error"], rows))
    if doc["next_offset"] is not None:
        print(f"\nmore: --offset {doc['next_offset']}")
    return 0


@_exits_cleanly
def cmd_dead_show(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    row = ops.message(ns.service, ns.id)
    if row is None:
        return _fail(f"no outbox row {ns.id} in service {ns.service!r}", 1)
    doc = row_document(row)
    if ns.json:
        _print_json(doc)
        return 0
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        if key == "payload":
            continue
        print(f"{key.ljust(width)}  {'-' if value is None else value}")
    print("payload:")
    print(json.dumps(doc["payload"], indent=2, ensure_ascii=False))
    return 0


@_exits_cleanly
def cmd_requeue(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    if ns.ids is not None and len(ns.ids) > MAX_IDS:
        raise OutboxError(f"at most {MAX_IDS} ids per requeue, got {len(ns.ids)}")
    doc = ops.requeue_document(ns.service, ns.ids, ns.event_type)
    unknown = doc.get("unknown") or []
    if ns.json:
        _print_json(doc)
        return 1 if unknown else 0
    print(f"requeued {doc['count']} dead row(s) of service {ns.service}", end="")
    print(f": {_ids(doc['requeued'])}" if doc["requeued"] else "")
    not_dead = doc.get("not_dead") or {}
    if not_dead:
        left = ", ".join(f"{i} ({status})" for i, status in not_dead.items())
        print(f"not dead, left alone: {left}")
    if unknown:
        return _fail(f"no outbox row {_ids(unknown)} in service {ns.service!r}", 1)
    return 0


@_exits_cleanly
def cmd_skip(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    doc = ops.skip_document(ns.service, ns.ids)
    unknown = doc["unknown"]
    if ns.json:
        _print_json(doc)
        return 1 if unknown else 0
    print(f"skipped {doc['count']} dead row(s) of service {ns.service}", end="")
    print(f": {_ids(doc['skipped'])}" if doc["skipped"] else "")
    if doc["not_dead"]:
        left = ", ".join(f"{i} ({status})" for i, status in doc["not_dead"].items())
        print(f"not dead, left alone: {left}")
    if unknown:
        return _fail(f"no outbox row {_ids(unknown)} in service {ns.service!r}", 1)
    return 0


@_exits_cleanly
def cmd_blocked(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    doc = ops.blocked_page(ns.service, ns.limit)
    if ns.json:
        _print_json(doc)
        return 0
    if not doc["items"]:
        print(f"no blocked keys in service {ns.service}")
        return 0
    rows = [
        [
            d["key"],
            d["head"]["id"],
            d["head"]["status"],
            d["parked"],
            d["blocked_since"],
            _one_line(d["head"]["last_error"], 60),
        ]
        for d in doc["items"]
    ]
    print(_table(["key", "head id", "head", "waiting", "since (UTC)", "head's last error"], rows))
    print(
        f"\nrequeue a dead head: outbox-app dead requeue --service {ns.service} --id ID; "
        f"go on without it: outbox-app dead skip --service {ns.service} --id ID"
    )
    return 0


@_exits_cleanly
def cmd_purge(ns: argparse.Namespace) -> int:
    ops = operator_context(*(ns.service or []))
    batch = ns.batch or Settings.from_env().purge_batch
    counts = ops.purge(ns.older_than, batch, ns.dry_run, ns.service)
    if ns.json:
        _print_json(
            {
                "older_than_s": ns.older_than,
                "dry_run": ns.dry_run,
                "services": counts,
                "total": sum(counts.values()),
            }
        )
        return 0
    verb = "would purge" if ns.dry_run else "purged"
    rows = [[name, n] for name, n in counts.items()]
    print(_table(["service", f"{verb} (consumed over {_span(ns.older_than)} ago)"], rows))
    print(f"\n{verb} {sum(counts.values())} row(s)")
    return 0


# -- formatting --------------------------------------------------------------------------
def _age(counts: dict[str, Any]) -> str:
    age = counts["oldest_pending_age_s"]
    return "-" if age is None else f"{age:.1f}s"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:20]))
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
