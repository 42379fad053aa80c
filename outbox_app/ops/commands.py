"""Operator commands: stats, dead letters (list, show, groups, requeue, skip), blocked, purge.

Human tables by default, ``--json`` for scripts (the same documents as the web view's
JSON endpoints). Bad input exits 2 with ``outbox-app: error: ...``; a row that does
not exist exits 1; a database that cannot be reached exits 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from outbox_app.errors import OutboxError
from outbox_app.ops import formatting as fmt
from outbox_app.ops.cli_support import exits_cleanly as _exits_cleanly
from outbox_app.ops.cli_support import fail as _fail
from outbox_app.ops.cli_support import operator_context
from outbox_app.ops.cli_support import print_json as _print_json
from outbox_app.ops.operations import (
    DEAD_SCAN,
    MAX_GROUPS,
    MAX_IDS,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_PURGE_BATCH,
    Operations,
    row_document,
)
from outbox_app.settings import Settings, parse_duration


def add_commands(sub: Any) -> None:
    p = sub.add_parser("stats", help="rows per service and status")
    p.add_argument("--json", action="store_true", help="the JSON document of /outbox/stats/")
    p.set_defaults(func=cmd_stats)

    dead = sub.add_parser("dead", help="dead letters: list, show, groups, requeue, skip")
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

    p = actions.add_parser("groups", help="dead letters grouped by failure signature")
    _service_arg(p)
    p.add_argument(
        "--limit", type=_bounded(1, MAX_GROUPS), default=100, help="groups (default 100)"
    )
    _json_arg(p)
    p.set_defaults(func=cmd_dead_groups)

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

    # ``outbox-app requeue ...`` is the same command, a shorter spelling of ``dead requeue``.
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
    which.add_argument(
        "--signature",
        help=f"the dead rows of one failure signature (see `dead groups`; among the newest "
        f"{DEAD_SCAN} dead rows)",
    )
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


# -- commands ----------------------------------------------------------------------------
@_exits_cleanly
def cmd_stats(ns: argparse.Namespace) -> int:
    ops = operator_context()
    doc = ops.stats()
    if ns.json:
        _print_json(doc)
        return 0
    rows = [
        [name, c["pending"], c["published"], c["consumed"], c["dead"], fmt.age(c)]
        for name, c in doc["services"].items()
    ]
    print(
        fmt.table(["service", "pending", "published", "consumed", "dead", "oldest pending"], rows)
    )
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
            fmt.one_line(d["last_error"], 70),
        ]
        for d in doc["items"]
    ]
    print(fmt.table(["id", "event type", "key", "attempts", "died at (UTC)", "last error"], rows))
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
def cmd_dead_groups(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    doc = ops.dead_groups(ns.service, ns.limit)
    if ns.json:
        _print_json(doc)
        return 0
    if not doc["groups"]:
        print(f"no dead letters in service {ns.service}")
        return 0
    rows = [
        [
            g["count"],
            ", ".join(g["event_types"]),
            g["last_seen"],
            g["sample"]["id"],
            fmt.one_line(g["signature"], 90),
        ]
        for g in doc["groups"]
    ]
    print(fmt.table(["dead", "event types", "last died (UTC)", "sample id", "signature"], rows))
    print(_scan_note(doc))
    if doc["group_count"] > len(doc["groups"]):
        print(f"showing {len(doc['groups'])} of {doc['group_count']} groups: --limit N for more")
    print(f'requeue one group: outbox-app dead requeue --service {ns.service} --signature "..."')
    return 0


def _scan_note(doc: dict[str, Any]) -> str:
    if doc["scan_cut"]:
        return f"\nscanned the newest {doc['scanned']} dead rows only (more are dead)"
    return f"\nscanned all {doc['scanned']} dead row(s)"


@_exits_cleanly
def cmd_requeue(ns: argparse.Namespace) -> int:
    ops = operator_context(ns.service)
    if ns.signature is not None:
        return _requeue_signature(ops, ns)
    if ns.ids is not None and len(ns.ids) > MAX_IDS:
        raise OutboxError(f"at most {MAX_IDS} ids per requeue, got {len(ns.ids)}")
    doc = ops.requeue_document(ns.service, ns.ids, ns.event_type)
    unknown = doc.get("unknown") or []
    if ns.json:
        _print_json(doc)
        return 1 if unknown else 0
    print(f"requeued {doc['count']} dead row(s) of service {ns.service}", end="")
    print(f": {fmt.ids(doc['requeued'])}" if doc["requeued"] else "")
    not_dead = doc.get("not_dead") or {}
    if not_dead:
        left = ", ".join(f"{i} ({status})" for i, status in not_dead.items())
        print(f"not dead, left alone: {left}")
    if unknown:
        return _fail(f"no outbox row {fmt.ids(unknown)} in service {ns.service!r}", 1)
    return 0


def _requeue_signature(ops: Operations, ns: argparse.Namespace) -> int:
    doc = ops.requeue_signature_document(ns.service, ns.signature)
    if ns.json:
        _print_json(doc)
        return 0
    print(f"requeued {doc['count']} dead row(s) of service {ns.service}", end="")
    print(f": {fmt.ids(doc['requeued'])}" if doc["requeued"] else " (none has this signature)")
    print(_scan_note(doc).strip())
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
    print(f": {fmt.ids(doc['skipped'])}" if doc["skipped"] else "")
    if doc["not_dead"]:
        left = ", ".join(f"{i} ({status})" for i, status in doc["not_dead"].items())
        print(f"not dead, left alone: {left}")
    if unknown:
        return _fail(f"no outbox row {fmt.ids(unknown)} in service {ns.service!r}", 1)
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
            fmt.one_line(d["head"]["last_error"], 60),
        ]
        for d in doc["items"]
    ]
    print(
        fmt.table(["key", "head id", "head", "waiting", "since (UTC)", "head's last error"], rows)
    )
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
    print(fmt.table(["service", f"{verb} (consumed over {fmt.span(ns.older_than)} ago)"], rows))
    print(f"\n{verb} {sum(counts.values())} row(s)")
    return 0
