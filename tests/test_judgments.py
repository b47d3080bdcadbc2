"""Judging one's own queries: the store (atomic, nothing lost to concurrent judges), the pool
of both lists, the routes the page uses, the terminal judge, and eval/train on the grades."""

import io
import json
import logging
import multiprocessing
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from support import LiveServer

import finerank
from finerank import Index, read_corpus
from finerank.cli import main
from finerank.evaluate import load_dataset
from finerank.judgments import (
    HELD_OUT,
    Judgments,
    compare,
    disagreement,
    held_out,
    next_query,
    pool,
    query_id,
    read_query_log,
)
from finerank.metrics import ndcg
from finerank.server import create_app
from finerank.types import Hit, Ranking

MINI = Path(__file__).parent / "data" / "mini"


class Overlap(finerank.Scorer):
    """Shared words: a plain scorer for the routes' plumbing (ranking quality is not what they test)."""

    name = "overlap"

    def raw_scores(self, requests):
        return np.array([len(set(q.lower().split()) & set(t.lower().split())) for q, ts in requests for t in ts], float)


@pytest.fixture
def mini_index(tmp_path) -> Path:
    path = tmp_path / "idx"
    Index.build(read_corpus(MINI)).save(path)
    return path


def _hits(ids):
    return tuple(Hit(finerank.Document(d, d), 1.0 / (i + 1), i + 1, i + 1) for i, d in enumerate(ids))


def test_the_store_keeps_the_latest_grade_and_skips_a_torn_line(tmp_path, caplog):
    store = Judgments(tmp_path / "j.jsonl")
    assert store.read() == [] and store.grades() == {}
    store.add("q one", "d1", 2, "ann")
    store.add("q one", "d2", 0)
    store.add("q one", "d1", 3, "bob")  # a later grade of the same pair replaces it
    with open(store.path, "ab") as f:
        f.write(b'{"query": "q one", "id": "d3", "gra')  # a writer killed mid-line
    store.add("q one", "d4", 1)  # after the torn line: a line of its own, not lost with it
    with open(store.path, "ab") as f:
        f.write(b'{"query": "x \\ud800", "id": "d5", "grade": 1}\n')  # a lone surrogate, written by hand
    with caplog.at_level(logging.WARNING, "finerank"):
        assert store.grades() == {"q one": {"d1": 3, "d2": 0, "d4": 1}}
    assert "line 4: not a judgment" in caplog.text and "line 6: not a judgment" in caplog.text
    with pytest.raises(ValueError, match="is a folder"):
        Judgments(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        Judgments(store.path / "inside.jsonl")
    (latest,) = [j for j in store.read() if j.id == "d1"]
    assert latest.user == "bob" and latest.time > 0
    for bad, field in (
        (("", "d", 1), "query"),
        (("q", "", 1), "id"),
        (("q", "d", 4), "grade"),
        (("q", "d", True), "grade"),
    ):
        with pytest.raises(ValueError, match=field):
            store.add(*bad)


def test_a_store_read_again_sees_what_others_wrote_since_as_a_fresh_read_does(tmp_path):
    path = tmp_path / "j.jsonl"
    store, other = Judgments(path), Judgments(path)  # a server's store, and another process's

    def same():
        assert store.read() == Judgments(path).read()
        return store.grades()

    other.add("q", "d1", 1)
    assert same() == {"q": {"d1": 1}}
    other.add("q", "d1", 3)  # read after the first read: only the new line is parsed, and it replaces the grade
    other.add("q", "d2", 0)
    assert same() == {"q": {"d1": 3, "d2": 0}}
    with open(path, "ab") as f:
        f.write(b'{"query": "q", "id": "d3", "grade": 2}')  # a whole judgment whose newline was never written
    assert same() == {"q": {"d1": 3, "d2": 0, "d3": 2}}
    other.add("q", "d4", 1)  # it is a line of its own after that one, and both count
    assert same() == {"q": {"d1": 3, "d2": 0, "d3": 2, "d4": 1}}
    replacement = tmp_path / "new.jsonl"
    Judgments(replacement).add("r", "e1", 2)
    os.replace(replacement, path)  # the file replaced (as an editor saves it): read again from its start
    assert same() == {"r": {"e1": 2}}
    with open(path, "r+b") as f:
        f.truncate(0)  # cut shorter in place
    other.add("s", "f1", 3)
    assert same() == {"s": {"f1": 3}}


def _judge_many(path: str, who: int, count: int) -> None:
    store = Judgments(path)
    for i in range(count):
        store.add(f"query {who}", f"doc {i}", i % 4, f"judge {who}")


def test_concurrent_judges_lose_nothing(tmp_path):
    """Four processes and four threads grade at once: every grade is there, every line whole."""
    path = str(tmp_path / "j.jsonl")
    processes = [multiprocessing.get_context("spawn").Process(target=_judge_many, args=(path, w, 50)) for w in range(4)]
    threads = [threading.Thread(target=_judge_many, args=(path, w, 50)) for w in range(4, 8)]
    for worker in [*processes, *threads]:
        worker.start()
    for worker in [*processes, *threads]:
        worker.join()
    assert all(p.exitcode == 0 for p in processes)
    lines = Path(path).read_bytes().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["grade"] in range(4) for line in lines)
    grades = Judgments(path).grades()
    assert grades == {f"query {w}": {f"doc {i}": i % 4 for i in range(50)} for w in range(8)}


