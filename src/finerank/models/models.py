"""The transformer rerankers: a cross-encoder (reads query and document together) and a
bi-encoder (embeds them apart and compares). Both score with ``score(query, texts)``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError
from . import calibration, chunks, tuning
from .backends import BACKENDS, choose_backend
from .base import Scorer
from .files import read_json, resolve_model
from .tokenization import TextEncoder, run_batches

logger = logging.getLogger(__name__)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _TransformerReranker(Scorer):
    """A Hugging Face model run by one of finerank's backends: what cross- and bi-encoders share."""

    head: str

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        backend: str = "auto",
        precision: str = "auto",
        max_length: int = 512,
        batch_size: int = 32,
        max_batch_tokens: int = 4096,
        threads: int | None = None,
        name: str | None = None,
        max_chunks_per_doc: int = 1,
        chunk_overlap: int = 32,
        chunk_pool: str = "max",
    ):
        """``max_chunks_per_doc`` > 1 reads a document longer than ``max_length`` as up to that
        many overlapping windows of tokens (``chunk_overlap`` shared), pooled by ``chunk_pool``
        ("max" or "mean-top-K"); see :mod:`finerank.models.chunks`. 1 cuts it to fit."""
        if max_chunks_per_doc < 1 or chunk_overlap < 0:
            raise ValueError(
                "max_chunks_per_doc must be at least 1 and chunk_overlap at least 0, "
                f"got {max_chunks_per_doc} and {chunk_overlap}"
            )
        chunks.check_pool(chunk_pool)
        self.max_chunks_per_doc, self.chunk_overlap, self.chunk_pool = max_chunks_per_doc, chunk_overlap, chunk_pool
        self.model_dir = resolve_model(model)
        self.name = name or str(model)
        self.backend_name, self.precision = choose_backend(backend, precision)
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.config = read_json(self.model_dir / "config.json")
        self._check_config()
        self.encoder = TextEncoder(self.model_dir, max_length)
        self.calibration = calibration.load(
            self.model_dir, self.calibration_key
        )  # fitted by finerank calibrate, if it was
        self.backend, self.measuring, measure = None, None, False
        if backend == precision == "auto" and tuning.enabled():  # measured on this CPU once, then read from the cache
            found = tuning.cached(self, threads)
            measure = found is None
            self.backend_name, self.precision = found or tuning.starting_engine()
            self.pairs_per_second = tuning.rate(self, threads, self.backend_name, self.precision) if found else None
        self.backend = BACKENDS[self.backend_name](self.model_dir, self.head, self.precision, threads)
        logger.info("loaded %s (%s, %s %s)", self.name, type(self).__name__, self.backend_name, self.precision)
        if measure:  # serve now; measure the engines in the background and switch (tuning.Background)
            self.measuring = tuning.Background(self, threads)
            self.measuring.start()

    def _check_config(self) -> None:
        pass

    def windows(
        self, query: str, texts: Sequence[str], max_chunks_per_doc: int | None = None
    ) -> list[list[tuple[int, int]]]:
        """Per text, the character spans of the windows the model reads (one span, the whole
        text, when it fits or when chunking is off)."""
        n = max_chunks_per_doc or self.max_chunks_per_doc
        return chunks.split(self.encoder.tokenizer, texts, self._budget(query) if n > 1 else 0, n, self.chunk_overlap)

    def _budget(self, query: str) -> int:
        """Tokens of a document the model reads in one window."""
        raise NotImplementedError

    @property
    def reading(self) -> dict:
        return super().reading | {"model": str(self.model_dir), "head": self.head, "chunk_overlap": self.chunk_overlap}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend_name!r}, precision={self.precision!r})"


class CrossEncoder(_TransformerReranker):
    """A Hugging Face sequence-classification model that scores (query, document) pairs.

    One label: the relevance is the sigmoid of the logit. Two labels: the softmax probability
    of label 1. ``raw=True`` returns the logit (for two labels, logit 1 minus logit 0, whose
    sigmoid is that probability). Documents are cut to ``max_length`` tokens with the query;
    the query is never cut (a query too long for any document raises InputTooLongError).
    """

    head = "classification"

    def _check_config(self) -> None:
        architectures = self.config.get("architectures") or []
        if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ModelError(
                f"{self.model_dir} is a {'/'.join(architectures)}, not a sequence classifier: "
                "it has no trained relevance head "
                "(for a sentence-transformers encoder use kind='bi-encoder' / --kind bi-encoder)"
            )
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        if labels not in (1, 2):
            raise ModelError(
                f"{self.model_dir} has {labels} labels; "
                "a cross-encoder needs 1 (relevance logit) or 2 (irrelevant/relevant)"
            )
        self.num_labels = labels

    def _budget(self, query: str) -> int:
        return self.encoder.document_budget(query)

    def raw_scores(self, requests: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray:
        pairs = [pair for query, texts in requests for pair in self.encoder.pairs(query, texts)]
        logits = run_batches(
            self.backend,
            pairs,
            self.batch_size,
            self.max_batch_tokens,
            lambda out, feeds: out,
            self.encoder.pad_id,
            self.encoder.max_length,
        )
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]

    @staticmethod
    def squash(raw: np.ndarray) -> np.ndarray:
        return sigmoid(raw)


