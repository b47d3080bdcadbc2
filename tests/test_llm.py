"""LLM rerankers (a causal LM's yes/no logits after a template), against the reference scoring
code of the model cards, on random-weight models built from their configs (Qwen3 as in
Qwen3-Reranker, Gemma as in bge-reranker-v2-gemma) with a real tokenizer and the templates'
special tokens added."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from finerank import BM25, Document, Index, LLMReranker, Pipeline, load_scorer
from finerank.errors import ModelError
from finerank.models.llm import TEMPLATES

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tokenizers import AddedToken, Tokenizer  # noqa: E402

QUERY = "how do statins lower cholesterol"
DOCS = [
    "Statins inhibit HMG-CoA reductase, lowering LDL cholesterol.",
    "Sourdough bread rises slowly.",
    "Cholesterol synthesis in the liver. " * 30,
    "short",
    "他汀类药物降低胆固醇。",
]


def tokenizer_with_specials(minilm_dir, folder):
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()  # MiniLM's file pads and cuts to 128 tokens; a causal LM's tokenizer does neither
    tok.no_truncation()
    tok.add_special_tokens(
        [AddedToken(t, normalized=False) for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>")]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok


def build(kind, folder, minilm_dir):
    tok = tokenizer_with_specials(minilm_dir, folder)
    torch.manual_seed(0)
    small = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        head_dim=16,
        pad_token_id=0,
        bos_token_id=101,
        max_position_embeddings=2048,
    )
    T = transformers
    model = (
        T.Qwen3ForCausalLM(T.Qwen3Config(**small, tie_word_embeddings=False))
        if kind == "qwen3"
        else T.GemmaForCausalLM(T.GemmaConfig(**small))
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(3.0)
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory, minilm_dir):
    return build("qwen3", tmp_path_factory.mktemp("m") / "qwen3-reranker-tiny", minilm_dir)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, minilm_dir):
    return build("gemma", tmp_path_factory.mktemp("m") / "bge-reranker-v2-gemma-tiny", minilm_dir)


def full_vocabulary_last_logits(folder, ids):
    """transformers' own forward: the whole vocabulary's logits at the last position, one unpadded sequence."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


def test_qwen3_reranker_scores_as_its_model_card_does(qwen3):
    # the model card: prefix + format_instruction(...) + suffix, then log_softmax over [no, yes] at the last token
    tok = Tokenizer.from_file(str(qwen3 / "tokenizer.json"))
    t = TEMPLATES["qwen3-reranker"]
    prefix = tok.encode(t.head[0], add_special_tokens=False).ids
    suffix = tok.encode(t.tail[0], add_special_tokens=False).ids
    no, yes = tok.token_to_id("no"), tok.token_to_id("yes")
    expected = []
    for doc in DOCS:
        body = tok.encode(
            f"<Instruct>: {t.default_instruction}\n<Query>: {QUERY}\n<Document>: {doc}", add_special_tokens=False
        ).ids
        logits = full_vocabulary_last_logits(qwen3, prefix + body + suffix)
        expected.append(torch.log_softmax(logits[[no, yes]], dim=0)[1].exp().item())
    reranker = load_scorer(str(qwen3), precision="fp32")  # recognised: a causal LM whose name says qwen3-reranker
    assert isinstance(reranker, LLMReranker) and reranker.template_name == "qwen3-reranker"
    got = reranker.score(QUERY, DOCS)  # one batch, left-padded
    assert np.ptp(expected) > 0.01
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.corrcoef(LLMReranker(qwen3, precision="bf16").score(QUERY, DOCS), expected)[0, 1] > 0.95
    # a document's score never depends on its neighbours
    np.testing.assert_allclose(reranker.score(QUERY, DOCS[::-1])[::-1], got, atol=1e-5)
    # the instruction is part of the prompt
    assert not np.allclose(reranker.instructed("Find recipes").score(QUERY, DOCS), got, atol=1e-4)
    assert reranker.instructed("Find recipes").reading != reranker.reading


def test_bf16_rounds_the_weights_not_the_position_frequencies(qwen3):
    exact = LLMReranker(qwen3, precision="fp32").score(QUERY, DOCS, raw=True)
    reranker = LLMReranker(qwen3, precision="bf16")
    assert {p.dtype for p in reranker.decoder.parameters()} == {torch.bfloat16}
    frequencies = [b for name, b in reranker.decoder.named_buffers() if "inv_freq" in name]
    assert frequencies and all(b.dtype == torch.float32 for b in frequencies)  # RoPE's, as the model computed them
    kept = np.abs(reranker.score(QUERY, DOCS, raw=True) - exact).mean()
    reranker.decoder.to(torch.bfloat16)  # what a whole-module cast does: the frequencies rounded too
    rounded = np.abs(reranker.score(QUERY, DOCS, raw=True) - exact).mean()
    assert kept < rounded


