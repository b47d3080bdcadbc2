"""The service behind the HTTP layer: the second stage, the served index, limits and batching
(the index's administration, its writes, is ``admin.py``).

No web-framework code here; ``errors.py`` maps the exceptions raised here to HTTP statuses.
Searches run :class:`finerank.Pipeline` (in a thread pool) with a scorer that hands its pairs
to the cross-request batcher; plain rerank requests go to the batcher directly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import filters
from .._storage import current
from ..errors import FinerankError, InputTooLongError, NotFoundError
from ..index import Index
from ..models import LLMReranker, Scorer
from ..pipeline import ByLanguage, Pipeline, Reranker, SecondStage, check_query
from ..registry import encoder_of
from ..registry import first_stage as make_first_stage
from ..types import Ranking
from .batching import Batcher

logger = logging.getLogger(__name__)


# the hosted rerankers' model names a client written for them sends (Cohere, Jina, Voyage): the served model answers
VENDOR_ALIASES = (
    "rerank-v3.5", "rerank-english-v3.0", "rerank-multilingual-v3.0", "rerank-english-v2.0", "rerank-multilingual-v2.0",
    "rerank-v4.0-pro", "rerank-v4.0-fast", "jina-reranker-v2-base-multilingual", "jina-reranker-v1-base-en",
    "jina-reranker-v1-turbo-en", "jina-reranker-v1-tiny-en", "jina-reranker-m0", "rerank-2", "rerank-2-lite",
    "rerank-2.5", "rerank-2.5-lite",
)  # fmt: skip


class ModelNotInstalled(FinerankError):
    """The second stage for a request's language is not installed (503)."""


