"""The service behind the HTTP layer: the reranker, the served index, limits and batching.

No web-framework code here; ``errors.py`` maps the exceptions raised here to HTTP statuses.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import CorpusError, FinerankError, InputTooLongError, NotFoundError
from ..index import Index
from ..rerank import FusedReranker, as_documents, rank, stored_vectors
from ..rerank import rerank as rerank_hits
from ..types import Document, Hit
from .batching import Batcher


class InvalidRequest(FinerankError, ValueError):
    """A request field with a value the service cannot use (422)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Limits:
    max_documents: int = 1000  # documents per rerank request
    max_document_tokens: int = 8192  # tokens per document; longer documents are refused
    max_body_bytes: int = 16 * 1024 * 1024
    max_candidates: int = 1000  # first-stage depth of a search request
    batch_wait_ms: float = 5.0  # how long a request may wait for others to share its batch
    max_batch_pairs: int = 256
    max_queue: int = 64  # requests waiting to be scored; beyond this: 429


@dataclass(frozen=True)
class Scored:
    """A rerank request's answer: input indexes best first, their scores, and the tokens read."""

    order: list[int]
    scores: np.ndarray
    tokens: int


class Service:
    def __init__(self, reranker, *, index: str | Path | None = None, first_stage: str = "bm25", limits: Limits = Limits()):
        self.reranker, self.limits = reranker, limits
        self.model_name = reranker.name
        self.index_path = Path(index) if index else None
        self.index = Index.load(self.index_path) if self.index_path else None
        self.first_stage_kind = first_stage
        self.encoder = self.index.load_encoder() if self.index is not None and self.index.vectors is not None else None
        self.first_stage = self.index.first_stage(first_stage, self.encoder) if self.index is not None else None
        # the batcher runs the model; a fused reranker's fusion with the first stage is done per request
        self.scorer = reranker.second if isinstance(reranker, FusedReranker) else reranker
        self.batcher = Batcher(self.scorer, max_wait_ms=limits.batch_wait_ms, max_pairs=limits.max_batch_pairs, max_queue=limits.max_queue)
        self._write_lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: Counter[str] = Counter()
        self.pairs_scored = 0

    # --- reranking -------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        if name and name not in (self.model_name, "default"):
            raise NotFoundError(f"model: unknown model {name!r}; this server serves {self.model_name!r}", "model")

    def prepare(self, query: str, documents: Sequence[str], max_tokens_per_doc: int | None = None) -> tuple[list[str], int]:
        """Check a rerank request against the limits; cut documents to ``max_tokens_per_doc``.
        Returns the texts to score and the number of tokens the model will read."""
        if not query.strip():
            raise InvalidRequest("query", "must not be empty")
        if not documents:
            raise InvalidRequest("documents", "must not be empty")
        if len(documents) > self.limits.max_documents:
            raise InputTooLongError(f"documents: {len(documents)} documents; at most {self.limits.max_documents} per request", "documents")
        tokenizer = self.reranker.encoder.tokenizer
        query_tokens = len(tokenizer.encode(query, add_special_tokens=False).ids)
        texts, tokens = [], 0
        for i, (text, encoding) in enumerate(zip(documents, tokenizer.encode_batch(list(documents), add_special_tokens=False))):
            n = len(encoding.ids)
            if n > self.limits.max_document_tokens:
                raise InputTooLongError(f"documents[{i}]: {n} tokens; at most {self.limits.max_document_tokens} per document", f"documents[{i}]")
            if max_tokens_per_doc is not None and n > max_tokens_per_doc:
                text, n = text[: encoding.offsets[max_tokens_per_doc - 1][1]], max_tokens_per_doc
            texts.append(text)
            tokens += min(query_tokens + n, self.reranker.encoder.max_length)
        return texts, tokens

    async def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None, raw: bool = False,
                     max_tokens_per_doc: int | None = None) -> Scored:
        texts, tokens = self.prepare(query, documents, max_tokens_per_doc)
        scores = self._relevance(await self.batcher.score(query, texts), raw=raw)
        self.pairs_scored += len(texts)
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:top_n]
        return Scored(order, scores, tokens)

    def _relevance(self, second: np.ndarray, first_ranks=None, first_scores=None, raw: bool = False) -> np.ndarray:
        """The reranker's scores from its model's raw scores: fused with the first stage (the input
        order, and the hits' ranks and scores when searching) when the reranker fuses."""
        if self.scorer is not self.reranker:
            second = self.reranker.fuse(second, first_ranks, first_scores)
        return second if raw else self.reranker.calibrate(second)

    # --- search and index administration ---------------------------------------------------------

    def _served_index(self) -> Index:
        if self.index is None:
            raise NotFoundError("no index is served (start the server with --index DIR)")
        return self.index

    async def search(self, query: str, *, candidates: int, top_n: int, filter: Mapping[str, Any] | None, rerank: bool) -> tuple[list[Hit], dict[str, float]]:
        if not query.strip():
            raise InvalidRequest("query", "must not be empty")
        if candidates > self.limits.max_candidates:
            raise InputTooLongError(f"candidates: at most {self.limits.max_candidates}", "candidates")
        self._served_index()
        start = time.perf_counter()
        try:
            hits = await asyncio.to_thread(self.first_stage.search, query, candidates if rerank else top_n, filter=filter)
        except ValueError as err:
            raise InvalidRequest("filter", str(err)) from None
        timings = {"first_stage": time.perf_counter() - start}
        vectors_of = stored_vectors(self.first_stage, self.reranker) if rerank and hits else None
        if vectors_of:  # a bi-encoder second stage over stored vectors: one query to encode, no batching needed
            start = time.perf_counter()
            self.pairs_scored += len(hits)
            hits = await asyncio.to_thread(lambda found: rerank_hits(self.reranker, query, found, top_n, vectors=vectors_of(found)), hits)
            timings["rerank"] = time.perf_counter() - start
        elif rerank and hits:
            start = time.perf_counter()
            documents, original = as_documents(hits)
            second = await self.batcher.score(query, [d.content for d in documents])
            self.pairs_scored += len(documents)
            hits = rank(documents, original, self._relevance(second, original, [h.score for h in hits]), top_n)
            timings["rerank"] = time.perf_counter() - start
        return hits[:top_n], timings

    def document(self, doc_id: str) -> Document:
        index = self._served_index()
        try:
            return index.documents[index.documents.position(doc_id)]
        except KeyError as err:
            raise NotFoundError(f"id: {err.args[0]}", "id") from None

    def upsert(self, documents: Sequence[Document]) -> int:
        """Add or replace documents by id; the new index is saved atomically, then served."""
        return self._update(add=documents)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id; an unknown id deletes nothing and raises NotFoundError."""
        return self._update(delete=ids)

    def _update(self, **change) -> int:
        with self._write_lock:
            try:
                new = self._served_index().update(**change, encoder=self.encoder)
            except CorpusError as err:
                raise InvalidRequest("ids" if "delete" in change else "documents", str(err)) from None
            new.save(self.index_path)
            # one reference swap each: a search sees the old index or the new one, whole
            self.first_stage = new.first_stage(self.first_stage_kind, self.encoder)
            self.index = new
            return len(new)

    # --- metrics ------------------------------------------------------------------------------

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency[route] += seconds

    def metrics(self) -> str:
        """Prometheus text exposition."""
        lines = ["# HELP finerank_requests_total HTTP requests by route and status.", "# TYPE finerank_requests_total counter"]
        lines += [f'finerank_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
        lines += ["# HELP finerank_request_seconds_total Seconds spent answering, by route.", "# TYPE finerank_request_seconds_total counter"]
        lines += [f'finerank_request_seconds_total{{route="{r}"}} {t:.6f}' for r, t in sorted(self.latency.items())]
        lines += [
            "# HELP finerank_pairs_scored_total (query, document) pairs scored.", "# TYPE finerank_pairs_scored_total counter",
            f"finerank_pairs_scored_total {self.pairs_scored}",
            "# HELP finerank_batches_total Scoring calls (each may hold several requests).", "# TYPE finerank_batches_total counter",
            f"finerank_batches_total {self.batcher.batches}",
            "# HELP finerank_queue_depth Requests waiting to be scored.", "# TYPE finerank_queue_depth gauge",
            f"finerank_queue_depth {self.batcher.depth}",
            "# HELP finerank_index_documents Documents in the served index.", "# TYPE finerank_index_documents gauge",
            f"finerank_index_documents {len(self.index) if self.index else 0}",
        ]
        return "\n".join(lines) + "\n"
