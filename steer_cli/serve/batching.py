"""The worker thread that owns the model: concurrent requests become one batch.

Requests put their jobs (one per prompt) on a queue. The worker takes the first, waits up to
the collection window for more that decode the same way (parts on or off, same sampling), up to
``max_batch_size``, and runs them as one left-padded generation. While a batch runs, new
requests queue up and form the next one, so N clients cost about N / batch size generations.
A failing batch fails its own requests only; the worker carries on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from steer_cli.serve.engine import Decoding, Engine, Job

log = logging.getLogger("steer.serve")


@dataclass
class _Item:
    job: Job
    decoding: Decoding
    future: concurrent.futures.Future


_STOP = object()


class Batcher:
    def __init__(self, engine: Engine, *, max_batch_size: int, window_s: float):
        self.engine, self.max_batch_size, self.window_s = engine, max_batch_size, window_s
        self.queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # the size of each batch run (for logs and tests)
        self.thread = threading.Thread(target=self._loop, name="steer-serve-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self.queue.put(_STOP)
        self.thread.join()

    def submit(self, jobs: list[Job], decoding: Decoding) -> list[concurrent.futures.Future]:
        futures = []
        for job in jobs:
            future: concurrent.futures.Future = concurrent.futures.Future()
            self.queue.put(_Item(job, decoding, future))
            futures.append(future)
        return futures

    def _loop(self) -> None:
        waiting: deque = deque()  # taken off the queue, but decoded otherwise than the batch
        while True:
            first = waiting.popleft() if waiting else self.queue.get()
            if first is _STOP:
                return
            batch, waiting = self._collect(first, waiting)
            self._run(batch)

    def _collect(self, first: _Item, waiting: deque) -> tuple[list[_Item], deque]:
        batch = [first]
        later: deque = deque()
        for item in waiting:
            if item is not _STOP and item.decoding == first.decoding and self._room(batch):
                batch.append(item)
            else:
                later.append(item)
        deadline = time.monotonic() + self.window_s
        while self._room(batch) and _STOP not in later:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is not _STOP and item.decoding == first.decoding:
                batch.append(item)
            else:
                later.append(item)
        return batch, later

    def _room(self, batch: list[_Item]) -> bool:
        return len(batch) < self.max_batch_size

    def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches.append(len(live))
        try:
            self.engine.run([item.job for item in live], live[0].decoding)
        except Exception as err:  # the requests of this batch fail; the server does not
            log.exception("a batch of %d failed", len(live))
            for item in live:
                item.future.set_exception(err)
            return
        for item in live:
            item.future.set_result(item.job)
