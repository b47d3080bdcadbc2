"""finerank.metrics against trec_eval (pytrec_eval), and the paired test."""

import random

import pytest
import pytrec_eval

from finerank import BM25, Index
from finerank.metrics import bootstrap_interval, mean_scores, ndcg, per_query, verdict

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


def test_a_bootstrap_interval_holds_the_gain_and_narrows_with_more_queries():
    rng = random.Random(3)
    a = [rng.random() for _ in range(400)]
    b = [x + 0.05 + rng.gauss(0, 0.2) for x in a]
    few, many = bootstrap_interval(a[:25], b[:25]), bootstrap_interval(a, b)
    gain = sum(b) / len(b) - sum(a) / len(a)
    assert many[0] < gain < many[1] and 0 < many[0]  # 400 queries: the gain is known to be positive
    assert few[1] - few[0] > 3 * (many[1] - many[0])  # 16 times fewer queries: about 4 times wider
    assert bootstrap_interval(a, b) == many  # seeded: the same interval every time
    assert verdict(400, gain, many, 0.0001).endswith("the reranked list is better")
    unsure = verdict(25, 0.02, few, 0.3)
    assert "not known yet; judge about" in unsure and "more queries to tell" in unsure
