"""BM25 on bm25s: a model from analyzed token ids, loading one (memory-mapped), and top-k."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)  # bm25s sets DEBUG at import; follow the application
    return bm25s


def bm25_model(token_lists: list[list[int]], vocab: dict[str, int], params: dict):
    """A bm25s model over documents given as token ids (``vocab``: term -> id)."""
    bm25s = _bm25s()
    model = bm25s.BM25(method=params["method"], k1=params["k1"], b=params["b"])
    model.index(bm25s.tokenization.Tokenized(ids=token_lists, vocab=vocab), show_progress=False)
    return model


def load_bm25(folder: Path, mmap: bool):
    return _bm25s().BM25.load(folder, mmap=mmap, show_progress=False, verbosity=0)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest positive scores, best first, ties broken by position."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:  # keep every candidate tied with the k-th, so ties resolve by position
        kth = np.partition(scores[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[scores[candidates] >= kth]
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]
