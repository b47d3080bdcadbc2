"""The evaluation harness: a first stage and its reranking side by side, over datasets and runs."""

import json
from pathlib import Path

import numpy as np
import pytest

from finerank import BM25, CorpusError, CrossEncoder, Document, Index, load_reranker, read_corpus, read_run
from finerank.cli import main
from finerank.evaluate import evaluate, evaluate_folder, load_dataset
from finerank.metrics import ndcg, randomization_test
from finerank.pipeline import Reranking, hits_of_run

MINI = Path(__file__).parent / "data" / "mini"  # handmade, in the repository: no shared data needed

DL19 = "trec-dl-2019-passage-pool"


def test_reranking_finds_what_bm25_misses_on_the_handmade_set(capsys):
    """Each question of the handmade set has distractors sharing its words: BM25 puts a
    distractor first for two of the five test questions, the shipped bi-encoder none."""
    ev = evaluate_folder(MINI, load_reranker("all-minilm-l6-v2"), split="test")
    assert ev.queries == 5 and ev.scores["first_stage"]["hit@1"] == pytest.approx(0.6)
    assert ev.scores["reranked"]["hit@1"] == 1.0 and ev.scores["reranked"]["ndcg@10"] == 1.0
    gain = ev.scores["reranked"]["ndcg@10"] - ev.scores["first_stage"]["ndcg@10"]
    assert ev.gain_interval[0] <= gain <= ev.gain_interval[1]  # 5 queries: an honest, wide interval around the gain
    assert main(["-q", "eval", str(MINI), "--split", "dev", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 3 and out["reranked"]["ndcg@10"] > out["first_stage"]["ndcg@10"]
    assert len(out["gain_interval"]) == 2
    assert main(["-q", "eval", str(MINI), "--split", "test"]) == 0
    assert "5 judged queries: nDCG@10 +0.148 (95 % interval" in capsys.readouterr().out


def test_eval_stores_the_vectors_the_second_stage_reads_and_refuses_a_changed_index(tmp_path, monkeypatch):
    stage = load_reranker("minilm-fused")
    encoded = []
    real = type(stage.scorer).score_passages_many
    monkeypatch.setattr(
        type(stage.scorer),
        "score_passages_many",
        lambda self, requests, **kw: encoded.append(1) or real(self, requests, **kw),
    )
    ev = evaluate_folder(MINI, stage, split="test")
    assert encoded == [] and ev.scores["reranked"]["hit@1"] == 1.0  # every candidate read from the stored vectors
    documents = list(read_corpus(MINI))
    Index.build([*documents[1:], Document("new", "an added document")]).save(tmp_path / "idx")
    with pytest.raises(CorpusError, match="holds 1 document.* the corpus lacks and lacks 1 of its 24"):
        evaluate_folder(MINI, stage, split="test", index=tmp_path / "idx")


def test_bm25_reproduces_published_numbers(datasets, scifact_docs):
    scifact = evaluate(load_dataset(datasets / "scifact"), BM25(Index.build(scifact_docs)))
    assert 0.655 <= scifact.scores["first_stage"]["ndcg@10"] <= 0.689  # published 0.665-0.679, +-0.01
    assert scifact.scores["first_stage"]["recall@100"] >= 0.90
    assert (
        scifact.queries == 300
        and scifact.skipped == 0
        and scifact.reranker is None
        and scifact.scores["reranked"] is None
    )
    nfcorpus_set = load_dataset(datasets / "nfcorpus")
    assert (nfcorpus_set.judged, nfcorpus_set.skipped) == (
        323,
        3237 - 323,
    )  # queries without test judgements are counted
    nfcorpus = evaluate(nfcorpus_set, BM25(Index.build(read_corpus(datasets / "nfcorpus"))))
    assert 0.312 <= nfcorpus.scores["first_stage"]["ndcg@10"] <= 0.335  # published 0.322-0.325, +-0.01


def test_official_dl19_bm25_run_gives_trec_eval_number(datasets):
    ev = evaluate(load_dataset(datasets / DL19), read_run(datasets / DL19 / "runs" / "BM25.top100.trec"))
    assert ev.scores["first_stage"]["ndcg@10"] == pytest.approx(0.506, abs=0.001)


def test_reranked_side_by_side_with_cost(datasets, tiny_ce):
    dataset = load_dataset(datasets / DL19, max_queries=3)
    documents = {d.id: d for d in read_corpus(datasets / DL19)}
    run = read_run(datasets / DL19 / "runs" / "BM25.top100.trec")
    ev = evaluate(
        dataset, run, CrossEncoder(tiny_ce, backend="onnx", max_length=128), documents=documents, candidates=50
    )
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
        assert q["ndcg@10"] == pytest.approx(
            [ndcg(q["first_stage"], q["relevant"]), ndcg(q["reranked"], q["relevant"])]
        )
        assert q["first_stage"] == sorted(run[q["id"]], key=lambda d: (run[q["id"]][d], d), reverse=True)[:10]
        assert all(d in out["labels"] for d in q["first_stage"] + q["reranked"])
    matrix = np.array(out["moves"]["matrix"])
    assert matrix.shape == (5, 5) and out["moves"]["buckets"][-1] == "21-50"  # 50 candidates: the buckets up to rank 50
    assert matrix.sum() + out["moves"]["missed"] == len(ev.moves)
    # a cascade: the bi-encoder keeps 10 of the 50, the cross-encoder reads only those, as Pipeline composes it
    scorer, cheap = CrossEncoder(tiny_ce, backend="onnx", max_length=128), load_reranker("all-minilm-l6-v2")
    cascade = evaluate(dataset, run, scorer, documents=documents, candidates=50, cheap=cheap, keep=10)
    assert cascade.reranker == f"all-minilm-l6-v2 keeps 10, then {scorer.name}" and set(cascade.latency_ms) == {
        "cheap",
        "rerank",
    }
    pipeline = Reranking(scorer, top_k=50, cheap=cheap, keep=10)
    for q in cascade.to_json()["per_query"]:
        assert q["reranked"] == [
            h.id for h in pipeline.rerank(dataset.queries[q["id"]], hits_of_run(run[q["id"]], documents, 50)).hits
        ]
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
    args = [
        "--max-queries",
        "4",
        "--reranker",
        str(tiny_ce),
        "--backend",
        "onnx",
        "--max-length",
        "128",
        "--candidates",
        "20",
    ]
    assert (
        main(
            [
                "-q",
                "eval",
                str(datasets / "scifact"),
                "--json",
                "--report",
                str(tmp_path / "r.md"),
                "--figure",
                str(tmp_path / "f.png"),
                *args,
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "scifact" and result["queries"] == 4 and result["reranked"] is not None
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG" and "| ndcg@10 |" in (tmp_path / "r.md").read_text()
    assert (
        main(
            [
                "-q",
                "eval",
                str(datasets / "scifact"),
                "--json",
                "--cheap",
                "all-minilm-l6-v2",
                "--keep",
                "10",
                "--fuse",
                "0.5",
                *args,
            ]
        )
        == 0
    )
    cascade = json.loads(capsys.readouterr().out)
    assert cascade["reranker_name"].startswith("all-minilm-l6-v2 keeps 10, then ") and cascade[
        "reranker_name"
    ].endswith("fused (minmax x0.5)")
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