def test_splits_are_fixed_by_the_query_and_read_as_beir(tmp_path, mini_index):
    queries = [f"question number {i}" for i in range(400)]
    share = sum(map(held_out, queries)) / len(queries)
    assert abs(share - HELD_OUT) < 0.06 and held_out(queries[7]) == held_out(queries[7])
    store = Judgments.of_index(mini_index)
    assert store.path == mini_index / "judgments.jsonl"
    imported = store.import_beir(MINI, "test")
    folder = store.export(tmp_path / "beir", Index.load(mini_index).documents)
    every = load_dataset(folder, "all")
    originally = load_dataset(MINI, "test")
    assert imported == sum(len(g) for g in originally.qrels.values())
    assert sorted(every.qrels.values(), key=str) == sorted(originally.qrels.values(), key=str)
    held = {q for q in every.queries.values() if held_out(q)}
    assert 0 < len(held) < len(every.queries)  # the mini set's questions fall in both splits
    assert set(load_dataset(folder, "test").queries.values()) == held
    assert set(load_dataset(folder, "train").queries.values()) == set(every.queries.values()) - held
    assert all(qid == query_id(q) for qid, q in every.queries.items())
    assert len(list(read_corpus(folder))) == len(Index.load(mini_index))
    assert store.dataset("all").qrels == every.qrels


def test_the_pool_interleaves_both_lists_and_disagreement_measures_them():
    ranking = Ranking("q", _hits(["a", "b", "c"]), {}, "bm25", "m", _hits(["c", "d", "a", "e"]))
    assert [h.id for h in pool(ranking, 3)] == ["a", "c", "b", "d"]  # reranked first, then the first stage's
    assert [h.id for h in pool(ranking, 10)] == ["a", "c", "b", "d", "e"]
    same = Ranking("q", _hits(["a", "b"]), {}, "bm25", "m", _hits(["a", "b"]))
    apart = Ranking("q", _hits(["a", "b"]), {}, "bm25", "m", _hits(["c", "d"]))
    assert disagreement(same) == 0 and disagreement(apart) == 1 and 0 < disagreement(ranking) < 1
    scores = {"q1": 0.1, "q2": 0.9, "q3": 0.5}
    assert next_query(["q1", "q2", "q3"], {"q2"}, scores.get) == "q3"
    assert next_query(["q1"], {"q1"}, scores.get) is None


