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
        self.method, self.weight, self.depth = method, weight, depth
        self.name = f"hybrid({method}, {first.name} x{1 - weight:g} + {second.name} x{weight:g})"

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        lists = [r.search(query, max(k, self.depth), filter=filter) for r in (self.first, self.second)]
        documents = {h.id: h.document for hits in lists for h in hits}
        ids = list(documents)
        fused = np.zeros(len(ids))
        for hits, w in zip(lists, (1 - self.weight, self.weight)):
            where = {h.id: i for i, h in enumerate(hits)}
            present = np.array([d in where for d in ids])
            if self.method == "rrf":
                ranks = np.array([where.get(d, 0) + 1 for d in ids])
                fused += np.where(present, w / (RRF_K + ranks), 0.0)
            elif hits:
                normalised = minmax(np.array([h.score for h in hits]))
                fused += w * np.array([normalised[where[d]] if d in where else 0.0 for d in ids])
        order = sorted(range(len(ids)), key=lambda i: -fused[i])[:k]  # stable: ties keep BM25-first order
        return [Hit(documents[ids[i]], float(fused[i]), r, r) for r, i in enumerate(order, 1)]

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]
