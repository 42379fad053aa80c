"""Failure signatures: the variable parts of an error masked, the rest kept as it is."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from outbox_app.ops.signatures import (
    MAX_SIGNATURE_CHARS,
    NO_ERROR,
    DeadRef,
    group_dead,
    signature,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "LookupError: task 't9' does not exist (yet)",
            "LookupError: task '…' does not exist (yet)",
        ),
        (
            "remote work failed: RuntimeError: webhook answered 503: nope",
            "remote work failed: RuntimeError: webhook answered N: nope",
        ),
        (
            "permanent failure: field 'role' must be one of user, assistant, system, tool, "
            "got 'robot'",
            "permanent failure: field '…' must be one of user, assistant, system, tool, got '…'",
        ),
        ('KeyError: "user_id"', 'KeyError: "…"'),
        (
            "no row 123e4567-e89b-12d3-a456-426614174000 for order 42",
            "no row N for order N",
        ),
        ("object at 0x7f3a2c1d9e80 is gone", "object at N is gone"),
        ("digest 9f86d081884c7d65 mismatch", "digest N mismatch"),
        ("timed out after 1.5s talking to 10.0.0.7:3306", "timed out after Ns talking to N:N"),
        ("(1213, 'Deadlock found when trying to get lock')", "(N, '…')"),
        # Kept: apostrophes inside words, names with digits, plain hex-looking words.
        ("the handler's input was bad", "the handler's input was bad"),
        (
            "utf8 codec can't decode; sha256 and h2 too",
            "utf8 codec can't decode; sha256 and h2 too",
        ),
        ("deadbeef facade", "deadbeef facade"),
        # A traceback is one line; the quote inside double quotes is masked with them.
        ('Traceback:\n  File "x.py", line 7\n    boom', 'Traceback: File "…", line N boom'),
    ],
)
def test_signature_masks_what_varies(error: str, expected: str) -> None:
    assert signature(error) == expected


def test_errors_differing_only_in_values_share_a_signature() -> None:
    a = signature("LookupError: task 'a-1' does not exist (yet); attempt 3 of 20")
    b = signature("LookupError: task 'zz-99' does not exist (yet); attempt 17 of 20")
    assert a == b
    assert a != signature("LookupError: user 'a-1' does not exist (yet); attempt 3 of 20")


def test_signature_of_nothing_and_of_a_huge_error() -> None:
    assert signature(None) == signature("") == signature("  \n") == NO_ERROR
    long = signature("boom " * 1000)
    assert len(long) == MAX_SIGNATURE_CHARS and long.endswith("…")
    assert signature(long) == long  # stable: a signature's own signature is itself


def test_an_unterminated_quote_is_left_alone() -> None:
    # A last_error cut at the column's size may end inside a quote.
    assert signature("failed for 'abc and 12") == "failed for 'abc and N"


def test_groups_count_rows_keep_times_and_the_newest_sample() -> None:
    t0 = datetime(2024, 5, 1, 12, 0, 0)
    rows = [  # newest first, as the query returns them
        DeadRef(9, "task.completed", "LookupError: task 't9' does not exist (yet)", t0),
        DeadRef(8, "chat.persist", "webhook answered 503: nope", t0 - timedelta(seconds=5)),
        DeadRef(7, "task.created", "LookupError: task 't7' does not exist (yet)", t0),
        DeadRef(
            3,
            "task.completed",
            "LookupError: task 't3' does not exist (yet)",
            t0 - timedelta(hours=1),
        ),
        DeadRef(2, "chat.persist", None, t0 - timedelta(days=1)),
    ]
    groups = group_dead(rows)
    assert [(g.signature, g.count) for g in groups] == [
        ("LookupError: task '…' does not exist (yet)", 3),
        ("webhook answered N: nope", 1),
        (NO_ERROR, 1),
    ]
    first = groups[0].as_dict()
    assert first["event_types"] == ["task.completed", "task.created"]
    assert first["first_seen"] == "2024-05-01T11:00:00Z"
    assert first["last_seen"] == "2024-05-01T12:00:00Z"
    # Two rows died at the same moment: the higher id is the newer.
    assert first["sample"] == {"id": 9, "last_error": "LookupError: task 't9' does not exist (yet)"}
    assert sum(g.count for g in groups) == len(rows)
    assert group_dead([]) == []