def test_a_query_file_reads_lines_or_json(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text('first query\n\n{"query": "second"}\nfirst query\n{"text": " third "}\n', encoding="utf-8")
    assert read_query_log(path) == ["first query", "second", "third"]
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(finerank.errors.CorpusError, match="log.txt:1: not JSON"):
        read_query_log(path)
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(finerank.errors.CorpusError, match="not UTF-8"):
        read_query_log(path)
    path.write_text('\ufeff{"text": "with a BOM"}\n{"query": "second"}\n', encoding="utf-8")
    assert read_query_log(path) == ["with a BOM", "second"]
    for text, why in (
        ('{"id": 3}\n', "log.txt:1: a JSON line needs a string text"),
        ('ok\n{"text": "x \\ud800"}\n', "log.txt:2: not UTF-8"),
        ("\n\n", "no queries"),
    ):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(finerank.errors.CorpusError, match=why):
            read_query_log(path)


def test_the_routes_grade_pool_export_and_compare(mini_index, tmp_path):
    log = tmp_path / "queries.txt"
    log.write_text("why won't my car start\nhow do I teach my puppy to sit\n", encoding="utf-8")
    app = create_app(Overlap(), index=mini_index, api_key="shared", users={"ann": "ann-key"}, queries=log)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as http:
        ann, shared = {"Authorization": "Bearer ann-key"}, {"Authorization": "Bearer shared"}
        assert http.post("/v1/judgments", json={"query": "q", "id": "car-1", "grade": 1}).status_code == 401
        assert http.get("/v1/info", headers=ann).json()["queries_to_judge"] == 2
        nxt = http.get("/v1/judgments/next", headers=ann).json()
        assert nxt["query"] in log.read_text().splitlines() and nxt["left"] == 2
        pooled = http.post("/v1/judgments/pool", json={"query": nxt["query"], "depth": 3}, headers=ann).json()
        ids = [r["id"] for r in pooled["results"]]
        assert 3 <= len(ids) <= 6 and len(set(ids)) == len(ids) and all(r["grade"] is None for r in pooled["results"])
        for i, doc in enumerate(ids):
            said = http.post("/v1/judgments", json={"query": nxt["query"], "id": doc, "grade": i % 4}, headers=ann)
            assert said.status_code == 200 and said.json()["user"] == "ann" and said.json()["graded"] == i + 1
        again = http.post("/v1/judgments/pool", json={"query": nxt["query"], "depth": 3}, headers=shared).json()
        assert [r["grade"] for r in again["results"]] == [i % 4 for i in range(len(ids))]
        unknown = http.post("/v1/judgments", json={"query": "q", "id": "nope", "grade": 1}, headers=shared)
        assert unknown.status_code == 404 and "nope" in unknown.text
        wrong = http.post("/v1/judgments", json={"query": "q", "id": "car-1", "grade": 7}, headers=shared)
        assert wrong.status_code == 422 and "grade" in wrong.text
        assert http.get("/v1/judgments/next", headers=ann).json()["left"] == 1
        listed = http.get("/v1/judgments", headers=shared).json()
        assert listed["queries"] == 1 and len(listed["judgments"]) == len(ids)
        files = http.get("/v1/judgments", params={"format": "beir"}, headers=shared).json()["files"]
        assert set(files) == {"queries.jsonl", "qrels/train.tsv", "qrels/test.tsv", "qrels/all.tsv"}
        assert files["qrels/all.tsv"].count("\n") == len(ids) + 1
        compared = http.get("/v1/judgments/eval", headers=shared).json()
        assert compared["queries"] == 1 and "too few to tell" in compared["verdict"]
        assert set(compared["first_stage"]) >= {"ndcg@10", "hit@1", "hit@3"}
        # the evaluation page lists the judged queries' live evaluation after the saved reports (none here)
        (listed_report,) = http.get("/v1/info", headers=shared).json()["reports"]
        assert listed_report.startswith("your judgments: 1 judged queries")
        live = http.get("/v1/reports/0", headers=shared).json()
        assert live["dataset"] == "your judgments" and live["judged_queries"] == 1
        assert live["reranked"]["ndcg@10"] == pytest.approx(compared["reranked"]["ndcg@10"])
        assert http.get("/v1/reports/1", headers=shared).status_code == 404
    assert Judgments.of_index(mini_index).grades()[nxt["query"]] == {d: i % 4 for i, d in enumerate(ids)}


def test_a_shared_user_key_or_a_folder_for_judgments_is_refused_at_start(mini_index, tmp_path):
    with pytest.raises(ValueError, match="share a key"):
        create_app(Overlap(), index=mini_index, api_key="k", users={"ann": "k"})
    with pytest.raises(ValueError, match="is a folder"):
        create_app(Overlap(), index=mini_index, judgments=tmp_path)


def test_ids_with_spaces_evaluate_and_refuse_a_beir_export(tmp_path, capsys):
    """A folder corpus names documents by path, spaces and all: --judgments reads them as they are,
    and an export (whose qrels split on whitespace) refuses them instead of writing wrong grades."""
    docs = tmp_path / "notes"
    (docs / "health").mkdir(parents=True)
    (docs / "health" / "blood pressure.txt").write_text("Lower blood pressure with less salt and more walking.")
    (docs / "health" / "sleep.txt").write_text("A dark cool room helps you sleep.")
    (docs / "cars.txt").write_text("A car that will not start may have a flat battery.")
    index = tmp_path / "idx"
    assert main(["-q", "index", str(docs), "--out", str(index)]) == 0
    ids = [d.id for d in Index.load(index).documents]
    spaced = next(i for i in ids if " " in i)
    store = Judgments.of_index(index)
    for query in ("blood pressure without drugs", "lower my blood pressure", "salt and blood pressure"):
        store.add(query, spaced, 3)
        store.add(query, next(i for i in ids if "sleep" in i), 0)
    capsys.readouterr()
    assert main(["-q", "eval", str(index), "--judgments", "--no-rerank", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 3 and report["first_stage"]["ndcg@10"] == 1.0
    assert main(["-q", "judge", str(index), "--export", str(tmp_path / "out")]) == 1
    assert "holds whitespace" in capsys.readouterr().err


@pytest.mark.slow  # trains: the full suite, not the fast tier
def test_train_with_no_held_out_query_says_so(mini_index, tiny_ce, tmp_path, capsys, caplog):
    store = Judgments.of_index(mini_index)
    queries = ("why won't my car start", "how do I teach my puppy to sit", "load a csv file in python")
    trained = [q for q in queries if not held_out(q)]  # only these are graded: nothing is held out
    assert trained
    bm25 = finerank.BM25(Index.load(mini_index))
    for query in trained:  # the relevant document, and the first stage's others judged irrelevant: negatives
        topic = {"h": "dog", "l": "py"}[query[0]]
        store.add(query, f"{topic}-1", 2)
        for hit in bm25.search(query, 10):
            if hit.id != f"{topic}-1":
                store.add(query, hit.id, 0)
    args = ["-q", "train", str(mini_index), "--judgments", "--base", str(tiny_ce), "--out", str(tmp_path / "m")]
    args += ["--max-steps", "1", "--group-size", "2", "--max-length", "32", "--json"]
    with caplog.at_level(logging.WARNING, "finerank"):
        assert main(args) == 0, capsys.readouterr().err
    # trained on the train share; nothing held out to compare on, and it says so (no ZeroDivisionError)
    assert json.loads(capsys.readouterr().out)["held_out"] is None and "no held-out judged query" in caplog.text


def test_a_grade_the_disk_cannot_take_is_a_507_not_a_500(mini_index, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Judgments, "add", full)  # the HTTP plumbing of a full disk (root ignores permissions)
    with LiveServer(create_app(Overlap(), index=mini_index)) as live:
        answer = httpx.post(live.url + "/v1/judgments", json={"query": "q", "id": "car-1", "grade": 1})
        assert answer.status_code == 507 and "cannot be written" in answer.json()["message"]


def test_no_index_no_judgments():
    with LiveServer(create_app(Overlap())) as live:
        answer = httpx.post(live.url + "/v1/judgments", json={"query": "q", "id": "d", "grade": 1})
        assert answer.status_code == 422 and "no index" in answer.text


def test_judge_in_the_terminal_then_eval_the_grades(mini_index, monkeypatch, capsys):
    """The terminal judge grades the pool of both lists into the index's store; eval reads it."""
    answers = "why won't my car start\n2\n0\nx\n1\n\n"  # x is no grade: asked again
    monkeypatch.setattr("sys.stdin", io.StringIO(answers))
    assert main(["-q", "judge", str(mini_index), "--depth", "3", "--user", "ann", "--reranker", "minilm-fused"]) == 0
    out = capsys.readouterr().out
    assert "results to grade" in out and "3 grades stored" in out
    grades = Judgments.of_index(mini_index).read()
    assert [(j.grade, j.user) for j in grades] == [(2, "ann"), (0, "ann"), (1, "ann")]
    assert main(["-q", "eval", str(mini_index), "--judgments", "--reranker", "minilm-fused", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "all" and report["queries"] == 1 and report["dataset"] == f"judgments-{mini_index.name}"
    assert main(["-q", "eval", str(mini_index.parent / "none"), "--judgments"]) == 1
    assert "no judgments in" in capsys.readouterr().err


def test_compare_on_judged_rankings():
    rankings = [Ranking(f"q{i}", _hits(["rel", "x", "y"]), {}, "bm25", "m", _hits(["x", "y", "rel"])) for i in range(8)]
    compared = compare(rankings, {f"q{i}": {"rel": 2} for i in range(8)})
    assert compared["queries"] == 8 and compared["reranked"]["hit@1"] == 1 and compared["first_stage"]["hit@1"] == 0
    assert compared["gain"] == pytest.approx(1 - ndcg(["x", "y", "rel"], {"rel": 2}))
    assert compared["p_value"] < 0.05 and "the reranked list is better" in compared["verdict"]


@pytest.mark.slow
def test_judged_train_and_held_out_comparison_agree_with_the_full_qrels(datasets, tmp_path, tiny_ce, capsys):
    """A user judges 22 NFCorpus train questions (programmatically: the pool of both lists, graded
    by the qrels), trains on the train share, and the held-out comparison's interval holds the gain
    the full qrels give the same two models on the same held-out questions."""
    folder = datasets / "nfcorpus"
    index_dir = tmp_path / "idx"
    Index.build(read_corpus(folder)).save(index_dir)
    dataset = load_dataset(folder, "train", max_queries=22)  # 8 of them held out
    first = finerank.first_stage(Index.load(index_dir))
    pipeline = finerank.Pipeline(first, finerank.load_reranker(), candidates=20, top_k=10)
    store = Judgments.of_index(index_dir)
    for qid, text in dataset.queries.items():
        for hit in pool(pipeline.search(text), 10):
            store.add(text, hit.id, min(3, dataset.qrels[qid].get(hit.id, 0)), "qrels")
    args = ["train", str(index_dir), "--judgments", "--base", str(tiny_ce), "--out", str(tmp_path / "m")]
    args += ["--max-steps", "2", "--group-size", "4", "--max-length", "64", "--candidates", "20", "-q", "--json"]
    assert main(args) == 0
    held = json.loads(capsys.readouterr().out)["held_out"]
    graded = store.grades()  # held-out questions whose pool held a relevant document
    texts = {t: q for q, t in dataset.queries.items() if held_out(t) and any(graded[t].values())}
    assert held["queries"] == len(texts) >= 5 and held["verdict"].startswith("held out")
    full = [
        ndcg(held["rankings"]["model"][t], dataset.qrels[q]) - ndcg(held["rankings"]["default"][t], dataset.qrels[q])
        for t, q in texts.items()
    ]
    low, high = held["interval"]
    assert low - 1e-9 <= float(np.mean(full)) <= high + 1e-9
    assert held["beats_default"] == (held["gain"] > 0 and held["p_value"] < 0.05)


def test_judge_imports_and_exports_beir_and_eval_reads_the_export(mini_index, tmp_path, capsys):
    assert main(["-q", "judge", str(mini_index), "--import", str(MINI), "--import-split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 4
    out = tmp_path / "exported"
    assert main(["-q", "judge", str(mini_index), "--export", str(out)]) == 0
    capsys.readouterr()
    command = ["-q", "eval", str(out), "--index", str(mini_index), "--split", "all", "--no-rerank", "--json"]
    assert main(command) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 3 and report["first_stage"]["ndcg@10"] > 0
