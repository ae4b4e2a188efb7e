"""Dynamic batching: concurrent requests grouped into one engine call, a bounded queue.

`Batcher.submit` puts a job in the queue (or refuses it with `QueueFull` when ``queue_size``
jobs are already waiting) and waits for its answer. One loop on the event loop takes the
first waiting job, waits up to ``max_wait_ms`` for more (or until ``max_batch_size`` are
there), and runs the group on a single worker thread, so the model only ever sees one group
at a time and the event loop stays free to accept and refuse requests meanwhile.

A job whose caller is gone (timed out, disconnected) before its group starts is dropped; one
whose caller leaves while its group runs is computed and its answer discarded: the other jobs
of the group never notice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .metrics import Metrics


class QueueFull(Exception):
    """The queue holds ``queue_size`` waiting requests."""


class Expired(Exception):
    """The request was not answered before its deadline (or the server stopped)."""


@dataclass
class _Item:
    job: Any
    future: asyncio.Future


class Batcher:
    """Groups submitted jobs and runs each group through ``run(jobs) -> results``.

    Args:
        run: the engine call; one result (or an exception, which fails that job alone) per job.
        max_batch_size: jobs per group.
        max_wait_ms: how long the first job of a group waits for others.
        queue_size: waiting jobs at most.
        metrics: where batch sizes and the queue depth go.
    """

    def __init__(self, run: Callable[[Sequence[Any]], list[Any]], *, max_batch_size: int,
                 max_wait_ms: float, queue_size: int, metrics: Metrics) -> None:
        self._run, self.max_batch_size = run, max_batch_size
        self.max_wait_s, self.queue_size, self.metrics = max_wait_ms / 1000, queue_size, metrics
        self._items: collections.deque[_Item] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def depth(self) -> int:
        """Jobs waiting for a group."""
        return len(self._items)

    async def start(self) -> None:
        """Start the grouping loop and the worker thread (on the running event loop)."""
        self._arrived = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isograd-serve")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop (after the group in progress) and fail the jobs still waiting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._items:
            it = self._items.popleft()
            if not it.future.done():
                it.future.set_exception(Expired("the server is shutting down"))
        self._gauge()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def submit(self, job: Any, timeout_s: float) -> Any:
        """Queue `job` and wait for its result.

        Raises:
            QueueFull: ``queue_size`` jobs are waiting already.
            Expired: no answer within `timeout_s` seconds.
            Exception: what the engine returned for this job.
        """
        if self._task is None or self._arrived is None:
            raise RuntimeError("the batcher is not started")
        if len(self._items) >= self.queue_size:
            raise QueueFull(f"{len(self._items)} requests are waiting (queue size "
                            f"{self.queue_size})")
        fut = asyncio.get_running_loop().create_future()
        self._items.append(_Item(job, fut))
        self._gauge()
        self._arrived.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except asyncio.TimeoutError:
            raise Expired(f"no answer within {timeout_s:g} s") from None
        finally:
            fut.cancel()  # no-op when done; else the loop drops or discards the job

    def _gauge(self) -> None:
        self.metrics.queue_depth.set(len(self._items))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._arrived is not None
        while True:
            while not self._items:
                self._arrived.clear()
                await self._arrived.wait()
            end = loop.time() + self.max_wait_s
            while len(self._items) < self.max_batch_size and (left := end - loop.time()) > 0:
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            group = [self._items.popleft()
                     for _ in range(min(self.max_batch_size, len(self._items)))]
            self._gauge()
            live = [it for it in group if not it.future.done()]
            if not live:
                continue
            self.metrics.batch_size.observe(len(live))
            try:
                results = await loop.run_in_executor(self._pool, self._run,
                                                     [it.job for it in live])
            except asyncio.CancelledError:  # stopped mid-group: nobody is left waiting
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(Expired("the server is shutting down"))
                raise
            except Exception as e:  # noqa: BLE001 - the engine itself broke: fail this group
                results = [e] * len(live)
            for it, r in zip(live, results):
                if it.future.done():  # its caller left: the answer is discarded
                    continue
                if isinstance(r, BaseException):
                    it.future.set_exception(r)
                else:
                    it.future.set_result(r)
