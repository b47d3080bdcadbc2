"""The one scorer contract. Every scorer is a :class:`Scorer`: finerank's cross-encoders,
bi-encoders and LLM rerankers, the server's batching scorer, and a user's own. A subclass
implements :meth:`Scorer.raw_scores`; reading long texts in windows, pooling the windows'
scores, calibrating and the public calls are this class's, once for all of them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import chunks

Span = tuple[int, int]
Request = tuple[str, Sequence[str]]


class Scorer:
    """Scores texts against a query, higher meaning more relevant: ``score`` gives one float per
    text, a relevance in [0, 1] (calibrated when ``finerank calibrate`` fitted the model, else
    the model's own squashing), or the model's raw score with ``raw=True``. A text's score never
    depends on the other texts or their order.

    A subclass implements :meth:`raw_scores`, and may override :meth:`windows` (how a long text
    is cut into pieces the model reads; default: whole), :meth:`squash` (raw score to [0, 1];
    default: as it is) and :attr:`reading` (every setting that changes its scores)::

        class Overlap(finerank.Scorer):
            name = "overlap"

            def raw_scores(self, requests):
                return np.array([len(set(q.split()) & set(t.split())) for q, texts in requests for t in texts], float)
    """

    name: str = "scorer"
    encoder = None  # finerank's models: their tokenizer (a TextEncoder), which sets max_length
    max_chunks_per_doc = 1  # windows a long text is read as (1: cut to fit)
    chunk_pool = "max"  # how a text's window scores pool into its score (see finerank.models.chunks)
    whole_document = 0.0  # the whole text's share of a windowed text's score (its last window is the whole text)
    calibration = None  # raw score -> probability of relevance, when one was fitted
    backend_name: str | None = None  # the engine that runs the model (openvino, torch, onnx), for finerank's own models
    precision: str | None = None
    pairs_per_second: float | None = None  # the engine's rate on the tuning sample, when it was measured

    vector_reading: dict | None = None  # a bi-encoder: how it reads documents into vectors (see score_vectors)

    def raw_scores(self, requests: Sequence[Request]) -> np.ndarray:
        """One raw score per (query, text) of every request, in order: the model itself."""
        raise NotImplementedError(f"{type(self).__name__} must implement raw_scores(requests)")

    def windows(self, query: str, texts: Sequence[str], max_chunks_per_doc: int | None = None) -> list[list[Span]]:
        """Per text, the character spans of the windows the model reads (one span, the whole text,
        when it fits or when chunking is off)."""
        return [[(0, len(text))] for text in texts]

    def pool(self, window_scores: np.ndarray, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per text (``counts`` windows each, in order), its windows' raw scores pooled as this
        model pools them, and the index of its best window among its own."""
        return chunks.pool(np.asarray(window_scores, dtype=np.float32), counts, self.chunk_pool, self.whole_document)

    @staticmethod
    def squash(raw: np.ndarray) -> np.ndarray:
        """The model's own map from a raw score to [0, 1] (a sigmoid for a logit)."""
        return np.asarray(raw, dtype=np.float32)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores to a relevance in [0, 1]: the probability of relevance when the model was
        calibrated (``finerank calibrate``), else the model's own squashing of its score."""
        return self.calibration(raw) if self.calibration is not None else self.squash(raw)

    @property
    def max_length(self) -> int | None:
        """Tokens the model reads per input (a pair for a cross-encoder); None without a tokenizer."""
        return None if self.encoder is None else self.encoder.max_length

    @property
    def calibration_key(self) -> str:
        """A calibration belongs to the model as it reads: its name, token limit and :attr:`reading`."""
        return f"{self.name}@{self.max_length}-{self.reading_key}"

    @property
    def reading(self) -> dict[str, Any]:
        """Every setting that changes this scorer's scores (model and weights, max_length,
        windows, prefixes, template, head, pooling): the key of its calibration, its tuning, the
        reuse of stored vectors and the resumption of rerank runs."""
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "max_length": self.max_length,
            "max_chunks_per_doc": self.max_chunks_per_doc,
            "chunk_pool": self.chunk_pool,
            "whole_document": self.whole_document,
        }

    @property
    def reading_key(self) -> str:
        """:attr:`reading` as a short stable string (a hash of its JSON)."""
        return hashlib.sha256(json.dumps(self.reading, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def score(self, query: str, texts: Sequence[str], *, raw: bool = False) -> np.ndarray:
        """One score per text: a relevance in [0, 1], or the model's raw score with ``raw=True``."""
        return self._read([(query, texts)], None, raw)[0][0]

    def score_many(
        self, requests: Sequence[Request], *, raw: bool = False, max_chunks_per_doc: int | None = None
    ) -> list[np.ndarray]:
        """Score several (query, texts) requests in shared batches (the server batches across clients)."""
        return [scores for scores, _ in self._read(requests, max_chunks_per_doc, raw)]

    def score_passages(
        self, query: str, texts: Sequence[str], *, raw: bool = False, max_chunks_per_doc: int | None = None
    ) -> tuple[np.ndarray, list[Span]]:
        """Scores (pooled over each text's windows), and the character span of each text's best
        window: the passage that matched (the whole text when it was read in one window)."""
        return self.score_passages_many([(query, texts)], raw=raw, max_chunks_per_doc=max_chunks_per_doc)[0]

    def score_passages_many(
        self, requests: Sequence[Request], *, raw: bool = False, max_chunks_per_doc: int | None = None
    ) -> list[tuple[np.ndarray, list[Span]]]:
        """:meth:`score_passages` for several requests, in shared batches."""
        return self._read(requests, max_chunks_per_doc, raw)

    def score_vectors(self, query: str, vectors: Sequence[np.ndarray], *, raw: bool = False) -> np.ndarray:
        """Scores from documents' stored vectors (a bi-encoder's, see :attr:`vector_reading`)."""
        raise TypeError(f"{self.name} scores texts, not stored vectors")

    def _read(
        self, requests: Sequence[Request], max_chunks_per_doc: int | None, raw: bool
    ) -> list[tuple[np.ndarray, list[Span]]]:
        if not any(len(texts) for _, texts in requests):
            return [(np.empty((0,), dtype=np.float32), []) for _ in requests]
        spans = [self.windows(query, texts, max_chunks_per_doc) for query, texts in requests]
        pieces = [
            (query, [t[s:e] for t, text_spans in zip(texts, request_spans) for s, e in text_spans])
            for (query, texts), request_spans in zip(requests, spans)
        ]
        window_scores = np.asarray(self.raw_scores(pieces), dtype=np.float32)
        if window_scores.shape != (sum(len(texts) for _, texts in pieces),):
            raise ValueError(
                f"{self.name}: raw_scores gave {window_scores.shape[0] if window_scores.ndim else 0} scores "
                f"for {sum(len(texts) for _, texts in pieces)} texts"
            )
        pooled, best = self.pool(window_scores, [len(t) for request_spans in spans for t in request_spans])
        out, start = [], 0
        for request_spans in spans:
            scores = pooled[start : start + len(request_spans)]
            passages = [text_spans[b] for text_spans, b in zip(request_spans, best[start : start + len(request_spans)])]
            out.append((scores if raw else self.calibrate(scores), passages))
            start += len(request_spans)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
