"""The request queue: rows from concurrent requests share one forward pass.

One worker owns the model (a single thread: a forward pass uses every core, two would only fight).
When the model is idle, the first row waits up to `max_wait_s` for company; while the model is busy,
new rows pile up and leave together as the next batch (up to `max_batch_size` rows). Rows with
different sampling settings cannot share a `generate` call, so each batch takes the oldest row's
settings and the rows that match them; the others stay queued, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from omniground.serve.generation import Answer, Row

log = logging.getLogger("omniground.serve")


class QueueFull(Exception):
    """More rows waiting than the server accepts; the client should retry later."""


@dataclass
class _Pending:
    row: Row
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """`await batcher.submit(rows)` -> their Answers, computed in batches by `run_batch(rows)`."""

    def __init__(
        self,
        run_batch: Callable[[list[Row]], list[Answer]],
        max_batch_size: int = 16,
        max_wait_s: float = 0.01,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_s, max_queue
        self.on_batch = on_batch  # (rows in the batch, seconds it took), for metrics
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniground-model")

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="omniground-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(RuntimeError("server is shutting down"))
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, rows: list[Row]) -> list[asyncio.Future]:
        """Queue `rows`; one future per row. Raises QueueFull when the queue has no room for all of them."""
        if self._wake is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if len(self._queue) + len(rows) > self.max_queue:
            raise QueueFull(f"{len(self._queue)} rows already queued (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        pending = [_Pending(r, loop.create_future()) for r in rows]
        self._queue.extend(pending)
        self._wake.set()
        return [p.future for p in pending]

    def _take_batch(self) -> list[_Pending]:
        """The oldest live row plus every queued row with its sampling settings, up to max_batch_size."""
        while self._queue and (self._queue[0].row.cancelled.is_set() or self._queue[0].future.done()):
            self._drop(self._queue.popleft())
        if not self._queue:
            return []
        key = self._queue[0].row.sampling
        batch, rest = [], deque()
        while self._queue:
            p = self._queue.popleft()
            if p.row.cancelled.is_set() or p.future.done():
                self._drop(p)
            elif p.row.sampling == key and len(batch) < self.max_batch_size:
                batch.append(p)
            else:
                rest.append(p)
        self._queue = rest
        return batch

    @staticmethod
    def _drop(p: _Pending) -> None:
        if not p.future.done():
            p.future.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            # An idle model waits briefly for company, unless a full batch is already here.
            deadline = loop.time() + self.max_wait_s
            while len(self._queue) < self.max_batch_size and loop.time() < deadline:
                await asyncio.sleep(min(0.002, max(0.0, deadline - loop.time())))
            batch = self._take_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                answers = await loop.run_in_executor(self._pool, self.run_batch, [p.row for p in batch])
            except Exception:
                # One bad row must not fail its neighbours: answer them one at a time instead.
                log.exception("batch of %d failed; retrying its rows one by one", len(batch))
                for p in batch:
                    await self._run_alone(loop, p)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - started)
            for p, a in zip(batch, answers):
                if not p.future.done():
                    p.future.set_result(a)

    async def _run_alone(self, loop, p: _Pending) -> None:
        try:
            answer = (await loop.run_in_executor(self._pool, self.run_batch, [p.row]))[0]
        except Exception as e:  # a failed request fails alone, never the server
            log.warning("request failed: %s: %s", type(e).__name__, (str(e).splitlines() or [""])[0])
            if not p.future.done():
                p.future.set_exception(e)
            return
        if not p.future.done():
            p.future.set_result(answer)
