"""Long documents read in windows: the windows themselves, and a relevant passage placed after
the model's token limit, found with chunking and missed without (real SciFact text, the real
MiniLM model)."""

import re

import httpx
import numpy as np
import pytest
from support import LiveServer

from finerank import BM25, Document, Index, Pipeline, load_scorer
from finerank.evaluate import load_dataset
from finerank.models import chunks
from finerank.server import create_app

FILLER_END = re.compile(r"^.*? \|")  # the filler ends at its first " |"


@pytest.fixture(scope="module")
def scorer():
    # reads 256 tokens per text; remembers embeddings, so a distractor read whole and as its one window is read once
    return load_scorer("all-minilm-l6-v2", precision="fp32", cache_size=100_000)


@pytest.fixture(scope="module")
def needles(datasets, scifact_docs):
    """(query, long document, short distractors): the query's relevant abstract placed after
    ~600 tokens of other abstracts, beside 19 other abstracts."""
    by_id = {d.id: d for d in scifact_docs}
    dataset = load_dataset(datasets / "scifact", max_queries=6)
    filler = " ".join(d.text for d in scifact_docs[1000:1004]) + " |"
    cases = []
    for qid, query in dataset.queries.items():
        relevant = next(d for d, g in dataset.qrels[qid].items() if g > 0)
        others = [d.text for d in scifact_docs[2000 + 19 * len(cases) : 2019 + 19 * len(cases)] if d.id != relevant]
        cases.append((query, filler + " " + by_id[relevant].text, others))
    return cases


def test_windows_cover_the_text_at_word_starts_and_fit(scorer, needles):
    query, text, _ = needles[0]
    budget = scorer._budget(query)
    (spans,) = scorer.windows(query, [text], max_chunks_per_doc=50)
    assert spans[0][0] == 0 and spans[-1][1] == len(text) and len(spans) > 3
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s1 < s2 < e1 < e2  # consecutive windows overlap and move forward
    for s, e in spans:
        assert s == 0 or text[s - 1] == " "  # a window starts with a whole word
        assert len(scorer.encoder.tokenizer.encode(text[s:e], add_special_tokens=False).ids) <= budget
    assert scorer.windows(query, [text], max_chunks_per_doc=3)[0] == spans[:3]
    assert scorer.windows(query, [text, "short"], max_chunks_per_doc=1) == [[(0, len(text))], [(0, 5)]]
    assert scorer.windows(query, ["short"], max_chunks_per_doc=4) == [[(0, 5)]]


def test_sentencepiece_windows_start_at_words_too():
    """XLM-R's SentencePiece tokens carry the space before a word in their span (WordPiece's do
    not): windows still start at words, never at a piece inside one."""
    pytest.importorskip("semantra_multilingual")
    from tokenizers import Tokenizer

    from finerank.models.e5 import source_files

    tokenizer = Tokenizer.from_file(str(source_files()[1]))
    text = " ".join(
        ["Interval repetition helps learners remember unbelievably many words."] * 6
        + ["Интервальные повторения помогают запоминать иностранные слова."] * 6
    )
    (spans,) = chunks.split(tokenizer, [text], 24, 50, 8)
    assert len(spans) > 4 and spans[-1][1] == len(text)
    for start, end in spans:
        assert start == 0 or text[start].isspace() or text[start - 1].isspace(), text[start - 5 : start + 10]
        assert len(tokenizer.encode(text[start:end], add_special_tokens=False).ids) <= 24


def test_pool():
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2], dtype=np.float32)
    pooled, best = chunks.pool(scores, [3, 1, 1])
    assert pooled.tolist() == pytest.approx([0.9, 0.3, 0.2]) and best.tolist() == [1, 0, 0]
    pooled, _ = chunks.pool(scores, [3, 2], "mean-top-2")
    assert pooled.tolist() == pytest.approx([0.7, 0.25])
    with pytest.raises(ValueError, match="unknown chunk pooling 'median'"):
        chunks.pool(scores, [5], "median")


def test_a_late_relevant_passage_is_found_with_chunks_and_missed_without(scorer, needles):
    truncated, chunked = [], []
    for query, long_doc, others in needles:
        for ranks, n in ((truncated, 1), (chunked, 8)):
            scores, passages = scorer.score_passages(query, [long_doc, *others], max_chunks_per_doc=n)
            ranks.append(int((scores > scores[0]).sum()) + 1)
            if n > 1 and ranks[-1] == 1:  # the best window holds part of the relevant abstract (after the filler)
                assert passages[0][1] > len(FILLER_END.search(long_doc).group(0))
    assert sum(r == 1 for r in chunked) >= 0.75 * len(needles), chunked
    assert sum(r == 1 for r in truncated) <= 0.25 * len(needles), truncated
    # a document that fits in one window scores as before
    query, long_doc, others = needles[0]
    fits = [t for t, spans in zip(others, scorer.windows(query, others, 8)) if spans == [(0, len(t))]]
    assert 3 <= len(fits) < len(others)
    np.testing.assert_allclose(
        scorer.score_passages(query, fits, max_chunks_per_doc=8)[0], scorer.score(query, fits), atol=1e-6
    )


def test_chunks_through_the_pipeline_and_the_server(scorer, needles, tmp_path):
    query, long_doc, others = needles[0]
    docs = [Document("long", long_doc)] + [Document(f"d{i}", t) for i, t in enumerate(others)]
    path = tmp_path / "idx"
    Index.build(docs).save(path)
    chunked = load_scorer("all-minilm-l6-v2", precision="fp32", max_chunks_per_doc=8)
    ranking = Pipeline(BM25(Index.load(path)), chunked, candidates=20, top_k=20).search(query)
    assert ranking.hits[0].id == "long" and ranking.model_scores["long"].passage[1] > len(
        FILLER_END.search(long_doc).group(0)
    )
    with LiveServer(create_app(chunked, index=path)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        texts = [long_doc, *others]
        for n, expected_first in ((8, 0), (1, None)):
            results = c.post("/v1/rerank", json={"query": query, "documents": texts, "max_chunks_per_doc": n}).json()[
                "results"
            ]
            reversed_results = c.post(
                "/v1/rerank", json={"query": query, "documents": texts[::-1], "max_chunks_per_doc": n}
            ).json()["results"]
            by_index = {r["index"]: r["relevance_score"] for r in results}
            assert all(
                abs(by_index[len(texts) - 1 - r["index"]] - r["relevance_score"]) < 1e-5 for r in reversed_results
            )
            assert (results[0]["index"] == 0) == (expected_first == 0)
        # the search page's highlight comes from the model's best window (the relevant abstract at the end)
        hit = c.post("/v1/search", json={"query": query, "top_n": 1}).json()["results"][0]
        assert hit["id"] == "long" and hit["highlight"]["start"] >= ranking.model_scores["long"].passage[0]
    assert c.is_closed
