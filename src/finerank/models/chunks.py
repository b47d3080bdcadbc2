"""Long documents: a text longer than the model reads (with the query) is split into overlapping
windows of tokens, each window is scored, and the document takes the best window's score ("max",
the default) or the mean of its best k ("mean-top-k"). The best window is the passage that
matched. Windows are character spans of the text, cut where a word starts, so each window's
text tokenizes as it did inside the document.

Without chunking (one window) a document is cut to what fits, as before: a relevant passage
after the model's limit is never read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..analysis import _CJK_CHAR

_MEAN_TOP = re.compile(r"mean-top-(\d+)$")


def check_pool(pool: str) -> int:
    """How many best windows a pool averages (1 for max); ValueError for an unknown name."""
    if pool == "max":
        return 1
    match = _MEAN_TOP.match(pool)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"unknown chunk pooling {pool!r}; use 'max' or 'mean-top-K' (e.g. mean-top-2)")
    return int(match.group(1))


def windows(encoding, text: str, budget: int, max_chunks: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of ``text`` (its tokens in ``encoding``, without special tokens), each at
    most ``budget`` tokens, consecutive ones sharing about ``overlap`` tokens; at most
    ``max_chunks`` from the start. A text that fits is one span, the whole text."""
    offsets = encoding.offsets
    n = len(offsets)
    if n <= budget or max_chunks <= 1:
        return [(0, len(text))]
    overlap = min(overlap, budget // 2)
    starts_word = [i == 0 or _starts_word(text, offsets[i - 1], offsets[i]) for i in range(n)]
    spans, start = [], 0
    while len(spans) < max_chunks:
        end = min(n, start + budget)
        if end < n:  # end before a word start, so the next window begins with a whole word
            cut = next((j for j in range(end, start + max(1, budget // 2), -1) if starts_word[j]), end)
            end = cut
        spans.append((offsets[start][0], offsets[end - 1][1] if end < n else len(text)))
        if end >= n:
            break
        nxt = max(start + 1, end - overlap)
        start = next((j for j in range(nxt, end) if starts_word[j]), nxt)
    return spans


def split(tokenizer, texts: Sequence[str], budget: int, max_chunks: int, overlap: int) -> list[list[tuple[int, int]]]:
    """Per text, its windows' character spans (:func:`windows`); one span, the whole text, when
    chunking is off (``max_chunks`` 1), without tokenizing."""
    if max_chunks == 1:
        return [[(0, len(t))] for t in texts]
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [windows(e, t, budget, max_chunks, overlap) for e, t in zip(encodings, texts)]


def _starts_word(text: str, previous: tuple[int, int], current: tuple[int, int]) -> bool:
    """Whether a window may start at the token at ``current``: after a space (WordPiece's tokens
    leave it out of their spans; SentencePiece's word-initial ones begin with it), or at a Chinese
    character (Chinese has no spaces), never inside a word or after its hyphen."""
    first = text[current[0]] if current[0] < len(text) else ""
    return (
        current[0] > previous[1]
        or first.isspace()
        or bool(_CJK_CHAR.match(first))
        or bool(_CJK_CHAR.match(text[current[0] - 1]))
    )


def pool(
    scores: np.ndarray, counts: Sequence[int], pool_name: str = "max", whole: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per document (``counts`` windows each, in order): the pooled score, and the index of its
    best window among its own. ``whole`` > 0: a document of several windows has its whole text
    as its last row, and scores (1 - whole) x its pooled windows + whole x that row."""
    k = check_pool(pool_name)
    pooled = np.empty(len(counts), dtype=np.float32)
    best = np.zeros(len(counts), dtype=np.int64)
    start = 0
    for i, count in enumerate(counts):
        window_scores = scores[start : start + count]
        if whole and count > 1:
            window_scores, whole_score = window_scores[:-1], window_scores[-1]
        best[i] = int(np.argmax(window_scores))
        pooled[i] = window_scores[best[i]] if k == 1 else np.sort(window_scores)[::-1][:k].mean()
        if whole and count > 1:
            pooled[i] = (1 - whole) * pooled[i] + whole * whole_score
        start += count
    return pooled, best
