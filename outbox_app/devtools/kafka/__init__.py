"""Apache Kafka for tests, the soak and the bench, from Maven Central (see ``jars``),
run as local KRaft nodes (see ``cluster``). ``python -m outbox_app.devtools.kafka``
runs one until Ctrl-C."""

from outbox_app.devtools.kafka.cluster import KafkaCluster, KafkaNode, KafkaUser
from outbox_app.devtools.kafka.jars import KafkaUnavailable, java_available, kafka_version

__all__ = [
    "KafkaCluster",
    "KafkaNode",
    "KafkaUnavailable",
    "KafkaUser",
    "java_available",
    "kafka_version",
]
