"""Three pieces of log noise from Faust, mode and aiokafka, turned off where they mislead.

- mode logs "Timer ... is overlapping" when a timer's callback outlasts its interval: a
  relay round that drains a backlog does so by design (matched on mode's message text).
- Faust's worker, at log level warn and above, sets the root logger to DEBUG for its
  start-up spinner and leaves it there: every library debug call (aiokafka logs each
  send) then builds a record that no handler prints (found by its ``SpinnerHandler``
  class name).
- aiokafka's explicit batch API (``send_batch``, which the relay uses) sets a failed
  batch's exception on its internal "drain waiter" future too, which nobody awaits unless
  another batch queues behind it: asyncio then logs "Future exception was never
  retrieved" at ERROR for each failed batch during a broker outage. The relay reads every
  ack future it gets; an unretrieved aiokafka error is that waiter (matched on asyncio's
  message text and the exception's type).
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

OVERLAP_MESSAGE = "Timer %s is overlapping"
SPINNER_HANDLER = "SpinnerHandler"


class RelayOverlapFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith(OVERLAP_MESSAGE)
            and str(record.args[0] if record.args else "").startswith("outbox.")  # type: ignore[index]
        )


UNRETRIEVED_MESSAGE = "Future exception was never retrieved"


class DrainWaiterFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith(UNRETRIEVED_MESSAGE)
            and isinstance(exc, KafkaError)
        )


def quiet_drain_waiters() -> None:
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, DrainWaiterFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(DrainWaiterFilter())


def quiet_relay_overlap() -> None:
    timers = logging.getLogger("mode.timers")
    if not any(isinstance(f, RelayOverlapFilter) for f in timers.filters):
        timers.addFilter(RelayOverlapFilter())


def restore_root_log_level() -> None:
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != SPINNER_HANDLER]
    if levels and root.level < min(levels):
        root.setLevel(min(levels))
