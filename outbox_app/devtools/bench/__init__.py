"""``outbox-app bench``: throughput and latency of the outbox, each beside the raw ceiling
of the same machine measured in the same run.

Phases: *limits* (``limits``: raw aiokafka produce+consume, raw database commits of the
consume transaction's shape), then with the workers (``workers``) the outbox's own
(``phases``): *write* (business transactions through ``publish()``), *drain* (a released
backlog relayed and consumed), *live* (a steady rate; latency from business commit to
handler commit). ``run`` puts them together and prints one BENCH line (``config``).
"""

from outbox_app.devtools.bench.config import BenchConfig, BenchResult
from outbox_app.devtools.bench.run import run_bench

__all__ = ["BenchConfig", "BenchResult", "run_bench"]
