"""Haystack 2.x/3.x: :class:`FinerankRanker`, a ranker component to put after a retriever in a
``Pipeline`` (sync or async); it serialises to YAML with the pipeline. ``pip install 'finerank[haystack]'``.

No ``from __future__ import annotations`` here: Haystack 2.12 compares the run method's
annotations as written, and to it a string is not a type.
"""

import asyncio
import dataclasses
import os
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace

from ._common import API_KEY_VARIABLE, Cut, Ranked, Scoring

__all__ = ["FinerankRanker"]

API_KEY = Secret.from_env_var(API_KEY_VARIABLE, strict=False)  # the default key: the variable's, when it is set


@component
class FinerankRanker:
    """Ranks documents by their relevance to the query, best ``top_k`` first (None: all), keeping
    those whose model score (a calibrated relevance in [0, 1]) reaches ``score_threshold``. It
    returns new Documents whose ``score`` is what ranked them (the model's score, fused with the
    retriever's order and scores when the model fuses, as ``auto`` does; None for a query in a
    language no model reads, whose list keeps its order); the input Documents are not changed.

    ``model``: a finerank model name or folder (default ``auto``; a loaded scorer works too, but
    cannot be saved with the pipeline), loaded by :meth:`warm_up` or at the first run; ``url``: a
    finerank server's address instead, with ``api_key`` (default: ``$FINERANK_API_KEY`` when set).
    ``meta_fields_to_embed``: meta fields read before the content, joined by ``embedding_separator``."""

    def __init__(
        self,
        model: Any = None,
        *,
        url: str | None = None,
        api_key: Secret | None = API_KEY,
        top_k: int | None = 10,
        score_threshold: float | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        timeout: float = 60.0,
        retries: int = 3,
    ):
        Cut(top_k, score_threshold)  # a ValueError now for what cannot cut a ranking
        self.model, self.url, self.api_key, self.timeout, self.retries = model, url, api_key, timeout, retries
        self.top_k, self.score_threshold = top_k, score_threshold
        self.meta_fields_to_embed, self.embedding_separator = list(meta_fields_to_embed or []), embedding_separator
        key = (api_key.resolve_value() if api_key is not None else None) or ""  # "": no key (not the variable's)
        self._scoring = Scoring(
            model, url=url, api_key=key, timeout=timeout, retries=retries, source="haystack", extra="haystack"
        )

    def warm_up(self) -> None:
        """Load the local model (nothing to do for a server)."""
        self._scoring.warm_up()

    async def warm_up_async(self) -> None:
        await asyncio.to_thread(self._scoring.warm_up)

    def to_dict(self) -> dict[str, Any]:
        if not isinstance(self.model, (str, os.PathLike, type(None))):
            raise TypeError("FinerankRanker with a loaded model cannot be saved: give the model's name or folder")
        return default_to_dict(
            self,
            model=None if self.model is None else str(self.model),
            url=self.url,
            api_key=None if self.api_key is None else self.api_key.to_dict(),
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            timeout=self.timeout,
            retries=self.retries,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinerankRanker":
        data = {**data, "init_parameters": dict(data.get("init_parameters", {}))}  # the caller's dict stays as it was
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ):
        """The documents reranked; ``top_k`` and ``score_threshold`` replace the component's own for this run."""
        cut = self._cut(top_k, score_threshold)
        return {"documents": _scored(documents, self._scoring.rank(query, *self._read(documents), cut))}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ):
        """:meth:`run` without blocking the event loop (over HTTP with an async client for a server)."""
        cut = self._cut(top_k, score_threshold)
        return {"documents": _scored(documents, await self._scoring.arank(query, *self._read(documents), cut))}

    def _cut(self, top_k: int | None, score_threshold: float | None) -> Cut:
        threshold = self.score_threshold if score_threshold is None else score_threshold
        return Cut(self.top_k if top_k is None else top_k, threshold)

    def _read(self, documents: list[Document]) -> tuple[list[str], list[float | None]]:
        """Each document as the model reads it (the meta fields to embed, then the content), and its score."""
        fields = lambda d: [str(d.meta[f]) for f in self.meta_fields_to_embed if d.meta.get(f) is not None]
        texts = [self.embedding_separator.join([*fields(d), d.content or ""]) for d in documents]
        return texts, [d.score for d in documents]


def _scored(documents: list[Document], ranked: list[Ranked]) -> list[Document]:
    """New Documents with their scores (each with its own copy of the meta)."""
    return [dataclasses.replace(documents[r.index], score=r.score, meta=dict(documents[r.index].meta)) for r in ranked]
