"""Coarse recall, then fine ranking: a first stage recalls candidates, a reranker reorders them."""

from __future__ import annotations

import time
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from .rerank import Reranker, rerank, stored_vectors
from .types import Hit, Ranking


@runtime_checkable
class Retriever(Protocol):
    """A first stage: BM25 (:class:`finerank.Index`), dense, hybrid; external engines implement
    the same two calls. ``filter`` (see :mod:`finerank.filters`) is optional to implement."""

    name: str

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]: ...

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]: ...


class Pipeline:
    """``first_stage`` recalls ``candidates`` documents, ``reranker`` reorders them, the best
    ``top_k`` are returned. Without a reranker the first stage's top ``top_k`` come back as is."""

    def __init__(self, first_stage: Retriever, reranker: Reranker | None = None, *, candidates: int = 100, top_k: int = 3):
        if candidates < 1 or top_k < 1:
            raise ValueError(f"candidates and top_k must be at least 1, got {candidates} and {top_k}")
        self.first_stage, self.reranker = first_stage, reranker
        self.candidates, self.top_k = candidates, top_k
        # a bi-encoder second stage reads the document vectors the index stores instead of encoding again
        self._vectors = stored_vectors(first_stage, reranker) if reranker is not None else None

    def search(self, query: str, *, filter: Mapping[str, Any] | None = None) -> Ranking:
        """``filter``: see :mod:`finerank.filters` (passed to the first stage)."""
        if not query.strip():
            raise ValueError("the query is empty")
        start = time.perf_counter()
        k = self.candidates if self.reranker else self.top_k
        hits = self.first_stage.search(query, k, filter=filter) if filter else self.first_stage.search(query, k)
        timings = {"first_stage": time.perf_counter() - start}
        if self.reranker is not None:
            start = time.perf_counter()
            vectors = self._vectors(hits) if self._vectors and hits else None
            hits = rerank(self.reranker, query, hits, self.top_k, vectors=vectors)
            timings["rerank"] = time.perf_counter() - start
        return Ranking(query, tuple(hits[: self.top_k]), timings, self.first_stage.name, getattr(self.reranker, "name", None))

    def batch_search(self, queries: Sequence[str]) -> list[Ranking]:
        return [self.search(q) for q in queries]
