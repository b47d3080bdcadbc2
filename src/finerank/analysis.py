"""Text to BM25 terms. Analyzers are named (see ``finerank.registry.ANALYZERS``) and the name
is stored in an index, so queries are analyzed exactly as its documents were.

- ``english``: Unicode word tokens, lowercased, English stopwords removed, Snowball stemming.
- ``chinese``: Traditional characters converted to Simplified (OpenCC ``t2s``, a no-op on
  Simplified text), then jieba word segmentation (search mode), lowercased, punctuation dropped.
  Converting first measured +0.014 nDCG@10 on DRCD train (Traditional) and changed nothing on
  CMRC (Simplified); jieba's dictionary is Simplified (``benchmarks/chinese_analysis.py``).
- ``auto``: runs of CJK characters go through ``chinese``, everything else through
  ``english``; on text without CJK characters it equals ``english``.
- ``chinese-v1`` / ``auto-v1``: the same without the conversion, as indexes built before it
  was added were analyzed (an index records its analyzer's version; see ``analyzer_of``).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Callable

Analyzer = Callable[[str], list[str]]

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]+)")

# Lucene's English stopwords plus the common function words of the Snowball list.
ENGLISH_STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with i me my we our you your he him his she her its them what which
    who whom am were been being have has had having do does did doing would should could can from up down
    out off over under again further once here when where why how all any both each few more most other
    some own same so than too very s t just don now""".split()
)
CHINESE_STOPWORDS = frozenset(
    "的 了 和 是 在 有 与 及 或 之 也 都 而 就 被 把 对 从 这 那 个 吗 呢 吧 啊 着 过 等 如何 怎么 怎样 什么 为什么 哪些 哪个".split()
)


@functools.lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: Snowball stemmers in C

    return Stemmer.Stemmer("english")


@functools.lru_cache(maxsize=1)
def _to_simplified():
    import opencc

    return opencc.OpenCC("t2s").convert


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # jieba's own logger announces its dictionary at INFO
    jieba.initialize()
    return jieba


def english(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOPWORDS]
    return _stemmer().stemWords(words)


def chinese_v1(text: str) -> list[str]:
    words = _jieba().lcut_for_search(text.lower())
    return [w for w in words if _WORD.search(w) and not w.isspace() and w not in CHINESE_STOPWORDS]


def chinese(text: str) -> list[str]:
    return chinese_v1(_to_simplified()(text))


def _mixed(chinese_analyzer: Analyzer) -> Analyzer:
    def analyze(text: str) -> list[str]:
        parts = _CJK_RUN.split(text)  # odd positions are CJK runs
        if len(parts) == 1:
            return english(text)
        terms: list[str] = []
        for i, part in enumerate(parts):
            terms.extend(chinese_analyzer(part) if i % 2 else english(part))
        return terms

    return analyze


auto = _mixed(chinese)
auto_v1 = _mixed(chinese_v1)


ANALYZERS: dict[str, Analyzer] = {"auto": auto, "auto-v1": auto_v1, "chinese": chinese, "chinese-v1": chinese_v1, "english": english}
ANALYZER_VERSION = 2  # 2: Traditional converted to Simplified before segmentation


def analyzer_of(params: dict) -> Analyzer:
    """The analyzer an index was built with: its name, at the version it records (indexes from
    before versions were recorded analyzed Chinese without converting Traditional characters)."""
    name = params["analyzer"]
    if params.get("analyzer_version", 1) < ANALYZER_VERSION and name in ("auto", "chinese"):
        name += "-v1"
    return analyzer(name)

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_LETTER = re.compile(r"[^\W\d_]")


def language(text: str) -> str:
    """``zh`` when Chinese characters are at least a fifth of the text's letters (so
    "Python如何读取CSV文件？" is Chinese), else ``other`` (English and other alphabetic text)."""
    cjk = len(_CJK_CHAR.findall(text))
    letters = len(_LETTER.findall(text))
    return "zh" if cjk and cjk >= 0.2 * letters else "other"


def languages(texts) -> dict[str, int]:
    """How many texts are in each :func:`language`, e.g. {"other": 70, "zh": 30}."""
    counts: dict[str, int] = {}
    for text in texts:
        lang = language(text)
        counts[lang] = counts.get(lang, 0) + 1
    return dict(sorted(counts.items()))


def analyzer(name: str) -> Analyzer:
    """The analyzer of that name; ValueError naming the choices for an unknown one."""
    try:
        return ANALYZERS[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; choose one of {', '.join(sorted(ANALYZERS))}") from None


def warm_up(name: str) -> None:
    """Load what the analyzer needs (jieba's dictionary, OpenCC's tables) now, not inside the first query."""
    if name != "english":
        _jieba()
        _to_simplified()
