"""How a worker reaches Kafka: bootstrap servers, security protocol, SASL and TLS, for
Faust's consumer and producer and for every admin client the worker opens; and the wait
for a broker that is not up yet.

The password is never logged: a connection is described by its hosts, protocol,
mechanism and user.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from outbox_app.errors import OutboxError
from outbox_app.settings import Settings

log = logging.getLogger(__name__)


class BrokerRefused(OutboxError):
    """The broker answered but refused this worker (credentials, mechanism, certificate):
    waiting will not help."""


class BrokerUnavailable(OutboxError):
    """No broker answered (yet)."""


@dataclass(frozen=True)
class KafkaAccess:
    hosts: tuple[tuple[str, int], ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""

    @classmethod
    def from_settings(cls, s: Settings) -> KafkaAccess:
        return cls(
            tuple(s.kafka_hosts),
            s.kafka_security_protocol,
            s.kafka_sasl_mechanism,
            s.kafka_username,
            s.kafka_password,
            s.kafka_ssl_cafile,
            s.kafka_ssl_certfile,
            s.kafka_ssl_keyfile,
        )

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile or None)
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile or None)
        return ctx

    def faust_credentials(self) -> Any:
        """``broker_credentials`` for the Faust app (None: PLAINTEXT)."""
        if self.sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of aiokafka's clients (admin, producer, consumer)."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return kwargs

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.hosts)

    def describe(self) -> str:
        how = self.security_protocol
        if self.sasl:
            how += f", {self.sasl_mechanism} as user {self.username!r}"
        return f"{self.bootstrap} ({how})"


async def probe(access: KafkaAccess, timeout_s: float = 5.0) -> None:
    """Connect (and log in) to one bootstrap server; raises ``BrokerRefused`` when a broker
    refused us, ``BrokerUnavailable`` when none answered."""
    kwargs = access.client_kwargs()
    causes = []
    for host, port in access.hosts:
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **kwargs),
                timeout_s,
            )
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError) as exc:
            raise BrokerRefused(
                f"Kafka at {host}:{port} refused the {access.sasl_mechanism} login of user "
                f"{access.username!r} ({access.security_protocol}): {_message(exc)}"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            trusted = access.cafile or "the system CAs"
            raise BrokerRefused(
                f"Kafka at {host}:{port}: its TLS certificate is not trusted by {trusted} "
                f"(OUTBOX_KAFKA_SSL_CAFILE): {exc.verify_message}"
            ) from None
        except (TimeoutError, OSError, KafkaConnectionError, KafkaError) as exc:
            causes.append(f"{host}:{port}: {_message(exc)}")
            continue
        conn.close()
        return
    raise BrokerUnavailable("; ".join(causes) or "no bootstrap server configured")


async def wait_for_broker(
    access: KafkaAccess,
    sleep: Callable[[float], Awaitable[Any]],
    *,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
) -> None:
    """Until a broker answers: logs once that it waits (hosts, never the password), retries
    with backoff, and logs when the broker is back. ``BrokerRefused`` is raised at once."""
    delay, waited = first_delay, False
    while True:
        try:
            await probe(access)
        except BrokerUnavailable as exc:
            if not waited:
                log.warning(
                    "outbox: waiting for the Kafka broker at %s: %s; retrying with backoff "
                    "(up to %.0fs between tries)",
                    access.describe(),
                    exc,
                    max_delay,
                )
                waited = True
            await sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if waited:
            log.info("outbox: the Kafka broker at %s answers; starting", access.describe())
        return


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"
