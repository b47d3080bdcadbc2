"""Reranking a TREC run offline, in shards: the same output as the pipeline query by query, and
a crash loses only the shard in progress (a rerun keeps the finished ones)."""

import socket

import pytest

from finerank import load_reranker
from finerank.batch import rerank_run
from finerank.cli import main
from finerank.errors import CorpusError
from finerank.pipeline import Reranking, hits_of_run


def test_a_run_reranked_in_shards_equals_the_pipeline_and_resumes(dl19_slice, tiny_ce, tmp_path, monkeypatch):
    folder, run, queries, documents = dl19_slice
    reranker = load_reranker(tiny_ce)
    out = rerank_run(run, queries, documents, reranker, tmp_path / "reranked.trec", depth=20, shard_size=2, tag="t")
    lines = out.read_text().splitlines()
    pipeline = Reranking(reranker, top_k=20)
    expected = [
        f"{q} Q0 {h.id} {h.rank} {h.score!r} t"
        for q in sorted(run)
        for h in pipeline.rerank(queries[q], hits_of_run(run[q], documents, 20)).hits
    ]
    assert lines == expected and len(lines) == 6 * 20
    assert not (tmp_path / "reranked.trec.parts").exists()  # joined: the shards are gone
    # a crash in the second shard: the first shard stays written, the output is not
    (tmp_path / "again.trec.parts").mkdir()
    scorer, real, calls = reranker.scorer, reranker.scorer.score_passages_many, []

    def failing(requests, **kw):
        calls.extend(query for query, _ in requests)
        if len(calls) == 3:  # the first query of the second shard
            raise RuntimeError("killed")
        return real(requests, **kw)

    monkeypatch.setattr(scorer, "score_passages_many", failing)
    with pytest.raises(RuntimeError, match="killed"):
        rerank_run(run, queries, documents, reranker, tmp_path / "again.trec", depth=20, shard_size=2, tag="t")
    written = sorted((tmp_path / "again.trec.parts").glob("shard-*.trec"))
    assert [p.name for p in written] == ["shard-00000.trec"] and not (tmp_path / "again.trec").exists()
    # other settings over the finished shards are refused, not mixed into one run
    with pytest.raises(CorpusError, match="another reranking"):
        rerank_run(run, queries, documents, reranker, tmp_path / "again.trec", depth=10, shard_size=2, tag="t")
    monkeypatch.setattr(
        scorer,
        "score_passages_many",
        lambda requests, **kw: calls.extend(q for q, _ in requests) or real(requests, **kw),
    )
    calls.clear()
    rerank_run(run, queries, documents, reranker, tmp_path / "again.trec", depth=20, shard_size=2, tag="t")
    assert len(calls) == 4  # the second and third shards' queries: the finished first shard was not redone
    assert (tmp_path / "again.trec").read_text().splitlines() == expected


def test_rerank_run_from_the_command_line(dl19_slice, tiny_ce, tmp_path, capsys):
    folder, run, queries, documents = dl19_slice
    small = tmp_path / "run.trec"
    small.write_text("".join(f"{q} Q0 {d} 1 {s} bm25\n" for q in list(run)[:2] for d, s in run[q].items()))
    out = tmp_path / "out.trec"
    args = [
        "-q",
        "rerank-run",
        str(small),
        "--corpus",
        str(folder),
        "--queries",
        str(folder / "queries.jsonl"),
        "--out",
        str(out),
        "--depth",
        "5",
        "--reranker",
        str(tiny_ce),
    ]
    assert main(args) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and {line.split()[0] for line in lines} == set(list(run)[:2])
    assert [line.split()[3] for line in lines[:5]] == ["1", "2", "3", "4", "5"]
    small.write_text(f"nope Q0 {next(iter(documents))} 1 1.0 bm25\n")
    capsys.readouterr()
    assert main(args) == 1 and "not in the queries file: nope" in capsys.readouterr().err


def test_an_unreachable_cluster_is_one_line_for_batch_and_serve(dl19_slice, tiny_ce, tmp_path, capsys):
    folder, run, queries, documents = dl19_slice
    small = tmp_path / "run.trec"
    small.write_text("".join(f"{q} Q0 {d} 1 {s} bm25\n" for q in list(run)[:1] for d, s in run[q].items()))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    commands = (
        [
            "rerank-run",
            str(small),
            "--corpus",
            str(folder),
            "--queries",
            str(folder / "queries.jsonl"),
            "--out",
            str(tmp_path / "out.trec"),
            "--ray",
            address,
        ],
        ["serve", "--ray", address],
        ["serve", "--ray", "nowhere"],
    )
    for command in commands:
        capsys.readouterr()
        assert main(["-q", *command, "--reranker", str(tiny_ce)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (
            "cannot reach the Ray cluster at " + address in err or "not a Ray address: 'nowhere'" in err
        ), err
    assert not (tmp_path / "out.trec").exists() and not (tmp_path / "out.trec.parts").exists()
