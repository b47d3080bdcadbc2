"""Fusion of two rankings of the same candidates, as pure functions over arrays.

- Reciprocal rank fusion (Cormack et al. 2009): ``sum_i w_i / (k + rank_i)``, k=60.
- Weighted normalised score fusion: ``sum_i w_i * minmax(score_i)``, where min-max maps each
  list's scores onto [0, 1] (a constant list maps to 1).
"""

from __future__ import annotations

from typing import Sequence

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


def fuse(method: str, weight: float, second: np.ndarray, first_ranks: Sequence[int] | None = None,
         first_scores: Sequence[float] | None = None) -> np.ndarray:
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
