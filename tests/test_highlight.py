"""Highlights on real documents: matched words found through the index's analyzer (stems,
Traditional against Simplified), offsets that point into the document, the densest passage."""

from finerank import read_corpus
from finerank.analysis import auto, english
from finerank.highlight import highlight, matches


def marked(text, spans):
    return [text[s:e] for s, e in spans]


def test_english_words_match_by_stem_on_a_scifact_abstract(scifact_docs):
    doc = next(d for d in scifact_docs if "fractures" in d.text and "vitamin D" in d.text)
    query = "Does vitamin D prevent bone fractures?"
    spans = matches(doc.text, query, english)
    words = marked(doc.text, spans)
    assert "fractures" in words and "vitamin" in words
    assert all(set(english(w)) & set(english(query)) for w in words)  # every mark is a query word, by stem
    found = highlight(doc.text, query, english, width=200)
    assert found.text == doc.text[found.start : found.end] and len(found.text) <= 200
    assert marked(found.text, found.spans) == [
        w for (s, e), w in zip(spans, words) if s >= found.start and e <= found.end
    ]
    # the passage chosen holds at least as many matches as any other window of that width
    best = max(sum(1 for s, e in spans if s >= a and e <= a + 200) for a in range(0, max(1, len(doc.text) - 199)))
    assert len(found.spans) >= best - 1  # starting at a word boundary may cost the last one


def test_a_simplified_query_marks_a_traditional_paragraph(datasets):
    doc = next(d for d in read_corpus(datasets / "drcd-retrieval") if d.id == "train-1147-0")
    found = highlight(doc.text, "陆特和汉斯雷顿开创了哪一地区对梵语的学术研究？", auto, width=120)
    words = marked(found.text, found.spans)
    # the Simplified query's 梵语, 学术研究, 陆特 and 汉斯/雷顿/开创 are marked in their Traditional forms
    assert words[:4] == ["梵語", "學術研究", "陸特", "漢斯雷頓開創"] and found.start == 0
    assert found.text == doc.text[found.start : found.end]


def test_nothing_to_mark():
    text = "A short text about bread."
    assert highlight(text, "quantum chromodynamics", english) == highlight(text, "the of and", english)
    assert highlight(text, "quantum", english).spans == () and highlight(text, "quantum", english).text == text
    long = "word " * 200
    assert highlight(long, "absent", english, width=50).start == 0
