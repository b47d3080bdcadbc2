import io
import json

import pytest

from finerank.cli import main
from finerank.registry import DEFAULT_RERANKER


@pytest.fixture(scope="module")
def scifact_idx(tmp_path_factory, datasets):
    out = tmp_path_factory.mktemp("cli") / "idx"
    assert main(["-q", "index", str(datasets / "scifact"), "--out", str(out)]) == 0
    return out


def test_index_then_search_table_and_json(scifact_idx, capsys):
    capsys.readouterr()
    assert main(["search", str(scifact_idx), "vitamin D supplementation reduces fractures", "--candidates", "30", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert f"reranker: {DEFAULT_RERANKER}" in out and "first_stage" in out and out.count("\n") == 5
    assert main(["search", str(scifact_idx), "vitamin D fractures", "--top-k", "4", "--json", "--no-rerank"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reranker"] is None and [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
    assert all(h["rank"] == h["original_rank"] for h in result["hits"])


def test_rerank_from_file_and_stdin(tmp_path, capsys, monkeypatch, tiny_ce):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": i, "text": t}) for i, t in [("a", "Reading Excel files in Java"), ("b", "Use pd.read_csv() to read the data"), ("c", "Pandas basics tutorial")]))
    assert main(["rerank", "--query", "How do I read a CSV file in Python?", "--docs", str(docs), "--top-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hits"][0]["id"] == "b" and result["hits"][0]["original_rank"] == 2
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"first line document\n\nsecond line document\n")))
    assert main(["rerank", "--query", "second", "--docs", "-", "--reranker", str(tiny_ce), "--backend", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "CrossEncoder(" in out and ("(was " in out or "(same)" in out)


def test_demo_shows_both_orders(capsys):
    assert main(["demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reranker"] == DEFAULT_RERANKER
    english = result["examples"][1]
    assert english["query"] == "How do I read a CSV file in Python?"
    assert english["reranked"][0]["id"] in ("en-1", "en-4") and len(english["first_stage"]) == 5
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "如何治疗感冒？" in out and "BM25 (first stage)" in out and "(was " in out


def test_errors_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{broken\n')
    assert main(["index", str(bad), "--out", str(tmp_path / "i")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2: malformed JSON" in err and not (tmp_path / "i").exists()
    assert main(["-q", "index", str(bad), "--out", str(tmp_path / "i"), "--skip-invalid"]) == 0
    assert main(["search", str(tmp_path / "nowhere"), "q"]) == 1
    assert "nowhere does not exist" in capsys.readouterr().err
    assert main(["rerank", "--query", "q", "--docs", str(bad), "--reranker", str(tmp_path)]) == 1
    assert "malformed JSON" in capsys.readouterr().err
    (tmp_path / "d.txt").write_text("doc\n")
    assert main(["rerank", "--query", "q", "--docs", str(tmp_path / "d.txt"), "--reranker", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_dense_index_update_and_first_stages(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    rows = [("a", "Reading Excel files in Java", 2019), ("b", "Use pd.read_csv() to read the data", 2021), ("c", "Bake bread at 220 degrees", 2021)]
    corpus.write_text("\n".join(json.dumps({"_id": i, "text": t, "year": y}) for i, t, y in rows))
    out = tmp_path / "idx"
    assert main(["-q", "index", str(corpus), "--out", str(out), "--dense"]) == 0
    assert "exact 384-d vectors from all-minilm-l6-v2" in capsys.readouterr().out
    for stage in ("bm25", "dense", "hybrid"):
        assert main(["search", str(out), "read the csv data", "--first-stage", stage, "--no-rerank", "--json", "--top-k", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "b"
    assert main(["search", str(out), "read the csv data", "--first-stage", "dense", "--no-rerank", "--json", "--filter", '{"year": {"lt": 2020}}']) == 0
    assert [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]] == ["a"]
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "d", "text": "Sourdough needs a starter culture"}))
    assert main(["-q", "index", "--out", str(out), "--add", str(more), "--delete", "c"]) == 0
    assert "3 -> 3 documents" in capsys.readouterr().out
    assert main(["search", str(out), "baking sourdough loaves", "--first-stage", "dense", "--no-rerank", "--json", "--top-k", "3"]) == 0
    ids = [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert ids[0] == "d" and "c" not in ids
    assert main(["-q", "index", "--out", str(out), "--delete", "nope"]) == 1
    assert "unknown document id(s) 'nope'" in capsys.readouterr().err
    assert main(["search", str(out), "x", "--filter", '{"year": {"about": 3}}', "--no-rerank"]) == 1
    assert "filter on 'year'" in capsys.readouterr().err