class BiEncoder(_TransformerReranker):
    """A sentence-transformers-style encoder: embeds texts (pooling, normalisation, prefixes read
    from the model's config) for dense retrieval, and rescores candidates by the similarity of
    query and document embeddings.

    ``query_prefix`` / ``document_prefix`` are prepended before encoding (e5-style models need
    "query: " / "passage: "); by default they come from the model's ``prompts`` config, if any.
    As a reranker the relevance is (cosine + 1) / 2; ``raw=True`` returns the cosine (the dot
    product for a model without normalisation).

    ``document_window`` > 0 reads every document as overlapping windows of that many tokens (a
    quarter shared) and scores it by its best window: a question about one sentence of a long
    paragraph matches that sentence's embedding better than the paragraph's average (measured in
    docs/results.md). Indexes store one vector per window. 0 reads a document whole (cut to
    ``max_length``). ``whole_document`` > 0 also reads a document of several windows whole, as
    one more row (its last), and scores it (1 - whole_document) x its best window +
    whole_document x its whole text: a question in another language matches whole paragraphs
    better than short windows, a question in the documents' language their windows
    (docs/results.md).
    """

    head = "encoder"

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        max_length: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        cache_size: int = 0,
        document_window: int = 0,
        whole_document: float = 0.0,
        **options,
    ):
        if document_window < 0:
            raise ValueError(
                f"document_window must be 0 (whole documents) or a number of tokens, got {document_window}"
            )
        if not 0 <= whole_document < 1:
            raise ValueError(
                "whole_document is the whole text's share of a document's score, from 0 to under 1; "
                f"got {whole_document}"
            )
        self.document_window, self.whole_document = document_window, float(whole_document) if document_window else 0.0
        if document_window:
            options.setdefault("max_chunks_per_doc", MAX_WINDOWS)
            options.setdefault("chunk_overlap", document_window // 4)
        model_dir = resolve_model(model)
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}  # text -> embedding, for callers that meet the same documents again
        self._cache_lock = threading.Lock()
        st_config = read_json(model_dir / "sentence_bert_config.json")
        modules = read_json(model_dir / "modules.json") or []
        _check_modules(model_dir, modules)
        pooling = read_json(model_dir / "1_Pooling" / "config.json")
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True}
        if modes - {"pooling_mode_cls_token", "pooling_mode_mean_tokens"} or len(modes) > 1:
            raise ModelError(
                f"{model_dir}: pooling {', '.join(sorted(modes))} is not supported (finerank reads mean or CLS pooling)"
            )
        self.cls_pooling = modes == {"pooling_mode_cls_token"}
        st_model = read_json(model_dir / "config_sentence_transformers.json")
        self.normalize = (
            any(m.get("type", "").endswith("Normalize") for m in modules)
            or st_model.get("similarity_fn_name", "cosine") == "cosine"
        )
        prompts = st_model.get("prompts") or {}
        self.query_prefix = prompts.get("query", "") if query_prefix is None else query_prefix
        self.document_prefix = (
            prompts.get("document", prompts.get("passage", "")) if document_prefix is None else document_prefix
        )
        options.setdefault("name", str(model))
        super().__init__(model_dir, max_length=max_length or st_config.get("max_seq_length", 512), **options)

    @property
    def dimension(self) -> int:
        return int(self.config["hidden_size"])

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.embed([self.query_prefix + q for q in queries])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed([self.document_prefix + t for t in texts])

    def windows(
        self, query: str, texts: Sequence[str], max_chunks_per_doc: int | None = None
    ) -> list[list[tuple[int, int]]]:
        spans = super().windows(query, texts, max_chunks_per_doc)
        if self.whole_document:  # the whole text as one more row (cut to max_length when embedded)
            spans = [
                text_spans if len(text_spans) == 1 else [*text_spans, (0, len(text))]
                for text, text_spans in zip(texts, spans)
            ]
        return spans

    def embed_document_windows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The embeddings of every text's windows (``document_window``; one window, the whole
        text, when it is 0 or the text fits; with ``whole_document`` the whole text too), in
        order, and how many rows each text has."""
        spans = self.windows("", texts)
        vectors = self.embed_documents([t[s:e] for t, text_spans in zip(texts, spans) for s, e in text_spans])
        return vectors, np.array([len(text_spans) for text_spans in spans], dtype=np.int64)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (unit length when the model normalises), one float32 row per text, as is
        (no prefix). With ``cache_size`` > 0 the embeddings of the last ``cache_size`` texts are
        remembered (off by default, so measured latency is honest)."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        with self._cache_lock:  # threads share the cache: look up and store under one lock
            known = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            pooled = run_batches(
                self.backend,
                self.encoder.singles(missing),
                self.batch_size,
                self.max_batch_tokens,
                self._pool,
                self.encoder.pad_id,
                self.encoder.max_length,
            )
            if self.normalize:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            known.update(zip(missing, pooled))
        if self.cache_size > 0:
            with self._cache_lock:
                self._cache.update((t, known[t]) for t in missing)
                for stale in list(self._cache)[: max(0, len(self._cache) - self.cache_size)]:
                    del self._cache[stale]
        return np.stack([known[t] for t in texts])

    @property
    def vector_reading(self) -> dict:
        """How this model reads a document into stored vectors: an index's vectors serve as this
        scorer's reading of its documents only when they were made the same way."""
        return {
            "model": self.name,
            "document_prefix": self.document_prefix,
            "dimension": self.dimension,
            "max_length": self.max_length,
            "window": self.document_window,
            "whole": self.whole_document,
        }

    @property
    def reading(self) -> dict:
        return (
            super().reading
            | self.vector_reading
            | {"query_prefix": self.query_prefix, "cls_pooling": self.cls_pooling, "normalize": self.normalize}
        )

    def score_vectors(self, query: str, vectors: Sequence[np.ndarray], *, raw: bool = False) -> np.ndarray:
        """As :meth:`score`, from stored vectors instead of texts: per text, the rows of its
        windows (made by this model as :attr:`vector_reading` says, e.g. the ones an index
        stores; or one row per text), each text pooled over its rows."""
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
            vectors = vectors[:, None, :]
        shapes = [np.shape(v) for v in vectors]
        if any(len(sh) != 2 or sh[0] < 1 or sh[1] != self.dimension for sh in shapes):
            raise ValueError(
                f"vectors must be one array of {self.dimension}-dimensional rows (at least one) per text; "
                f"got shapes {shapes[:3]}"
            )
        if not shapes:
            return np.empty(0, dtype=np.float32)
        query_vector = self.embed_queries([query])[0]
        rows = np.concatenate([np.asarray(v, dtype=np.float32) @ query_vector for v in vectors])
        cosines = self.pool(rows, [len(v) for v in vectors])[0]
        return cosines if raw else self.calibrate(cosines)

    def _pool(self, hidden: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.cls_pooling:
            return hidden[:, 0]
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

    def _budget(self, query: str) -> int:
        prefix = (
            len(self.encoder.tokenizer.encode(self.document_prefix, add_special_tokens=False).ids)
            if self.document_prefix
            else 0
        )
        whole = max(1, self.encoder.max_length - self.encoder.single_specials - prefix)
        return min(whole, self.document_window) if self.document_window else whole

    def raw_scores(self, requests: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray:
        vectors = self.embed(
            [
                text
                for query, texts in requests
                for text in (self.query_prefix + query, *(self.document_prefix + t for t in texts))
            ]
        )
        cosines, start = [], 0
        for _, texts in requests:
            cosines.append(vectors[start + 1 : start + 1 + len(texts)] @ vectors[start])
            start += 1 + len(texts)
        return np.concatenate(cosines)

    @staticmethod
    def squash(raw: np.ndarray) -> np.ndarray:
        return (raw + 1.0) / 2.0


SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
MAX_WINDOWS = 4096  # windows read of one document with document_window (about 100,000 tokens at 32)


def _check_modules(model_dir, modules: list) -> None:
    """Refuse a sentence-transformers pipeline with modules finerank does not run (a Dense
    projection, ...): ignoring them would give wrong vectors."""
    unknown = [m.get("type", "?") for m in modules if not m.get("type", "").endswith(SUPPORTED_MODULES)]
    if unknown:
        raise ModelError(
            f"{model_dir} uses sentence-transformers module(s) {', '.join(unknown)}; "
            f"finerank runs only {', '.join(SUPPORTED_MODULES)}"
        )
