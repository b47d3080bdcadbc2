import json

import pytest

from finerank import CorpusError, read_corpus, read_qrels, read_queries, read_run
from finerank.corpus import read_documents


def write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_keeps_extra_fields_as_metadata(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"_id": "a", "title": "T", "text": "x", "year": 2020}\n\n{"id": 7, "text": "y"}\n')
    docs = list(read_corpus(f))
    assert [d.id for d in docs] == ["a", "7"]
    assert docs[0].title == "T" and docs[0].metadata == {"year": 2020}
    assert docs[1].title == "" and docs[1].content == "y"


def test_beir_folder(datasets):
    docs = read_corpus(datasets / "scifact")
    first = next(docs)
    assert first.id == "4983" and first.title.startswith("Microstructural")
    assert sum(1 for _ in docs) + 1 == 5183


def test_csv_tsv_and_text_folder(tmp_path):
    write(tmp_path / "c.csv", 'id,title,text,lang\n1,One,"first, with comma",en\n2,,second,zh\n')
    docs = list(read_corpus(tmp_path / "c.csv"))
    assert [(d.id, d.title, d.text, d.metadata["lang"]) for d in docs] == [
        ("1", "One", "first, with comma", "en"),
        ("2", "", "second", "zh"),
    ]
    write(tmp_path / "c.tsv", "_id\ttext\nq\thello world\n")
    assert [d.text for d in read_corpus(tmp_path / "c.tsv")] == ["hello world"]
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.md", "# Alpha\nbody")
    write(folder / "sub" / "b.txt", "beta text")
    write(folder / "ignored.bin", "zzz")
    assert [(d.id, d.title) for d in read_corpus(folder)] == [("a.md", "a"), ("sub/b.txt", "b")]


@pytest.mark.parametrize(
    "content, line, message",
    [
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2, "malformed JSON"),
        ('{"_id": "a", "text": "x"}\n{"title": "t", "text": "y"}\n', 2, "missing document id"),
        (
            '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n',
            2,
            "duplicate document id 'a' (first seen on line 1)",
        ),
        ('{"_id": "a", "text": 5}\n', 1, "'text' must be a string"),
        ('{"_id": "a", "text": "  "}\n', 1, "has no text"),
        ('["a", "b"]\n', 1, "expected a JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, line, message):
    f = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(CorpusError) as err:
        list(read_corpus(f))
    assert err.value.line == line and str(f) in str(err.value) and message in str(err.value)


def test_non_utf8_and_empty_and_missing(tmp_path):
    f = write(tmp_path / "latin.jsonl", b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n', "wb")
    with pytest.raises(CorpusError, match=r"latin.jsonl:2: not UTF-8"):
        list(read_corpus(f))
    with pytest.raises(CorpusError, match="empty corpus"):
        list(read_corpus(write(tmp_path / "empty.jsonl", "\n\n")))
    with pytest.raises(CorpusError, match="no such file"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(CorpusError, match="header must name"):
        list(read_corpus(write(tmp_path / "h.csv", "name,body\nx,y\n")))
    with pytest.raises(CorpusError, match=r"h2.csv:3: more fields"):
        list(read_corpus(write(tmp_path / "h2.csv", "id,text\n1,a\n2,b,c\n")))


def test_skip_invalid_reports_and_keeps_the_rest(tmp_path, caplog):
    f = write(
        tmp_path / "mixed.jsonl",
        b'{"_id": "a", "text": "x"}\nnot json\n{"_id": "a", "text": "dup"}\n'
        b'{"_id": "c", "text": "\xff"}\n{"_id": "d", "text": "y"}\n',
        "wb",
    )
    with caplog.at_level("WARNING", logger="finerank"):
        docs = list(read_corpus(f, skip_invalid=True))
    assert [d.id for d in docs] == ["a", "d"] and docs[0].text == "x"
    assert "mixed.jsonl:2: malformed JSON" in caplog.text and "mixed.jsonl:3: duplicate" in caplog.text
    assert "skipped 3 invalid record(s)" in caplog.text


def test_queries_qrels_and_runs(datasets, tmp_path):
    queries = read_queries(datasets / "scifact" / "queries.jsonl")
    qrels = read_qrels(datasets / "scifact" / "qrels" / "test.tsv")
    assert len(queries) == 300 and len(qrels) == 300 and sum(len(v) for v in qrels.values()) == 339
    assert qrels["1"] == {"31715818": 1}
    run = read_run(datasets / "trec-dl-2019-passage-pool" / "runs" / "BM25.top100.trec")
    assert len(run) == 43 and all(len(docs) == 100 for docs in run.values())
    trec = write(tmp_path / "q.txt", "1 0 d1 2\n1 0 d2 0\n")
    assert read_qrels(trec) == {"1": {"d1": 2, "d2": 0}}
    with pytest.raises(CorpusError, match="bad.trec:1: expected 6 fields"):
        read_run(write(tmp_path / "bad.trec", "1 Q0 d1 1\n"))
    with pytest.raises(CorpusError, match="bad.tsv:2: relevance grade 'x'"):
        read_qrels(write(tmp_path / "bad.tsv", "query-id\tcorpus-id\tscore\n1\td\tx\n"))
    assert json.dumps(queries["1"]).startswith('"0-dimensional')


def test_documents_to_rerank_need_no_ids(tmp_path):
    """Reranking names documents by position: records without an id are numbered, not refused
    (an index still needs ids)."""
    jsonl, csv = tmp_path / "d.jsonl", tmp_path / "d.csv"
    jsonl.write_text('{"text": "first"}\n{"_id": "named", "text": "second"}\n{"text": "third"}\n')
    csv.write_text("title,text\nA,alpha\nB,beta\n")
    assert [(d.id, d.text) for d in read_documents(str(jsonl))] == [("0", "first"), ("named", "second"), ("2", "third")]
    assert [(d.id, d.title) for d in read_documents(str(csv))] == [("0", "A"), ("1", "B")]
    with pytest.raises(CorpusError, match="d.jsonl:1: missing document id"):
        list(read_corpus(jsonl))