def test_the_shared_head_is_computed_once_per_query(qwen3):
    reranker = LLMReranker(qwen3, precision="fp32", batch_size=2)
    fed = []
    hook = reranker.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        reused = reranker.score(QUERY, DOCS, raw=True)
        reranker.reuse_prefix = False
        fed_reused, fed[:] = list(fed), []
        whole = reranker.score(QUERY, DOCS, raw=True)
    finally:
        hook.remove()
    np.testing.assert_allclose(reused, whole, atol=1e-4)
    first, *batches = fed_reused
    assert first[0] == 1 and first[1] > 30  # system prompt, instruction and query: once
    assert len(batches) == len(fed) == 3  # 5 documents in batches of 2, with and without the cache
    assert [b[1] for b in batches] == [w[1] - first[1] for w in fed]  # then only what follows the head
    # bf16 pads each batch to a multiple of 16 tokens, after the head and on the left without it: no score moves
    assert LLMReranker(qwen3, precision="bf16").width_multiple == 16 and reranker.width_multiple == 1
    reranker.width_multiple, fed[:] = 16, []
    hook = reranker.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        for reuse in (True, False):
            reranker.reuse_prefix = reuse
            np.testing.assert_allclose(reranker.score(QUERY, DOCS, raw=True), whole, atol=1e-4)
    finally:
        hook.remove()
    assert fed[0] == first and all(width % 16 == 0 for _, width in fed[1:])
    # never past the model's length: a document cut at max_length is padded no further
    capped = LLMReranker(qwen3, precision="fp32", max_length=first[1] + 21)
    capped.width_multiple, fed[:] = 16, []
    hook = capped.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        capped.score(QUERY, ["statins " * 200, "short"], raw=True)
    finally:
        hook.remove()
    assert fed[0][1] + fed[1][1] == capped.max_length


def test_a_long_document_is_cut_never_the_template(qwen3, monkeypatch):
    reranker = LLMReranker(qwen3, precision="fp32", max_length=96)
    tok = reranker.encoder.tokenizer
    tail = tok.encode(TEMPLATES["qwen3-reranker"].tail[0], add_special_tokens=False).ids
    head = tok.encode(TEMPLATES["qwen3-reranker"].head[0], add_special_tokens=False).ids
    (ids,) = reranker.inputs(QUERY, [DOCS[2]])
    assert len(ids) == 96 and ids[: len(head)] == head and ids[-len(tail) :] == tail
    with pytest.raises(Exception, match="the query and template take"):
        reranker.inputs(QUERY * 20, ["x"])
    # a template with text after the document keeps it whole: the document is cut before it
    body = "<Query>: {query}\n<Document>: {document}\n<Question>: does the document answer the query?"
    monkeypatch.setitem(TEMPLATES, "asks-after", dataclasses.replace(TEMPLATES["qwen3-reranker"], body=body))
    asking = LLMReranker(qwen3, precision="fp32", max_length=96, template="asks-after")
    question = tok.encode("\n<Question>: does the document answer the query?", add_special_tokens=False).ids
    (ids,) = asking.inputs(QUERY, [DOCS[2]])
    assert len(ids) == 96 and ids[-len(tail) - len(question) :] == question + tail
    (short,) = asking.inputs(QUERY, ["fins"])
    assert short[-len(tail) - len(question) :] == question + tail and len(short) < 96


def test_a_long_document_read_in_windows_takes_its_best(qwen3):
    reranker = LLMReranker(qwen3, precision="fp32", max_length=128, max_chunks_per_doc=4)
    long_doc = " ".join(
        f"Sentence {i} is about {topic}."
        for i, topic in enumerate(["bread", "rivers", "statins and cholesterol", "trains"] * 6)
    )
    texts = [long_doc, DOCS[0]]
    ((spans, short),) = [reranker.windows(QUERY, texts)]
    assert len(spans) == 4 and short == [(0, len(DOCS[0]))]
    scores, passages = reranker.score_passages(QUERY, texts, raw=True)
    alone = reranker.score_many(
        [(QUERY, [long_doc[s:e] for s, e in spans] + [DOCS[0]])], raw=True, max_chunks_per_doc=1
    )[0]
    np.testing.assert_allclose(
        scores, [alone[:4].max(), alone[4]], atol=1e-4
    )  # each window read alone; the best counts
    assert passages[0] == spans[int(np.argmax(alone[:4]))]
    cut = reranker.score_passages(QUERY, texts, raw=True, max_chunks_per_doc=1)[
        0
    ]  # chunking off: the first window only
    np.testing.assert_allclose(cut[1], scores[1], atol=1e-4)
    assert reranker.score("what does {x} mean for {query}", ["a {document} in braces"]).shape == (1,)


