"""The one scorer contract (finerank.Scorer): a scorer of one's own implements ``raw_scores``
alone and is read in windows, pooled, calibrated, put in a pipeline, reranked and served through
the same code as finerank's models; the library asks no scorer what it can do."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import finerank
from finerank import BM25, Document, Index, Pipeline, Scorer, rerank

DOCS = [
    Document("a", "Vitamin D supplements and the risk of hip fractures in older women."),
    Document("b", "Stock markets fell sharply on Monday after weak earnings reports."),
    Document("c", "Fractures heal faster with vitamin D: a randomized trial of supplements."),
    Document("d", "A recipe for lemon cake with vitamin-rich berries."),
]


class Overlap(Scorer):
    """Counts the query's words in the text: the whole of a scorer of one's own."""

    name = "overlap"

    def raw_scores(self, requests):
        return np.array(
            [len(set(q.lower().split()) & set(t.lower().split())) for q, texts in requests for t in texts],
            dtype=np.float32,
        )


class Windowed(Overlap):
    """The same, reading a text as windows of 4 words (pooled by the best, as the base class does)."""

    name = "overlap-windows"

    def windows(self, query, texts, max_chunks_per_doc=None):
        spans = []
        for text in texts:
            words = [m.span() for m in re.finditer(r"\S+", text)]
            spans.append(
                [(group[0][0], group[-1][1]) for group in (words[i : i + 4] for i in range(0, len(words), 4))]
                or [(0, len(text))]
            )
        return spans


def test_a_scorer_of_ones_own_implements_raw_scores_alone():
    scorer = Overlap()
    query = "vitamin D fractures supplements"
    raw = scorer.score(query, [d.text for d in DOCS], raw=True)
    assert raw.tolist() == [
        4.0,
        0.0,
        2.0,
        0.0,
    ]  # words as they stand: "D:" and "supplements." are not "d", "supplements"
    assert (
        scorer.score(query, [d.text for d in DOCS[::-1]], raw=True).tolist() == raw[::-1].tolist()
    )  # order never matters
    np.testing.assert_array_equal(
        scorer.calibrate(raw), raw
    )  # uncalibrated, and squash is the identity: it is what it is
    hits = rerank(scorer, query, DOCS)
    assert {hits[0].id, hits[1].id} == {"a", "c"} and [d.id for d in DOCS] == ["a", "b", "c", "d"]
    ranking = Pipeline(BM25(Index.build(DOCS)), scorer, candidates=4, top_k=2).search("vitamin fractures")
    assert ranking.reranker == "overlap" and {h.id for h in ranking.hits} == {"a", "c"}
    assert scorer.reading["name"] == "overlap" and len(scorer.reading_key) == 16


def test_windows_are_pooled_and_the_best_one_is_the_passage():
    scorer = Windowed()
    text = "one two three four vitamin fractures heal fast and then more words follow here"
    scores, passages = scorer.score_passages("vitamin fractures", [text], raw=True)
    assert scores[0] == 2.0 and "vitamin fractures" in text[slice(*passages[0])]


def test_an_object_that_is_no_scorer_is_refused_by_name():
    class Bare:  # the old implicit protocol: a score method alone
        name = "bare"

        def score(self, query, texts, *, raw=False):
            return np.zeros(len(texts))

    with pytest.raises(TypeError, match="subclass it and implement raw_scores"):
        Pipeline(BM25(Index.build(DOCS)), Bare())


def test_a_scorer_that_gives_the_wrong_number_of_scores_is_named():
    class Broken(Overlap):
        def raw_scores(self, requests):
            return np.zeros(1)

    with pytest.raises(ValueError, match="raw_scores gave 1 scores for 3 texts"):
        Broken().score("q", ["a", "b", "c"])


def test_a_scorer_of_ones_own_is_served():
    from fastapi.testclient import TestClient

    from finerank.server import create_app

    texts = [d.text for d in DOCS]
    with TestClient(create_app(Overlap())) as client:
        response = client.post("/v1/rerank", json={"query": "vitamin D fractures supplements", "documents": texts})
    assert response.status_code == 200, response.text
    ranked = response.json()["results"]
    assert {ranked[0]["index"], ranked[1]["index"]} == {0, 2}
    expected = Overlap().score("vitamin D fractures supplements", texts)
    assert {r["index"]: r["relevance_score"] for r in ranked} == pytest.approx(dict(enumerate(expected.tolist())))


def test_the_library_asks_no_object_what_it_can_do():
    """No hasattr or signature probing in the library, but for the transformers models' forward
    arguments (which differ between transformers versions)."""
    root = Path(finerank.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                "hasattr",
                "signature",
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert sorted(f.split(":")[0] for f in found) == ["models/files.py", "models/llm.py"], found
