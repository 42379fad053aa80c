"""Settings read from ``OUTBOX_*`` environment variables, each with a default.

The table in the README is generated from ``SETTINGS`` below, so the two never
disagree. The database URL is only ever shown with its password masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy.engine import make_url

from outbox_app.errors import ConfigurationError

ALL_SERVICES = "all"
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCHEMA_MODES = ("create", "check")
ROLES = ("relay", "consume")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _upper(raw: str) -> str:
    return raw.strip().upper()


def _auto_int(raw: str) -> int:
    if raw.strip().lower() == "auto":
        return 0
    return int(raw)


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_duration(raw: str) -> float:
    """Seconds from ``90``, ``1.5``, ``250ms``, ``30s``, ``5m``, ``2h`` or ``7d``."""
    text = raw.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    for suffix in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], units[suffix]
            break
    else:
        number, scale = text, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        raise ValueError(f"expected a duration such as 30s, 5m or 7d, got {raw!r}") from None
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {raw!r}")
    return seconds


def _setting(
    env: str,
    default: Any,
    doc: str,
    parse: Callable[[str], Any] = str,
    shown: str | None = None,
) -> Any:
    """A setting: its variable, default, meaning, parser, and the default as documented
    when it differs from ``str(default)``."""
    meta = {"env": env, "doc": doc, "parse": parse, "shown": shown}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        "OUTBOX_DATABASE_URL",
        "",
        "SQLAlchemy URL of the outbox database, e.g. mysql+mysqldb://user:pw@host:3306/db "
        "(required; outbox-app dev sets one)",
    )
    broker_url: str = _setting(
        "OUTBOX_BROKER_URL",
        "kafka://127.0.0.1:9092",
        "Kafka bootstrap servers, kafka://host:port (several: kafka://h1:9092;h2:9092)",
    )
    kafka_security_protocol: str = _setting(
        "OUTBOX_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        _upper,
    )
    kafka_sasl_mechanism: str = _setting(
        "OUTBOX_KAFKA_SASL_MECHANISM",
        "SCRAM-SHA-512",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)",
        _upper,
    )
    kafka_username: str = _setting("OUTBOX_KAFKA_USERNAME", "", "SASL user name")
    kafka_password: str = _setting("OUTBOX_KAFKA_PASSWORD", "", "SASL password (never shown)")
    kafka_ssl_cafile: str = _setting(
        "OUTBOX_KAFKA_SSL_CAFILE",
        "",
        "CA certificates (PEM) that sign the brokers' certificates; empty: the system's",
    )
    kafka_ssl_certfile: str = _setting(
        "OUTBOX_KAFKA_SSL_CERTFILE", "", "client certificate (PEM), for mutual TLS"
    )
    kafka_ssl_keyfile: str = _setting(
        "OUTBOX_KAFKA_SSL_KEYFILE", "", "private key (PEM) of the client certificate"
    )
    services: tuple[str, ...] = _setting(
        "OUTBOX_SERVICES", (ALL_SERVICES,), "services this worker owns (comma list or all)", _list
    )
    roles: tuple[str, ...] = _setting(
        "OUTBOX_ROLES",
        ROLES,
        "what a worker does for its services: relay (outbox table to topic), consume "
        "(topic to handlers), or both; scale each side with workers of its own",
        _list,
        shown="relay,consume",
    )
    handler_modules: tuple[str, ...] = _setting(
        "OUTBOX_HANDLER_MODULES",
        ("handlers",),
        "modules (or packages) holding @handler code",
        _list,
    )
    app_id: str = _setting(
        "OUTBOX_APP_ID", "", "Faust app id and consumer group; default derived from the services"
    )
    web_host: str = _setting("OUTBOX_WEB_HOST", "0.0.0.0", "address of the Faust web view")
    web_port: int = _setting("OUTBOX_WEB_PORT", 6066, "port of the Faust web view", int)
    web_enabled: bool = _setting("OUTBOX_WEB_ENABLED", True, "serve the web view", _bool)
    admin_token: str = _setting(
        "OUTBOX_ADMIN_TOKEN", "", "token for mutating web endpoints; empty turns them off"
    )
    read_token: str = _setting(
        "OUTBOX_READ_TOKEN",
        "",
        "token for reading payloads in the web view (the admin token works too); not needed "
        "when OUTBOX_WEB_HOST is 127.0.0.1",
    )
    datadir: str = _setting(
        "OUTBOX_DATADIR", "", "Faust data directory; default a per-app folder in the temp dir"
    )
    max_retry: int = _setting("OUTBOX_MAX_RETRY", 20, "attempts before a row goes dead", int)
    backoff_cap: int = _setting(
        "OUTBOX_BACKOFF_CAP", 10, "backoff is min(attempt, cap)^2 seconds", int
    )
    backoff_jitter: float = _setting(
        "OUTBOX_BACKOFF_JITTER", 0.2, "random extra backoff, as a fraction of the delay", float
    )
    relay_interval: float = _setting(
        "OUTBOX_RELAY_INTERVAL",
        0.01,
        "seconds between relay polls while rows keep coming",
        parse_duration,
    )
    relay_idle_interval: float = _setting(
        "OUTBOX_RELAY_IDLE_INTERVAL",
        0.2,
        "longest pause between relay polls when idle (the pause doubles up to it)",
        parse_duration,
    )
    relay_batch: int = _setting("OUTBOX_RELAY_BATCH", 500, "rows claimed per relay round", int)
    claim_lease: float = _setting(
        "OUTBOX_CLAIM_LEASE",
        30.0,
        "seconds a claimed row is hidden from other relays while it is published",
        parse_duration,
    )
    consumer_batch: int = _setting(
        "OUTBOX_CONSUMER_BATCH",
        500,
        "most envelopes per database transaction (a batch is what arrived during the last one)",
        int,
    )
    fetch_max_wait_ms: int = _setting(
        "OUTBOX_FETCH_MAX_WAIT_MS", 50, "consumer fetch wait; Faust hard-codes 1500", int
    )
    topic_partitions: int = _setting(
        "OUTBOX_TOPIC_PARTITIONS", 4, "partitions of each service topic", int
    )
    topic_replication: int = _setting(
        "OUTBOX_TOPIC_REPLICATION",
        0,
        "replication factor of the topics a worker creates; auto: 3, or the brokers if fewer",
        _auto_int,
        shown="auto",
    )
    topic_prefix: str = _setting(
        "OUTBOX_TOPIC_PREFIX",
        "",
        "prefix of the service topics and consumer groups (environments sharing a cluster)",
    )
    topic_recheck_interval: float = _setting(
        "OUTBOX_TOPIC_RECHECK_INTERVAL",
        0.0,
        "seconds between checks that the topics still exist (brokers that forget them: "
        "Tansu); 0: only after a failed send",
        parse_duration,
    )
    metadata_max_age: float = _setting(
        "OUTBOX_METADATA_MAX_AGE",
        30.0,
        "the broker metadata (topics, partitions, leaders) is refreshed at least this often",
        parse_duration,
    )
    session_timeout: float = _setting(
        "OUTBOX_SESSION_TIMEOUT", 10.0, "Kafka consumer session timeout", parse_duration
    )
    heartbeat_interval: float = _setting(
        "OUTBOX_HEARTBEAT_INTERVAL", 3.0, "Kafka consumer heartbeat interval", parse_duration
    )
    db_pool_size: int = _setting(
        "OUTBOX_DB_POOL_SIZE", 8, "database connections, and threads running database work", int
    )
    gil_switch_interval: float = _setting(
        "OUTBOX_GIL_SWITCH_INTERVAL",
        0.0005,
        "longest a worker thread runs Python while another waits for the interpreter "
        "(sys.setswitchinterval; Python's own default is 5ms)",
        parse_duration,
        shown="0.5ms",
    )
    clock_skew: float = _setting(
        "OUTBOX_CLOCK_SKEW",
        5.0,
        "the most the workers' clocks and the database's may differ: deliveries of events "
        "created before the worker got its partitions, or up to this after, count their "
        "attempt when the handler starts, so an event that crashes its worker spends attempts",
        parse_duration,
    )
    visibility_timeout: float = _setting(
        "OUTBOX_VISIBILITY_TIMEOUT",
        300.0,
        "published rows not consumed within this are published again (no attempt spent); "
        "0 turns it off",
        parse_duration,
    )
    retention: float = _setting(
        "OUTBOX_RETENTION",
        7 * 86400.0,
        "consumed rows older than this are purged; 0 turns purging off",
        parse_duration,
    )
    maintenance_interval: float = _setting(
        "OUTBOX_MAINTENANCE_INTERVAL",
        30.0,
        "seconds between stale-published recovery and purge rounds",
        parse_duration,
    )
    schema_mode: str = _setting(
        "OUTBOX_SCHEMA",
        "create",
        "at start-up, create: make missing tables, then check every table; check: only check "
        "(the DBA ran `outbox-app schema sql`); a worker whose tables differ exits 2",
        lambda raw: raw.strip().lower(),
    )
    purge_batch: int = _setting("OUTBOX_PURGE_BATCH", 1000, "rows deleted per purge batch", int)
    log_level: str = _setting("OUTBOX_LOG_LEVEL", "info", "worker log level")

    def __post_init__(self) -> None:
        for name in ("relay_batch", "consumer_batch", "db_pool_size", "topic_partitions"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{_env_name(name)} must be at least 1")
        if not 0 < self.gil_switch_interval <= 1:
            raise ConfigurationError(
                "OUTBOX_GIL_SWITCH_INTERVAL must be above 0 and at most 1s, "
                f"got {self.gil_switch_interval:g}s"
            )
        if self.max_retry < 1:
            raise ConfigurationError("OUTBOX_MAX_RETRY must be at least 1")
        if self.topic_replication < 0:
            raise ConfigurationError("OUTBOX_TOPIC_REPLICATION must be auto or at least 1")
        if self.topic_prefix and not re.match(r"^[A-Za-z0-9._-]{1,100}$", self.topic_prefix):
            raise ConfigurationError(
                "OUTBOX_TOPIC_PREFIX may hold letters, digits, '.', '_' and '-' only "
                f"(got {self.topic_prefix!r})"
            )
        if not self.roles or set(self.roles) - set(ROLES):
            raise ConfigurationError(
                f"OUTBOX_ROLES must name relay, consume or both, got {','.join(self.roles)!r}"
            )
        if self.schema_mode not in SCHEMA_MODES:
            raise ConfigurationError(
                f"OUTBOX_SCHEMA must be one of {', '.join(SCHEMA_MODES)}, got {self.schema_mode!r}"
            )
        self._check_kafka_security()
        try:
            if self.database_url:
                make_url(self.database_url)
        except Exception:  # noqa: BLE001 - never echo the URL: it may hold a password
            raise ConfigurationError(
                "OUTBOX_DATABASE_URL is not a valid SQLAlchemy URL (value hidden: it may hold "
                "a password)"
            ) from None

    def _check_kafka_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_PROTOCOLS:
            raise ConfigurationError(
                f"OUTBOX_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        if mechanism not in SASL_MECHANISMS:
            raise ConfigurationError(
                f"OUTBOX_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {mechanism!r}"
            )
        sasl = protocol.startswith("SASL_")
        if sasl and not (self.kafka_username and self.kafka_password):
            raise ConfigurationError(
                f"OUTBOX_KAFKA_SECURITY_PROTOCOL={protocol} needs OUTBOX_KAFKA_USERNAME and "
                "OUTBOX_KAFKA_PASSWORD"
            )
        if not sasl and (self.kafka_username or self.kafka_password):
            raise ConfigurationError(
                "OUTBOX_KAFKA_USERNAME/OUTBOX_KAFKA_PASSWORD are set but "
                f"OUTBOX_KAFKA_SECURITY_PROTOCOL is {protocol}: use SASL_SSL or SASL_PLAINTEXT"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if any(tls_files) and not protocol.endswith("SSL"):
            raise ConfigurationError(
                "OUTBOX_KAFKA_SSL_* files are set but OUTBOX_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: use SSL or SASL_SSL"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ConfigurationError(
                "OUTBOX_KAFKA_SSL_CERTFILE and OUTBOX_KAFKA_SSL_KEYFILE go together"
            )
        for env, path in zip(
            ("OUTBOX_KAFKA_SSL_CAFILE", "OUTBOX_KAFKA_SSL_CERTFILE", "OUTBOX_KAFKA_SSL_KEYFILE"),
            tls_files,
            strict=True,
        ):
            if path and not os.path.isfile(path):
                raise ConfigurationError(f"{env}: no such file {path!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigurationError(f"{f.metadata['env']}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def require_database(self) -> str:
        """The database URL, or a clear error when none was given: a worker or a command
        pointed at no database must not invent an empty one."""
        if not self.database_url:
            raise ConfigurationError(
                "OUTBOX_DATABASE_URL is not set: give the SQLAlchemy URL of the outbox "
                "database, e.g. mysql+mysqldb://user:password@host:3306/db (outbox-app dev "
                "prints the one it uses)"
            )
        return self.database_url

    @property
    def safe_database_url(self) -> str:
        return mask_url(self.database_url)

    @property
    def kafka_bootstrap(self) -> str:
        return self.broker_url.replace("kafka://", "").replace(";", ",")

    @property
    def kafka_hosts(self) -> list[tuple[str, int]]:
        """(host, port) of each bootstrap server."""
        out = []
        for part in self.kafka_bootstrap.split(","):
            host, _, port = part.strip().rpartition(":")
            out.append((host or part.strip(), int(port) if port.isdigit() else 9092))
        return out

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["database_url"] = self.safe_database_url
        shown["admin_token"] = "***" if self.admin_token else ""
        shown["kafka_password"] = "***" if self.kafka_password else ""
        shown["read_token"] = "***" if self.read_token else ""
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__


def mask_url(url: str) -> str:
    if not url:
        return "(not set)"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<invalid url>"


def _env_name(attr: str) -> str:
    for f in fields(Settings):
        if f.name == attr:
            return str(f.metadata["env"])
    return attr


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for docs and ``--help``."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = f.metadata["shown"] or str(default)
        rows.append((f.metadata["env"], shown, f.metadata["doc"]))
    return rows
