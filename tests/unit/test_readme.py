"""The README is the user's manual: it must document every setting with its default."""

from __future__ import annotations

import re

from outbox_app.settings import Settings, settings_table
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_documents_every_setting_with_its_default():
    rows = dict(re.findall(r"^\| `(OUTBOX_[A-Z_]+)` \| ([^|]+) \|", README, re.M))
    for env, default, _ in settings_table():
        assert env in rows, f"{env} is missing from the README's settings table"
        shown = rows[env].strip().strip("`")
        if default in ("", "()"):
            assert shown == "(empty)", env
        else:
            parsed = Settings.from_env({env: shown})
            name = next(
                k for k, v in Settings.__dataclass_fields__.items() if v.metadata["env"] == env
            )
            assert getattr(parsed, name) == getattr(Settings(), name), (
                f"README default of {env} is {shown!r}, the code's is {default!r}"
            )


def test_readme_gives_the_two_commands():
    assert "make run" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
