import dataclasses
import math
import mmap
import pickle

import numpy as np
import pytest

from finerank import BM25, Document, Index, IndexFormatError, read_corpus, read_qrels, read_queries
from finerank.index import DocumentStore
from finerank.metrics import mean_scores

FOUR = [
    Document("d1", "apple banana apple"),
    Document("d2", "banana cherry"),
    Document("d3", "cherry date egg fig"),
    Document("d4", "apple"),
]


def lucene_bm25(tf, df, dl, n=4, avgdl=2.5, k1=0.9, b=0.4):
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_scores_equal_hand_computed_lucene_bm25():
    index = Index.build(FOUR, analyzer="english")
    hits = BM25(index).search("apple", k=10)
    assert [h.id for h in hits] == ["d1", "d4"]  # two occurrences beat a short document; zero scores are left out
    assert hits[0].score == pytest.approx(lucene_bm25(2, 2, 3), rel=1e-5)
    assert hits[1].score == pytest.approx(lucene_bm25(1, 2, 1), rel=1e-5)
    scores = BM25(index).scores("banana cherry")
    expected = [lucene_bm25(1, 2, 3), lucene_bm25(1, 2, 2) + lucene_bm25(1, 2, 2), lucene_bm25(1, 2, 4), 0.0]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    custom = Index.build(FOUR, analyzer="english", k1=1.2, b=0.75)
    assert BM25(custom).search("apple", 1)[0].score == pytest.approx(lucene_bm25(1, 2, 1, k1=1.2, b=0.75), rel=1e-5)


def test_search_contract():
    index = Index.build(FOUR)
    hits = BM25(index).search("banana", k=1)
    assert len(hits) == 1 and hits[0].rank == hits[0].original_rank == 1
    assert BM25(index).search("zebra unknown", k=5) == [] and BM25(index).search("the of and", k=5) == []
    assert [[h.id for h in BM25(index).search(q, k=2)] for q in ["apple", "fig"]] == [["d1", "d4"], ["d3"]]
    with pytest.raises(ValueError):
        BM25(index).search("apple", k=0)
    tied = Index.build([Document(str(i), "same words here") for i in range(20)])
    assert [h.id for h in BM25(tied).search("words", k=5)] == ["0", "1", "2", "3", "4"]


def test_save_load_roundtrip_memory_mapped(tmp_path):
    index = Index.build(FOUR + [Document("zh", "感冒的治疗方法", metadata={"lang": "zh"})])
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    assert isinstance(loaded.documents._blob, mmap.mmap)
    assert loaded.params == index.params and BM25(loaded).name == BM25(index).name
    for q in ("apple", "cherry fig", "感冒治疗"):
        assert [(h.id, h.score) for h in BM25(loaded).search(q)] == [(h.id, h.score) for h in BM25(index).search(q)]
    zh = BM25(loaded).search("治疗")[0].document
    assert zh == Document("zh", "感冒的治疗方法", "", {"lang": "zh"})
    assert loaded.documents[loaded.documents.position("d3")].text == "cherry date egg fig"
    with pytest.raises(KeyError, match="unknown document id 'nope'"):
        loaded.documents.position("nope")


def test_stored_documents_are_read_when_used_and_equal_plain_ones(tmp_path):
    docs = [
        Document('a"b\\c\n文档', 'text with "quotes" and 感冒', "Title", {"year": 2020, "tags": ["x"]}),
        Document("plain", "apple pie"),
        Document("😀", "emoji id"),
    ]
    Index.build(docs).save(tmp_path / "idx")
    store = Index.load(tmp_path / "idx").documents
    first = store[0]
    assert first.id == docs[0].id and "_fields" not in first.__dict__  # the id alone decodes nothing else
    assert [store[i] for i in range(3)] == docs and docs == [store[i] for i in range(3)]  # equal both ways
    assert first.content == "Title\n" + docs[0].text and first.metadata == {"year": 2020, "tags": ["x"]}
    assert [store.position(d.id) for d in docs] == [0, 1, 2] and "😀" in store
    again = pickle.loads(pickle.dumps(store[2]))
    assert type(again) is Document and again == docs[2]  # pickled as the plain document, not the memory map
    assert dataclasses.asdict(store[1]) == dataclasses.asdict(docs[1]) and repr(store[1]) == repr(docs[1])
    assert store[1] != Document("plain", "apple pie!")
    changed = dataclasses.replace(first, text="new text")  # a copy with a field changed is a plain document
    assert type(changed) is Document and changed.id == docs[0].id and changed.text == "new text"


