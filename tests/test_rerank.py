import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from finerank import CrossEncoder, Document, Hit, InputTooLongError, ModelError, load_reranker, load_scorer, rerank
from finerank.models.files import cache_root, onnx_file

QUERY = "vitamin D supplementation reduces fractures"


@pytest.fixture(scope="module")
def passages(scifact_docs):
    return [d.content for d in scifact_docs[:40]]


@pytest.fixture(scope="module")
def ce_torch(tiny_ce):
    return CrossEncoder(tiny_ce, backend="torch", precision="fp32", max_length=128)


def test_every_backend_agrees_with_torch_for_one_and_two_labels(tiny_ce, tiny_ce2, passages):
    for model in (tiny_ce, tiny_ce2):
        t = CrossEncoder(model, backend="torch", precision="fp32", max_length=128)
        raw_t = t.score(QUERY, passages, raw=True)
        assert raw_t.std() > 0.01  # the scores differ between passages, so agreement means something
        for backend in ("onnx", "openvino"):
            o = CrossEncoder(model, backend=backend, precision="fp32", max_length=128)
            np.testing.assert_allclose(o.score(QUERY, passages, raw=True), raw_t, atol=1e-4)
            np.testing.assert_allclose(o.score(QUERY, passages), t.score(QUERY, passages), atol=1e-4)
    exported = onnx_file(tiny_ce, "classification")  # exported once, into the user cache, readable by others
    assert (
        exported.is_relative_to(cache_root())
        and not (tiny_ce / "onnx").exists()
        and exported.stat().st_mode & 0o044 == 0o044
    )


