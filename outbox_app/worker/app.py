"""The Faust application: a relay timer and a consumer agent per owned service.

Run it with ``outbox-app worker`` or ``faust -A outbox_app.app worker -l info``.
``OUTBOX_SERVICES`` picks the services this worker owns; workers owning the same
services share one consumer group, and their relays share rows through claims.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any

import faust

from outbox_app.errors import DatabaseRefused, OutboxError, SchemaMismatch, short_error
from outbox_app.registry import Registry, default_registry
from outbox_app.retry import Backoff
from outbox_app.settings import Settings
from outbox_app.worker.compat.assignor import OutboxAssignor
from outbox_app.worker.compat.log_noise import (
    quiet_drain_waiters,
    quiet_relay_overlap,
    restore_root_log_level,
)
from outbox_app.worker.compat.producer import aiokafka_producer
from outbox_app.worker.compat.supervisor import AgentSupervisor
from outbox_app.worker.compat.transport import OutboxTransportApp
from outbox_app.worker.consumer import ServiceConsumer
from outbox_app.worker.kafka import BrokerRefused, KafkaAccess, wait_for_broker
from outbox_app.worker.maintenance import Maintenance
from outbox_app.worker.producer import BatchProducer
from outbox_app.worker.relay import Relay
from outbox_app.worker.runtime import Runtime
from outbox_app.worker.topics import TopicAdmin, TopicCreationRefused, TopicGuard, TopicPlan

log = logging.getLogger(__name__)


class OutboxApp(OutboxTransportApp, faust.App):
    """A Faust app that owns an outbox runtime and uses the outbox Kafka transport."""

    runtime: Runtime
    kafka: KafkaAccess
    topic_admin: TopicAdmin
    topic_plan: TopicPlan
    topic_guard: TopicGuard

    async def on_first_start(self) -> None:
        """Before Faust starts its Kafka clients: the database (tables), the broker, the
        topics. Waits while either is not up yet; exits 2 when one refuses us."""
        await super().on_first_start()
        # The loop hands work to the database threads and Faust's consumer thread and
        # back, several times per event; each hop waits for the running thread's time
        # slice. At Python's 5 ms, five alternating bench groups drained 2650-3826
        # events/s with p99 81-203 ms at 500/s; at 0.5 ms, 3639-4198 and 67-176 ms.
        sys.setswitchinterval(self.runtime.settings.gil_switch_interval)
        try:
            await self.runtime.start(self.sleep)
            await wait_for_broker(self.kafka, self.sleep)
            await self._ensure_topics()
        except (DatabaseRefused, SchemaMismatch, BrokerRefused, TopicsRefused) as exc:
            log.critical("outbox: %s; exiting", exc)
            raise SystemExit(2) from None

    async def _ensure_topics(self) -> None:
        backoff, warned = Backoff(0.5, 10.0), False
        while True:
            try:
                await self.topic_plan.ensure(self.topic_admin)
                return
            except TopicCreationRefused as exc:
                if not exc.may_pass:  # ACLs, policies: an operator has to act
                    raise TopicsRefused(str(exc)) from None
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - the broker went away meanwhile
                await self.topic_admin.close()
                reason = short_error(exc)
            if not warned:
                log.warning("outbox: topics not checked yet (%s); retrying", reason)
                warned = True
            await self.sleep(backoff.next())

    async def on_started(self) -> None:
        await super().on_started()
        restore_root_log_level()

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.topic_guard.close()
        for stop in self.runtime.on_stop:
            await stop()
        self.runtime.close()


class TopicsRefused(OutboxError):
    """The broker refused to create the service topics (replication factor, ACLs)."""


def app_id_for(settings: Settings, registry: Registry, services: list[str]) -> str:
    """The Faust app id, which is also the consumer group."""
    if settings.app_id:
        return settings.app_id
    if len(services) == 1:
        group = registry.route(services[0]).group
    elif services == registry.services:
        group = "outbox-all"
    else:
        group = "outbox-" + "-".join(services)
    return settings.topic_prefix + group


def build_app(settings: Settings | None = None, registry: Registry | None = None) -> OutboxApp:
    """Build a worker app; fails fast on handler and route problems."""
    quiet_relay_overlap()
    quiet_drain_waiters()
    settings = settings or Settings.from_env()
    registry = registry or default_registry
    registry.load_modules(settings.handler_modules)
    services = registry.resolve_services(settings.services)
    registry.check_consumable(services)
    app_id = app_id_for(settings, registry, services)
    datadir = settings.datadir or os.path.join(
        tempfile.gettempdir(), "outbox-app", f"{app_id}-{settings.web_port}"
    )
    os.makedirs(os.path.dirname(datadir) or ".", exist_ok=True)
    kafka = KafkaAccess.from_settings(settings)
    app = OutboxApp(app_id, **faust_options(settings, kafka, datadir))
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    runtime = app.runtime = Runtime(settings, registry, services)

    app.kafka = kafka
    app.topic_admin = TopicAdmin(kafka)
    app.topic_plan = TopicPlan(
        sorted(runtime.topics.values()), settings.topic_partitions, settings.topic_replication
    )
    guard = app.topic_guard = TopicGuard(
        app.topic_admin, app.topic_plan, settings.topic_recheck_interval
    )

    # After a failed send the relay checks its topics before sending again (topics.py).
    publish = BatchProducer(
        lambda: aiokafka_producer(app),
        before_send=guard.check,
        on_failure=guard.suspect,
    )

    for service in services:
        if "consume" in settings.roles:
            consume(app, runtime, service)
        if "relay" in settings.roles:
            relay = Relay(runtime, service, publish)
            app.timer(settings.relay_interval, name=f"outbox.relay.{service}")(relay.tick)
    if "consume" in settings.roles:
        # Rows created from each assignment on had their first delivery here: only
        # older ones (and unfinished starts) may be a crashed worker's (redelivery.py).
        app.on_partitions_revoked.connect(runtime.partitions_revoked)
        app.on_partitions_assigned.connect(runtime.partitions_assigned)
    else:
        # Faust's mode for an app without agents: web view, producer and timers, no
        # consumer (which would subscribe to no topic, and aiokafka refuses that).
        app.producer_only = True

    maintenance = Maintenance(runtime)
    if maintenance.enabled:
        app.timer(settings.maintenance_interval, name="outbox.maintenance")(maintenance.tick)

    from outbox_app.ops.web.views import install as install_web

    install_web(app, runtime)
    return app


def consume(app: OutboxApp, runtime: Runtime, service: str) -> None:
    """The consumer agent of one service."""
    settings = runtime.settings
    topic = app.topic(
        runtime.topics[service],
        partitions=settings.topic_partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    consumer = ServiceConsumer(runtime, service)
    # One actor per partition: partitions are consumed in parallel (one database
    # transaction each at a time), and a key, which keeps its partition, keeps its order.
    app.agent(
        topic,
        name=f"outbox.consume.{service}",
        isolated_partitions=True,
        supervisor_strategy=AgentSupervisor,  # see supervisor.py
    )(
        consumer.agent  # type: ignore[arg-type]
    )


def faust_options(settings: Settings, kafka: KafkaAccess, datadir: str) -> dict[str, Any]:
    """The Faust settings of a worker (the bench's empty-agent ceiling uses them too)."""
    return dict(
        broker=settings.broker_url,
        broker_credentials=kafka.faust_credentials(),
        autodiscover=False,
        datadir=datadir,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        # No leader topic: nothing here runs on the leader only, and creating it needs the
        # cluster's controller, which a worker started during a broker outage cannot reach.
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_request_timeout=max(30.0, settings.session_timeout * 2),
        broker_commit_interval=1.0,
        # A topic deleted and created again is noticed by the next refresh (a consumer
        # whose partitions went away with the topic fetches nothing that would trigger one).
        consumer_metadata_max_age_ms=int(settings.metadata_max_age * 1000),
        producer_metadata_max_age_ms=int(settings.metadata_max_age * 1000),
        producer_request_timeout=max(5.0, min(15.0, settings.claim_lease / 2)),
        producer_linger=0.0,  # the relay sends a batch at once: batching happens anyway
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        stream_wait_empty=False,
        PartitionAssignor=OutboxAssignor,  # see assignor.py
        logging_config=None,
    )
