"""Dense and hybrid first stages, incremental updates and filters, on the real all-MiniLM-L6-v2
encoder and real corpora."""

import json

import numpy as np
import pytest

from finerank import (
    BM25,
    Dense,
    Document,
    Index,
    IndexFormatError,
    ModelError,
    first_stage,
    read_corpus,
    read_qrels,
    read_queries,
)
from finerank.errors import CorpusError, NotFoundError
from finerank.metrics import mean_scores
from finerank.registry import encoder_of, load_encoder
from finerank.vectors import VectorIndex

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder():
    # its embeddings remembered: the smaller indexes below are built from documents the fixtures read
    return load_encoder(threads=2, cache_size=100_000)


@pytest.fixture(scope="module")
def vaswani(datasets, encoder):
    """4,000 of Vaswani's 11,429 short abstracts (every one judged relevant to a test query, then
    the others in file order) with exact-search vectors. Encoding the whole corpus cost the suite
    a minute; it is `python benchmarks/first_stages.py --datasets vaswani`'s."""
    relevant = {
        d
        for judged in read_qrels(datasets / "vaswani" / "qrels" / "test.tsv").values()
        for d, g in judged.items()
        if g > 0
    }
    docs = list(read_corpus(datasets / "vaswani"))
    kept = [d for d in docs if d.id in relevant]
    kept += [d for d in docs if d.id not in relevant][: 4000 - len(kept)]
    return Index.build(kept, encoder=encoder, ann="exact")


@pytest.fixture(scope="module")
def small(scifact_docs, encoder):
    return Index.build(scifact_docs[:200], encoder=encoder)


def test_encoder_reads_its_config_and_backends_agree(minilm_dir):
    texts = [
        "Vitamin D and bone density.",
        "A much longer text about the regeneration of zebrafish fins " * 5,
        "短文本",
    ]
    reference = load_encoder(backend="torch", precision="fp32")
    assert (
        reference.normalize and not reference.cls_pooling and reference.encoder.max_length == 256
    )  # from sentence_bert_config.json
    vectors = reference.embed_documents(texts)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    onnx = load_encoder(backend="onnx", precision="fp32").embed_documents(texts)
    np.testing.assert_allclose(onnx, vectors, atol=1e-4)
    bf16 = load_encoder(backend="torch", precision="bf16").embed_documents(texts)
    assert (np.sum(bf16 * vectors, axis=1) > 0.999).all()
    # the same model as sentence-transformers computes it
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(st, vectors, atol=1e-4)


def test_prefixes_are_applied(minilm_dir):
    plain = load_encoder()
    e5_style = load_encoder(query_prefix="query: ", document_prefix="passage: ")
    np.testing.assert_allclose(e5_style.embed_queries(["fins"]), plain.embed(["query: fins"]), atol=1e-6)
    np.testing.assert_allclose(e5_style.embed_documents(["fins"]), plain.embed(["passage: fins"]), atol=1e-6)


def test_dense_and_hybrid_retrieve_well_on_vaswani(datasets, vaswani, encoder):
    queries = read_queries(datasets / "vaswani" / "queries.jsonl")
    qrels = read_qrels(datasets / "vaswani" / "qrels" / "test.tsv")
    recall = {}
    for kind in ("bm25", "dense", "hybrid"):
        retriever = first_stage(vaswani, kind, encoder)
        run = {q: [h.id for h in retriever.search(text, 100)] for q, text in queries.items() if q in qrels}
        assert all(len(ids) == 100 for ids in run.values())
        recall[kind] = mean_scores(run, qrels)["recall@100"]
    assert recall["dense"] > 0.5 and recall["bm25"] > 0.5
    assert recall["hybrid"] >= max(recall["bm25"], recall["dense"]) - 0.01, recall