def test_bge_gemma_scores_the_yes_logit(gemma):
    tok = Tokenizer.from_file(str(gemma / "tokenizer.json"))
    t = TEMPLATES["bge-reranker-v2-gemma"]
    piece = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    yes = piece("Yes")[0]
    expected = [
        full_vocabulary_last_logits(
            gemma, [101] + piece(f"A: {QUERY}") + piece("\n") + piece(f"B: {d}") + piece("\n") + piece(t.tail[1])
        )[yes].item()
        for d in DOCS
    ]
    reranker = load_scorer(str(gemma), precision="fp32")
    assert reranker.template_name == "bge-reranker-v2-gemma"
    np.testing.assert_allclose(reranker.score(QUERY, DOCS, raw=True), expected, atol=1e-4)


def test_an_llm_reranker_in_a_pipeline(qwen3):
    docs = [Document(str(i), d) for i, d in enumerate(DOCS)]
    ranking = Pipeline(
        BM25(Index.build(docs)), load_scorer(str(qwen3), precision="fp32"), candidates=5, top_k=5
    ).search("cholesterol statins")
    assert ranking.reranker and all(0 <= h.score <= 1 for h in ranking.hits)


def test_refusals(qwen3, tmp_path, minilm_dir):
    unknown = tmp_path / "some-chat-model"
    shutil.copytree(qwen3, unknown)
    config = json.loads((unknown / "config.json").read_text())
    config.pop("_name_or_path", None)
    (unknown / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="causal language model .* without a known reranker template: pass template="):
        load_scorer(str(unknown))
    assert load_scorer(str(unknown), template="qwen3-reranker", precision="fp32").template_name == "qwen3-reranker"
    # a vocabulary without the template's answer token: not the model the template is for
    vocabulary = json.loads((unknown / "tokenizer.json").read_text())
    vocabulary["model"]["vocab"]["yes-gone"] = vocabulary["model"]["vocab"].pop("yes")
    (unknown / "tokenizer.json").write_text(json.dumps(vocabulary))
    with pytest.raises(
        ModelError, match="the answer 'yes' of template qwen3-reranker is 2 tokens in this model's vocabulary"
    ):
        load_scorer(str(unknown), template="qwen3-reranker")
    with pytest.raises(ModelError, match="unknown LLM reranker template 'llama'"):
        load_scorer(str(unknown), template="llama")


def test_the_instruction_over_http(qwen3):
    from fastapi.testclient import TestClient

    from finerank.server import create_app

    reranker = load_scorer(str(qwen3), precision="fp32")
    with TestClient(create_app(reranker)) as client:
        for instruction in (None, "Find passages about bread"):
            body = {"query": QUERY, "documents": DOCS, **({"instruction": instruction} if instruction else {})}
            results = client.post("/v1/rerank", json=body).json()["results"]
            got = {r["index"]: r["relevance_score"] for r in results}
            np.testing.assert_allclose(
                [got[i] for i in range(len(DOCS))],
                (reranker.instructed(instruction) if instruction else reranker).score(QUERY, DOCS),
                atol=1e-5,
            )
    with TestClient(create_app(load_scorer("all-minilm-l6-v2"))) as client:
        refused = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "x"})
        assert refused.status_code == 422 and refused.json()["field"] == "instruction"


def test_mxbai_rerank_v2_scores_one_against_zero(qwen3, tmp_path):
    # mxbai-rerank-v2 (a Qwen2 model): "query: ...\ndocument: ..." after a chat system turn, then its
    # task prompt; the score is logit("1") - logit("0")
    folder = tmp_path / "mxbai-rerank-base-v2-tiny"
    shutil.copytree(qwen3, folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    t = TEMPLATES["mxbai-rerank-v2"]
    piece = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    one, zero = piece("1")[0], piece("0")[0]
    expected = []
    for doc in DOCS[:3]:
        logits = full_vocabulary_last_logits(
            folder, piece(t.head[0]) + piece(f"query: {QUERY}\ndocument: {doc}") + piece(t.tail[0])
        )
        expected.append((logits[one] - logits[zero]).item())
    reranker = load_scorer(str(folder), precision="fp32")
    assert reranker.template_name == "mxbai-rerank-v2"
    np.testing.assert_allclose(reranker.score(QUERY, DOCS[:3], raw=True), expected, atol=1e-4)
    with_instruction = reranker.inputs(QUERY, ["d"], instruction="Rank recipes")[0]
    assert (
        piece("instruction: Rank recipes\nquery:")
        == with_instruction[len(piece(t.head[0])) :][: len(piece("instruction: Rank recipes\nquery:"))]
    )
