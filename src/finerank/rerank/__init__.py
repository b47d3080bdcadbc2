"""Second stages: the Reranker protocol, :func:`rerank`, and the transformer rerankers."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..types import Document, Hit
from .fused import FusedReranker
from .models import BiEncoder, CrossEncoder


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores texts against a query, higher meaning more relevant.

    ``score`` returns one float per text: a relevance in [0, 1], or the model's raw score
    with ``raw=True``.
    """

    name: str

    def score(self, query: str, texts: Sequence[str], *, raw: bool = False) -> np.ndarray: ...


def rerank(reranker: Reranker, query: str, candidates: Sequence[Hit | Document | str], top_k: int | None = None) -> list[Hit]:
    """Score ``candidates`` against ``query`` and return them best first as new Hits.

    Each hit's ``original_rank`` is the candidate's rank in the input (a Hit keeps its own
    ``rank``; a Document or string is ranked by its position, from 1). Strings become
    documents whose id is their 0-based input index. Ties keep the input order. The
    caller's list is not changed.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty")
    documents, original = as_documents(candidates)
    texts = [d.content for d in documents]
    if isinstance(reranker, FusedReranker):  # it reads the first stage's ranks (and scores, from hits)
        hit_scores = [c.score for c in candidates] if all(isinstance(c, Hit) for c in candidates) else None
        scores = reranker.score(query, texts, first_ranks=original, first_scores=hit_scores)
    else:
        scores = reranker.score(query, texts)
    return rank(documents, original, scores, top_k)


def as_documents(candidates: Sequence[Hit | Document | str]) -> tuple[list[Document], list[int]]:
    """The candidates as Documents, with each one's original (1-based) rank."""
    documents: list[Document] = []
    original: list[int] = []
    for position, candidate in enumerate(candidates):
        if isinstance(candidate, Hit):
            documents.append(candidate.document)
            original.append(candidate.rank)
        elif isinstance(candidate, Document):
            documents.append(candidate)
            original.append(position + 1)
        elif isinstance(candidate, str):
            documents.append(Document(id=str(position), text=candidate))
            original.append(position + 1)
        else:
            raise TypeError(f"candidate {position} is a {type(candidate).__name__}; expected a Hit, Document or str")
    return documents, original


def rank(documents: Sequence[Document], original: Sequence[int], scores: Sequence[float], top_k: int | None = None) -> list[Hit]:
    """Hits ordered by score (ties by original rank), cut to ``top_k``."""
    order = sorted(range(len(documents)), key=lambda j: (-scores[j], original[j]))[:top_k]
    return [Hit(documents[j], float(scores[j]), new_rank, original[j]) for new_rank, j in enumerate(order, 1)]


__all__ = ["BiEncoder", "CrossEncoder", "FusedReranker", "Reranker", "as_documents", "rank", "rerank"]
