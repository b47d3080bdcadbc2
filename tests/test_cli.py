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
    assert (
        main(
            [
                "search",
                str(scifact_idx),
                "vitamin D supplementation reduces fractures",
                "--candidates",
                "30",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # the default routes English queries to minilm-fused, loaded (and timed) before the search
    assert "reranker: minilm-fused" in out and "(load " in out and "first_stage" in out
    assert main(["search", str(scifact_idx), "vitamin D fractures", "--top-k", "4", "--json", "--no-rerank"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reranker"] is None and [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
    assert all(h["rank"] == h["original_rank"] for h in result["hits"])


def test_search_with_a_cascade(scifact_idx, capsys, tiny_ce):
    capsys.readouterr()
    args = [
        "search",
        str(scifact_idx),
        "vitamin D fractures",
        "--candidates",
        "30",
        "--top-k",
        "5",
        "--json",
        "--reranker",
        str(tiny_ce),
    ]
    assert main([*args, "--cheap", "all-minilm-l6-v2", "--keep", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 4 and result["reranker"].startswith("all-minilm-l6-v2 keeps 4, then ")
    assert main([*args, "--cheap", "all-minilm-l6-v2", "--keep", "4", "--fuse", "0.5"]) == 0
    fused = json.loads(capsys.readouterr().out)
    assert fused["reranker"].endswith(" fused (minmax x0.5)") and len(fused["hits"]) == 4
    assert main([*args, "--fuse", "1.5"]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_rerank_from_file_and_stdin(tmp_path, capsys, monkeypatch, tiny_ce):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "\n".join(
            json.dumps({"_id": i, "text": t})
            for i, t in [
                ("a", "Reading Excel files in Java"),
                ("b", "Use pd.read_csv() to read the data"),
                ("c", "Pandas basics tutorial"),
            ]
        )
    )
    assert (
        main(
            ["rerank", "--query", "How do I read a CSV file in Python?", "--docs", str(docs), "--top-k", "3", "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["hits"][0]["id"] == "b" and result["hits"][0]["original_rank"] == 2
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"first line document\n\nsecond line document\n")))
    assert main(["rerank", "--query", "second", "--docs", "-", "--reranker", str(tiny_ce), "--backend", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "CrossEncoder(" in out and ("(was " in out or "(same)" in out)


@pytest.mark.slow  # loads the English and the multilingual model (about 5 s)
def test_demo_shows_both_orders(capsys):
    assert main(["demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reranker"] == DEFAULT_RERANKER
    chinese = result["examples"][0]
    assert (
        chinese["reranker"] == "e5-fused" and "感冒的治疗" in chinese["reranked"][0]["text"]
    )  # read by a model that reads Chinese
    english = result["examples"][1]
    assert english["query"] == "How do I read a CSV file in Python?"
    assert (
        english["reranker"] == "minilm-fused"
        and english["reranked"][0]["id"] in ("en-1", "en-4")
        and len(english["first_stage"]) == 5
    )
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
    rows = [
        ("a", "Reading Excel files in Java", 2019),
        ("b", "Use pd.read_csv() to read the data", 2021),
        ("c", "Bake bread at 220 degrees", 2021),
    ]
    corpus.write_text("\n".join(json.dumps({"_id": i, "text": t, "year": y}) for i, t, y in rows))
    out = tmp_path / "idx"
    assert main(["-q", "index", str(corpus), "--out", str(out), "--dense"]) == 0
    assert "exact 384-d vectors from all-minilm-l6-v2" in capsys.readouterr().out
    for stage in ("bm25", "dense", "hybrid"):
        assert (
            main(
                [
                    "search",
                    str(out),
                    "read the csv data",
                    "--first-stage",
                    stage,
                    "--no-rerank",
                    "--json",
                    "--top-k",
                    "1",
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "b"
    assert (
        main(
            [
                "search",
                str(out),
                "read the csv data",
                "--first-stage",
                "dense",
                "--no-rerank",
                "--json",
                "--filter",
                '{"year": {"lt": 2020}}',
            ]
        )
        == 0
    )
    assert [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]] == ["a"]
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "d", "text": "Sourdough needs a starter culture"}))
    assert (
        main(["index", "--out", str(out), "--add", str(more), "--delete", "c", "-q", "--json"]) == 0
    )  # options after the command
    assert json.loads(capsys.readouterr().out) == {"index": str(out), "before": 3, "after": 3, "added": 1, "deleted": 1}
    assert main(["index", str(corpus), "--out", str(tmp_path / "again"), "--json", "-q"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["documents"] == 3 and built["dense"] is None
    assert (
        main(
            [
                "search",
                str(out),
                "baking sourdough loaves",
                "--first-stage",
                "dense",
                "--no-rerank",
                "--json",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    ids = [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert ids[0] == "d" and "c" not in ids
    assert main(["-q", "index", "--out", str(out), "--delete", "nope"]) == 1
    assert "unknown document id(s) 'nope'" in capsys.readouterr().err
    assert main(["search", str(out), "x", "--filter", '{"year": {"about": 3}}', "--no-rerank"]) == 1
    assert "filter on 'year'" in capsys.readouterr().err
    # an empty result says why
    assert main(["search", str(out), "read the csv data", "--filter", '{"lang": "en"}', "--no-rerank"]) == 0
    assert "no results: no document has the field 'lang'" in capsys.readouterr().out
    assert main(["search", str(out), "read the csv data", "--filter", '{"year": 1999}', "--no-rerank", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["note"] == "no document matches the filter {'year': 1999}"
    assert main(["search", str(out), "the of and", "--no-rerank"]) == 0
    assert "no word BM25 searches by" in capsys.readouterr().out
    assert main(["search", str(out), "如何读取数据", "--no-rerank"]) == 0
    printed = capsys.readouterr().out
    assert "no word of the query is in the index" in printed and "--first-stage dense" in printed


def test_more_bad_input_is_one_line(tmp_path, capsys, scifact_idx, monkeypatch, datasets):
    def fails(argv, message):
        with pytest.raises(SystemExit) if message.startswith("usage:") else _nothing():
            code = main(argv)
            assert code == 1
        err = capsys.readouterr().err
        assert message.split("usage:")[-1].strip() in err and "Traceback" not in err, err

    fails(["search", str(scifact_idx), "q", "--top-k", "0"], "usage: --top-k: must be at least 1, got 0")
    fails(["search", str(scifact_idx), "q", "--top-k", "-1"], "usage: must be at least 1, got -1")
    fails(["eval", str(datasets / "scifact"), "--max-queries", "0"], "usage: must be at least 1, got 0")
    fails(
        ["train", str(datasets / "nfcorpus"), "--out", str(tmp_path / "m"), "--max-steps", "0"],
        "usage: must be at least 1",
    )
    fails(
        ["train", str(datasets / "nfcorpus"), "--out", str(tmp_path / "m"), "--group-size", "1"],
        "usage: must be at least 2",
    )
    fails(
        ["train", str(datasets / "nfcorpus"), "--out", str(tmp_path / "m"), "--ray", "127.0.0.1:1"],
        "--ray scores a teacher's targets",
    )
    fails(["eval", str(datasets / "scifact"), "--ray", "127.0.0.1:1"], "--ray reranks a run on the cluster")
    fails(["serve", "--port", "-1"], "usage: must be at least 0")
    fails(["serve", "--index", "/nonexistent", "--reranker", "all-minilm-l6-v2"], "/nonexistent does not exist")
    fails(["serve", "--index", str(scifact_idx), "--first-stage", "dense"], "no dense vectors")
    (tmp_path / "a-file").write_text("x")
    fails(
        ["eval", str(datasets / "scifact"), "--report", str(tmp_path / "a-file" / "r.md"), "--no-rerank"],
        "a-file/r.md: permission denied or not a folder",
    )
    other = tmp_path / "other"
    assert main(["-q", "index", str(datasets / "vaswani"), "--out", str(other)]) == 0
    fails(["eval", str(datasets / "scifact"), "--index", str(other), "--no-rerank"], "built from another corpus")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"good line\nbad \xff byte\n")))
    fails(["rerank", "--query", "q", "--docs", "-"], "stdin:2: not UTF-8 text")
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "bad \\ud800"}\n')
    fails(["rerank", "--query", "q", "--docs", str(lone)], "lone.jsonl:2: document 'b' holds a lone surrogate")
    capsys.readouterr()
    assert main(["-q", "index", "--out", str(scifact_idx), "--delete", "4983", "4983"]) == 0
    assert "(0 added or replaced, 1 deleted)" in capsys.readouterr().out


def test_a_long_document_prints_fast(tmp_path, capsys):
    import time

    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"_id": "big", "text": "needle " + "海量文本 and words " * 70_000}) + "\n")
    assert main(["-q", "index", str(corpus), "--out", str(tmp_path / "i")]) == 0
    start = time.perf_counter()
    assert main(["search", str(tmp_path / "i"), "needle", "--no-rerank"]) == 0
    assert time.perf_counter() - start < 1.0 and "big" in capsys.readouterr().out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_serve_on_a_busy_port_fails_first_in_one_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert (
        captured.err.startswith(f"finerank: error: cannot serve on 127.0.0.1:{port}")
        and "search page" not in captured.err
    )
    assert len(captured.err.strip().splitlines()) == 1
