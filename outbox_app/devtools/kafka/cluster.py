"""Apache Kafka nodes for tests, the soak and the bench: KRaft in combined mode (each node
is broker and controller), on free loopback ports, each with its own data and log.

A cluster formats its storage once; a node can be SIGKILLed and started again on its
data (leader failover), or the whole cluster bounced. One node for the test suite; three
(replication factor 3, ``min.insync.replicas=2``) for the soak. Optional listeners:
SASL (SCRAM-SHA-256/512 and PLAIN, users added when the storage is formatted) and TLS
(a CA made for the cluster, see ``certs``).

The timeouts are shortened for a machine that kills brokers on purpose: a dead broker
is noticed in 3 s and dropped from the in-sync replicas in 5 s (Kafka's defaults are
9 s and 30 s).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from outbox_app.devtools.kafka.certs import Certificates, make_certificates
from outbox_app.devtools.kafka.jars import LOG4J_CONFIG, classpath
from outbox_app.devtools.ports import free_ports

READY_LINE = "Kafka Server started"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Listener names are the security protocols they speak; PLAINTEXT also carries the
# replication traffic between brokers.
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")


@dataclass(frozen=True)
class KafkaUser:
    name: str
    password: str


@dataclass
class KafkaNode:
    node_id: int
    folder: Path
    ports: dict[str, int]  # listener name -> port, CONTROLLER included
    heap: str = "512m"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "broker.log"

    @property
    def config_path(self) -> Path:
        return self.folder / "server.properties"

    def address(self, listener: str = "PLAINTEXT") -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the JVM on this node's data; ``wait_started`` waits for it."""
        if self.alive():
            return
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    "java",
                    f"-Xms{self.heap}",
                    f"-Xmx{self.heap}",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath(),
                    "kafka.Kafka",
                    str(self.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a test's Ctrl-C is not the broker's
            )
        self._log_offset = self.log_path.stat().st_size

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        offset = getattr(self, "_log_offset", 0)
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                if READY_LINE.encode() in log.read():
                    return
            if not self.alive():
                raise RuntimeError(
                    f"kafka node {self.node_id} exited during start-up "
                    f"(code {self.proc.returncode if self.proc else '?'}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        raise TimeoutError(
            f"kafka node {self.node_id} not started within {timeout:g}s; log {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crashed machine."""
        self._signal(signal.SIGKILL, 15.0)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it takes longer than 30 s."""
        self._signal(signal.SIGTERM, 30.0)

    def _signal(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class KafkaCluster:
    """``nodes`` Kafka nodes under ``folder``; ``start()`` formats (once) and starts them."""

    folder: Path
    nodes: int = 1
    users: Sequence[KafkaUser] = ()  # SCRAM and PLAIN users: adds a SASL_PLAINTEXT listener
    tls: bool = False  # adds SSL (and, with users, SASL_SSL) listeners with a CA of their own
    heap: str = "512m"
    members: list[KafkaNode] = field(default_factory=list)
    certificates: Certificates | None = None
    cluster_id: str = ""

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        listeners = ["PLAINTEXT", "CONTROLLER"]
        if self.users:
            listeners.append("SASL_PLAINTEXT")
        if self.tls:
            listeners.append("SSL")
            if self.users:
                listeners.append("SASL_SSL")
            self.certificates = make_certificates(self.folder / "certs")
        picked = iter(free_ports(self.nodes * len(listeners)))  # all distinct, across nodes too
        for i in range(1, self.nodes + 1):
            ports = {name: next(picked) for name in listeners}
            self.members.append(KafkaNode(i, self.folder / f"node-{i}", ports, self.heap))

    # -- addresses -------------------------------------------------------------------------
    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        return ",".join(n.address(listener) for n in self.members)

    @property
    def url(self) -> str:
        """For ``OUTBOX_BROKER_URL``: ``kafka://host:port;host:port...``."""
        return "kafka://" + ";".join(n.address() for n in self.members)

    # -- life --------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> KafkaCluster:
        if not self.cluster_id:
            self._format()
        for node in self.members:
            node.start()
        for node in self.members:
            node.wait_started(timeout)
        self.wait_brokers(self.nodes, timeout)
        return self

    def restart_node(self, index: int, timeout: float = 90.0) -> None:
        node = self.members[index]
        node.start()
        node.wait_started(timeout)

    def kill_node(self, index: int) -> None:
        self.members[index].kill()

    def kill(self) -> None:
        for node in self.members:
            node.kill()

    def stop(self) -> None:
        for node in self.members:
            node.stop()

    def close(self, keep: bool = True) -> None:
        """Stop every node; the folder (logs, data) stays unless ``keep`` is false."""
        self.stop()
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def alive(self) -> list[bool]:
        return [n.alive() for n in self.members]

    def wait_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Until the cluster's metadata lists ``count`` live brokers."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            seen = asyncio.run(self._broker_count())
            if seen >= count:
                return
            time.sleep(0.2)
        raise TimeoutError(f"kafka: {seen} of {count} brokers registered after {timeout:g}s")

    async def _broker_count(self) -> int:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap(), request_timeout_ms=5000)
        try:
            await client.bootstrap()
            await client.force_metadata_update()
            return len(client.cluster.brokers())
        except Exception:  # noqa: BLE001 - not up yet
            return 0
        finally:
            await client.close()

    # -- storage -----------------------------------------------------------------------------
    def _format(self) -> None:
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram = [
            arg
            for user in self.users
            for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={user.name},password={user.password}]")
        ]
        for node in self.members:
            node.folder.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(self._config(node))
            run = subprocess.run(
                [
                    "java",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath(),
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={self.cluster_id}",  # an id may start with "-"
                    "--config",
                    str(node.config_path),
                    *scram,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if run.returncode != 0:
                raise RuntimeError(f"kafka storage format failed: {run.stdout[-2000:]}{run.stderr}")

    def _config(self, node: KafkaNode) -> str:
        n = self.nodes
        replicas = min(3, n)
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.ports['CONTROLLER']}" for m in self.members)
        clients = [name for name in node.ports if name != "CONTROLLER"]
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            "controller.listener.names=CONTROLLER",
            "listeners=" + ",".join(f"{k}://127.0.0.1:{p}" for k, p in node.ports.items()),
            "advertised.listeners=" + ",".join(f"{k}://{node.address(k)}" for k in clients),
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,"
            + ",".join(f"{k}:{k}" for k in PROTOCOLS),
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={node.data_dir}",
            "num.partitions=1",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={2 if n >= 3 else 1}",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=8",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min(2, n)}",
            "group.initial.rebalance.delay.ms=0",
            # Topics are the worker's to create, with their partitions: as on most clusters.
            "auto.create.topics.enable=false",
            "unclean.leader.election.enable=false",
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=3000",
            "replica.lag.time.max.ms=5000",
        ]
        if self.users:
            lines += _sasl_config("sasl_plaintext", self.users, plain=True)
        if self.certificates is not None:
            c = self.certificates
            lines += [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={c.server_keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={c.ca}",
                "listener.name.ssl.ssl.client.auth=requested",  # mutual TLS when offered
            ]
            if self.users:
                lines += _sasl_config("sasl_ssl", self.users, plain=False)
        return "\n".join(lines) + "\n"


def _sasl_config(listener: str, users: Sequence[KafkaUser], *, plain: bool) -> list[str]:
    mechanisms = [*SCRAM_MECHANISMS, *(["PLAIN"] if plain else [])]
    out = [f"listener.name.{listener}.sasl.enabled.mechanisms={','.join(mechanisms)}"]
    for m in SCRAM_MECHANISMS:
        out.append(
            f"listener.name.{listener}.{m.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    if plain:
        entries = " ".join(f'user_{u.name}="{u.password}"' for u in users)
        out.append(
            f"listener.name.{listener}.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {entries};"
        )
    return out
