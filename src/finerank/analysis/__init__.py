"""Text to BM25 terms, per language. Analyzers are named (see ``finerank.registry.ANALYZERS``)
and an index records the name and version it was built with, so an older index keeps the
analysis its documents had and queries are analyzed exactly as its documents were.

Every analyzer is called as ``analyze(text, lang=None)``:

- ``auto``: per text, its language (:func:`language`; ``lang`` when given), then that
  language's analysis (:func:`finerank.analysis.tokens.as_language`): Snowball stemming for the
  languages PyStemmer has, ICU word segmentation for scripts without spaces, Hangul bigrams,
  jieba + OpenCC for Chinese; English and Chinese exactly as ``auto-v2`` analyzed them. An index
  analyses each document in its own language and a query in the likeliest of the index's
  languages (:meth:`finerank.Index.analyze_query`).
- ``english`` and ``chinese``: one language for every text.
- ``auto-v2``: runs of Chinese characters through ``chinese``, the rest through ``english``
  (indexes built at analyzer version 2); ``auto-v1`` / ``chinese-v1``: the same without the
  Traditional-to-Simplified conversion (version 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .identify import (
    _CJK_CHAR,  # noqa: F401 (highlight reads it)
    UNDETERMINED,
    corpus_languages,
    guesses,
    language,
    languages,
)
from .tokens import (
    CHINESE_STOPWORDS,
    ENGLISH_STOPWORDS,
    SEGMENTED,
    SNOWBALL,
    _to_simplified,  # noqa: F401 (highlight)
    as_language,
    chinese,
    chinese_v1,
    english,
    mixed,
)

Analyzer = Callable[..., list[str]]  # (text, lang=None) -> terms


def _one_language(analyze: Callable[[str], list[str]]) -> Analyzer:
    @functools.wraps(analyze)
    def analyzer(text: str, lang: str | None = None) -> list[str]:
        return analyze(text)

    return analyzer


def auto(text: str, lang: str | None = None) -> list[str]:
    return as_language(text, lang or language(text))


auto_v2 = _one_language(functools.partial(mixed, chinese))
auto_v1 = _one_language(functools.partial(mixed, chinese_v1))

ANALYZERS: dict[str, Analyzer] = {
    "auto": auto,
    "auto-v2": auto_v2,
    "auto-v1": auto_v1,
    "chinese": _one_language(chinese),
    "chinese-v1": _one_language(chinese_v1),
    "english": _one_language(english),
}
ANALYZER_VERSION = 3  # 2: Traditional converted to Simplified before segmentation; 3: each language its own analysis
PER_LANGUAGE = frozenset({"auto"})  # analyzers that read each text in its own language


def analyzer_of(params: dict) -> Analyzer:
    """The analyzer an index was built with: its name, at the version it records (indexes from
    before versions were recorded analyzed Chinese without converting Traditional characters;
    version 2 read every text that is not Chinese as English)."""
    name, version = params["analyzer"], params.get("analyzer_version", 1)
    if name in ("auto", "chinese") and version < 2:
        name += "-v1"
    elif name == "auto" and version < 3:
        name = "auto-v2"
    return analyzer(name)


def analyzer(name: str) -> Analyzer:
    """The analyzer of that name; ValueError naming the choices for an unknown one."""
    try:
        return ANALYZERS[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; choose one of {', '.join(sorted(ANALYZERS))}") from None


def warm_up(name: str, languages=("zh",)) -> None:
    """Load what the analyzer needs for texts in these languages (jieba's dictionary, OpenCC's
    tables, ICU's dictionaries, the language-ID model) now, not inside the first query."""
    analyze = analyzer(name)
    for lang in languages:
        analyze("中文" if lang == "zh" else "warm", lang)
    if name in PER_LANGUAGE:
        language("warm")


__all__ = [
    "ANALYZERS",
    "ANALYZER_VERSION",
    "CHINESE_STOPWORDS",
    "ENGLISH_STOPWORDS",
    "PER_LANGUAGE",
    "SEGMENTED",
    "SNOWBALL",
    "UNDETERMINED",
    "Analyzer",
    "analyzer",
    "analyzer_of",
    "as_language",
    "auto",
    "auto_v1",
    "auto_v2",
    "chinese",
    "corpus_languages",
    "english",
    "guesses",
    "language",
    "languages",
    "warm_up",
]
