"""The started aiokafka producer under Faust's producer: the relay hands it whole record
batches (``create_batch`` / ``send_batch``), which Faust's ``send`` does not offer. Faust
keeps it behind the private ``_ensure_producer()``."""

from __future__ import annotations

from typing import Any


def aiokafka_producer(app: Any) -> Any:
    return app.producer._ensure_producer()


def available_partitions(producer: Any, topic: str) -> list[int]:
    """The topic's partitions that have a leader now (aiokafka's ``client.cluster``, what its
    default partitioner picks from for records without a key)."""
    return list(producer.client.cluster.available_partitions_for_topic(topic) or ())
