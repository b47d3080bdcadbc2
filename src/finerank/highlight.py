"""Which words of a document match a query, and the passage where most of them are: what a
results page marks. Matching goes through the index's analyzer, so "treatments" matches a
query's "treatment" (same stem) and 感冒 in a Traditional text matches a Simplified query."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from .analysis import _CJK_CHAR, _to_simplified

# word characters other than Chinese ones: "Python读取CSV文件" holds the words Python and CSV
_WORD = re.compile(r"[^\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


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
    terms = {t for t in analyzer(query) if len(t) > 1 or _CJK_CHAR.match(t)}  # a lone letter ("D") would mark every "d"
    if not terms:
        return []
    analyze = functools.lru_cache(maxsize=4096)(lambda word: frozenset(analyzer(word)))
    spans = [m.span() for m in _WORD.finditer(text) if analyze(m.group()) & terms]
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


def highlight(
    text: str, query: str, analyzer: Callable[[str], list[str]], width: int = 300, within: tuple[int, int] | None = None
) -> Highlight:
    """The ``width``-character passage of ``text`` holding the most matched words (the whole text
    when it is shorter), with a little context before the first, cut at word boundaries, and
    the matches' spans. ``within``: the span to take the passage from (the window a model scored
    best, when it read the text in windows); without a match there, the window's opening."""
    lo, hi = within or (0, len(text))
    spans = [(s, e) for s, e in matches(text, query, analyzer) if s >= lo and e <= hi]
    start, end = lo, min(hi, lo + width)
    if hi - lo > width and spans:
        context = width // 6
        best, best_count, j = 0, -1, 0
        for i, (s, _) in enumerate(spans):  # one pass: the window shown from each match's context on
            begin = max(lo, min(s - context, hi - width))
            j = max(j, i)
            while j + 1 < len(spans) and spans[j + 1][1] <= begin + width:
                j += 1
            if j - i + 1 > best_count:
                best, best_count = i, j - i + 1
        start = max(lo, min(spans[best][0] - context, hi - width))
        end = min(hi, start + width)
        first = spans[best][0]
        space = text.find(" ", start, first)
        start = space + 1 if space >= 0 else start  # begin with a whole word
        last = max((e for s, e in spans if s >= start and e <= end), default=start)
        space = text.rfind(" ", last, end)
        end = space if space > last and end < hi else end  # end with a whole word
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
