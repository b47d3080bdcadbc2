"""Text to BM25 terms in one language: the analyzers' building blocks.

- ``english``: Unicode word tokens, lowercased, English stopwords removed, Snowball stemming.
- ``chinese``: Traditional characters converted to Simplified (OpenCC ``t2s``, a no-op on
  Simplified text), then jieba word segmentation (search mode), lowercased, punctuation dropped.
  jieba's dictionary is Simplified (why converting first: docs/results.md,
  ``benchmarks/chinese_analysis.py``).
- ``as_language(text, lang)``: words (letters with their combining marks, so a Hindi or Thai
  vowel sign does not split a word) lowercased and stemmed by the language's Snowball stemmer
  where PyStemmer has one; scripts written without spaces (Thai, Lao, Khmer, Burmese,
  Japanese) segmented by ICU's dictionary word breaker; Korean Hangul as character bigrams
  (Lucene's CJK approach: particles stay attached to Korean words, bigrams still match);
  Chinese and English as above. Measured on the XQuAD dev questions
  (``benchmarks/languages.py``), see docs/results.md.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]+)")
_HANGUL_RUN = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]+")

# Lucene's English stopwords plus the common function words of the Snowball list.
ENGLISH_STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with i me my we our you your he him his she her its them what which
    who whom am were been being have has had having do does did doing would should could can from up down
    out off over under again further once here when where why how all any both each few more most other
    some own same so than too very s t just don now""".split()
)
CHINESE_STOPWORDS = frozenset(
    (
        "的 了 和 是 在 有 与 及 或 之 也 都 而 就 被 把 对 "
        "从 这 那 个 吗 呢 吧 啊 着 过 等 如何 怎么 怎样 什么 为什么 哪些 哪个"
    ).split()
)

# ISO 639-1 code -> PyStemmer's Snowball algorithm
SNOWBALL = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "cs": "czech",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "eo": "esperanto",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "fa": "persian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "st": "sesotho",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
SEGMENTED = frozenset({"th", "lo", "km", "my", "ja"})  # written without spaces between words: ICU's word breaker


@functools.cache
def _stemmer(algorithm: str):
    import Stemmer  # PyStemmer: Snowball stemmers in C

    return Stemmer.Stemmer(algorithm)


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


@functools.lru_cache(maxsize=1)
def _words():
    """Letters and digits with the combining marks that belong to them (``\\w`` alone splits
    "लड़कों" at its vowel signs): built once from the Unicode tables."""
    ranges, start, last = [], None, None
    for code in range(0x30000):
        if unicodedata.category(chr(code)) in ("Mn", "Mc", "Me"):
            if start is None or code != last + 1:
                if start is not None:
                    ranges.append((start, last))
                start = code
            last = code
    ranges.append((start, last))
    return re.compile("[\\w" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges) + "]+")


@functools.cache
def _breaker(lang: str):
    import icu  # PyICU (the pyicu-wheels build): ICU's dictionary-based word breaker

    return icu.BreakIterator.createWordInstance(icu.Locale(lang))


def english(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOPWORDS]
    return _stemmer("english").stemWords(words)


def chinese_v1(text: str) -> list[str]:
    words = _jieba().lcut_for_search(text.lower())
    return [w for w in words if _WORD.search(w) and not w.isspace() and w not in CHINESE_STOPWORDS]


def chinese(text: str) -> list[str]:
    return chinese_v1(_to_simplified()(text))


def mixed(chinese_analyzer, text: str) -> list[str]:
    """Runs of Chinese characters through ``chinese_analyzer``, the rest through ``english``."""
    parts = [text] if text.isascii() else _CJK_RUN.split(text)  # odd positions are CJK runs
    if len(parts) == 1:
        return english(text)
    terms: list[str] = []
    for i, part in enumerate(parts):
        terms.extend(chinese_analyzer(part) if i % 2 else english(part))
    return terms


def segmented(text: str, lang: str) -> list[str]:
    """ICU's words of ``text`` in ``lang``, lowercased, punctuation and spaces dropped."""
    breaker, text = _breaker(lang), text.lower()
    breaker.setText(text)
    bounds = [0, *breaker]
    return [w for w in (text[a:b] for a, b in zip(bounds, bounds[1:])) if _WORD.search(w)]


def hangul_bigrams(word: str) -> list[str]:
    """A word with Hangul runs as overlapping character pairs (a one-syllable run as itself)."""
    terms, last = [], 0
    for run in _HANGUL_RUN.finditer(word):
        if run.start() > last:
            terms.append(word[last : run.start()])
        s = run.group()
        terms.extend([s] if len(s) < 2 else [s[i : i + 2] for i in range(len(s) - 1)])
        last = run.end()
    if last < len(word):
        terms.append(word[last:])
    return terms


def as_language(text: str, lang: str) -> list[str]:
    """The terms of ``text`` analysed as language ``lang`` (an ISO 639-1 code)."""
    if lang in ("en", "zh", "und"):
        return mixed(chinese, text)
    if lang in SEGMENTED:
        return segmented(text, lang)
    words = _words().findall(text.lower())
    if lang == "ko":
        return [t for w in words for t in hangul_bigrams(w)]
    algorithm = SNOWBALL.get(lang)
    return _stemmer(algorithm).stemWords(words) if algorithm else words
