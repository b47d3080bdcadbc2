import random

import numpy as np
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
        assert mean[metric] == pytest.approx(sum(r[TREC[metric]] for r in reference.values()) / len(reference), abs=1e-9)


def test_missing_relevant_documents_count_as_misses():
    judged = {"a": 1, "b": 1}
    assert ndcg(["a"], judged) < 1.0 and ndcg(["b", "a"], judged) == pytest.approx(1.0)
    assert mean_scores({}, {"q": judged})["ndcg@10"] == 0.0  # a query with no ranking scores zero


# --- the harness ------------------------------------------------------------------------------

import json  # noqa: E402

from finerank import CorpusError, CrossEncoder, Pipeline, load_reranker, read_corpus, read_run  # noqa: E402
from finerank.cli import main  # noqa: E402
from finerank.evaluate import evaluate, load_dataset  # noqa: E402
from finerank.metrics import randomization_test
from finerank.pipeline import Reranking, hits_of_run  # noqa: E402

DL19 = "trec-dl-2019-passage-pool"


def test_bm25_reproduces_published_numbers(datasets, scifact_docs):
    scifact = evaluate(load_dataset(datasets / "scifact"), BM25(Index.build(scifact_docs)))
    assert 0.655 <= scifact.scores["first_stage"]["ndcg@10"] <= 0.689  # published 0.665-0.679, +-0.01
    assert scifact.scores["first_stage"]["recall@100"] >= 0.90
    assert scifact.queries == 300 and scifact.skipped == 0 and scifact.reranker is None and scifact.scores["reranked"] is None
    nfcorpus_set = load_dataset(datasets / "nfcorpus")
    assert (nfcorpus_set.judged, nfcorpus_set.skipped) == (323, 3237 - 323)  # queries without test judgements are counted
    nfcorpus = evaluate(nfcorpus_set, BM25(Index.build(read_corpus(datasets / "nfcorpus"))))
    assert 0.312 <= nfcorpus.scores["first_stage"]["ndcg@10"] <= 0.335  # published 0.322-0.325, +-0.01


def test_official_dl19_bm25_run_gives_trec_eval_number(datasets):
    ev = evaluate(load_dataset(datasets / DL19), read_run(datasets / DL19 / "runs" / "BM25.top100.trec"))
    assert ev.scores["first_stage"]["ndcg@10"] == pytest.approx(0.506, abs=0.001)