def test_bi_encoder_second_stage_reads_the_stored_vectors(datasets, vaswani, tiny_ce):
    from finerank import BM25, Pipeline, load_reranker

    reranker = load_reranker("minilm-fused", threads=2, cache_size=100_000)  # candidates both stages find: read once
    queries = read_queries(datasets / "vaswani" / "queries.jsonl")
    qrels = read_qrels(datasets / "vaswani" / "qrels" / "test.tsv")
    ids = [q for q in queries if q in qrels][:6]
    for stage in (BM25(vaswani), first_stage(vaswani, "hybrid")):
        pipeline, encoding = (
            Pipeline(stage, reranker, candidates=100, top_k=10),
            Pipeline(stage, reranker, candidates=100, top_k=10),
        )
        assert pipeline.reranking.stored_vectors is not None
        encoding.reranking.stored_vectors = None  # the same pipeline, encoding the candidates' texts
        stored, encoded = {}, {}
        for q in ids:
            stored[q], encoded[q] = pipeline.search(queries[q]).hits, encoding.search(queries[q]).hits
            np.testing.assert_allclose([h.score for h in stored[q]], [h.score for h in encoded[q]], atol=5e-3)
            assert len({h.id for h in stored[q]} & {h.id for h in encoded[q]}) >= 8  # bf16 noise may swap near-ties
        runs = [{q: [h.id for h in hits] for q, hits in run.items()} for run in (stored, encoded)]
        judged = {q: qrels[q] for q in ids}
        assert abs(mean_scores(runs[0], judged)["ndcg@10"] - mean_scores(runs[1], judged)["ndcg@10"]) < 0.01
    # vectors made otherwise are not taken for this model's
    assert (
        Pipeline(BM25(vaswani), load_reranker("all-minilm-l6-v2", document_prefix="passage: ")).reranking.stored_vectors
        is None
    )
    assert Pipeline(BM25(vaswani), load_reranker(tiny_ce)).reranking.stored_vectors is None
    assert (
        Pipeline(BM25(Index.build(list(read_corpus(datasets / "vaswani"))[:50])), reranker).reranking.stored_vectors
        is None
    )  # no vectors
    with pytest.raises(ValueError, match="one array of 384-dimensional rows"):
        reranker.scorer.score_vectors("fins", [np.zeros((3, 384), np.float32), np.zeros((1, 12), np.float32)])


def test_hnsw_finds_what_exact_search_finds(datasets, vaswani):
    queries = read_queries(datasets / "vaswani" / "queries.jsonl")
    encoder = encoder_of(vaswani)
    graph = VectorIndex.build(np.asarray(vaswani.vectors.vectors), vaswani.keys, ann="hnsw")
    assert graph.ann == "hnsw" and vaswani.vectors.ann == "exact"
    overlap = []
    for vector in encoder.embed_queries(list(queries.values())):
        exact, exact_scores = vaswani.vectors.search(vector, 100)
        approx, approx_scores = graph.search(vector, 100)
        overlap.append(len(set(exact) & set(approx)) / 100)
        np.testing.assert_allclose(approx_scores, np.asarray(vaswani.vectors.vectors)[approx] @ vector, atol=1e-4)
    assert np.mean(overlap) >= 0.98, np.mean(overlap)
    # batch search: one encoder call and one matrix product give what one search per query gives
    texts = list(queries.values())[:20]
    dense = Dense(vaswani, encoder)
    batched = dense.batch_search(texts, 10)
    for text, hits in zip(texts, batched):
        single = dense.search(text, 10)
        assert [h.rank for h in hits] == list(range(1, 11))
        # bf16 (AMX or not) rounds differently for a batch than for one query, which moves the last
        # digits: the scores agree within that, and only documents tied within it trade places
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=2e-3)
        traded = {h.id for h in hits} ^ {h.id for h in single}
        assert all(abs(h.score - single[-1].score) <= 2e-3 for h in (*hits, *single) if h.id in traded)


def test_filtered_dense_search_still_returns_k(vaswani, encoder):
    dense = Dense(vaswani, encoder)
    few = [vaswani.documents[i].id for i in (3, 500, 3500)]
    hits = dense.search("measurement of dielectric constants", 10, filter={"id": few})
    assert sorted(h.id for h in hits) == sorted(few)  # all three, though none is near the query
    graph = Index.build(list(vaswani.documents)[:1200], encoder=encoder, ann="hnsw")
    wanted = {d.id for d in list(graph.documents)[::2]}  # half the corpus: the graph path, filtered
    hits = Dense(graph, encoder).search("measurement of dielectric constants", 50, filter={"id": sorted(wanted)})
    assert len(hits) == 50 and all(h.id in wanted for h in hits)
    unfiltered = [
        h for h in Dense(graph, encoder).search("measurement of dielectric constants", 200) if h.id in wanted
    ][:50]
    assert [h.id for h in hits][:10] == [h.id for h in unfiltered][:10]


def test_a_filter_reads_each_document_once_not_per_query(vaswani, encoder, monkeypatch):
    index = Index.build(list(vaswani.documents)[:300], encoder=encoder)
    dense, reads, wanted = Dense(index, encoder), [], {"id": [d.id for d in list(vaswani.documents)[:300:3]]}
    line = type(index.documents).line
    monkeypatch.setattr(type(index.documents), "line", lambda store, i: reads.append(i) or line(store, i))
    first = dense.search("dielectric constants", 5, filter=wanted)
    assert len(first) == 5 and len(reads) >= 300
    reads.clear()
    again, read_again = dense.search("dielectric constants", 5, filter=wanted), len(reads)
    assert read_again <= 5 and again == first  # at most the hits' documents are read again


