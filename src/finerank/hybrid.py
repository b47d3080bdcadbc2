"""Hybrid first stage: two retrievers (BM25 and dense) fused into one candidate list.

Each retriever returns its top ``depth``; the union is ranked by reciprocal rank fusion
(k=60; a document one list missed gets nothing from it) or by weighted min-max normalised
scores (a missed document counts as that list's minimum).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .fusion import METHODS, RRF_K, minmax
from .types import Hit


class HybridRetriever:
    def __init__(self, first, second, *, method: str = "rrf", weight: float = 0.5, depth: int = 100):
        if method not in METHODS:
            raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")
        if not 0 <= weight <= 1 or depth < 1:
            raise ValueError(f"weight must lie in [0, 1] and depth be at least 1, got {weight} and {depth}")
        self.first, self.second = first, second
        self.index = getattr(second, "index", None)  # the finerank Index searched, if any
        self.method, self.weight, self.depth = method, weight, depth
        self.name = f"hybrid({method}, {first.name} x{1 - weight:g} + {second.name} x{weight:g})"

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        lists = [r.search(query, max(k, self.depth), filter=filter) for r in (self.first, self.second)]
        documents = {h.id: h.document for hits in lists for h in hits}
        fused = dict.fromkeys(documents, 0.0)
        for hits, w in zip(lists, (1 - self.weight, self.weight)):
            if self.method == "rrf":
                contributions = [w / (RRF_K + rank) for rank in range(1, len(hits) + 1)]
            else:
                contributions = w * minmax(np.array([h.score for h in hits]))
            for h, c in zip(hits, contributions):
                fused[h.id] += float(c)
        order = sorted(fused, key=lambda d: -fused[d])[:k]  # stable: ties keep BM25-first order
        return [Hit(documents[d], fused[d], r, r) for r, d in enumerate(order, 1)]

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]