def test_reranked_side_by_side_with_cost(datasets, tiny_ce):
    dataset = load_dataset(datasets / DL19, max_queries=3)
    documents = {d.id: d for d in read_corpus(datasets / DL19)}
    run = read_run(datasets / DL19 / "runs" / "BM25.top100.trec")
    ev = evaluate(dataset, run, CrossEncoder(tiny_ce, backend="onnx", max_length=128), documents=documents, candidates=50)
    assert ev.queries == 3 and ev.judged == 43
    assert ev.scores["first_stage"]["recall@100"] == ev.scores["reranked"]["recall@100"]  # same candidates, reordered
    assert 0 < ev.p_value <= 1 and ev.pairs_per_s > 0 and ev.peak_rss_mb > 0
    assert set(ev.latency_ms) == {"rerank"} and ev.latency_ms["rerank"]["p95"] >= ev.latency_ms["rerank"]["p50"]
    relevant = sum(1 for q in dataset.qrels for g in dataset.qrels[q].values() if g > 0)
    assert len(ev.moves) == relevant and all((a == 0) == (b is None) for a, b in ev.moves)
    out = ev.to_json()
    for key in ("dataset", "split", "queries", "first_stage", "reranked", "p_value", "latency_ms"):
        assert key in out
    assert set(out["reranked"]) == {"ndcg@10", "mrr@10", "recall@100", "map@100", "hit@1", "hit@3"}
    # the per-query top tens the evaluation page shows are the lists that were scored
    assert [q["id"] for q in out["per_query"]] == list(dataset.queries)
    for q in out["per_query"]:
        assert q["relevant"] == {d: g for d, g in dataset.qrels[q["id"]].items() if g > 0}
        assert q["ndcg@10"] == pytest.approx([ndcg(q["first_stage"], q["relevant"]), ndcg(q["reranked"], q["relevant"])])
        assert q["first_stage"] == sorted(run[q["id"]], key=lambda d: (run[q["id"]][d], d), reverse=True)[:10]
        assert all(d in out["labels"] for d in q["first_stage"] + q["reranked"])
    matrix = np.array(out["moves"]["matrix"])
    assert matrix.shape == (5, 5) and out["moves"]["buckets"][-1] == "21-50"  # 50 candidates: the buckets up to rank 50
    assert matrix.sum() + out["moves"]["missed"] == len(ev.moves)
    # a cascade: the bi-encoder keeps 10 of the 50, the cross-encoder reads only those, as Pipeline composes it
    scorer, cheap = CrossEncoder(tiny_ce, backend="onnx", max_length=128), load_reranker("all-minilm-l6-v2")
    cascade = evaluate(dataset, run, scorer, documents=documents, candidates=50, cheap=cheap, keep=10)
    assert cascade.reranker == f"all-minilm-l6-v2 keeps 10, then {scorer.name}" and set(cascade.latency_ms) == {"cheap", "rerank"}
    pipeline = Reranking(scorer, top_k=50, cheap=cheap, keep=10)
    for q in cascade.to_json()["per_query"]:
        assert q["reranked"] == [h.id for h in pipeline.rerank(dataset.queries[q["id"]], hits_of_run(run[q["id"]], documents, 50)).hits]
    moved = cascade.to_json()["moves"]  # a relevant candidate the cheap stage did not keep is counted, not placed
    assert moved["dropped"] == sum(1 for before, after in cascade.moves if before and after is None) > 0
    assert np.array(moved["matrix"]).sum() + moved["missed"] + moved["dropped"] == len(cascade.moves)
    first_query = next(iter(dataset.queries))
    run[first_query] = {"no-such-passage": 1.0, **run[first_query]}
    with pytest.raises(CorpusError, match="1 document.* not in the corpus: no-such-passage"):
        evaluate(dataset, run, CrossEncoder(tiny_ce, backend="onnx"), documents=documents)


def test_randomization_test():
    a = [0.1 * (i % 7) for i in range(40)]
    assert randomization_test(a, a) == 1.0
    assert randomization_test(a, [x + 0.05 for x in a]) < 0.001
    noisy = [x + (0.05 if i % 2 else -0.05) for i, x in enumerate(a)]
    assert randomization_test(a, noisy) > 0.5


def test_cli_eval_json_report_figure_and_all(datasets, tmp_path, tiny_ce, capsys):
    args = ["--max-queries", "4", "--reranker", str(tiny_ce), "--backend", "onnx", "--max-length", "128", "--candidates", "20"]
    assert main(["-q", "eval", str(datasets / "scifact"), "--json", "--report", str(tmp_path / "r.md"), "--figure", str(tmp_path / "f.png"), *args]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "scifact" and result["queries"] == 4 and result["reranked"] is not None
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG" and "| ndcg@10 |" in (tmp_path / "r.md").read_text()
    assert main(["-q", "eval", str(datasets / "scifact"), "--json", "--cheap", "all-minilm-l6-v2", "--keep", "10", "--fuse", "0.5", *args]) == 0
    cascade = json.loads(capsys.readouterr().out)
    assert cascade["reranker_name"].startswith("all-minilm-l6-v2 keeps 10, then ") and cascade["reranker_name"].endswith("fused (minmax x0.5)")
    assert main(["-q", "eval", str(datasets / DL19), "--run", "runs/BM25.top100.trec", "--no-rerank", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reranked"] is None
    root = tmp_path / "sets"
    root.mkdir()
    for name in ("scifact", DL19):
        (root / name).symlink_to(datasets / name)
    out = tmp_path / "docs" / "results.md"
    assert main(["-q", "eval", "--all", str(root), "--out", str(out), *args]) == 0
    page = out.read_text()
    assert "| scifact | 4 |" in page and f"| {DL19} | 4 | run BM25.top100.trec |" in page
    assert (out.parent / "results-scifact.png").is_file()
    assert main(["-q", "eval", str(datasets / "scifact"), "--run", "nope.trec", "--no-rerank"]) == 1
    assert "no such run file" in capsys.readouterr().err
