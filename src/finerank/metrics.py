"""Ranking metrics, pure functions following trec_eval, and the paired significance test.

nDCG uses trec_eval's linear gain (the grade itself, not 2^grade - 1) and a log2(rank + 1)
discount; the ideal ranking is built from every judged document. A document counts as
relevant when its grade is above zero. Relevant documents missing from a ranking count as
misses (they are never dropped), and a query with no ranking scores zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]


def ndcg(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal_gains = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal_gains))
    return dcg / idcg if idcg > 0 else 0.0


def reciprocal_rank(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranking[:k]) if judged.get(d, 0) > 0), 0.0)


def recall(ranking: Sequence[str], judged: Mapping[str, int], k: int = 100) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def average_precision(ranking: Sequence[str], judged: Mapping[str, int], k: int = 100) -> float:
    relevant = sum(1 for g in judged.values() if g > 0)
    found, total = 0, 0.0
    for i, d in enumerate(ranking[:k]):
        if judged.get(d, 0) > 0:
            found += 1
            total += found / (i + 1)
    return total / relevant if relevant else 0.0


def hit(ranking: Sequence[str], judged: Mapping[str, int], k: int = 1) -> float:
    return float(any(judged.get(d, 0) > 0 for d in ranking[:k]))


METRICS = {
    "ndcg@10": lambda r, j: ndcg(r, j, 10),
    "mrr@10": lambda r, j: reciprocal_rank(r, j, 10),
    "recall@100": lambda r, j: recall(r, j, 100),
    "map@100": lambda r, j: average_precision(r, j, 100),
    "hit@1": lambda r, j: hit(r, j, 1),
    "hit@3": lambda r, j: hit(r, j, 3),
}


def per_query(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, dict[str, float]]:
    """metric -> {query id -> value}, for every judged query with at least one relevant document."""
    judged = {q: j for q, j in qrels.items() if any(g > 0 for g in j.values())}
    return {name: {q: fn(run.get(q, ()), j) for q, j in judged.items()} for name, fn in METRICS.items()}


def mean_scores(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """metric -> mean over the judged queries (see :func:`per_query`)."""
    return means(per_query(run, qrels))


def randomization_test(a: Sequence[float], b: Sequence[float], trials: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization (sign-flip) test of mean(b - a); returns the p-value."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(diff) == 0 or not diff.any():
        return 1.0
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, trials, 1000):
        signs = rng.choice((-1.0, 1.0), size=(min(1000, trials - start), len(diff)))
        hits += int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return (hits + 1) / (trials + 1)


def means(values: dict[str, dict[str, float]]) -> dict[str, float]:
    """metric -> its mean over the queries."""
    return {name: float(np.mean(list(v.values()))) if v else 0.0 for name, v in values.items()}


def bootstrap_interval(
    a: Sequence[float], b: Sequence[float], trials: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b - a) over paired per-query values (the queries
    resampled with replacement): where the mean gain of ``b`` over ``a`` lies, at ``level``."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(diff) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            diff[rng.integers(0, len(diff), size=(min(1000, trials - start), len(diff)))].mean(axis=1)
            for start in range(0, trials, 1000)
        ]
    )
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


POWER_80 = (1.96 + 0.84) / 1.96
MIN_QUERIES = 5  # fewer judged queries than this say nothing either way


def verdict(
    queries: int, gain: float, interval: tuple[float, float], p_value: float, subject: str = "the reranked list"
) -> str:
    """The comparison in one plain sentence: the gain of ``subject``, its interval, the test, and
    what it means, with about how many more judged queries would settle it when the interval holds zero."""
    low, high = interval
    said = f"{queries} judged queries: nDCG@10 {gain:+.3f} (95 % interval {low:+.3f} to {high:+.3f}, p = {p_value:.4f})"
    if queries < MIN_QUERIES:  # a bootstrap of a handful of queries is no interval
        return f"{said}: too few to tell; judge at least {MIN_QUERIES - queries} more queries"
    if low > 0 and p_value < 0.05:
        return f"{said}: {subject} is better"
    if high < 0 and p_value < 0.05:
        return f"{said}: {subject} is worse"
    half = (high - low) / 2
    if abs(gain) < 1e-9:
        return f"{said}: no difference measured"
    # the interval narrows as 1 / sqrt(queries); to exclude zero 4 times in 5 (80 % power) its half-width must fall
    # to |gain| / (1 + 0.84 / 1.96)
    needed = math.ceil(queries * (POWER_80 * half / abs(gain)) ** 2) - queries
    return f"{said}: not known yet; judge about {max(needed, 1)} more queries to tell"