def test_openvino_runs_the_key_transpose_inside_attention_with_the_same_scores(tiny_ce, passages):
    openvino = pytest.importorskip("openvino")
    from finerank.models.backends import fuse_key_transposes
    from finerank.models.tokenization import TextEncoder, pad

    core = openvino.Core()
    model = core.read_model(str(onnx_file(tiny_ce, "classification")))
    plain = core.compile_model(model.clone(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layers = json.loads((tiny_ce / "config.json").read_text())["num_hidden_layers"]
    assert fuse_key_transposes(model) == layers and fuse_key_transposes(model) == 0  # one per layer, then none left
    fused = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feeds = pad(TextEncoder(tiny_ce, 128).pairs(QUERY, passages[:12]))  # padded rows: the mask is exercised
    feeds = {i.get_any_name(): feeds[i.get_any_name()] for i in plain.inputs}
    before, after = plain(feeds)[plain.outputs[0]], fused(feeds)[fused.outputs[0]]
    assert before.std() > 0.01
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_batches_pad_to_the_engines_multiple_within_the_models_length():
    from types import SimpleNamespace

    from finerank.models.tokenization import batches

    encodings = [SimpleNamespace(ids=[5] * n, attention_mask=[1] * n, type_ids=[0] * n) for n in (3, 17, 33, 500, 510)]
    widths = [b.feeds["input_ids"].shape[1] for b in batches(encodings, 1, 4096, pad_id=9, multiple=16, max_width=505)]
    assert widths == [510, 505, 48, 32, 16]  # never below the longest, never past the model's length unless it must
    (batch,) = batches(encodings[:2], 2, 4096, pad_id=9, multiple=16)
    assert batch.feeds["input_ids"].shape == (2, 32) and batch.feeds["attention_mask"][0].sum() == 17
    assert (batch.feeds["input_ids"][1, 3:] == 9).all() and list(batch.positions) == [1, 0]
    assert [b.feeds["input_ids"].shape[1] for b in batches(encodings, 1, 4096)] == [510, 500, 33, 17, 3]
    # the token budget counts the padded width: six 17-token pairs padded to 32 go three to a batch under 100
    padded = batches(encodings[1:2] * 6, 32, 100, multiple=16)
    assert [b.feeds["input_ids"].shape for b in padded] == [(3, 32), (3, 32)]


def test_batches_end_where_lengths_drop_not_at_a_fixed_count():
    from types import SimpleNamespace

    from finerank.models.tokenization import batches

    def shapes(lengths, batch_size=32, max_tokens=4096):
        encodings = [SimpleNamespace(ids=[5] * n, attention_mask=[1] * n, type_ids=[0] * n) for n in lengths]
        cut = batches(encodings, batch_size, max_tokens)
        assert sorted(i for b in cut for i in b.positions) == list(range(len(lengths)))  # each input once
        return [b.feeds["input_ids"].shape for b in cut]

    # padding three short pairs to 400 tokens costs more than one more call: two batches
    assert shapes([400, 390, 380, 60, 55, 50]) == [(3, 400), (3, 60)]
    # a few tokens of padding cost less than a call: one batch
    assert shapes([100, 98, 96, 95]) == [(4, 100)]
    # the cap on inputs and the token budget still hold; a lone input over the budget still runs
    assert sorted(rows for rows, _ in shapes([10] * 70)) == [6, 32, 32]
    assert all(rows * width <= 300 for rows, width in shapes([100] * 7, max_tokens=300))
    assert shapes([500, 20], max_tokens=300) == [(1, 500), (1, 20)]
    assert shapes([]) == []


def test_auto_picks_openvino_bf16_and_one_backend_serves_threads(tiny_ce, passages):
    from concurrent.futures import ThreadPoolExecutor

    from finerank.models.backends import choose_backend, cpu_has_bf16

    assert choose_backend("auto", "auto") == ("openvino", "bf16" if cpu_has_bf16() else "fp32")
    ce = CrossEncoder(tiny_ce, backend="openvino", precision="fp32", max_length=128)
    requests = [(f"{QUERY} {i}", passages[i : i + 12]) for i in range(8)]
    alone = [ce.score(q, texts, raw=True) for q, texts in requests]
    with ThreadPoolExecutor(4) as pool:  # one inference request, callers take turns: no mixed-up outputs
        together = list(pool.map(lambda r: ce.score(*r, raw=True), requests))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_relevance_is_sigmoid_of_logit_or_softmax_of_two_labels(tiny_ce, tiny_ce2, passages):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for model_dir, labels in ((tiny_ce, 1), (tiny_ce2, 2)):
        ce = CrossEncoder(model_dir, backend="torch", precision="fp32", max_length=128)
        assert ce.num_labels == labels
        hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        batch = tok(
            [QUERY] * 3, passages[:3], truncation="only_second", max_length=128, padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            logits = hf(**batch).logits
        expected = torch.sigmoid(logits[:, 0]) if labels == 1 else torch.softmax(logits, -1)[:, 1]
        np.testing.assert_allclose(ce.score(QUERY, passages[:3]), expected.numpy(), atol=1e-5)


def test_scores_do_not_depend_on_batch_size_or_neighbours(ce_torch, passages, tiny_ce):
    reference = ce_torch.score(QUERY, passages)
    for batch_size in (1, 3, 64):
        other = CrossEncoder(tiny_ce, backend="torch", precision="fp32", max_length=128, batch_size=batch_size)
        np.testing.assert_allclose(other.score(QUERY, passages), reference, atol=1e-4)
    alone = np.array([ce_torch.score(QUERY, [p])[0] for p in passages[:5]])
    np.testing.assert_allclose(alone, reference[:5], atol=1e-4)
    short_neighbours = ce_torch.score(QUERY, [passages[0], "short", "tiny text"])
    assert short_neighbours[0] == pytest.approx(reference[0], abs=1e-4)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_in_bf16_neighbours_move_a_score_by_little(passages, backend):
    """Padding to a longer neighbour changes bf16's rounding (docs/performance.md measured at
    most 1.1e-3 on the raw score): held to 4e-3 here, on the shipped model."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    scorer = load_scorer("all-minilm-l6-v2", backend=backend, precision="bf16")
    # 8 passages, each beside the 2 longest (on a CPU without bf16 units torch emulates it: 0.6 s a pair)
    longest = sorted(passages, key=len)[-2:]
    alone = np.array([scorer.score(QUERY, [p], raw=True)[0] for p in passages[:8]])
    beside = np.array([scorer.score(QUERY, [p, *longest], raw=True)[0] for p in passages[:8]])
    assert np.abs(scorer.score(QUERY, passages[:8], raw=True) - alone).max() < 4e-3
    assert np.abs(beside - alone).max() < 4e-3


def test_document_is_truncated_never_the_query(ce_torch):
    long_doc = " ".join(["fracture"] * 400)
    pair = ce_torch.encoder.pairs(QUERY, [long_doc])[0]
    query_ids = ce_torch.encoder.tokenizer.encode(QUERY, add_special_tokens=False).ids
    assert len(pair.ids) == 128
    assert pair.ids[1 : 1 + len(query_ids)] == query_ids and pair.ids[-1] == 102  # [CLS] query [SEP] doc... [SEP]
    with pytest.raises(InputTooLongError, match="the query is"):
        ce_torch.score(" ".join(["word"] * 200), ["doc"])


def test_rerank_maps_original_ranks_and_leaves_input_alone(ce_torch, passages):
    hits = [Hit(Document(str(i), p), 10.0 - i, i + 1, i + 1) for i, p in enumerate(passages[:10])]
    before = list(hits)
    out = rerank(ce_torch, QUERY, hits, top_k=4)
    assert hits == before
    scores = ce_torch.score(QUERY, passages[:10])
    order = np.argsort(-scores, kind="stable")[:4]
    assert [h.original_rank for h in out] == [int(i) + 1 for i in order]
    assert [h.rank for h in out] == [1, 2, 3, 4]
    assert [h.id for h in out] == [str(i) for i in order]
    np.testing.assert_allclose([h.score for h in out], scores[order], atol=1e-6)
    strings = rerank(ce_torch, QUERY, passages[:3])
    assert sorted(h.id for h in strings) == ["0", "1", "2"] and all(
        h.document.text == passages[int(h.id)] for h in strings
    )
    assert rerank(ce_torch, QUERY, []) == []
    with pytest.raises(ValueError, match="empty"):
        rerank(ce_torch, "  ", passages[:2])
    with pytest.raises(TypeError, match="candidate 1 is a int"):
        rerank(ce_torch, QUERY, ["ok", 5])


def test_model_directories_that_are_not_models(tmp_path, tiny_ce):
    with pytest.raises(ModelError, match="no such model directory"):
        CrossEncoder(tmp_path / "missing")
    with pytest.raises(ModelError, match="no config.json"):
        CrossEncoder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no model weights"):
        CrossEncoder(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ce, broken, ignore=shutil.ignore_patterns("onnx"))
    (broken / "config.json").write_text("{oops")
    with pytest.raises(ModelError, match="not valid JSON"):
        CrossEncoder(broken)
    config = json.loads((tiny_ce / "config.json").read_text())
    config["id2label"] = {str(i): f"L{i}" for i in range(3)}
    config.pop("num_labels", None)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="has 3 labels"):
        CrossEncoder(broken)
    with pytest.raises(ModelError, match="fetching it from the Hugging Face hub failed"):
        CrossEncoder("finerank-test/no-such-model-anywhere")
    with pytest.raises(ValueError, match="unknown backend"):
        CrossEncoder(tiny_ce, backend="tensorrt")
    with pytest.raises(ValueError, match="not 'bf16'"):
        CrossEncoder(tiny_ce, backend="onnx", precision="bf16")
    with pytest.raises(ValueError, match="not 'int8'"):
        CrossEncoder(tiny_ce, backend="openvino", precision="int8")
    # weights that do not load: one line naming the folder, for every backend
    (broken / "config.json").write_text((tiny_ce / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    for backend in ("torch", "onnx", "openvino"):
        with pytest.raises(ModelError, match=f"cannot load {broken}"):
            CrossEncoder(broken, backend=backend)


def test_a_model_that_is_not_a_classifier_is_refused(tmp_path, minilm_dir):
    from conftest import build_tiny_model

    encoder_only = build_tiny_model(tmp_path / "bare", minilm_dir, num_labels=None)
    with pytest.raises(ModelError, match="is a BertModel, not a sequence classifier"):
        CrossEncoder(encoder_only, backend="onnx")
    assert not list(tmp_path.rglob("*.onnx"))  # and nothing was exported for it
    with pytest.raises(ModelError, match="not a sequence classifier"):
        load_reranker(minilm_dir)  # the shipped bi-encoder asked for as a cross-encoder


def test_sentence_transformers_modules_finerank_cannot_run_are_refused(tmp_path, minilm_dir):
    from finerank import BiEncoder

    for change, message in (
        ("dense", r"module\(s\) sentence_transformers.models.Dense"),
        ("max", "pooling pooling_mode_max_tokens"),
    ):
        folder = tmp_path / change
        shutil.copytree(minilm_dir, folder, ignore=shutil.ignore_patterns("onnx"))
        if change == "dense":
            modules = json.loads((folder / "modules.json").read_text())
            modules.append({"idx": 3, "name": "3", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
            (folder / "modules.json").write_text(json.dumps(modules))
        else:
            (folder / "1_Pooling" / "config.json").write_text(
                json.dumps({"word_embedding_dimension": 384, "pooling_mode_max_tokens": True})
            )
        with pytest.raises(ModelError, match=message):
            BiEncoder(folder, backend="onnx")


def test_bi_encoder_is_safe_under_threads(minilm_dir, passages):
    from finerank import BiEncoder

    texts = [p[:300] for p in passages[:24]]
    for cache_size in (0, 8):
        encoder = BiEncoder(minilm_dir, backend="onnx", cache_size=cache_size)
        alone = encoder.embed(texts)
        with ThreadPoolExecutor(8) as pool:  # overlapping requests that fill and evict the shared cache
            results = list(
                pool.map(lambda i, encoder=encoder: (i, encoder.embed(texts[i % 6 : i % 6 + 12])), range(32))
            )
        for i, rows in results:
            np.testing.assert_allclose(rows, alone[i % 6 : i % 6 + 12], atol=1e-5)
        assert len(encoder._cache) <= cache_size


def test_default_reranker_loads_offline_and_ranks_the_demo_sensibly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reranker = load_reranker()
    docs = ["Use pd.read_csv() to read the data", "Reading Excel files in Java", "Pandas basics tutorial"]
    hits = rerank(reranker, "How do I read a CSV file in Python?", docs)
    assert hits[0].document.text == docs[0]
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    fp32 = load_scorer("minilm-fused", backend="torch", precision="fp32")
    onnx = load_scorer("minilm-fused", backend="onnx")
    np.testing.assert_allclose(
        onnx.score("csv in python", docs, raw=True), fp32.score("csv in python", docs, raw=True), atol=1e-4
    )


def kendall_tau(a, b):
    i, j = np.triu_indices(len(a), 1)
    return float(np.mean(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])))


@pytest.mark.slow
def test_every_fast_path_matches_the_reference_on_a_real_model(minilm_dir, passages):
    """Each backend and precision against torch fp32 on all-MiniLM-L6-v2 and real passages."""
    from finerank import BiEncoder
    from finerank.models.backends import BACKENDS

    passages = passages[:20]  # the half of them: on a CPU without bf16 units torch emulates bf16 (0.6 s a passage)
    reference = BiEncoder(minilm_dir, backend="torch", precision="fp32", batch_size=64).score(QUERY, passages, raw=True)
    tolerance = {"fp32": (1e-5, 1.0), "bf16": (5e-3, 0.98), "int8": (0.05, 0.85)}  # max |cosine diff|, min Kendall tau
    for backend, cls in BACKENDS.items():
        for precision in cls.precisions:
            # batch shapes matter once per engine family: all of them on onnx fp32, the default elsewhere
            for batching in (
                ({"batch_size": 1}, {"max_batch_tokens": 1024}, {})
                if (backend, precision) == ("onnx", "fp32")
                else ({},)
            ):
                scores = BiEncoder(minilm_dir, backend=backend, precision=precision, **batching).score(
                    QUERY, passages, raw=True
                )
                atol, tau = tolerance[precision]
                assert np.abs(scores - reference).max() <= atol, (backend, precision, batching)
                assert kendall_tau(scores, reference) >= tau, (backend, precision, batching)


def test_int8_weights_keep_to_7_bits_where_8_would_overflow(tiny_ce):
    """x86 CPUs without VNNI sum two u8 x s8 products in 16 bits, which saturates with full 8-bit
    weights; there the int8 export's weights stay within 7 bits, elsewhere they use all 8."""
    import onnx
    from onnx import numpy_helper

    from finerank.models.backends import int8_saturates

    scorer = CrossEncoder(tiny_ce, backend="onnx", precision="int8")
    path = scorer.backend.path
    assert path.name.endswith("-int8-w7.onnx" if int8_saturates() else "-int8.onnx")
    weights = [
        numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert largest <= 64 if int8_saturates() else largest == 127
