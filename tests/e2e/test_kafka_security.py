"""Workers on a Kafka broker behind SASL and TLS, as production brokers are: SCRAM users
added when its storage was formatted, a TLS listener with a CA made for the test. Wrong
credentials or an untrusted certificate stop the worker at once (exit 2) with a message
that names the mechanism and the user, never the password."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox_app.devtools.kafka import KafkaCluster, KafkaUser, java_available
from outbox_app.devtools.kafka.certs import make_certificates
from outbox_app.records import Status
from tests.conftest import fresh_mariadb_database
from tests.e2e.helpers import Stack, effects, publish_many, wait_status
from tests.support import ROOT, KafkaBroker, unique_prefix, worker_env

pytestmark = pytest.mark.skipif(not java_available(), reason="Apache Kafka needs Java 17")

USER = KafkaUser("outbox-worker", "scram-pw-" + "x" * 12)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-secured"), users=[USER], tls=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def stack(tmp_path: Path, secured: KafkaCluster) -> Iterator[Stack]:
    url, drop = fresh_mariadb_database("outbox_sec")
    s = Stack(tmp_path, KafkaBroker(secured), url)
    try:
        yield s
    finally:
        s.close()
        drop()


def listener(cluster: KafkaCluster, name: str) -> str:
    return "kafka://" + cluster.bootstrap(name)


def sasl_env(cluster: KafkaCluster, protocol: str, mechanism: str, password: str) -> dict[str, str]:
    env = {
        "OUTBOX_BROKER_URL": listener(cluster, protocol),
        "OUTBOX_KAFKA_SECURITY_PROTOCOL": protocol,
        "OUTBOX_KAFKA_SASL_MECHANISM": mechanism,
        "OUTBOX_KAFKA_USERNAME": USER.name,
        "OUTBOX_KAFKA_PASSWORD": password,
    }
    if protocol == "SASL_SSL":
        assert cluster.certificates is not None
        env["OUTBOX_KAFKA_SSL_CAFILE"] = str(cluster.certificates.ca)
    return env


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "PLAIN"),
    ],
)
def test_a_worker_relays_and_consumes_through_sasl(
    stack: Stack, secured: KafkaCluster, protocol: str, mechanism: str
) -> None:
    worker = stack.worker("flaky", **sasl_env(secured, protocol, mechanism, USER.password))
    ids = publish_many(stack.engine, [("flaky.ok", {"i": i}, f"k{i}") for i in range(5)])
    for row_id in ids:
        wait_status(stack, "flaky", row_id, Status.CONSUMED, 90)
        assert len(effects(stack.engine, row_id)) == 1
    assert USER.password not in worker.log()


def test_a_worker_talks_tls_with_a_client_certificate(stack: Stack, secured: KafkaCluster) -> None:
    certs = secured.certificates
    assert certs is not None
    stack.worker(
        "flaky",
        OUTBOX_BROKER_URL=listener(secured, "SSL"),
        OUTBOX_KAFKA_SECURITY_PROTOCOL="SSL",
        OUTBOX_KAFKA_SSL_CAFILE=str(certs.ca),
        OUTBOX_KAFKA_SSL_CERTFILE=str(certs.client_cert),
        OUTBOX_KAFKA_SSL_KEYFILE=str(certs.client_key),
    )
    (row_id,) = publish_many(stack.engine, [("flaky.ok", {}, "tls")])
    wait_status(stack, "flaky", row_id, Status.CONSUMED, 90)


def exits(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outbox_app", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wrong_credentials_stop_the_worker_naming_mechanism_and_user(
    secured: KafkaCluster, tmp_path: Path
) -> None:
    url, drop = fresh_mariadb_database("outbox_sec")
    try:
        wrong = "not-the-password-" + "y" * 8
        base = worker_env(url, KafkaBroker(secured), unique_prefix(), OUTBOX_SERVICES="agent")
        run = exits({**base, **sasl_env(secured, "SASL_SSL", "SCRAM-SHA-512", wrong)})
        out = run.stdout + run.stderr
        assert run.returncode == 2, out[-3000:]
        assert f"refused the SCRAM-SHA-512 login of user {USER.name!r}" in out, out[-3000:]
        assert wrong not in out and "Traceback" not in out

        other_ca = make_certificates(tmp_path / "other-ca", name="someone-else")
        env = {**base, **sasl_env(secured, "SASL_SSL", "SCRAM-SHA-512", USER.password)}
        env["OUTBOX_KAFKA_SSL_CAFILE"] = str(other_ca.ca)
        run = exits(env)
        out = run.stdout + run.stderr
        assert run.returncode == 2, out[-3000:]
        assert "TLS certificate is not trusted" in out, out[-3000:]
    finally:
        drop()
