"""``outbox-app soak``: a fault-injection soak that proves nothing is lost or doubled.

A producer commits chat, task and memory events (and the soak's own ``soak.*``
events) through ``publish()`` in business transactions at a steady rate, some rolled
back on purpose; two or more workers relay and consume them; a fault schedule kills
and freezes workers, restarts the broker and the database, kills database connections,
makes a handler fail at random and puts poison on the topics. Then the soak waits until
nothing is pending or published and checks every committed event against its business
effect. One result line:

    SOAK events=N rolled_back=N consumed=N dead=N lost=N doubled=N faults=kind:N,... seconds=S

It exits non-zero when anything was lost or doubled, or another invariant broke.

- ``config``: options, the result and its line; ``producer``: the load and its ledger;
  ``rig`` and ``processes``: the database server, broker and workers it runs and
  breaks; ``faults``: the fault schedule; ``verify``: the checks; ``run``: all of it.
- ``handlers`` (the ``soak`` service) is imported only when a soak runs: importing this
  package registers nothing.
"""

from outbox_app.devtools.soak.config import FAULT_KINDS, SoakConfig, SoakResult, parse_faults
from outbox_app.devtools.soak.producer import Ledger, Sent
from outbox_app.devtools.soak.run import run_soak
from outbox_app.devtools.soak.verify import verify

__all__ = [
    "FAULT_KINDS",
    "Ledger",
    "Sent",
    "SoakConfig",
    "SoakResult",
    "parse_faults",
    "run_soak",
    "verify",
]
