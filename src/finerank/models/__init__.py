"""Scorers: models that score texts against a query (cross-encoders, bi-encoders), their
backends (openvino, torch, onnxruntime), model resolution and caches. A scorer only scores:
fusing with a first stage is the pipeline's step (``finerank.fusion.Fusion``)."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .llm import LLMReranker
from .models import BiEncoder, CrossEncoder


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores texts against a query, higher meaning more relevant: one float per
    text, a relevance in [0, 1], or the model's raw score with ``raw=True``. A text's score never
    depends on the other texts or their order. finerank's scorers also have ``calibrate(raw)``
    (raw scores to the relevance) and ``score_passages`` (long documents read in windows); a
    pipeline uses them when a scorer has them."""

    name: str

    def score(self, query: str, texts: Sequence[str], *, raw: bool = False) -> np.ndarray: ...


__all__ = ["BiEncoder", "CrossEncoder", "LLMReranker", "Scorer"]
