"""A first stage in Qdrant (its local mode, the same client API as a Qdrant cluster): BM25 in
Qdrant ranks as finerank's own BM25 does, dense search as finerank's exact search (documents read
in windows too), filters select what finerank's own select or are refused, the retriever returns
what Qdrant's own client returns, and the pipeline reranks its hits."""

import re
import sys
from dataclasses import replace

import pytest
from qdrant_client import QdrantClient, models

from finerank import (
    BM25,
    Dense,
    Document,
    Index,
    MissingDependencyError,
    Pipeline,
    load_encoder,
    load_reranker,
    qdrant,
    read_queries,
    rerank,
)

QUERIES = 12


@pytest.fixture(scope="module")
def collection(scifact_docs, datasets, tmp_path_factory):
    # the first 500 SciFact abstracts, each with a number to filter on; the caller's documents are not changed
    documents = [replace(d, metadata={**d.metadata, "n": i}) for i, d in enumerate(scifact_docs[:500])]
    # the cost of the test: abstracts cut to 128 tokens, encoded once (the cache) for the index and the collection
    encoder = load_encoder("all-minilm-l6-v2", max_length=128, cache_size=100_000)
    index = Index.build(documents, encoder=encoder)
    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant")))
    assert qdrant.create(client, "scifact", documents, encoder=encoder) == len(documents)
    titles = [d.title for d in documents[:QUERIES]]  # a title as the query: its abstract is the answer
    yield client, index, encoder, titles
    client.close()


def test_bm25_in_qdrant_ranks_as_finerank_does(collection):
    client, index, encoder, titles = collection
    ours, theirs = BM25(index), qdrant.Qdrant(client, "scifact", "bm25")
    for title in titles:
        expected, got = ours.search(title, 10), theirs.search(title, 10)
        assert [h.id for h in got] == [h.id for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], rel=1e-4)
        assert [h.rank for h in got] == list(range(1, 11))
        assert got[0].document == index.documents[index.documents.position(got[0].id)]


