import subprocess
import sys

import numpy as np
import pytest

import finerank
from finerank import ModelError, load_encoder, load_reranker, registry


def test_every_analyzer_is_named_and_works():
    assert set(registry.ANALYZERS) == {"auto", "auto-v1", "auto-v2", "chinese", "chinese-v1", "english"}
    for name, analyze in registry.ANALYZERS.items():
        assert registry.analyzer(name) is analyze
        assert "fractur" in analyze("fractures") or "fractures" in analyze("fractures")
        assert analyze("") == []


def test_every_backend_runs_the_same_model(tiny_ce):
    scores = {}
    for name in registry.BACKENDS:
        reranker = registry.load_scorer(tiny_ce, backend=name, precision="fp32")
        assert reranker.backend_name == name
        scores[name] = reranker.score("query", ["a document", "another one"], raw=True)
    for name in registry.BACKENDS:
        np.testing.assert_allclose(scores[name], scores["torch"], atol=1e-4)
    for name in (n for n, backend in registry.BACKENDS.items() if "bf16" in backend.precisions):
        bf16 = registry.load_scorer(tiny_ce, backend=name, precision="bf16")
        np.testing.assert_allclose(bf16.score("query", ["a document"], raw=True), scores["torch"][:1], atol=0.1)


@pytest.mark.slow
def test_every_shipped_model_loads(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert registry.DEFAULT_RERANKER in registry.MODELS
    for name, spec in registry.MODELS.items():
        if isinstance(spec, (registry.PackagedModel, registry.ConvertedModel)):
            assert (spec.locate() / "config.json").is_file()
        elif isinstance(spec, registry.RoutedModel):
            assert all(r in registry.MODELS for r in [*spec.routes.values(), spec.default])
            assert registry.languages_of(name) >= {"en", "zh", "ru", "ar", "hi", "th", "el", "vi"}
        else:
            assert spec.base in registry.MODELS and spec.method in ("rrf", "minmax")
        reranker = registry.load_reranker(name)
        assert reranker.name == name
        for query, relevant, other in (
            ("which bones break most often", "vitamin D and bone fractures", "stock market prices"),
            ("骨折", "维生素D与骨折风险", "股票市场的价格"),
        ):
            stage = reranker.route(query)
            if isinstance(spec, registry.RoutedModel):
                assert stage.name == (spec.default if query == "骨折" else spec.routes["en"])
            assert isinstance(stage, finerank.SecondStage) and isinstance(stage.scorer, finerank.Scorer)
            assert (stage.fusion is not None) == (registry.MODELS[stage.name].kind == "fused")
            if stage.fusion is not None:
                assert (stage.fusion.method, stage.fusion.weight) == (
                    registry.MODELS[stage.name].method,
                    registry.MODELS[stage.name].weight,
                )
            scores = stage.scorer.score(query, [relevant, other])
            assert all(0 <= s <= 1 for s in scores)
            if stage.scorer.name == "multilingual-e5-small" or query.startswith(
                "which"
            ):  # the English model cannot read Chinese
                assert scores[0] > scores[1], (name, query)
    with pytest.raises(finerank.ModelError, match="unknown reranker kind"):
        registry.load_reranker("somewhere", kind="colbert")


def test_a_fusion_given_to_load_reranker_fuses_any_one_model(tiny_ce):
    half = finerank.Fusion("minmax", 0.5)
    folder = registry.load_reranker(tiny_ce, fusion=half)
    assert folder.fusion == half and folder.name == f"{folder.scorer.name} fused (minmax x0.5)"
    entry = registry.load_reranker("minilm-fused", fusion=half)  # a fused entry's own fusion (x0.7) is replaced
    assert entry.fusion == half and entry.scorer.name == "all-minilm-l6-v2"
    with pytest.raises(finerank.ModelError, match="per query language"):
        registry.load_reranker("auto", fusion=half)


def test_public_surface_is_sorted_and_import_is_light():
    assert finerank.__all__ == sorted(finerank.__all__)
    assert all(hasattr(finerank, name) for name in finerank.__all__)
    code = (
        "import sys, finerank; "
        "print(sorted(m for m in ('torch','onnxruntime','openvino','transformers','jieba','bm25s') "
        "if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_a_mistyped_model_name_suggests_the_registered_one(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the network: no hub id can be fetched
    with pytest.raises(ModelError, match=r"did you mean 'all-minilm-l6-v2'.*Registered models: .*finerank train"):
        load_reranker("all-minilm-l6")
    with pytest.raises(ModelError, match=r"Registered models: .*Offline, pass a local model folder"):
        load_encoder("some-org/no-such-model")
