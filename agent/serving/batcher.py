"""Dynamic batching for one model version, after Triton's dynamic batcher.

Requests queue in the event loop; whenever an execution slot is free (``instances`` at once)
the queued requests whose tensors are compatible (same names, datatypes and non-batch dims)
are concatenated along axis 0 up to ``max_batch_size`` rows and run in a worker thread, and
each request gets exactly its own rows back. With ``max_queue_delay_us`` > 0 a partial batch
waits that long for company (Triton ``max_queue_delay_microseconds``); with 0 it takes whatever
queued while the previous execution ran, which batches under load and adds no delay when idle.

A full queue fails with :class:`~edgeserve.errors.QueueFullError`, a request past its deadline
with :class:`~edgeserve.errors.DeadlineExceededError` (both
:class:`~edgeserve.errors.UnavailableError`: HTTP 503, as Triton answers). The blocking runtime
call never runs in the event loop (starlette's ``run_in_threadpool`` idea), so one slow model
never stalls the HTTP layer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from edgeserve.errors import (
    DeadlineExceededError,
    EdgeServeError,
    InferenceInputError,
    ModelError,
    ModelUnloadingError,
    QueueFullError,
)

__all__ = ["BatchResult", "Batcher"]

Feeds = Mapping[str, np.ndarray]
RunFn = Callable[[Feeds], dict[str, np.ndarray]]
# (rows in the execution, requests in it, compute seconds) -> None; called in the loop thread
Observer = Callable[[int, int, float], None]


@dataclass
class BatchResult:
    """What one request gets back.

    Attributes:
        outputs: its own rows of every output.
        queue_s: seconds from arrival to the start of its execution.
        compute_s: seconds the execution took.
        batch_rows: rows in the execution it was part of.
    """

    outputs: dict[str, np.ndarray]
    queue_s: float
    compute_s: float
    batch_rows: int


@dataclass(eq=False)
class _Item:
    feeds: Feeds
    rows: int
    key: tuple
    future: asyncio.Future
    arrived: float
    deadline: float
    timer: asyncio.TimerHandle | None = None
    dispatched: float = 0.0


class Batcher:
    """Queue and batch requests for one model version. Use from the event loop thread only."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        batching: bool,
        max_batch_size: int,
        max_queue_delay_us: int,
        max_queue_size: int,
        timeout_ms: int,
        instances: int,
        observer: Observer | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.batching = batching
        self.max_batch_size = max_batch_size
        self._delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self._timeout_s = timeout_ms / 1e3
        self._instances = instances
        self._observer = observer
        self._queue: list[_Item] = []
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._idle: asyncio.Event | None = None
        self.closed = False

    @property
    def pending(self) -> int:
        """Requests queued or executing."""
        return len(self._queue) + self._running

    async def submit(self, feeds: Feeds, rows: int, timeout_s: float | None = None) -> BatchResult:
        """Queue one request and wait for its rows.

        Args:
            feeds: checked input arrays; with batching, axis 0 is the batch axis.
            rows: the request's batch size (axis 0 length), 1 when not batching.
            timeout_s: this request's limit, if shorter than the configured ``timeout_ms``.

        Raises:
            QueueFullError: the queue is full.
            ModelUnloadingError: the version is unloading.
            DeadlineExceededError: the deadline passed.
            InferenceInputError: more rows than ``max_batch_size`` while batching, or the
                runtime refused these inputs.
            ModelError: the runtime failed.
        """
        if self.closed:
            raise ModelUnloadingError("model version is unloading; retry")
        if self.batching and rows > self.max_batch_size:
            raise InferenceInputError(
                f"batch of {rows} rows is over this model's max_batch_size {self.max_batch_size}"
            )
        if len(self._queue) >= self.max_queue_size:
            raise QueueFullError(
                f"queue full ({self.max_queue_size} requests waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(feeds.items()))
        limit = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        item = _Item(feeds, rows, key, loop.create_future(), now, now + limit)
        item.timer = loop.call_later(limit, self._expire, item)
        self._queue.append(item)
        self._kick()
        try:
            return await item.future
        finally:
            item.timer.cancel()

    async def drain(self) -> None:
        """Wait until nothing is queued or executing (used before unloading)."""
        while self.pending:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()
            self._idle = None

    def _expire(self, item: _Item) -> None:
        if item.future.done():
            return
        if item in self._queue:
            self._queue.remove(item)
        ms = round((item.deadline - item.arrived) * 1000)
        item.future.set_exception(DeadlineExceededError(f"request timed out after {ms} ms"))
        self._notify_idle()

    def _notify_idle(self) -> None:
        if not self.pending and self._idle is not None:
            self._idle.set()

    def _kick(self) -> None:
        """Start executions while slots are free and requests wait."""
        while self._queue and self._running < self._instances:
            if self._delay_s and self.batching:
                oldest = self._queue[0]
                wait = oldest.arrived + self._delay_s - time.perf_counter()
                if wait > 0 and self._queued_rows(oldest.key) < self.max_batch_size:
                    if self._timer is None:
                        loop = asyncio.get_running_loop()
                        self._timer = loop.call_later(wait, self._on_timer)
                    return
            batch = self._take()
            self._running += 1
            start = time.perf_counter()
            for item in batch:
                item.dispatched = start
            fut = asyncio.get_running_loop().run_in_executor(self._executor, self._execute, batch)
            fut.add_done_callback(lambda f, b=batch: self._finish(f, b))

    def _on_timer(self) -> None:
        self._timer = None
        self._kick()

    def _queued_rows(self, key: tuple) -> int:
        return sum(i.rows for i in self._queue if i.key == key)

    def _take(self) -> list[_Item]:
        first = self._queue.pop(0)
        batch = [first]
        if not self.batching:
            return batch
        rows = first.rows
        rest: list[_Item] = []
        for item in self._queue:
            if item.key == first.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                rest.append(item)
        self._queue = rest
        return batch

    def _execute(self, batch: list[_Item]) -> tuple[list[dict[str, np.ndarray]], float, int]:
        """Runs in a worker thread: concatenate, run, split. Returns per-item outputs."""
        start = time.perf_counter()
        if len(batch) == 1:
            outputs = self._run(batch[0].feeds)
            return [outputs], time.perf_counter() - start, batch[0].rows
        feeds = {
            name: np.concatenate([item.feeds[name] for item in batch], axis=0)
            for name in batch[0].feeds
        }
        total = sum(item.rows for item in batch)
        outputs = self._run(feeds)
        compute = time.perf_counter() - start
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                raise ModelError(f"output {name} has no batch axis of {total} rows; cannot split")
        split: list[dict[str, np.ndarray]] = []
        offset = 0
        for item in batch:
            split.append({n: a[offset : offset + item.rows] for n, a in outputs.items()})
            offset += item.rows
        return split, compute, total

    def _finish(self, fut: asyncio.Future, batch: list[_Item]) -> None:
        self._running -= 1
        exc = ModelUnloadingError("agent is shutting down") if fut.cancelled() else fut.exception()
        if exc is not None and len(batch) > 1 and isinstance(exc, EdgeServeError):
            # One bad request must not fail its neighbours: run each on its own again (a
            # single request's error is its own, so it is never re-split).
            self._rerun_singly(batch)
        elif exc is not None:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(_as_input_error(exc))
        else:
            results, compute, rows = fut.result()
            if self._observer is not None:
                self._observer(rows, len(batch), compute)
            for item, outputs in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(
                        BatchResult(outputs, item.dispatched - item.arrived, compute, rows)
                    )
        self._kick()
        self._notify_idle()

    def _rerun_singly(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            if item.future.done():
                continue
            self._running += 1
            item.dispatched = time.perf_counter()
            fut = loop.run_in_executor(self._executor, self._execute, [item])
            fut.add_done_callback(lambda f, b=[item]: self._finish(f, b))


def _as_input_error(exc: BaseException) -> BaseException:
    """A runtime that rejects checked inputs (an index out of range, say) reports the caller's
    problem: Triton answers such runtime errors with 400, not 500."""
    if isinstance(exc, ModelError):
        return InferenceInputError(f"the model rejected the input: {exc}")
    return exc
