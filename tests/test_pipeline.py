import pytest

from finerank import (
    BM25,
    Fusion,
    Index,
    Pipeline,
    Ranking,
    Retriever,
    SecondStage,
    load_reranker,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    rerank,
)
from finerank.metrics import mean_scores


@pytest.fixture(scope="module")
def scifact_index(scifact_docs):
    return BM25(Index.build(scifact_docs))


@pytest.fixture(scope="module")
def bi_encoder():
    # its embeddings remembered: the cascade test reads the candidates the tests before it read
    return load_reranker("all-minilm-l6-v2", cache_size=100_000)


def test_pipeline_reranks_first_stage_candidates(datasets, scifact_index, bi_encoder):
    assert isinstance(scifact_index, Retriever)
    queries = list(read_queries(datasets / "scifact" / "queries.jsonl").values())[:10]
    pipeline = Pipeline(scifact_index, bi_encoder, candidates=20, top_k=5)
    for query, ranking in zip(queries, map(pipeline.search, queries)):
        assert isinstance(ranking, Ranking) and ranking.query == query
        assert set(ranking.timings) == {"first_stage", "rerank"} and all(t > 0 for t in ranking.timings.values())
        first = {h.id: h.rank for h in scifact_index.search(query, 20)}
        assert [h.rank for h in ranking.hits] == [1, 2, 3, 4, 5]
        assert all(first[h.id] == h.original_rank for h in ranking.hits)
        assert [h.score for h in ranking.hits] == sorted((h.score for h in ranking.hits), reverse=True)
        assert ranking.reranker == "all-minilm-l6-v2" and ranking.first_stage.startswith("bm25(lucene")


def test_pipeline_without_reranker_is_the_first_stage(scifact_index):
    ranking = Pipeline(scifact_index, None, candidates=100, top_k=3).search("vitamin D fractures")
    assert [(h.id, h.score, h.rank) for h in ranking.hits] == [
        (h.id, h.score, h.rank) for h in scifact_index.search("vitamin D fractures", 3)
    ]
    assert set(ranking.timings) == {"first_stage"} and ranking.reranker is None
    with pytest.raises(ValueError, match="at least 1"):
        Pipeline(scifact_index, None, candidates=0)
    with pytest.raises(ValueError, match="empty"):
        Pipeline(scifact_index).search("   ")


def test_a_cascade_reranks_only_what_the_cheap_stage_keeps(datasets, scifact_index, bi_encoder, tiny_ce):
    queries = list(read_queries(datasets / "scifact" / "queries.jsonl").values())[:3]
    expensive = load_reranker(tiny_ce)
    cascade = Pipeline(scifact_index, expensive, candidates=40, top_k=5, cheap=bi_encoder, keep=8)
    for query in queries:
        ranking = cascade.search(query)
        candidates = scifact_index.search(query, 40)
        kept = Pipeline(scifact_index, bi_encoder, candidates=40, top_k=8).search(query).hits
        alone = Pipeline(scifact_index, expensive, candidates=40, top_k=5).rerank(
            query, [h for h in candidates if h.id in {k.id for k in kept}]
        )
        assert [(h.id, h.score, h.original_rank) for h in ranking.hits] == [
            (h.id, h.score, h.original_rank) for h in alone.hits
        ]
        assert (
            set(ranking.model_scores) == {h.id for h in kept} and len(ranking.candidates) == 40
        )  # the model read 8 of 40
        assert set(ranking.timings) == {"first_stage", "cheap", "rerank"}
        assert ranking.reranker == f"all-minilm-l6-v2 keeps 8, then {expensive.name}"
    assert len(Pipeline(scifact_index, expensive, top_k=10, cheap=bi_encoder, keep=3).search(queries[0]).hits) == 3
    # a fused reranker fuses with the cheap stage's ranking (the stage before it), not the first stage's
    fused, query = SecondStage(expensive.scorer, Fusion("minmax", 0.5)), queries[0]
    ranking = Pipeline(scifact_index, fused, candidates=40, top_k=5, cheap=bi_encoder, keep=8).search(query)
    kept = Pipeline(scifact_index, bi_encoder, candidates=40, top_k=8).search(query).hits
    after = Pipeline(scifact_index, fused, top_k=5).rerank(query, kept)
    assert [(h.id, h.score) for h in ranking.hits] == [(h.id, h.score) for h in after.hits]
    first = {h.id: h.rank for h in scifact_index.search(query, 40)}
    assert [h.original_rank for h in ranking.hits] == [first[h.id] for h in ranking.hits]
    # with no more candidates than it keeps, the cheap stage still runs: the reranker fuses with it
    few = Pipeline(scifact_index, fused, candidates=6, top_k=5, cheap=bi_encoder, keep=8).search(queries[0])
    assert "cheap" in few.timings and len(few.model_scores) == 6
    with pytest.raises(ValueError, match="needs a reranker"):
        Pipeline(scifact_index, None, cheap=bi_encoder)


def test_a_budget_reads_as_many_candidates_as_fit(scifact_index, tiny_ce):
    query, expensive = "vitamin D supplementation and fractures", load_reranker(tiny_ce)
    pipeline = Pipeline(scifact_index, expensive, candidates=30, top_k=3)
    assert expensive.scorer.pairs_per_second is None  # not tuned here (FINERANK_AUTOTUNE=0)
    assert len(pipeline.search(query, budget_ms=1).model_scores) == 30  # no pace known yet: all read, and timed
    tight = pipeline.search(query, budget_ms=0.001)
    first_three = scifact_index.search(query, 3)
    assert set(tight.model_scores) == {h.id for h in first_three}  # never fewer than top_k: the first stage's best 3
    assert [h.id for h in tight.hits] == [h.id for h in pipeline.rerank(query, first_three).hits]
    assert len(pipeline.search(query, budget_ms=60_000).model_scores) == 30
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite number of milliseconds"):
            pipeline.search(query, budget_ms=bad)


@pytest.mark.slow
def test_default_second_stage_beats_bm25_on_trec_dl_2019(datasets, bi_encoder):
    """The official BM25 run on TREC DL 2019 (nDCG@10 0.506), its top 30 reranked by the shipped
    default (the top 100: benchmarks/second_stages.py and docs/results.md)."""
    folder = datasets / "trec-dl-2019-passage-pool"
    documents = {d.id: d for d in read_corpus(folder)}
    queries, qrels = read_queries(folder / "queries.jsonl"), read_qrels(folder / "qrels" / "test.tsv")
    first, reranked = {}, {}
    for qid, scores in read_run(folder / "runs" / "BM25.top100.trec").items():
        ordered = sorted(scores, key=lambda d: (-scores[d], d))
        first[qid] = ordered
        reranked[qid] = [
            h.id for h in rerank(bi_encoder, queries[qid], [documents[d] for d in ordered[:30]])
        ] + ordered[30:]
    bm25, rescored = mean_scores(first, qrels)["ndcg@10"], mean_scores(reranked, qrels)["ndcg@10"]
    assert bm25 == pytest.approx(0.506, abs=0.002)
    assert rescored > bm25 + 0.08, (bm25, rescored)
