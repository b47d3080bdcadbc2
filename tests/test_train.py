import json
import os

import numpy as np
import pytest
import torch

from finerank import CrossEncoder, Document, Index, load_reranker, read_corpus, read_qrels, read_queries
from finerank import train as training
from finerank.cli import main
from finerank.models.files import export_name, onnx_file


@pytest.fixture(scope="module")
def nf_index(datasets):
    return Index.build(read_corpus(datasets / "nfcorpus"))


@pytest.fixture(scope="module")
def groups(datasets, nf_index):
    return training.labelled_groups(datasets / "nfcorpus", nf_index, group_size=4, max_queries=12, seed=0)


def config(tmp_path, base, **overrides):
    values = dict(
        base=str(base),
        output=str(tmp_path / "model"),
        batch_groups=4,
        learning_rate=1e-3,
        max_length=128,
        checkpoint_every=100,
    )
    return training.TrainConfig(**(values | overrides))


def test_labelled_groups_never_use_a_relevant_document_as_negative(datasets, nf_index, groups):
    qrels = read_qrels(datasets / "nfcorpus" / "qrels" / "train.tsv")
    qids_of = {}
    for qid, text in read_queries(datasets / "nfcorpus" / "queries.jsonl").items():
        if qid in qrels:
            qids_of.setdefault(text, []).append(qid)
    by_content = {}  # NFCorpus holds duplicate documents under different ids
    for d in nf_index.documents:
        by_content.setdefault(d.content, set()).add(d.id)
    assert len(groups) >= 8 and all(len(g.texts) == 4 for g in groups)
    for g in groups:
        positive, *negatives = [by_content[t] for t in g.texts]
        source = [qrels[q] for q in qids_of[g.query] if any(qrels[q].get(p, 0) > 0 for p in positive)]
        assert source and all(judged.get(n, 0) <= 0 for judged in source for ids in negatives for n in ids)


def test_self_supervised_groups_pair_titles_with_their_text(scifact_docs):
    index = Index.build(scifact_docs[:400])
    groups = training.self_supervised_groups(index, group_size=4, max_documents=10)
    texts = {d.title: d.text for d in scifact_docs[:400]}
    assert len(groups) == 10
    for g in groups:
        assert g.texts[0] == texts[g.query] and texts[g.query] not in g.texts[1:]
    untitled = Index.build([Document(d.id, d.text) for d in scifact_docs[:400]])
    for g in training.self_supervised_groups(untitled, group_size=4, max_documents=5):
        source = next(d.text for d in scifact_docs[:400] if d.text.startswith(g.query + ". "))
        assert g.texts[0] == source[len(g.query) + 2 :].strip() and g.texts[0] not in g.texts[1:]