def test_update_adds_replaces_and_deletes_without_rebuilding(tmp_path, small, scifact_docs, encoder):
    path = tmp_path / "idx"
    small.save(path)
    index = Index.load(path)
    gone, changed = scifact_docs[0], scifact_docs[1]
    new = Document(
        "new-1", "Zebrafish regenerate amputated fins through a blastema of dedifferentiated cells.", "Fin regeneration"
    )
    replacement = Document(changed.id, "Honey bees navigate by the polarisation of sky light.", "Bee navigation")
    updated = index.update(add=[new, replacement], delete=[gone.id], encoder=encoder)
    assert len(index) == 200 and len(updated) == 200  # the loaded index is left as it was
    updated.save(path)
    reloaded = Index.load(path)
    rebuilt = Index.build([d for d in scifact_docs[2:200]] + [new, replacement], encoder=encoder)
    for query in ("zebrafish fin regeneration", "bee navigation polarised light", gone.title):
        np.testing.assert_allclose(
            np.sort(BM25(reloaded).scores(query)), np.sort(BM25(rebuilt).scores(query)), rtol=1e-5
        )  # BM25 = a full rebuild's
        for kind in ("bm25", "dense", "hybrid"):
            ids = [h.id for h in first_stage(reloaded, kind, encoder).search(query, 200)]
            assert gone.id not in ids
    assert Dense(reloaded, encoder).search("zebrafish fin regeneration", 1)[0].id == "new-1"
    assert BM25(reloaded).search("bee navigation polarised light", 1)[0].document.text == replacement.text
    position = reloaded.documents.position(changed.id)
    np.testing.assert_allclose(
        reloaded.vectors.vectors[position], encoder.embed_documents([replacement.content])[0], atol=2e-3
    )  # bf16
    assert reloaded.keys.tolist() == sorted(reloaded.keys.tolist()) and len(set(reloaded.keys.tolist())) == 200


def test_update_with_hnsw_keeps_graph_consistent(small, scifact_docs, encoder, tmp_path):
    graph = Index.build(scifact_docs[:200], encoder=encoder, ann="hnsw")
    new = Document("new-1", "Zebrafish regenerate amputated fins through a blastema of dedifferentiated cells.")
    updated = graph.update(add=[new], delete=[d.id for d in scifact_docs[:50]], encoder=encoder)
    updated.save(tmp_path / "g")
    loaded = Index.load(tmp_path / "g")
    assert loaded.vectors.ann == "hnsw" and len(loaded.vectors.hnsw) == 151
    hits = Dense(loaded, encoder).search("zebrafish fins", 151)
    assert hits[0].id == "new-1" and len(hits) == 151 and not {h.id for h in hits} & {d.id for d in scifact_docs[:50]}


def test_crash_during_update_leaves_the_old_index(tmp_path, small, encoder, monkeypatch):
    path = tmp_path / "idx"
    small.save(path)
    before = Dense(Index.load(path), encoder).search("cancer", 5)
    updated = Index.load(path).update(add=[Document("x", "cancer cancer cancer")], encoder=encoder)

    def fail(self, folder):
        raise OSError("disk full")

    monkeypatch.setattr(VectorIndex, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        updated.save(path)
    again = Index.load(path)
    assert len(again) == 200 and [h.id for h in Dense(again, encoder).search("cancer", 5)] == [h.id for h in before]


def test_bad_input_gets_clear_errors(tmp_path, small, tiny_ce, minilm_dir, encoder):
    with pytest.raises(NotFoundError, match="'nope'"):
        small.update(delete=["nope"], encoder=encoder)
    with pytest.raises(CorpusError, match="duplicate document id 'a'"):
        small.update(add=[Document("a", "x"), Document("a", "y")], encoder=encoder)
    with pytest.raises(ValueError, match="384-dimensional"):
        small.vectors.search(np.ones(10, dtype=np.float32), 5)
    from finerank import BiEncoder

    with pytest.raises(ModelError, match="32-dimensional vectors; the index holds 384"):
        Dense(small, BiEncoder(tiny_ce))  # a model of another dimension
    with pytest.raises(IndexFormatError, match="no dense vectors"):
        Dense(Index.build([Document("a", "x")]), encoder)
    with pytest.raises(ModelError, match="not an encoder"):
        load_encoder("minilm-fused")
    path = tmp_path / "idx"
    small.save(path)
    vectors = next(path.glob("gen-*")) / "vectors.npy"
    np.save(vectors, np.zeros((3, 384), dtype=np.float32))
    with pytest.raises(IndexFormatError, match="do not match its 200 documents"):
        Index.load(path)
    vectors.write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="corrupt"):
        Index.load(path)
    meta = next(path.glob("gen-*")) / "meta.json"
    params = json.loads(meta.read_text())
    meta.write_text(json.dumps(params | {"documents": 7}))
    with pytest.raises(IndexFormatError, match="disagree on the number of documents"):
        Index.load(path)


