"""A second stage fused with the first stage it reranks.

The first-stage ranking is the candidates' order (or the ranks and scores of first-stage hits,
which :func:`finerank.rerank` passes on). Fusing keeps what the first stage knows (exact terms,
names, codes) and adds what the second stage knows (meaning).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import fusion


class FusedReranker:
    """``method="rrf"``: reciprocal rank fusion (k=60); ``"minmax"``: weighted sum of min-max
    normalised scores (without first-stage scores, the first stage's normalised rank is used).
    ``weight`` is the second stage's share, the first stage gets ``1 - weight``.

    The relevance is the fused score divided by its largest possible value, so it lies in [0, 1];
    ``raw=True`` gives the fused score itself.
    """

    def __init__(self, second, *, method: str = "rrf", weight: float = 0.5, name: str | None = None):
        if method not in fusion.METHODS:
            raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(fusion.METHODS)}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1], got {weight}")
        self.second, self.method, self.weight = second, method, weight
        self.name = name or f"{method}(first stage, {second.name}; weight {weight:g})"
        self.encoder = second.encoder  # the server counts tokens with it

    def score(self, query: str, texts: Sequence[str], *, raw: bool = False, first_ranks: Sequence[int] | None = None,
              first_scores: Sequence[float] | None = None, vectors: np.ndarray | None = None) -> np.ndarray:
        """``vectors``: stored document vectors for a bi-encoder second stage (see BiEncoder.score)."""
        second = self.second.score(query, texts, raw=True) if vectors is None else self.second.score(query, texts, raw=True, vectors=vectors)
        fused = self.fuse(second, first_ranks, first_scores)
        return fused if raw else self.calibrate(fused)

    def score_many(self, requests: Sequence[tuple[str, Sequence[str]]], *, raw: bool = False) -> list[np.ndarray]:
        """Each request's texts in first-stage order (as the server receives them)."""
        fused = [self.fuse(s) for s in self.second.score_many(requests, raw=True)]
        return fused if raw else [self.calibrate(f) for f in fused]

    def fuse(self, second: np.ndarray, first_ranks: Sequence[int] | None = None, first_scores: Sequence[float] | None = None) -> np.ndarray:
        """The raw fused score from the second stage's raw scores (see :func:`finerank.fusion.fuse`)."""
        return fusion.fuse(self.method, self.weight, second, first_ranks, first_scores)

    def calibrate(self, fused: np.ndarray) -> np.ndarray:
        best = 1.0 / (fusion.RRF_K + 1) if self.method == "rrf" else 1.0
        return np.asarray(fused, dtype=np.float64) / best

    def __repr__(self) -> str:
        return f"FusedReranker({self.second!r}, method={self.method!r}, weight={self.weight:g})"
