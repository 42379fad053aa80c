"""Consumer lag per partition, from the broker: for each service topic this worker serves,
the consumer group's committed offset against the partition's high-water mark.

``LagProbe`` asks the broker (an admin client for the committed offsets, a group-less
consumer for the end offsets: aiokafka's admin client has no ListOffsets), with the
worker's own ``KafkaAccess`` (SASL, TLS). ``LagMonitor`` caches the answer: at most one
broker query every ``min_interval_s`` however many ask, callers never wait longer than
``answer_within_s``, and while the broker does not answer they get the last value
marked stale, with the error, rather than a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from outbox_app.worker.kafka import KafkaAccess
from outbox_app.worker.topics import TopicAdmin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has committed nothing on this partition yet
    end: int  # the high-water mark: the offset the next record will get
    lag: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
        }


@dataclass(frozen=True)
class ServiceLag:
    topic: str
    partitions: list[PartitionLag]
    missing: bool = False  # the topic does not exist (yet)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "total": self.total,
            "missing": self.missing,
            "partitions": [p.as_dict() for p in self.partitions],
        }


@dataclass(frozen=True)
class LagSnapshot:
    taken_at: float  # wall clock (epoch seconds)
    services: dict[str, ServiceLag]


def partition_lag(partition: int, committed: int, begin: int, end: int) -> PartitionLag:
    """A group without a committed offset starts at the beginning (auto offset reset
    ``earliest``), as does one whose offset retention has passed: either way what is
    left to read is counted from the first record still on the partition."""
    start = max(committed, begin)
    return PartitionLag(partition, committed if committed >= 0 else None, end, max(0, end - start))


class LagProbe:
    """One broker query for the lag of every served topic; clients are kept between
    queries and opened again after a failure."""

    def __init__(
        self,
        access: KafkaAccess,
        group: str,
        topics: Mapping[str, str],
        request_timeout_ms: int = 5000,
    ) -> None:
        self.access = access
        self.group = group
        self.topics = dict(topics)  # service -> topic (OUTBOX_TOPIC_PREFIX applied)
        self.request_timeout_ms = request_timeout_ms
        self.admin = TopicAdmin(access, request_timeout_ms)
        self._reader: Any = None

    async def _end_reader(self) -> Any:
        if self._reader is None:
            from aiokafka import AIOKafkaConsumer

            reader = AIOKafkaConsumer(
                bootstrap_servers=self.access.bootstrap,
                group_id=None,  # reads offsets only: joins no group, commits nothing
                enable_auto_commit=False,
                request_timeout_ms=self.request_timeout_ms,
                **self.access.client_kwargs(),
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def __call__(self) -> LagSnapshot:
        try:
            return await self._query()
        except BaseException:  # cancelled (timed out) too: the clients may be half-way
            await self.close()
            raise

    async def _query(self) -> LagSnapshot:
        from aiokafka import TopicPartition

        counts = await self.admin.partitions(sorted(set(self.topics.values())))
        tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n or 0)]
        committed: dict[Any, int] = {}
        begins: dict[Any, int] = {}
        ends: dict[Any, int] = {}
        if tps:
            admin = await self.admin.client()
            offsets = await admin.list_consumer_group_offsets(self.group, partitions=tps)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            reader = await self._end_reader()
            begins = await reader.beginning_offsets(tps)
            ends = await reader.end_offsets(tps)
        services = {}
        for service, topic in sorted(self.topics.items()):
            if counts.get(topic) is None:
                services[service] = ServiceLag(topic, [], missing=True)
                continue
            mine = sorted((tp for tp in tps if tp.topic == topic), key=lambda tp: tp.partition)
            services[service] = ServiceLag(
                topic,
                [
                    partition_lag(tp.partition, committed.get(tp, -1), begins[tp], ends[tp])
                    for tp in mine
                ],
            )
        return LagSnapshot(time.time(), services)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.stop()
            except Exception as exc:  # noqa: BLE001 - closing a broken client
                log.debug("lag: closing the offsets reader failed: %s", exc)
        await self.admin.close()


@dataclass(frozen=True)
class LagReport:
    snapshot: LagSnapshot | None  # the last answer the broker gave
    error: str | None  # why the last query failed; None once one succeeds again
    stale: bool

    def as_dict(self, group: str) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "group": group,
            "as_of": None if snap is None else round(snap.taken_at, 3),
            "age_s": None if snap is None else round(max(0.0, time.time() - snap.taken_at), 3),
            "stale": self.stale,
            "error": self.error,
            "services": {} if snap is None else {s: v.as_dict() for s, v in snap.services.items()},
        }


class LagMonitor:
    def __init__(
        self,
        query: Callable[[], Awaitable[LagSnapshot]],
        *,
        min_interval_s: float = 2.0,
        answer_within_s: float = 2.0,
        query_timeout_s: float = 10.0,
        stale_after_s: float = 10.0,
    ) -> None:
        self._query = query
        self.min_interval_s = min_interval_s
        self.answer_within_s = answer_within_s
        self.query_timeout_s = query_timeout_s
        self.stale_after_s = stale_after_s
        self._snapshot: LagSnapshot | None = None
        self._snapshot_mono = 0.0
        self._error: str | None = None
        self._started = -float("inf")  # monotonic start of the last query
        self._task: asyncio.Task[None] | None = None
        self.queries = 0  # broker queries made (for tests and logs)

    async def report(self) -> LagReport:
        """The lag as last known: refreshed first when due (waiting at most
        ``answer_within_s`` for the broker; the query goes on for the next caller)."""
        now = time.monotonic()
        if self._task is None and now - self._started >= self.min_interval_s:
            self._started = now
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.answer_within_s)
        return self.current()

    def current(self) -> LagReport:
        fresh = (
            self._snapshot is not None
            and self._error is None
            and time.monotonic() - self._snapshot_mono <= self.stale_after_s
        )
        return LagReport(self._snapshot, self._error, stale=not fresh)

    async def _refresh(self) -> None:
        try:
            self.queries += 1
            snapshot = await asyncio.wait_for(self._query(), self.query_timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._failed(f"the broker did not answer within {self.query_timeout_s:g}s")
        except Exception as exc:  # noqa: BLE001 - any broker trouble: reported, not raised
            self._failed(_reason(exc))
        else:
            if self._error is not None:
                log.info("lag: the broker answers again")
            self._snapshot, self._snapshot_mono, self._error = snapshot, time.monotonic(), None
        finally:
            self._task = None

    def _failed(self, reason: str) -> None:
        if self._error is None:  # once per outage, not per query
            log.warning("lag: consumer lag not refreshed: %s; showing the last value", reason)
        self._error = reason

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _reason(exc: BaseException) -> str:
    # aiokafka's messages often name their type already: "NodeNotReadyError: ...".
    text = str(exc) or type(exc).__name__
    text = text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"
    return text[:300]