def test_crash_mid_save_leaves_old_index_intact(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    Index.build(FOUR).save(path)

    def crash(self, folder):
        (folder / "documents.jsonl").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(DocumentStore, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        Index.build([Document("new", "other text")]).save(path)
    loaded = Index.load(path)
    assert len(loaded) == 4 and BM25(loaded).search("apple")[0].id == "d1"
    assert len(list(path.glob("gen-*"))) == 1


def test_bad_index_folders(tmp_path):
    with pytest.raises(IndexFormatError, match="not a finerank index"):
        Index.load(tmp_path)
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(IndexFormatError, match="refusing to write"):
        Index.build(FOUR).save(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    path = tmp_path / "idx"
    Index.build(FOUR).save(path)
    meta = next(path.glob("gen-*")) / "meta.json"
    meta.write_text(meta.read_text().replace('"format_version": 2', '"format_version": 99'))
    with pytest.raises(IndexFormatError, match="format 99"):
        Index.load(path)
    meta.write_text("{not json")
    with pytest.raises(IndexFormatError, match="cannot read meta.json"):
        Index.load(path)
    (path / "CURRENT").write_text("gen-missing")
    with pytest.raises(IndexFormatError, match="gen-missing, which is missing"):
        Index.load(path)
    with pytest.raises(ValueError, match="unknown analyzer"):
        Index.build(FOUR, analyzer="klingon")


def test_chinese_retrieval_smoke(datasets):
    index = Index.build(read_corpus(datasets / "cmrc2018-dev-retrieval"), analyzer="auto")
    queries = read_queries(datasets / "cmrc2018-dev-retrieval" / "queries.jsonl")
    qrels = read_qrels(datasets / "cmrc2018-dev-retrieval" / "qrels" / "test.tsv")
    sample = dict(list(qrels.items())[:400])
    run = {q: [h.id for h in BM25(index).search(queries[q], 10)] for q in sample}
    assert mean_scores(run, sample)["ndcg@10"] > 0.9


def test_filtered_search_still_returns_k_matching_documents(scifact_docs):
    docs = [
        Document(d.id, d.text, d.title, {"year": 2000 + i % 20, "lang": "en" if i % 2 else "de"})
        for i, d in enumerate(scifact_docs[:500])
    ]
    index = Index.build(docs)
    for spec, check in [
        ({"lang": "de"}, lambda m: m["lang"] == "de"),
        ({"year": [2003, 2005]}, lambda m: m["year"] in (2003, 2005)),
        ({"year": {"gte": 2010, "lt": 2012}, "lang": "en"}, lambda m: 2010 <= m["year"] < 2012 and m["lang"] == "en"),
    ]:
        hits = BM25(index).search("cells", k=10, filter=spec)
        assert len(hits) == 10 and all(check(h.document.metadata) for h in hits)
        matching = [h for h in BM25(index).search("cells", k=500) if check(h.document.metadata)][:10]
        assert [h.id for h in hits] == [h.id for h in matching]  # the same order as filtering afterwards, but full
    assert BM25(index).search("cells", k=5, filter={"missing": 1}) == []
    with pytest.raises(ValueError, match="a range uses"):
        BM25(index).search("cells", filter={"year": {"near": 3}})
