"""The Faust application: a relay timer and a consumer agent per owned service.

Run it with ``outbox-app worker`` or ``faust -A outbox_app.app worker -l info``.
``OUTBOX_SERVICES`` picks the services this worker owns; workers owning the same
services share one consumer group, and their relays share rows through claims.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import faust

from outbox_app.registry import Registry, default_registry
from outbox_app.settings import Settings
from outbox_app.worker.compat.assignor import OutboxAssignor
from outbox_app.worker.compat.log_noise import quiet_relay_overlap, restore_root_log_level
from outbox_app.worker.compat.producer import aiokafka_producer
from outbox_app.worker.compat.supervisor import AgentSupervisor
from outbox_app.worker.compat.transport import Transport
from outbox_app.worker.consumer import ServiceConsumer
from outbox_app.worker.maintenance import Maintenance
from outbox_app.worker.producer import BatchProducer
from outbox_app.worker.relay import Relay
from outbox_app.worker.runtime import Runtime
from outbox_app.worker.topics import TopicGuard

log = logging.getLogger(__name__)


class OutboxApp(faust.App):
    """A Faust app that owns an outbox runtime and uses the outbox Kafka transport."""

    runtime: Runtime
    topic_guard: TopicGuard | None = None
    fetch_max_wait_ms: int = 50

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        await self.runtime.start()

    async def on_started(self) -> None:
        await super().on_started()
        restore_root_log_level()

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.topic_guard is not None:
            await self.topic_guard.close()
        self.runtime.close()


def app_id_for(settings: Settings, registry: Registry, services: list[str]) -> str:
    if settings.app_id:
        return settings.app_id
    if len(services) == 1:
        return registry.route(services[0]).group
    if services == registry.services:
        return "outbox-all"
    return "outbox-" + "-".join(services)


def build_app(settings: Settings | None = None, registry: Registry | None = None) -> OutboxApp:
    """Build a worker app; fails fast on handler and route problems."""
    quiet_relay_overlap()
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
    app = OutboxApp(
        app_id,
        broker=settings.broker_url,
        autodiscover=False,
        datadir=datadir,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_request_timeout=max(30.0, settings.session_timeout * 2),
        broker_commit_interval=1.0,
        producer_request_timeout=max(5.0, min(15.0, settings.claim_lease / 2)),
        producer_linger=0.0,  # the relay sends a batch at once: batching happens anyway
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        stream_wait_empty=False,
        PartitionAssignor=OutboxAssignor,  # see assignor.py
        logging_config=None,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    runtime = app.runtime = Runtime(settings, registry, services)

    guard = app.topic_guard = TopicGuard(
        settings.kafka_bootstrap,
        [registry.route(s).topic for s in services],
        settings.topic_partitions,
    )

    # The topic must exist before anything is produced to it (see topics.py).
    publish = BatchProducer(
        lambda: aiokafka_producer(app),
        before_send=guard.check,
        on_failure=guard.suspect,
    )

    for service in services:
        route = registry.route(service)
        topic = app.topic(
            route.topic,
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
        relay = Relay(runtime, service, publish)
        app.timer(settings.relay_interval, name=f"outbox.relay.{service}")(relay.tick)

    maintenance = Maintenance(runtime)
    if maintenance.enabled:
        app.timer(settings.maintenance_interval, name="outbox.maintenance")(maintenance.tick)

    from outbox_app.ops.web.views import install as install_web

    install_web(app, runtime)
    return app
