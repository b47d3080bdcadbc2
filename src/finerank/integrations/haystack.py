"""Haystack 2.x/3.x: :class:`FinerankRanker`, a ranker component to put after a retriever in a
``Pipeline`` (sync or async); it serialises to YAML with the pipeline. ``pip install 'finerank[haystack]'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace

from ._common import API_KEY_VARIABLE, Ranked, Scoring, check_cut

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
        check_cut(top_k, score_threshold, "top_k")
        self.model, self.url, self.api_key, self.top_k, self.score_threshold = (
            model,
            url,
            api_key,
            top_k,
            score_threshold,
        )
        self.meta_fields_to_embed, self.embedding_separator = list(meta_fields_to_embed or []), embedding_separator
        self.timeout, self.retries = timeout, retries
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
    def from_dict(cls, data: dict[str, Any]) -> FinerankRanker:
        data = {**data, "init_parameters": dict(data.get("init_parameters", {}))}  # the caller's dict stays as it was
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ) -> dict[str, list[Document]]:
        """The documents reranked; ``top_k`` and ``score_threshold`` replace the component's own for this run."""
        ranked = self._scoring.rank(
            query, self._texts(documents), [d.score for d in documents], **self._cut(top_k, score_threshold)
        )
        return {"documents": _scored(documents, ranked)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None, score_threshold: float | None = None
    ) -> dict[str, list[Document]]:
        """:meth:`run` without blocking the event loop (over HTTP with an async client for a server)."""
        ranked = await self._scoring.arank(
            query, self._texts(documents), [d.score for d in documents], **self._cut(top_k, score_threshold)
        )
        return {"documents": _scored(documents, ranked)}

    def _cut(self, top_k: int | None, score_threshold: float | None) -> dict[str, Any]:
        top_n = self.top_k if top_k is None else top_k
        threshold = self.score_threshold if score_threshold is None else score_threshold
        check_cut(top_n, threshold, "top_k")
        return {"top_n": top_n, "threshold": threshold}

    def _texts(self, documents: list[Document]) -> list[str]:
        """Each document as the model reads it: the meta fields to embed, then the content."""
        return [
            self.embedding_separator.join(
                [*(str(d.meta[f]) for f in self.meta_fields_to_embed if d.meta.get(f) is not None), d.content or ""]
            )
            for d in documents
        ]


def _scored(documents: list[Document], ranked: list[Ranked]) -> list[Document]:
    """New Documents with their scores (each with its own copy of the meta)."""
    return [dataclasses.replace(documents[r.index], score=r.score, meta=dict(documents[r.index].meta)) for r in ranked]