def test_dense_in_qdrant_finds_what_exact_search_finds(collection):
    client, index, encoder, titles = collection
    ours, theirs = Dense(index, encoder), qdrant.Qdrant(client, "scifact", "dense", encoder=encoder)
    for title in titles:
        expected, got = ours.search(title, 10), theirs.search(title, 10)
        assert [h.id for h in got] == [h.id for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_filters_and_the_retriever_return_what_qdrants_own_client_returns(collection):
    client, index, encoder, titles = collection
    retriever = qdrant.Qdrant(client, "scifact", "bm25")
    spec = {"n": {"gte": 100, "lt": 400}}
    hits = retriever.search(titles[0], 20, filter=spec)
    assert len(hits) == 20 and all(100 <= h.document.metadata["n"] < 400 for h in hits)
    in_range = models.FieldCondition(key="metadata.n", range=models.Range(gte=100, lt=400))
    own = client.query_points(
        "scifact",
        query=retriever.query(titles[0]),
        using="bm25",
        limit=20,
        with_payload=True,
        query_filter=models.Filter(must=[in_range]),
    )
    assert [(h.id, h.score) for h in hits] == [(p.payload["id"], p.score) for p in own.points]
    assert [h.id for h in BM25(index).search(titles[0], 20, filter=spec)] == [h.id for h in hits]
    wanted = [d.id for d in list(index.documents)[:40:3]]
    assert {h.id for h in retriever.search(titles[0], 50, filter={"id": wanted})} <= set(wanted)
    with pytest.raises(ValueError, match="numeric"):
        retriever.search(titles[0], 5, filter={"title": {"gte": "a"}})


def test_the_pipeline_reranks_qdrant_candidates(collection, datasets):
    client, index, encoder, titles = collection
    first, reranker = qdrant.Qdrant(client, "scifact", "bm25"), load_reranker("all-minilm-l6-v2")
    query = read_queries(datasets / "scifact" / "queries.jsonl")["1"]  # a real SciFact claim
    candidates = first.search(query, 30)
    ranking = Pipeline(first, reranker, candidates=30, top_k=5).search(query)
    expected = rerank(reranker, query, [h.document for h in candidates], top_k=5)
    assert [(h.id, h.original_rank) for h in ranking.hits] == [(h.id, h.original_rank) for h in expected]
    assert all(candidates[h.original_rank - 1].id == h.id for h in ranking.hits)


def test_without_the_client_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'finerank\[qdrant\]'"):
        qdrant.qdrant_filter({"n": 1})


# one document per case: every text holds "river" once and is longer than the one before, so BM25 ranks them in order
CASES = [
    {"score": 2.0},
    {"score": 2},
    {"score": 2.5},
    {"score": "2"},
    {"flag": True},
    {"flag": 1},
    {"flag": 1.0},
    {"flag": False},
    {"flag": 0},
    {"tags": ["a", "b"]},
    {"tags": "a"},
    {"tags": ["a"]},
    {"a.b": "x"},
    {"a": {"b": "x"}},
    {"a[0]": 3, "a b": "y"},
    {"year": 2016},
    {"year": 2014.5},
    {"year": "2016"},
    {"year": [2016]},
    {"year": True},
    {"note": None},
    {"note": [None]},
    {},
]
FILTERS = [  # finerank's semantics: Python's ==, `in` and comparisons on the whole metadata value
    ({"score": 2}, [0, 1]),  # 2.0 == 2, "2" is not
    ({"score": 2.0}, [0, 1]),
    ({"flag": True}, [4, 5, 6]),  # True == 1 == 1.0
    ({"flag": 0}, [7, 8]),
    ({"flag": [True, "x", 2.5]}, [4, 5, 6]),  # a membership list of mixed types
    ({"score": ["2", 2.5, None]}, [2, 3]),
    ({"tags": "a"}, [10]),  # a list value is compared whole, not element by element
    ({"tags": ["a", "b"]}, [10]),
    ({"a.b": "x"}, [12]),  # a dot is part of the key, not a path into {"a": {"b": ...}}
    ({"a[0]": 3, "a b": "y"}, [14]),
    ({"year": {"gte": 2015}}, [15]),  # neither "2016" nor [2016] compares with a number
    ({"year": {"lt": 2}}, [19]),  # True < 2
    ({"year": {"gt": 2014, "lte": 2016.0}}, [15, 16]),
    ({"note": None}, [20]),
    ({"note": [None, "y"]}, [20]),
    ({"missing": "x"}, []),
    ({"tags": []}, []),
    ({"id": ["d1", "d3", "d9"], "score": {"gt": 1}}, [1]),
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    documents = [Document(f"d{i}", "river " + "bank " * i + f"story {i}", metadata=m) for i, m in enumerate(CASES)]
    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant-cases")))
    qdrant.create(client, "cases", documents)
    yield Index.build(documents), qdrant.Qdrant(client, "cases", "bm25")
    client.close()


@pytest.mark.parametrize("spec, expected", FILTERS, ids=[str(spec) for spec, _ in FILTERS])
def test_a_filter_selects_in_qdrant_what_it_selects_in_finerank(cases, spec, expected):
    index, retriever = cases
    ours, theirs = BM25(index).search("river", 30, filter=spec), retriever.search("river", 30, filter=spec)
    assert [h.id for h in ours] == [f"d{i}" for i in expected]
    assert [h.id for h in theirs] == [h.id for h in ours]
    assert [h.score for h in theirs] == pytest.approx([h.score for h in ours], rel=1e-4)
    assert [h.document.metadata for h in theirs] == [CASES[i] for i in expected]
    if expected:  # k hits come back whenever k documents match, however many Qdrant's side lets through
        assert [h.id for h in retriever.search("river", 1, filter=spec)] == [f"d{expected[0]}"]


@pytest.mark.parametrize(
    "spec, why",
    [
        ({"year": {"gte": "2015"}}, "numeric"),
        ({'say "hi"': 1}, "double quote"),
        ({"tags": [["a"], "b"]}, "list or object"),
        ({"n": 2**60}, "2\\*\\*53"),
        ({"n": {"lt": float("inf")}}, "finite"),
        ({"n": float("nan")}, "finite"),
    ],
)
def test_a_filter_qdrant_cannot_hold_exactly_is_refused(cases, spec, why):
    field = next(iter(spec))
    with pytest.raises(ValueError, match=f"filter on {re.escape(repr(field))}.*{why}"):
        cases[1].search("river", 5, filter=spec)


@pytest.fixture(scope="module", params=[0.0, 0.3], ids=["windows", "windows+whole"])
def windowed(request, scifact_docs, tmp_path_factory):
    # abstracts read in windows of 32 tokens (several a document), with or without the whole text as one more row;
    # the cache lets the index and the collection share one encoding
    documents = [replace(d, metadata={**d.metadata, "n": i}) for i, d in enumerate(scifact_docs[:40])]
    encoder = load_encoder(
        "all-minilm-l6-v2", max_length=64, document_window=32, whole_document=request.param, cache_size=100_000
    )
    index = Index.build(documents, encoder=encoder, ann="exact")
    assert len(index.vectors.vectors) > 5 * len(documents)
    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant-windows")))
    qdrant.create(client, "windows", documents, encoder=encoder)
    yield index, encoder, qdrant.Qdrant(client, "windows", "dense", encoder=encoder), [d.title for d in documents[:8]]
    client.close()


def test_dense_in_qdrant_scores_windowed_documents_as_finerank_does(windowed):
    index, encoder, theirs = windowed[:3]
    ours = Dense(index, encoder)
    for title in windowed[3]:
        for spec in (None, {"n": {"gte": 10}}):
            expected, got = ours.search(title, 10, filter=spec), theirs.search(title, 10, filter=spec)
            assert [h.id for h in got] == [h.id for h in expected]
            assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-4)