def test_training_lowers_the_loss_and_exports(tmp_path, tiny_ce, groups):
    cfg = config(tmp_path, tiny_ce, epochs=8)
    result = training.train(groups, cfg)
    per_epoch = np.array(result.losses).reshape(8, -1).mean(axis=1)
    assert result.steps == 8 * -(-len(groups) // 4) and per_epoch[-1] < per_epoch[0] * 0.8, per_epoch
    out = training.export(cfg, result, "nfcorpus train (12 queries)")
    torch_scores = CrossEncoder(out, backend="torch", precision="fp32").score(
        groups[0].query, list(groups[0].texts), raw=True
    )
    onnx_scores = CrossEncoder(out, backend="onnx").score(groups[0].query, list(groups[0].texts), raw=True)
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
    card = (out / "README.md").read_text()
    assert str(tiny_ce) in card and f"steps: {result.steps}" in card


def test_interrupted_training_resumes_to_the_same_state(tmp_path, tiny_ce, groups, monkeypatch):
    straight = config(tmp_path / "a", tiny_ce, max_steps=6, batch_groups=2)
    training.train(groups, straight)
    calls = {"n": 0}
    real_loss = training._loss

    def interrupt_after_three(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_loss(*args)

    resumed = config(tmp_path / "b", tiny_ce, max_steps=6, batch_groups=2)
    monkeypatch.setattr(training, "_loss", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        training.train(groups, resumed)
    monkeypatch.setattr(training, "_loss", real_loss)
    assert (
        torch.load(tmp_path / "b" / "model" / "checkpoint" / "state.pt", weights_only=False)["step"] == 3
    )  # Ctrl-C kept it
    checkpoint = tmp_path / "b" / "model" / "checkpoint"
    os.replace(
        checkpoint, checkpoint.with_name("checkpoint.old")
    )  # as a crash between the swap's two renames leaves it
    result = training.train(groups, resumed, resume=True)
    assert result.steps == 6 and len(result.losses) == 6 and not checkpoint.with_name("checkpoint.old").exists()
    a = torch.load(tmp_path / "a" / "model" / "checkpoint" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "model" / "checkpoint" / "state.pt", weights_only=False)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6)


def test_distillation_from_a_teacher(tmp_path, tiny_ce, groups):
    taught = training.with_teacher(groups[:4], load_reranker("all-minilm-l6-v2", precision="fp32"))
    assert all(len(g.targets) == 4 for g in taught)
    fused = training.with_teacher(groups[:4], load_reranker("minilm-fused", precision="fp32"))
    flipped = [training.Group(g.query, g.texts[::-1], g.first_scores[::-1]) for g in groups[:4]]
    # a fused teacher reads the first stage's scores, not the group order (which would give the positive away)
    np.testing.assert_allclose(
        [g.targets for g in training.with_teacher(flipped, load_reranker("minilm-fused", precision="fp32"))],
        [g.targets[::-1] for g in fused],
        atol=1e-5,
    )
    auto = training.with_teacher(
        groups[:4], load_reranker("auto", precision="fp32")
    )  # English queries: minilm-fused's route
    np.testing.assert_allclose([g.targets for g in auto], [g.targets for g in fused], atol=1e-5)
    result = training.train(taught, config(tmp_path, tiny_ce, loss="kl", epochs=3))
    assert result.steps == 3 and all(np.isfinite(result.losses))
    with pytest.raises(ValueError, match="needs teacher scores"):
        training.train(groups, config(tmp_path, tiny_ce, loss="kl"))


def test_cli_train(tmp_path, tiny_ce, minilm_dir, datasets, capfd):
    out = tmp_path / "cli-model"
    assert (
        main(
            [
                "-q",
                "train",
                str(datasets / "nfcorpus"),
                str(datasets / "drcd-retrieval"),
                "--base",
                str(tiny_ce),
                "--out",
                str(out),
                "--max-steps",
                "2",
                "--max-queries",
                "6",
                "--group-size",
                "4",
                "--max-length",
                "64",
                "--eval",
                str(datasets / "scifact"),
                "--eval-queries",
                "3",
            ]
        )
        == 0
    )
    printed = capfd.readouterr().out
    assert (
        "trained 2 steps" in printed
        and f"from {datasets / 'nfcorpus'} + {datasets / 'drcd-retrieval'} (labelled)" in printed
    )
    assert onnx_file(out, "classification") == out / "onnx" / export_name("classification")  # shipped in the folder
    assert (out / "config.json").is_file()
    card = (out / "README.md").read_text()
    assert f"data: {datasets / 'nfcorpus'} + {datasets / 'drcd-retrieval'} (labelled, split train" in card
    assert (
        "steps: 2" in card
        and "## Evaluation" in card
        and "| ndcg@10 |" in card
        and "the first 3 of 300 judged queries" in card
    )
    assert (
        main(
            [
                "train",
                str(datasets / "nfcorpus"),
                "--base",
                str(minilm_dir),  # an encoder without a relevance head: transformers reports the new head's weights
                "--out",
                str(tmp_path / "again"),
                "--max-steps",
                "1",
                "--max-queries",
                "4",
                "--group-size",
                "4",
                "--max-length",
                "64",
                "-q",
                "--json",
            ]
        )
        == 0
    )
    printed = capfd.readouterr()
    record = json.loads(printed.out)  # only the JSON on stdout
    assert "MISSING" not in printed.err  # -q: no load report from transformers, though it is imported already
    assert record["model"] == str(tmp_path / "again") and record["steps"] == 1 and record["evaluation"] is None


def test_best_window_keeps_the_passage_that_matches_the_query(tiny_ce, scifact_docs):
    """A long positive cut at its start loses the sentence a question asks about; --best-window
    trains on the window that holds it, cut as the reranker's windows are cut."""
    from finerank.models import chunks
    from finerank.models.tokenization import TextEncoder

    encoder = TextEncoder(tiny_ce, 96)
    doc = next(d.text for d in scifact_docs if len(encoder.tokenizer.encode(d.text).ids) > 300)
    last = doc.rstrip(". ").rsplit(". ", 1)[-1]
    query = " ".join(last.split()[:8])
    short = "A short abstract fits whole."
    best, whole = training.best_windows(encoder, query, [doc, short])
    assert whole == short
    assert last[:40] in best and last[:40] not in doc[: len(best)]
    spans = chunks.split(encoder.tokenizer, [doc], encoder.document_budget(query), 10**9, 32)[0]
    assert best in [doc[a:b] for a, b in spans] and len(encoder.pairs(query, [best])[0].ids) <= 96