FILLER = (
    "Municipal records describe the history of the district, its markets, its bridges and the families who "
    "traded along the river for many generations, together with notes on weather, harvests and local festivals. "
)


def test_windowed_vectors_read_a_late_sentence_and_survive_updates(tmp_path, encoder):
    """document_window: a long text stored as one vector per window scores as its best window,
    so a sentence past the model's 256 tokens is found; updates, reloads and HNSW keep that."""
    late = Document("late", FILLER * 12 + "The Eiffel Tower is repainted by hand every seven years.")
    docs = [
        late,
        *(Document(f"f{i}", FILLER * (i + 1) + f"Entry {i} lists the tolls of the northern bridge.") for i in range(5)),
        Document("paint", "Oil paint dries slowly; artists wait weeks before varnishing a canvas."),
    ]
    query = "How often is the Eiffel Tower repainted?"
    whole = Index.build(docs, encoder=encoder)
    assert Dense(whole, encoder).search(query, 1)[0].id != "late"  # cut at 256 tokens, the sentence is never read
    windowed_encoder = load_encoder(threads=2, document_window=48)
    windowed = Index.build(docs, encoder=windowed_encoder)
    assert windowed.params["dense"]["window"] == 48 and len(windowed.vectors.vectors) > 3 * len(docs)
    hits = Dense(windowed, windowed_encoder).search(query, len(docs))
    assert hits[0].id == "late" and len(hits) == len(docs) == len({h.id for h in hits})
    # a document's score is its best window's cosine, as the encoder gives it for each window's text
    spans = windowed_encoder.windows("", [late.content])[0]
    best = max(
        windowed_encoder.embed_documents([late.content[s:e] for s, e in spans])
        @ windowed_encoder.embed_queries([query])[0]
    )
    assert hits[0].score == pytest.approx(float(best), abs=5e-3)
    # stored windows and encoded windows give the second stage the same scores
    texts = [d.content for d in docs]
    np.testing.assert_allclose(
        windowed_encoder.score_vectors(query, windowed.vectors_of([d.id for d in docs])),
        windowed_encoder.score(query, texts),
        atol=5e-3,
    )
    # update, save, reload: equal to a fresh build of the same documents, in exact and HNSW search
    new = Document("new", FILLER * 6 + "Zebrafish regenerate amputated fins through a blastema.")
    windowed.save(tmp_path / "w")
    updated = Index.load(tmp_path / "w").update(add=[new], delete=["f0"], encoder=windowed_encoder)
    updated.save(tmp_path / "w")
    reloaded = Index.load(tmp_path / "w")
    rebuilt = Index.build([d for d in docs if d.id != "f0"] + [new], encoder=windowed_encoder)
    graph = Index.build([d for d in docs if d.id != "f0"], encoder=windowed_encoder, ann="hnsw").update(
        add=[new], encoder=windowed_encoder
    )
    graph.save(tmp_path / "g")
    graph_reloaded = Index.load(tmp_path / "g")
    assert graph_reloaded.vectors.ann == "hnsw"
    for q in (query, "zebrafish fin regeneration", "bridge tolls"):
        expected = [(h.id, h.score) for h in Dense(rebuilt, windowed_encoder).search(q, 7)]
        for index in (reloaded, graph, graph_reloaded):
            got = [(h.id, h.score) for h in Dense(index, windowed_encoder).search(q, 7)]
            assert [i for i, _ in got] == [i for i, _ in expected] and np.allclose(
                [s for _, s in got], [s for _, s in expected], atol=5e-3
            )
    assert [len(v) for v in reloaded.vectors_of(["late", "paint"])] == [len(spans), 1]
    assert encoder_of(reloaded).document_window == 48
    with pytest.raises(ModelError, match="windows of 48 tokens"):
        reloaded.update(add=[Document("x", "text")], encoder=encoder)
