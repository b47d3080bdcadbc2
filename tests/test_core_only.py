"""What the core install (``pip install -e .``: no torch, transformers or openvino) does:
build, save, load and search BM25, from the library and the CLI. CI also runs this file in a
virtual environment with only the core install."""

import json
import subprocess
import sys

from finerank import BM25, Index, Pipeline, read_corpus


def test_bm25_search_without_the_heavy_frameworks(datasets, tmp_path):
    code = f"""
import sys, json
from finerank import BM25, Index, Pipeline, read_corpus
docs = list(read_corpus({str(datasets / "scifact")!r}))[:500]
Index.build(docs).save({str(tmp_path / "idx")!r})
ranking = Pipeline(BM25(Index.load({str(tmp_path / "idx")!r}))).search("vitamin D and bone density")
heavy = sorted(m for m in ("torch", "transformers", "openvino") if m in sys.modules)
print(json.dumps([[h.id for h in ranking.hits], heavy]))
"""
    ids, heavy = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert len(ids) == 3 and heavy == []
    docs = list(read_corpus(datasets / "scifact"))[:500]
    assert ids == [h.id for h in Pipeline(BM25(Index.build(docs))).search("vitamin D and bone density").hits]
    cli = subprocess.run(
        [sys.executable, "-m", "finerank.cli", "search", str(tmp_path / "idx"), "vitamin D", "--no-rerank", "--json"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and len(json.loads(cli.stdout)["hits"]) == 3
