"""Which words of a document match a query, and the passage where most of them are: what a
results page marks. Matching goes through the index's analyzer, so "treatments" matches a
query's "treatment" (same stem) and 感冒 in a Traditional text matches a Simplified query."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from .analysis import _CJK_CHAR, _to_simplified

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Highlight:
    """A passage of a document: ``text`` is ``document[start:end]``; ``spans`` are the
    (start, end) character offsets, within ``text``, of the words that match the query."""

    text: str
    start: int
    end: int
    spans: tuple[tuple[int, int], ...]


def matches(text: str, query: str, analyzer: Callable[[str], list[str]]) -> list[tuple[int, int]]:
    """Character spans of ``text`` whose terms (by ``analyzer``) are among the query's, in order."""
    terms = set(analyzer(query))
    if not terms:
        return []
    analyze = functools.lru_cache(maxsize=4096)(lambda word: frozenset(analyzer(word)))
    spans = [m.span() for m in _WORD.finditer(text) if not _CJK_CHAR.search(m.group()) and analyze(m.group()) & terms]
    chinese_terms = [t for t in terms if _CJK_CHAR.search(t)]
    if chinese_terms:
        simplified = _to_simplified()(text) if _CJK_CHAR.search(text) else text
        haystack = simplified if len(simplified) == len(text) else text  # same length: offsets still hold
        for term in chinese_terms:
            at = haystack.find(term)
            while at >= 0:
                spans.append((at, at + len(term)))
                at = haystack.find(term, at + 1)
    return _merge(spans)


def highlight(text: str, query: str, analyzer: Callable[[str], list[str]], width: int = 300,
              within: tuple[int, int] | None = None) -> Highlight:
    """The ``width``-character passage of ``text`` holding the most matched words (the whole text
    when it is shorter), starting at a word boundary, with the matches' spans. ``within``: the
    span to take the passage from (the window a model scored best, when it read the text in
    windows); without a match there, the passage is the window's opening."""
    lo, hi = within or (0, len(text))
    spans = [(s, e) for s, e in matches(text, query, analyzer) if s >= lo and e <= hi]
    start = lo
    if hi - lo > width and spans:
        best = max(range(len(spans)), key=lambda i: (sum(1 for s, e in spans[i:] if e <= spans[i][0] + width), -i))
        start = max(lo, spans[best][0] - width // 6)  # a little context before the first match
        start = max(lo, min(start, hi - width))
        boundary = text.rfind(" ", lo, start + 1)
        start = boundary + 1 if 0 <= start - boundary < 20 and boundary >= lo else start
    end = min(hi, start + width)
    inside = tuple((s - start, e - start) for s, e in spans if s >= start and e <= end)
    return Highlight(text[start:end], start, end, inside)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged
