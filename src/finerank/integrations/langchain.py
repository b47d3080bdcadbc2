"""LangChain: :class:`FinerankRerank`, a document compressor (put it in a ``ContextualCompressionRetriever``
after any retriever), and :class:`FinerankCrossEncoder`, a cross-encoder that LangChain's own
``CrossEncoderReranker`` runs unchanged. ``pip install 'finerank[langchain]'``.

Both score with a local finerank model (``auto`` unless named) or, with ``url=``, on a running
finerank server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from ._common import SETTINGS, Cut, Ranked, Scoring

__all__ = ["FinerankCrossEncoder", "FinerankRerank"]


class FinerankRerank(BaseDocumentCompressor):
    """Reranks the documents a retriever found, best ``top_n`` first (None: all), keeping those
    whose model score (a calibrated relevance in [0, 1]) reaches ``score_threshold``. Each comes
    back as a copy with ``metadata["relevance_score"]`` (what ranked it: the model's score, fused
    with the retriever's order when the model fuses, as ``auto`` does), ``metadata["model_score"]``
    and ``metadata["original_rank"]`` (its place in the retriever's list, from 1); the scores are
    None for a query in a language no model reads, whose list keeps its order.

    ``model``: a finerank model name or folder, or a loaded scorer (default ``auto``); ``url``: a
    finerank server's address instead, with ``api_key`` (default ``$FINERANK_API_KEY``)."""

    model: Any = None
    url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    top_n: int | None = 3
    score_threshold: float | None = None
    timeout: float = 60.0
    retries: int = 3

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    _scoring: Scoring = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._cut()  # a ValueError now for what cannot cut a ranking
        settings = {name: getattr(self, name) for name in SETTINGS}
        self._scoring = Scoring(**settings, source="langchain", extra="langchain")

    def compress_documents(self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None):
        ranked = self._scoring.rank(query, [d.page_content for d in documents], cut=self._cut())
        return _annotated(documents, ranked)

    async def acompress_documents(self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None):
        ranked = await self._scoring.arank(query, [d.page_content for d in documents], cut=self._cut())
        return _annotated(documents, ranked)

    def _cut(self) -> Cut:
        return Cut(self.top_n, self.score_threshold)


def _annotated(documents: Sequence[Document], ranked: list[Ranked]) -> list[Document]:
    """Copies of the ranked documents with their scores in the metadata (the caller's stay as they were)."""
    scores = lambda r: {"relevance_score": r.score, "model_score": r.model_score, "original_rank": r.index + 1}
    return [
        documents[r.index].model_copy(update={"metadata": {**documents[r.index].metadata, **scores(r)}}) for r in ranked
    ]


class FinerankCrossEncoder(BaseCrossEncoder):
    """A finerank model as LangChain's cross-encoder: ``score(text_pairs)`` gives each
    (query, text) pair the model's calibrated relevance in [0, 1], never fused with any order, so
    ``CrossEncoderReranker(model=FinerankCrossEncoder(), top_n=3)`` reranks with it. ``model`` and
    the ``options`` (``url``, ``api_key``, ``timeout``, ``retries``) as for :class:`FinerankRerank`."""

    def __init__(self, model: Any = None, **options: Any):
        self._scoring = Scoring(model, **options, source="langchain", extra="langchain")

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        return self._scoring.pair_scores(text_pairs)
