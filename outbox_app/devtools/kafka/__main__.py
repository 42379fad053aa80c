"""``python -m outbox_app.devtools.kafka [--nodes 3] [--dir DIR]``: a local Apache Kafka
cluster (the suite's broker) until Ctrl-C; prints the OUTBOX_BROKER_URL to use."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

from outbox_app.devtools.kafka.cluster import KafkaCluster


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m outbox_app.devtools.kafka")
    parser.add_argument("--nodes", type=int, default=1, help="brokers (default 1; 3 for RF 3)")
    parser.add_argument("--dir", type=Path, help="data and logs (default: a temporary folder)")
    ns = parser.parse_args()
    folder = ns.dir or Path(tempfile.mkdtemp(prefix="outbox-kafka-"))
    cluster = KafkaCluster(folder, nodes=ns.nodes).start()
    print(f"OUTBOX_BROKER_URL={cluster.url}", flush=True)
    print(f"kafka {ns.nodes} node(s) running; data and logs in {folder}; Ctrl-C stops", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
