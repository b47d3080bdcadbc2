"""finerank.metrics against trec_eval (pytrec_eval), and the paired test."""

import random

import pytest
import pytrec_eval

from finerank import BM25, Index
from finerank.metrics import mean_scores, ndcg, per_query

TREC = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "map@100": "map_cut_100", "mrr@10": "recip_rank"}


def trec_eval(run, qrels):
    scored = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in run.items()}
    names = {"ndcg_cut.10", "recall.100", "map_cut.100", "recip_rank"}
    return pytrec_eval.RelevanceEvaluator({q: dict(j) for q, j in qrels.items()}, names).evaluate(scored)


def test_metrics_equal_trec_eval_on_random_graded_runs():
    rng = random.Random(7)
    qrels = {f"q{i}": {f"d{j}": rng.choice([0, 0, 1, 2, 3]) for j in rng.sample(range(60), 25)} for i in range(40)}
    run = {q: [f"d{j}" for j in rng.sample(range(60), 10)] for q in qrels}  # top-10 only, so MRR@10 = recip_rank
    ours, reference = per_query(run, qrels), trec_eval(run, qrels)
    for q in reference:
        for metric, name in TREC.items():
            assert ours[metric][q] == pytest.approx(reference[q][name], abs=1e-9), (q, metric)


def test_metrics_equal_trec_eval_on_scifact_bm25(datasets, scifact_docs):
    from finerank import read_qrels, read_queries

    index = Index.build(scifact_docs)
    queries = read_queries(datasets / "scifact" / "queries.jsonl")
    qrels = read_qrels(datasets / "scifact" / "qrels" / "test.tsv")
    run = {q: [h.id for h in BM25(index).search(queries[q], 100)] for q in qrels}
    reference = trec_eval(run, qrels)
    mean = mean_scores(run, qrels)
    for metric in ("ndcg@10", "recall@100", "map@100"):
        assert mean[metric] == pytest.approx(
            sum(r[TREC[metric]] for r in reference.values()) / len(reference), abs=1e-9
        )


def test_missing_relevant_documents_count_as_misses():
    judged = {"a": 1, "b": 1}
    assert ndcg(["a"], judged) < 1.0 and ndcg(["b", "a"], judged) == pytest.approx(1.0)
    assert mean_scores({}, {"q": judged})["ndcg@10"] == 0.0  # a query with no ranking scores zero