class InvalidRequest(FinerankError, ValueError):
    """A request field with a value the service cannot use (422)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Limits:
    max_documents: int = 1000  # documents per rerank request
    max_document_tokens: int = 8192  # tokens per document; longer documents are refused
    max_document_chars: int | None = (
        None  # refused before tokenizing (None: 12 x max_document_tokens, which no text within
    )
    # the token limit nears: a token is 1-6 characters of real text), so a huge text costs no tokenizing
    max_body_bytes: int = 16 * 1024 * 1024
    max_candidates: int = 1000  # first-stage depth of a search request
    batch_wait_ms: float = 5.0  # how long a request may wait for others to share its batch
    max_batch_pairs: int = 256
    request_part_pairs: int = (
        32  # a rerank request is scored this many texts (windows) at a time, others' between its parts
    )
    max_queue: int = 64  # requests waiting to be scored; beyond this: 429
    request_timeout_s: float | None = (
        60.0  # a request not answered by then is cancelled and answered 408 (None: no limit)
    )
    max_request_tokens: int = (
        131_072  # tokens a rerank request may have the model read, windows and query included; beyond: 413
    )


# What happens to a text longer than the model reads of it (beside the query, in its windows): "right"
# cuts its end (the model's own reading), "left" cuts its start and keeps the end, "refuse" answers 413.
Truncation = Literal["right", "left", "refuse"]


def _read_whole(scorer: Scorer, query: str, text: str, windows: int) -> bool:
    """Whether ``scorer`` reads all of ``text`` beside ``query``: in one window, or in its
    ``windows`` windows, the last of which reaches the text's end (the scorer's own windows:
    asking for two shows whether one would hold it)."""
    spans = scorer.windows(query, [text], max(2, windows))[0]
    if len(spans) == 1:
        return True
    # several windows: the model reads them only when it may (windows > 1), and a bi-encoder's extra
    # row for the whole text (it starts at 0) does not count, as the model cuts it
    return windows > 1 and any(start > 0 and end >= len(text) for start, end in spans)


def _kept_end(scorer: Scorer, query: str, text: str, starts: Sequence[int], windows: int) -> int:
    """The first token (of ``starts``, the text's token starts) of the longest end of ``text``
    that ``scorer`` reads whole, for a text it does not read whole: a binary search."""
    cut, whole = 0, len(starts) - 1  # the whole text is not read whole; its last token alone is
    while whole - cut > 1:
        middle = (cut + whole) // 2
        if _read_whole(scorer, query, text[starts[middle] :], windows):
            whole = middle
        else:
            cut = middle
    return whole


@dataclass(frozen=True)
class Scored:
    """A rerank request's answer: input indexes best first, their scores, and the tokens read."""

    order: list[int]
    scores: np.ndarray
    tokens: int


class BatchedScorer(Scorer):
    """A scorer whose windows are scored by the batcher, together with other requests' windows,
    and read, pooled and calibrated as the model's own (the base class's code). Called from a
    worker thread; waits on the event loop that runs the batcher. Stored document vectors (a
    bi-encoder over its own index) need no batching and go straight to the model."""

    def __init__(self, scorer: Scorer, batcher: Batcher, loop: asyncio.AbstractEventLoop):
        self.scorer, self.batcher, self.loop = scorer, batcher, loop
        self.name, self.calibration = scorer.name, scorer.calibration
        self.encoder, self.vector_reading = scorer.encoder, scorer.vector_reading

    @property
    def pairs_per_second(self) -> float | None:  # the model's, which changes when a background measurement ends
        return self.scorer.pairs_per_second

    @property
    def reading(self) -> dict:
        return self.scorer.reading

    def windows(
        self, query: str, texts: Sequence[str], max_chunks_per_doc: int | None = None
    ) -> list[list[tuple[int, int]]]:
        return self.scorer.windows(query, texts, max_chunks_per_doc)

    def pool(self, window_scores: np.ndarray, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.scorer.pool(window_scores, counts)

    def squash(self, raw: np.ndarray) -> np.ndarray:
        return self.scorer.squash(raw)

    def score_vectors(self, query: str, vectors: Sequence[np.ndarray], *, raw: bool = False) -> np.ndarray:
        return self.scorer.score_vectors(query, vectors, raw=raw)

    def raw_scores(self, requests) -> np.ndarray:
        futures = [
            asyncio.run_coroutine_threadsafe(self.batcher.score(query, texts), self.loop) for query, texts in requests
        ]
        scores = [future.result() for future in futures]
        return np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)


def _tokens_read(query: int, document: int, max_length: int | None, windows: int) -> int:
    """Tokens a model reads for one document of ``document`` tokens: one input of query and
    document cut to ``max_length``, or up to ``windows`` inputs of query and a window each."""
    if max_length is None:
        return query + document
    room = max(1, max_length - query)
    count = max(1, min(windows, -(-document // room)))
    return count * min(max_length, query + -(-document // count))


@dataclass(frozen=True)
class Served:
    """One generation of the served index and the pipelines over it (per first stage it can
    serve), swapped as one reference."""

    index: Index
    search: Mapping[str, Pipeline]  # first stage, then the second stage
    first_only: Mapping[str, Pipeline]


class Service:
    def __init__(
        self,
        reranker: Reranker,
        *,
        index: str | Path | None = None,
        first_stage: str = "bm25",
        limits: Limits = Limits(),
    ):
        self.second, self.limits = reranker, limits
        self.model_name = reranker.name
        self.index_path = Path(index) if index else None
        self.first_stage_kind = first_stage
        loaded = Index.load(self.index_path) if self.index_path else None
        self.encoder = self._encoder(loaded, first_stage)
        # the first stages a request may choose: bm25, and dense and hybrid when the index has vectors and their
        # encoder loads
        self.first_stages = ("bm25", "dense", "hybrid") if self.encoder is not None else ("bm25",)
        if loaded is not None:
            make_first_stage(
                loaded, first_stage, self.encoder
            )  # a first stage the index cannot serve fails now, not per request
        self._loaded = loaded
        self._served: Served | None = None
        # every second stage loads now (a per-language reranker loads each language's), each
        # model with a batcher of its own
        stages = reranker.stages() if isinstance(reranker, ByLanguage) else {"*": reranker}
        self.stages = {lang: stage for lang, stage in stages.items() if stage is not None}
        self.batchers = {
            id(st.scorer): Batcher(
                st.scorer,
                max_wait_ms=limits.batch_wait_ms,
                max_pairs=limits.max_batch_pairs,
                max_queue=limits.max_queue,
                part_pairs=limits.request_part_pairs,
            )
            for st in self.stages.values()
        }
        self._pool = ThreadPoolExecutor(max_workers=max(1, limits.max_queue), thread_name_prefix="finerank-search")
        self._swap = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: Counter[str] = Counter()
        self.pairs_scored = 0

    def start(self) -> None:
        """Start batching on the running event loop and build the pipelines that use it."""
        loop = asyncio.get_running_loop()
        for batcher in self.batchers.values():
            batcher.start()

        def batched(st: SecondStage) -> SecondStage:
            return SecondStage(BatchedScorer(st.scorer, self.batchers[id(st.scorer)], loop), st.fusion, st.name)

        self._batched: Reranker = (
            self.second.mapped(batched) if isinstance(self.second, ByLanguage) else batched(self.second)
        )
        if self._loaded is not None:
            self._serve(self._loaded)

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _encoder(index: Index | None, first_stage: str):
        """The encoder of the index's vectors: needed for a dense or hybrid default, loaded when
        it can be for the other choices."""
        if index is None or index.vectors is None:
            return None
        if first_stage != "bm25":
            return encoder_of(index)
        try:
            return encoder_of(index)
        except FinerankError as err:
            logger.warning("dense and hybrid search are not offered: %s", err)
            return None

    def _serve(self, index: Index) -> Served:
        stages = {kind: make_first_stage(index, kind, self.encoder) for kind in self.first_stages}
        self._served = Served(
            index,
            {k: Pipeline(st, self._batched) for k, st in stages.items()},
            {k: Pipeline(st) for k, st in stages.items()},
        )
        return self._served

    def served(self) -> Served:
        """The served index, reloaded first when another process (the CLI) published a newer
        generation, so the server never serves or overwrites a stale index."""
        if self.index_path is None or self._served is None:
            raise NotFoundError("no index is served (start the server with --index DIR)")
        state = self._served
        if current(self.index_path) != state.index.generation:
            with self._swap:
                state = self._served
                if current(self.index_path) != state.index.generation:
                    state = self._serve(Index.load(self.index_path))
        return state

    def publish(self, index: Index) -> None:
        """Serve ``index``, a generation this process has just saved (index administration's writes)."""
        with self._swap:
            self._serve(index)

    @property
    def index(self) -> Index | None:
        return self._served.index if self._served else None

    def documents(self) -> int | None:
        """Documents in the served index as it is on disk now (a newer generation another
        process published is loaded first); None without an index."""
        return None if self.index_path is None or self._served is None else len(self.served().index)

    # --- reranking -------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        """A request may name this server's model, "default", or a hosted reranker's name (a client
        written for Cohere or Jina sends one): all of them mean the served model."""
        if name and name not in (self.model_name, "default", *VENDOR_ALIASES):
            raise NotFoundError(
                f"model: unknown model {name!r}; this server serves {self.model_name!r} (also answering to 'default' "
                f"and hosted rerankers' names such as 'rerank-v3.5'; see /v1/info)",
                "model",
            )

    def scorer_for(self, query: str):
        """The model that scores a plain list for this query (per language for a routed reranker)."""
        stage = self.second.route(query)
        if stage is None:
            raise ModelNotInstalled(
                f"query: no second stage for this query's language is installed on this server ({self.model_name})"
            )
        return stage.scorer

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        max_tokens_per_doc: int | None = None,
        max_chunks_per_doc: int | None = None,
        *,
        truncation: Truncation = "right",
        instruction: str | None = None,
        field: str = "documents",
    ) -> tuple[list[str], int]:
        """Check a rerank request against the limits; cut documents to ``max_tokens_per_doc``,
        and a document longer than the model reads of it as ``truncation`` says. Returns the
        texts to score and the number of tokens the model will read (every window of a document
        read in windows, each with the query), refused beyond ``max_request_tokens``. ``field``
        names the documents in errors (``texts`` in TEI's shape)."""
        if not query.strip():
            raise InvalidRequest("query", "must not be empty")
        if not documents:
            raise InvalidRequest(field, "must not be empty")
        if len(documents) > self.limits.max_documents:
            raise InputTooLongError(
                f"{field}: {len(documents)} documents; at most {self.limits.max_documents} per request", field
            )
        most = self.limits.max_document_chars or 12 * self.limits.max_document_tokens
        for i, text in enumerate([query, *documents]):  # before any tokenizing: a huge text costs seconds and gigabytes
            if len(text) > most:
                where = "query" if i == 0 else f"{field}[{i - 1}]"
                raise InputTooLongError(f"{where}: {len(text)} characters; at most {most}", where)
        scorer = self.scorer_for(query)
        if instruction is not None:  # an LLM reranker's instruction changes what it reads beside the query
            if not isinstance(scorer, LLMReranker):
                raise InvalidRequest("instruction", f"{self.model_name} takes no instruction (only LLM rerankers do)")
            scorer = scorer.instructed(instruction)
        if scorer.encoder is None:  # a scorer without a tokenizer: its words count as tokens
            words = [len(text.split()) for text in [query, *documents]]
            spans = [[m.span() for m in re.finditer(r"\S+", text)] for text in documents]
        else:
            tokenizer = scorer.encoder.tokenizer
            encodings = tokenizer.encode_batch([query, *documents], add_special_tokens=False)
            words = [len(e.ids) for e in encodings]
            spans = [e.offsets for e in encodings[1:]]
        windows = max_chunks_per_doc or scorer.max_chunks_per_doc
        texts, tokens = [], 0
        for i, (text, n, token_spans) in enumerate(zip(documents, words[1:], spans)):
            if n > self.limits.max_document_tokens:
                raise InputTooLongError(
                    f"{field}[{i}]: {n} tokens; at most {self.limits.max_document_tokens} per document",
                    f"{field}[{i}]",
                )
            if max_tokens_per_doc is not None and n > max_tokens_per_doc:
                text, n = text[: token_spans[max_tokens_per_doc - 1][1]], max_tokens_per_doc
            if truncation != "right" and not _read_whole(scorer, query, text, windows):
                if truncation == "refuse":
                    raise InputTooLongError(
                        f"{field}[{i}]: {n} tokens, more than {scorer.name} reads of it "
                        f"(max_length {scorer.max_length}, {windows} window(s)); send truncate: true "
                        f"to have it cut",
                        f"{field}[{i}]",
                    )
                first = _kept_end(scorer, query, text, [start for start, _ in token_spans[:n]], windows)
                text, n = text[token_spans[first][0] :], n - first
            texts.append(text)
            tokens += _tokens_read(words[0], n, scorer.max_length, windows)
        if tokens > self.limits.max_request_tokens:
            raise InputTooLongError(
                f"{field}: the model would read {tokens} tokens (windows and query included); at most "
                f"{self.limits.max_request_tokens} per request: send fewer or shorter documents, or fewer windows",
                field,
            )
        return texts, tokens

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        raw: bool = False,
        max_tokens_per_doc: int | None = None,
        max_chunks_per_doc: int | None = None,
        instruction: str | None = None,
        truncation: Truncation = "right",
        field: str = "documents",
    ) -> Scored:
        """A plain list has no first stage: the model's scores alone, never fused, so a
        document's score does not depend on the order of the list. ``max_chunks_per_doc``: read
        a long document as up to that many windows (default: the model's setting);
        ``truncation``: what happens to a document longer than that (see :meth:`prepare`)."""
        texts, tokens = await asyncio.to_thread(
            lambda: self.prepare(
                query,
                documents,
                max_tokens_per_doc,
                max_chunks_per_doc,
                truncation=truncation,
                instruction=instruction,
                field=field,
            )
        )
        scorer = self._batched.route(query).scorer  # prepare checked that the route has a stage
        if instruction is not None:  # an instruction of its own (prepare checked the model takes one): scored apart
            scorer = self.scorer_for(query).instructed(instruction)
        loop = asyncio.get_running_loop()
        scores, _ = await loop.run_in_executor(
            self._pool, lambda: scorer.score_passages(query, texts, raw=raw, max_chunks_per_doc=max_chunks_per_doc)
        )
        self.pairs_scored += len(texts)
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:top_n]
        return Scored(order, scores, tokens)

    # --- search ------------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        candidates: int,
        top_n: int,
        filter: Mapping[str, Any] | None,
        rerank: bool,
        first_stage: str | None = None,
    ) -> Ranking:
        """``first_stage``: one of :attr:`first_stages` (default: the one the service was started with)."""
        if not query.strip():
            raise InvalidRequest("query", "must not be empty")
        for name, value in (("candidates", candidates), ("top_n", top_n)):
            if value > self.limits.max_candidates:
                raise InputTooLongError(f"{name}: at most {self.limits.max_candidates}", name)
        kind = first_stage or self.first_stage_kind
        if kind not in self.first_stages:
            raise InvalidRequest(
                "first_stage", f"{kind!r} is not served here; choose one of {', '.join(self.first_stages)}"
            )
        for field, check in (
            ("query", lambda: check_query(query)),
            ("filter", lambda: filters.validate(filter) if filter else None),
        ):
            try:
                check()
            except ValueError as err:  # what the pipeline would refuse, named by its field here
                raise InvalidRequest(field, str(err)) from None
        state = self.served()  # read once: a concurrent update swaps in a new state, this request keeps its own
        pipeline = (state.search if rerank else state.first_only)[kind]
        ranking = await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: pipeline.search(query, filter=filter, candidates=candidates, top_k=top_n)
        )
        if rerank:
            self.pairs_scored += len(ranking.candidates)
        return ranking

    # --- metrics ------------------------------------------------------------------------------

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency[route] += seconds

    def metrics(self) -> str:
        """Prometheus text exposition."""
        lines = [
            "# HELP finerank_requests_total HTTP requests by route and status.",
            "# TYPE finerank_requests_total counter",
        ]
        lines += [
            f'finerank_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())
        ]
        lines += [
            "# HELP finerank_request_seconds_total Seconds spent answering, by route.",
            "# TYPE finerank_request_seconds_total counter",
        ]
        lines += [f'finerank_request_seconds_total{{route="{r}"}} {t:.6f}' for r, t in sorted(self.latency.items())]
        lines += [
            "# HELP finerank_pairs_scored_total (query, document) pairs scored.",
            "# TYPE finerank_pairs_scored_total counter",
            f"finerank_pairs_scored_total {self.pairs_scored}",
            "# HELP finerank_batches_total Scoring calls (each may hold several requests).",
            "# TYPE finerank_batches_total counter",
            f"finerank_batches_total {sum(b.batches for b in self.batchers.values())}",
            "# HELP finerank_queue_depth Requests waiting to be scored.",
            "# TYPE finerank_queue_depth gauge",
            f"finerank_queue_depth {sum(b.depth for b in self.batchers.values())}",
            "# HELP finerank_index_documents Documents in the served index.",
            "# TYPE finerank_index_documents gauge",
            f"finerank_index_documents {self.documents() or 0}",
        ]
        return "\n".join(lines) + "\n"
