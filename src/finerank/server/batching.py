"""Cross-request batching: pairs from concurrent requests are scored together.

Requests wait in a bounded queue; one worker takes what is queued (waiting at most
``max_wait_ms`` for more, up to ``max_pairs``), scores it in one call off the event loop, and
hands each request its scores. A full queue refuses new work (Overloaded) instead of piling up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import FinerankError

logger = logging.getLogger(__name__)


class Overloaded(FinerankError):
    """The scoring queue is full; the client should retry later."""


@dataclass
class _Request:
    query: str
    texts: Sequence[str]
    future: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(
        self, reranker, *, max_wait_ms: float = 5.0, max_pairs: int = 256, max_queue: int = 64, part_pairs: int = 32
    ):
        self.reranker = reranker  # a Scorer: the windows it is given are scored as they are (its raw_scores)
        self.max_wait, self.max_pairs, self.max_queue = max_wait_ms / 1000, max_pairs, max_queue
        self.part_pairs = max(1, min(part_pairs, max_pairs))  # a request is queued this many texts at a time
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self.batches = 0  # how many scoring calls were made (for /metrics)

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Raw scores for ``texts`` against ``query``, computed in shared batches. A request of
        more than ``part_pairs`` texts is queued a part at a time, each part after the last one is
        scored, so requests that arrive meanwhile are scored between its parts (a large request
        never holds a small one for its whole length)."""
        parts = [texts[i : i + self.part_pairs] for i in range(0, len(texts), self.part_pairs)] or [texts]
        scores = [await self._part(query, part) for part in parts]
        return np.concatenate(scores) if len(scores) > 1 else scores[0]

    async def _part(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"the scoring queue is full ({self.max_queue} requests waiting); retry later")
        request = _Request(query, texts, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            pairs, deadline = len(batch[0].texts), loop.time() + self.max_wait
            while pairs < self.max_pairs:
                try:
                    timeout = deadline - loop.time()
                    request = (
                        self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
                    )
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                batch.append(request)
                pairs += len(request.texts)
            results = await asyncio.to_thread(self._score, batch)
            self.batches += 1
            for request, result in zip(batch, results):
                if request.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    def _score(self, batch: list[_Request]) -> list:
        try:
            scores = np.asarray(self.reranker.raw_scores([(r.query, r.texts) for r in batch]), dtype=np.float32)
            return np.split(scores, np.cumsum([len(r.texts) for r in batch])[:-1])
        except Exception:  # one bad request must not fail its neighbours: score them one by one
            results = []
            for r in batch:
                try:
                    results.append(np.asarray(self.reranker.raw_scores([(r.query, r.texts)]), dtype=np.float32))
                except Exception as err:
                    results.append(err)
            return results
