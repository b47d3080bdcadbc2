"""Fusion of rankings, as pure functions over arrays (the hybrid first stage and the
pipeline's fusion step both call them).

- Reciprocal rank fusion (Cormack et al. 2009): ``sum_i w_i / (k + rank_i)``, k=60.
- Weighted normalised score fusion: ``sum_i w_i * minmax(score_i)``, where min-max maps each
  list's scores onto [0, 1] (a constant list maps to 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RRF_K = 60


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` (highest first; ties broken by position)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    result = np.empty(len(scores), dtype=np.int64)
    result[order] = np.arange(1, len(scores) + 1)
    return result


def rrf(rank_lists: Sequence[np.ndarray], weights: Sequence[float] | None = None, k: int = RRF_K) -> np.ndarray:
    """Reciprocal rank fusion of several rankings given as 1-based rank arrays."""
    weights = weights or [1.0] * len(rank_lists)
    return sum(w / (k + np.asarray(r, dtype=np.float64)) for w, r in zip(weights, rank_lists))


def minmax(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    low, high = scores.min(), scores.max()
    return np.ones_like(scores) if high == low else (scores - low) / (high - low)


def weighted(score_lists: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted sum of min-max normalised scores."""
    return sum(w * minmax(s) for w, s in zip(weights, score_lists))


METHODS = ("rrf", "minmax")


def check(method: str, weight: float) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], got {weight}")


def fuse_lists(lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float], method: str) -> dict[str, float]:
    """Fuse ranked lists of (id, score), best first, that may hold different ids: RRF (an id a
    list missed gets nothing from it) or weighted min-max (a missed id counts as that list's
    minimum, i.e. 0). Returns id -> fused score, in order of first appearance."""
    fused: dict[str, float] = {}
    for ranked, w in zip(lists, weights):
        for d, _ in ranked:
            fused.setdefault(d, 0.0)
        if method == "rrf":
            contributions = w / (RRF_K + np.arange(1, len(ranked) + 1))
        else:
            contributions = w * minmax(np.array([s for _, s in ranked]))
        for (d, _), c in zip(ranked, contributions):
            fused[d] += float(c)
    return fused


def fuse(
    method: str,
    weight: float,
    second: np.ndarray,
    first_ranks: Sequence[int] | None = None,
    first_scores: Sequence[float] | None = None,
) -> np.ndarray:
    """Fuse a second stage's scores with a first stage's ranking of the same candidates.

    ``weight`` is the second stage's share (the first stage gets ``1 - weight``). Without
    ``first_ranks`` the candidates are taken to be in first-stage order; ``minmax`` without
    ``first_scores`` normalises the first stage's ranks instead of its scores.
    """
    first_ranks = np.arange(1, len(second) + 1) if first_ranks is None else np.asarray(first_ranks)
    weights = (1.0 - weight, weight)
    if method == "rrf":
        return rrf([first_ranks, ranks(second)], weights)
    if method == "minmax":
        first = -first_ranks.astype(np.float64) if first_scores is None else np.asarray(first_scores, dtype=np.float64)
        return weighted([first, second], weights)
    raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Fusion:
    """The pipeline's fusion step: a second stage's scores fused with the ranking before it (the
    first stage's, or a cascade's cheap stage's). ``weight`` is the second stage's share.
    Fusing keeps what the first stage knows (exact terms, names, codes) and adds what the second
    knows."""

    method: str = "minmax"
    weight: float = 0.5

    def __post_init__(self):
        check(self.method, self.weight)

    def __call__(
        self, second: np.ndarray, first_ranks: Sequence[int], first_scores: Sequence[float] | None
    ) -> np.ndarray:
        """Fused relevance in [0, 1]: the fused score over its largest possible value."""
        best = 1.0 / (RRF_K + 1) if self.method == "rrf" else 1.0
        return fuse(self.method, self.weight, second, first_ranks, first_scores) / best

    @property
    def name(self) -> str:
        return f"{self.method} x{self.weight:g}"
