"""Where a service's events live: its outbox table, Kafka topic and consumer group."""

from __future__ import annotations

import re
from dataclasses import dataclass

from outbox_app.errors import ConfigurationError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


ORDERINGS = (None, "key")


@dataclass(frozen=True)
class Route:
    service: str
    table: str
    topic: str
    group: str
    # "key": the handlers' effects of one message key commit in the order its business
    # transactions committed (see outbox_app.ordering); None: no such promise.
    ordering: str | None = None

    @property
    def ordered(self) -> bool:
        return self.ordering == "key"

    @classmethod
    def default(cls, service: str) -> Route:
        check_service_name(service)
        return cls(service, f"{service}_outbox", f"outbox.{service}", f"outbox-{service}")

    def override(
        self,
        *,
        table: str | None = None,
        topic: str | None = None,
        group: str | None = None,
        ordering: str | None = None,
    ) -> Route:
        if table is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", table):
            raise ConfigurationError(f"service {self.service!r}: invalid table name {table!r}")
        if ordering not in ORDERINGS:
            raise ConfigurationError(
                f"service {self.service!r}: ordering must be 'key' or None, got {ordering!r}"
            )
        return Route(
            self.service,
            table or self.table,
            topic or self.topic,
            group or self.group,
            ordering if ordering is not None else self.ordering,
        )


def check_service_name(service: str) -> None:
    if not _NAME.match(service):
        raise ConfigurationError(
            f"invalid service name {service!r}: use lower-case letters, digits and '_', "
            "starting with a letter (at most 48 characters)"
        )
