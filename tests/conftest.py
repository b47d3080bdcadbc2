"""Shared fixtures: the real datasets beside the checkout, and small real transformer models
built as Hugging Face directories (random weights, the MiniLM WordPiece tokenizer)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# backend="auto" takes the fixed rule here: measuring every backend at each model's first load
# would cost the suite minutes (tests/test_tuning.py measures on purpose)
os.environ.setdefault("FINERANK_AUTOTUNE", "0")

DATASETS = Path(os.environ.get("FINERANK_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared datasets; tests that read them are skipped where they are absent (a clone on its
    own), and fail instead under FINERANK_REQUIRE_DATASETS=1 (CI)."""
    if not (DATASETS / "scifact" / "corpus.jsonl").is_file():
        missing = f"the shared datasets are missing: expected them at {DATASETS} (set FINERANK_DATASETS)"
        if os.environ.get("FINERANK_REQUIRE_DATASETS") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    return DATASETS


def pytest_collection_modifyitems(config, items):
    """The fast tier (``-m fast``): every test that reads no shared dataset and is not marked slow."""
    for item in items:
        if "datasets" not in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from finerank.registry import MODELS

    return MODELS["all-minilm-l6-v2"].locate()


def build_tiny_model(target: Path, minilm_dir: Path, *, num_labels: int | None, seed: int = 0) -> Path:
    """A 2-layer BERT with the MiniLM vocabulary: a classifier (num_labels) or a bare encoder (None)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_labels or 2,
    )
    model = BertForSequenceClassification(config) if num_labels else BertModel(config)
    with torch.no_grad():  # larger head weights, so scores spread out and differences show
        for p in model.parameters():
            p.mul_(5.0)
    model.eval().save_pretrained(target)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, target / name)
    return target


@pytest.fixture(scope="session")
def tiny_ce(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-ce-1"), minilm_dir, num_labels=1)


@pytest.fixture(scope="session")
def tiny_ce2(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-ce-2"), minilm_dir, num_labels=2, seed=1)


@pytest.fixture(scope="session")
def scifact_docs(datasets):
    from finerank import read_corpus

    return list(read_corpus(datasets / "scifact"))


@pytest.fixture(scope="session")
def dl19_slice(datasets):
    """The first 6 queries of DL19's official BM25 run (100 candidates each), as (folder, run,
    queries, documents): the documents are only those the slice names."""
    from finerank import read_corpus, read_queries, read_run

    folder = datasets / "trec-dl-2019-passage-pool"
    full = read_run(folder / "runs" / "BM25.top100.trec")
    run = {q: full[q] for q in sorted(full)[:6]}
    wanted = {d for scored in run.values() for d in scored}
    return folder, run, read_queries(folder / "queries.jsonl"), {d.id: d for d in read_corpus(folder) if d.id in wanted}
