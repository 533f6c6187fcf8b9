"""Adaptive micro-batching: concurrent requests that arrive together share one model call.

Requests announce themselves as soon as their HTTP request starts (`arrival()`), before their body is
parsed. Once a request is queued the batcher waits for more only while announced requests are still on
their way, and never longer than the window: a lone request is scored at once, and under load a batch
forms from everything that arrived while the model was busy. A model call is told whether its requests are all
the process has in flight (`alone`): only then may a big batch's trees be walked by helper threads too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flowship.serving.errors import NotReady
from flowship.serving.predictor import Scored, limit_native_threads
from flowship.serving.schema import Row

log = logging.getLogger(__name__)

T = TypeVar("T")

# (each request's rows, whether those requests are all the process has in flight) -> each request's outputs
ScoreMany = Callable[[Sequence[Sequence[Row]], bool], list[Scored | BaseException]]


class Arrival:
    """A request on its way to the batcher; released when it is queued, or when it ends without being queued; in
    flight until it ends (`end`), answered or not."""

    __slots__ = ("_batcher", "_open", "_pending")

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self._pending = True
        self._open = True
        batcher._arrivals += 1
        batcher._in_flight += 1

    def release(self) -> None:
        if self._pending:
            self._pending = False
            self._batcher._arrivals -= 1

    def end(self) -> None:
        self.release()
        if self._open:
            self._open = False
            self._batcher._in_flight -= 1


@dataclass
class _Item:
    rows: Sequence[Row]
    future: asyncio.Future[Scored | BaseException] = field(repr=False)


class MicroBatcher:
    """An asyncio queue of requests and one task that scores them, in batches, on a single model thread."""

    def __init__(
        self,
        score_many: ScoreMany,
        window_seconds: float,
        max_rows: int,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self._score_many = score_many
        self._on_call = on_call
        self._window = window_seconds
        self._max_rows = max_rows
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._arrivals = 0
        self._in_flight = 0  # scoring requests from their arrival to their end
        self._wake = asyncio.Event()
        self._closing = False
        self._started = False
        self._task: asyncio.Task[None] | None = None
        # One thread: the model is called by one caller at a time, and its own threads (OpenMP) do the rest.
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="flowship-model", initializer=limit_native_threads
        )
        self.model_calls = 0

    @property
    def enabled(self) -> bool:
        return self._window > 0

    @property
    def running(self) -> bool:
        return self._started and not self._closing

    def start(self) -> None:
        self._started = True
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="flowship-batcher")

    def arrival(self) -> Arrival:
        return Arrival(self)

    async def call(self, rows: Sequence[Sequence[Row]], alone: bool = False) -> list[Scored | BaseException]:
        """Run `score_many` on the model thread, outside batching; `alone`: these requests are all the process
        has in flight."""
        return await self.run(self._score_many, rows, alone)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run anything that touches the model on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def submit(self, rows: Sequence[Row], arrival: Arrival | None = None) -> Scored:
        """Score one request's rows; raises what the model raised for them."""
        if arrival is not None:
            arrival.release()
        if not self.running:
            raise NotReady("the service is not running (starting or shutting down)")
        if not self.enabled:
            self._count(len(rows))
            (result,) = await self.call([rows], alone=self._in_flight <= 1)
        else:
            future: asyncio.Future[Scored | BaseException] = asyncio.get_running_loop().create_future()
            self._pending.append(_Item(rows, future))
            self._pending_rows += len(rows)
            self._wake.set()
            result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def close(self) -> None:
        """Score everything queued, then stop; requests queued before this call all get their answer."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = loop.time() + self._window
            while self._arrivals > 0 and self._pending_rows < self._max_rows and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            self._count(sum(len(item.rows) for item in batch))
            try:
                results = await self.call([item.rows for item in batch], alone=self._in_flight <= len(batch))
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear of it, or it would hang
                log.exception("the model thread failed")
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():  # its request may have been cancelled meanwhile
                    item.future.set_result(result)

    def _count(self, rows: int) -> None:
        self.model_calls += 1
        if self._on_call is not None:
            self._on_call(rows)

    def _take(self) -> list[_Item]:
        batch = [self._pending.popleft()]
        rows = len(batch[0].rows)
        while self._pending and rows + len(self._pending[0].rows) <= self._max_rows:
            item = self._pending.popleft()
            rows += len(item.rows)
            batch.append(item)
        self._pending_rows -= rows
        return batch
