"""First stages over an :class:`~finerank.Index`: BM25, dense and hybrid, behind one contract.

Every retriever has a ``name`` and ``search(query, k, filter=None)`` returning at most ``k``
hits best first, each with ``rank == original_rank``. ``filter`` (see :mod:`finerank.filters`)
is applied inside the search, so k hits come back whenever k matching documents score. External
engines implement the same call. ``index`` names the finerank Index searched (None for others).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from . import analysis, fusion
from .errors import IndexFormatError, ModelError
from .lexical import top_k
from .types import Hit

if TYPE_CHECKING:
    from .index import Index
    from .models import BiEncoder


@runtime_checkable
class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]: ...


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


class BM25:
    """BM25 over the index's stored term statistics (bm25s), top ``k`` positive scores."""

    def __init__(self, index: Index):
        self.index = index
        analysis.warm_up(
            index.params["analyzer"], index.params.get("languages", {})
        )  # not inside the first query's timing
        p = index.params
        self.name = f"bm25({p['method']}, k1={p['k1']}, b={p['b']}, {p['analyzer']})"

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (terms unknown to the index are ignored)."""
        vocab = self.index.bm25.vocab_dict
        ids = [vocab[t] for t in self.index.analyze_query(query) if t in vocab]
        return self.index.bm25.get_scores(ids) if ids else np.zeros(len(self.index), dtype=np.float32)

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        _check_k(k)
        scores = self.scores(query)
        allowed = self.index.allowed(filter, np.flatnonzero(scores > 0))
        if allowed is not None:
            scores = np.where(allowed, scores, 0)
        best = top_k(scores, k)
        documents = self.index.documents
        return [Hit(documents[i], s, r, r) for r, (i, s) in enumerate(zip(best.tolist(), scores[best].tolist()), 1)]


class Dense:
    """Nearest stored vectors to the query's embedding (exact, or HNSW on large indexes).

    ``encoder`` must be the model the index's vectors were made with (same dimension)."""

    def __init__(self, index: Index, encoder: BiEncoder):
        if index.vectors is None:
            raise IndexFormatError("this index has no dense vectors: build it with an encoder (finerank index --dense)")
        if encoder.dimension != index.vectors.dimension:
            raise ModelError(
                f"{encoder.name} gives {encoder.dimension}-dimensional vectors; the index holds "
                f"{index.vectors.dimension}-dimensional vectors from {index.params['dense']['model']}"
            )
        self.index, self.encoder = index, encoder
        self.name = f"dense({index.params['dense']['model']}, {index.vectors.ann})"

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        _check_k(k)
        vector = self.encoder.embed_queries([query])[0]
        positions, scores = self.index.vectors.search(vector, k, self.index.allowed(filter))
        return self._hits(positions, scores)

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Several queries at once: one encoder call, and one matrix product on an exact index."""
        _check_k(k)
        return [
            self._hits(*found) for found in self.index.vectors.search_many(self.encoder.embed_queries(list(queries)), k)
        ]

    def _hits(self, positions: np.ndarray, scores: np.ndarray) -> list[Hit]:
        documents = self.index.documents
        return [
            Hit(documents[p], s, r, r)
            for r, (p, s) in enumerate(zip(np.asarray(positions).tolist(), np.asarray(scores).tolist()), 1)
        ]


class Hybrid:
    """Two first stages fused: each returns its top ``depth``, the union is ranked by weighted
    min-max scores (the default: equal shares, chosen on NFCorpus dev and the CMRC and DRCD train
    splits, where it beat RRF; docs/retrieval.md) or reciprocal rank fusion (k=60)
    (:func:`finerank.fusion.fuse_lists`). ``weight`` is the second retriever's share."""

    def __init__(
        self, first: Retriever, second: Retriever, *, method: str = "minmax", weight: float = 0.5, depth: int = 100
    ):
        fusion.check(method, weight)
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.first, self.second = first, second
        self.index = getattr(second, "index", None)
        self.method, self.weight, self.depth = method, weight, depth
        self.name = f"hybrid({method}, {first.name} x{1 - weight:g} + {second.name} x{weight:g})"

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        _check_k(k)
        lists = [r.search(query, max(k, self.depth), filter=filter) for r in (self.first, self.second)]
        documents = {h.id: h.document for hits in lists for h in hits}
        fused = fusion.fuse_lists(
            [[(h.id, h.score) for h in hits] for hits in lists], (1 - self.weight, self.weight), self.method
        )
        order = sorted(fused, key=lambda d: -fused[d])[:k]  # stable: ties keep the first retriever's order
        return [Hit(documents[d], fused[d], r, r) for r, d in enumerate(order, 1)]


def why_empty(retriever: Retriever, query: str, filter: Mapping[str, Any] | None = None) -> str | None:
    """Why ``retriever`` found nothing for ``query``, in words a user can act on (None when no
    reason is known): a filter field no document has, a filter nothing matches, or, for BM25, a
    query with no word to search by or none the index holds."""
    index = getattr(retriever, "index", None)  # a finerank Index: None for an engine outside finerank
    if index is None:
        return None
    for field in filter or {}:
        if not index.has_field(field):
            return f"no document has the field {field!r}: check the filter's field names"
    if filter and not index.allowed(filter).any():
        return f"no document matches the filter {dict(filter)}"
    if not isinstance(retriever, BM25):  # dense search (alone or in a hybrid) always finds the nearest documents
        return None
    terms = index.analyze_query(query)
    if not terms:
        return (
            f"the query has no word BM25 searches by (analysed as {index.query_analysis(query)}: "
            "stopwords or punctuation only)"
        )
    if not any(t in index.bm25.vocab_dict for t in terms):
        return (
            f"no word of the query is in the index (analysed as {index.query_analysis(query)}); a dense first stage "
            "finds documents by meaning: --first-stage dense (an index built with --dense)"
        )
    return None
