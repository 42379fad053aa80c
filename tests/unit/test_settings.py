from __future__ import annotations

import pytest

from outbox_app.errors import ConfigurationError
from outbox_app.settings import Settings, parse_duration, settings_table


def test_defaults_are_documented_for_every_setting():
    rows = settings_table()
    assert all(env.startswith("OUTBOX_") and doc for env, _, doc in rows)
    assert ("OUTBOX_WEB_PORT", "6066", "port of the Faust web view") in rows


def test_environment_overrides_defaults():
    s = Settings.from_env(
        {"OUTBOX_SERVICES": "agent, task", "OUTBOX_RETENTION": "2d", "OUTBOX_WEB_PORT": "7000"}
    )
    assert s.services == ("agent", "task") and s.retention == 172800 and s.web_port == 7000


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigurationError, match="OUTBOX_WEB_PORT"):
        Settings.from_env({"OUTBOX_WEB_PORT": "many"})
    with pytest.raises(ConfigurationError, match="OUTBOX_RELAY_BATCH must be at least 1"):
        Settings.from_env({"OUTBOX_RELAY_BATCH": "0"})
    with pytest.raises(ConfigurationError, match="OUTBOX_ROLES must name relay, consume"):
        Settings.from_env({"OUTBOX_ROLES": "relay,publish"})
    assert Settings.from_env({"OUTBOX_ROLES": "consume"}).roles == ("consume",)
    for interval in ("0", "2s"):
        with pytest.raises(ConfigurationError, match="OUTBOX_GIL_SWITCH_INTERVAL must be above 0"):
            Settings.from_env({"OUTBOX_GIL_SWITCH_INTERVAL": interval})
    assert Settings.from_env({"OUTBOX_GIL_SWITCH_INTERVAL": "5ms"}).gil_switch_interval == 0.005


def test_password_and_token_are_never_shown():
    s = Settings.from_env(
        {
            "OUTBOX_DATABASE_URL": "mysql+mysqldb://app:s3cret-pw@db:3306/app",
            "OUTBOX_ADMIN_TOKEN": "tok-123",
        }
    )
    for text in (repr(s), str(s), s.safe_database_url):
        assert "s3cret-pw" not in text and "tok-123" not in text
    assert "app:***@db" in s.safe_database_url


@pytest.mark.parametrize(
    ("raw", "seconds"), [("90", 90), ("250ms", 0.25), ("5m", 300), ("7d", 604800), ("1.5h", 5400)]
)
def test_parse_duration(raw, seconds):
    assert parse_duration(raw) == seconds


def test_parse_duration_refuses_garbage():
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
