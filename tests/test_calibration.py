"""Calibrated scores: fitted on a dev split, a threshold of 0.5 keeps about the same precision on
the test split (real NFCorpus judgements, the real MiniLM model); stored with the model, read back
by every scorer of it, and applied by ``min_score``."""

import numpy as np
import pytest

from finerank import BM25, Document, Index, Pipeline, load_scorer, read_corpus
from finerank.cli import main
from finerank.errors import ModelError
from finerank.evaluate import judged_scores, load_dataset, threshold_quality
from finerank.models import calibration


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINERANK_CACHE", str(tmp_path / "cache"))  # calibrations of the packaged model go to the cache


@pytest.fixture(scope="module")
def nfcorpus(datasets):
    return datasets / "nfcorpus", BM25(Index.build(read_corpus(datasets / "nfcorpus")))


def test_fit_recovers_a_logistic_relation_and_isotonic_is_monotone():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=20000)
    relevant = rng.random(20000) < 1 / (1 + np.exp(-(2.0 * raw - 1.0)))
    platt = calibration.fit(raw, relevant, "platt")
    assert platt.a == pytest.approx(2.0, abs=0.1) and platt.b == pytest.approx(-1.0, abs=0.1)
    iso = calibration.fit(raw, relevant, "isotonic")
    probabilities = iso(np.linspace(-3, 3, 50))
    assert np.all(np.diff(probabilities) >= 0) and probabilities[0] < 0.1 and probabilities[-1] > 0.9
    with pytest.raises(ValueError, match="both relevant and irrelevant"):
        calibration.fit(raw, np.zeros_like(raw), "platt")


def test_a_threshold_fitted_on_dev_holds_on_test(nfcorpus):
    folder, first = nfcorpus
    # 150 queries a split, their BM25 top 10, at 64 tokens (the cost of the test): ~100 pairs kept at 0.5
    scorer = load_scorer("all-minilm-l6-v2", precision="fp32", max_length=64)
    dev = judged_scores(load_dataset(folder, "dev", 150), first, scorer, candidates=10)
    test = judged_scores(load_dataset(folder, "test", 150), first, scorer, candidates=10)
    for method in ("platt", "isotonic"):
        fitted = calibration.fit(*dev, method)
        on_dev, on_test = threshold_quality(fitted(dev[0]), dev[1]), threshold_quality(fitted(test[0]), test[1])
        assert 0.01 < on_dev["kept"] < 0.5 and on_dev["precision"] >= 0.5, (method, on_dev)
        assert abs(on_test["precision"] - on_dev["precision"]) <= 0.05, (method, on_dev, on_test)
    # the uncalibrated relevance, (cosine + 1) / 2, says nothing of the kind: 0.5 keeps nearly everything
    assert threshold_quality(scorer.calibrate(test[0]), test[1])["kept"] > 0.9


def test_calibrate_command_stores_it_with_the_model_and_min_score_uses_it(nfcorpus, capsys, tmp_path):
    folder, first = nfcorpus
    args = ["--reranker", "all-minilm-l6-v2", "--max-length", "128", "--backend", "onnx", "--precision", "fp32"]
    assert main(["-q", "calibrate", str(folder), "--max-queries", "8", "--candidates", "10", *args]) == 0
    out = capsys.readouterr().out
    assert "calibrated all-minilm-l6-v2 (platt) on nfcorpus dev: " in out and "precision" in out
    scorer = load_scorer("all-minilm-l6-v2", max_length=128, backend="onnx", precision="fp32")
    assert scorer.calibration is not None and scorer.calibration.fitted_on.startswith("nfcorpus dev")
    # another token limit, another calibration: at the default 256 tokens, the one finerank ships
    assert load_scorer("all-minilm-l6-v2", max_length=256, backend="onnx").calibration.fitted_on.startswith(
        "nfcorpus dev, xquad-en dev"
    )
    query = "vitamin D and bone health"
    ranking = Pipeline(first, scorer, candidates=20, top_k=20).search(query)
    threshold = sorted(m.calibrated for m in ranking.model_scores.values())[-5]
    kept = Pipeline(first, scorer, candidates=20, top_k=20).search(query, min_score=threshold)
    assert len(kept.hits) == 5 and all(ranking.model_scores[h.id].calibrated >= threshold for h in kept.hits)
    stored = calibration.location(scorer.model_dir, scorer.calibration_key)
    stored.write_text("{not json")
    with pytest.raises(ModelError, match="is not a finerank calibration"):
        load_scorer("all-minilm-l6-v2", max_length=128, backend="onnx")
    docs = tmp_path / "docs.txt"
    docs.write_text("Vitamin D and bone density.\nBread recipes.\n")
    capsys.readouterr()
    assert main(["-q", "rerank", "--query", query, "--docs", str(docs), *args]) == 1  # the CLI says it in one line
    err = capsys.readouterr().err.strip()
    assert "is not a finerank calibration" in err and "\n" not in err


def test_calibrations_at_two_token_limits_keep_apart_in_a_writable_model_folder(tiny_ce, tmp_path):
    import shutil

    from finerank import CrossEncoder

    folder = shutil.copytree(tiny_ce, tmp_path / "ce")
    fits = {}
    for max_length, a in ((64, 2.0), (128, -3.0)):
        scorer = CrossEncoder(folder, backend="torch", precision="fp32", max_length=max_length)
        path = calibration.save(
            calibration.Calibration("platt", a=a), calibration.location(folder, scorer.calibration_key)
        )
        assert path.parent == folder
        fits[max_length] = path
    assert fits[64] != fits[128]
    for max_length, a in ((64, 2.0), (128, -3.0)):
        assert CrossEncoder(folder, backend="torch", precision="fp32", max_length=max_length).calibration.a == a
    assert CrossEncoder(folder, backend="torch", precision="fp32", max_length=96).calibration is None


@pytest.mark.slow  # loads both shipped models (about 12 s)
def test_the_shipped_calibrations_call_unrelated_passages_unlikely_and_say_they_are_probabilities(tiny_ce):
    """(cosine + 1) / 2 called every passage above 0.9 likely relevant; the shipped calibrations
    do not, and a hit says whether its [0, 1] score is a probability."""
    texts = [
        "Use pd.read_csv() to load comma-separated values into a DataFrame.",
        "Bake bread at 220 degrees.",
        "The Moon's gravity raises the tides.",
    ]
    english = load_scorer("all-minilm-l6-v2", backend="onnx", precision="fp32")
    relevance = english.score("How do I read a CSV file in Python?", texts)
    assert english.calibration is not None and relevance[0] > relevance[1] and max(relevance[1:]) < 0.2
    assert english.squash(english.score("How do I read a CSV file in Python?", texts, raw=True))[1] > 0.5  # the old way
    chinese = load_scorer("multilingual-e5-small", backend="onnx", precision="fp32")
    scores = chinese.score(
        "如何治疗感冒？", ["感冒的治疗方法包括休息和补水。", "今天的足球比赛非常精彩。", "月球引力引起潮汐。"]
    )
    assert chinese.calibration is not None and scores[0] > 0.5 > max(scores[1:])
    index = Index.build([Document(str(i), t) for i, t in enumerate(texts)])
    for scorer, probability in ((english, True), (load_scorer(tiny_ce, backend="onnx"), False)):
        ranking = Pipeline(BM25(index), scorer, candidates=3, top_k=3).search("load comma-separated values")
        assert {m.probability for m in ranking.model_scores.values()} == {probability}
