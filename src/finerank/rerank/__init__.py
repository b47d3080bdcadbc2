"""Second stages: the Reranker protocol, :func:`rerank`, and the transformer rerankers."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

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


def rerank(reranker: Reranker, query: str, candidates: Sequence[Hit | Document | str], top_k: int | None = None,
           *, vectors: np.ndarray | None = None) -> list[Hit]:
    """Score ``candidates`` against ``query`` and return them best first as new Hits.

    Each hit's ``original_rank`` is the candidate's rank in the input (a Hit keeps its own
    ``rank``; a Document or string is ranked by its position, from 1). Strings become
    documents whose id is their 0-based input index. Ties keep the input order. The
    caller's list is not changed. ``vectors``: the candidates' stored document vectors, for a
    bi-encoder second stage that made them (see :func:`stored_vectors`).
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty")
    documents, original = as_documents(candidates)
    texts = [d.content for d in documents]
    options = {} if vectors is None else {"vectors": vectors}
    if isinstance(reranker, FusedReranker):  # it reads the first stage's ranks (and scores, from hits)
        hit_scores = [c.score for c in candidates] if all(isinstance(c, Hit) for c in candidates) else None
        scores = reranker.score(query, texts, first_ranks=original, first_scores=hit_scores, **options)
    else:
        scores = reranker.score(query, texts, **options)
    return rank(documents, original, scores, top_k)


def stored_vectors(first_stage, reranker) -> Callable[[Sequence[Hit]], np.ndarray] | None:
    """When ``reranker`` is (or fuses) the bi-encoder that made the vectors stored in
    ``first_stage``'s index (same model name and document prefix), a function giving the stored
    vectors of hits, so they are not encoded again; otherwise None. The stored vectors were made
    at the index's ``max_length``, which may read more of each document than the reranker would."""
    index = getattr(first_stage, "index", first_stage)  # a finerank Index, or the one a dense/hybrid stage searches
    bi_encoder = reranker.second if isinstance(reranker, FusedReranker) else reranker
    if not hasattr(index, "vectors_of") or index.vectors is None or not isinstance(bi_encoder, BiEncoder):
        return None
    made_by = index.params["dense"]
    if (made_by["model"], made_by["document_prefix"], made_by["dimension"]) != (bi_encoder.name, bi_encoder.document_prefix, bi_encoder.dimension):
        return None
    return index.vectors_of


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


__all__ = ["BiEncoder", "CrossEncoder", "FusedReranker", "Reranker", "as_documents", "rank", "rerank", "stored_vectors"]
