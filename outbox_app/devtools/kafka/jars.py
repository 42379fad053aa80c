"""The Kafka broker's jars: resolved from Maven Central by Maven from the checked-in
``pom.xml`` into a cache folder, once per version (``OUTBOX_KAFKA_CACHE``, default
``~/.cache/outbox-app/kafka-<version>``)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or the jars could not be resolved."""


def kafka_version() -> str:
    """The version the pom pins (its own version is kept equal to Kafka's)."""
    found = re.search(
        r"<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>", POM.read_text()
    )
    if found is None:
        raise KafkaUnavailable(f"{POM} does not pin org.apache.kafka:kafka_2.13")
    return found.group(1)


def cache_dir() -> Path:
    explicit = os.environ.get("OUTBOX_KAFKA_CACHE")
    if explicit:
        return Path(explicit)
    return Path.home() / ".cache" / "outbox-app" / f"kafka-{kafka_version()}"


def java_available() -> bool:
    return shutil.which("java") is not None


def classpath() -> str:
    """``<cache>/libs/*`` once the jars are there, resolving them first when needed."""
    return str(resolve() / "*")


def resolve() -> Path:
    libs = cache_dir() / "libs"
    marker = libs / ".resolved"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if _resolved(marker, digest):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving right now
        if _resolved(marker, digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None or not java_available():
            raise KafkaUnavailable(
                "Apache Kafka needs Java 17 and Maven: run scripts/system-deps.sh, or "
                "apt-get install openjdk-17-jre-headless maven"
            )
        shutil.rmtree(libs, ignore_errors=True)
        run = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        jar = libs / f"kafka_2.13-{kafka_version()}.jar"
        if run.returncode != 0 or not jar.exists():
            raise KafkaUnavailable(
                f"mvn could not resolve {POM} (exit {run.returncode}): "
                f"{(run.stdout + run.stderr)[-1500:]}"
            )
        marker.write_text(digest + "\n")
    return libs


def _resolved(marker: Path, digest: str) -> bool:
    try:
        return marker.read_text().strip() == digest
    except OSError:
        return False


if __name__ == "__main__":
    print(resolve())
