"""Scorers: models that score texts against a query (cross-encoders, bi-encoders), their
backends (openvino, torch, onnxruntime), model resolution and caches. A scorer only scores:
fusing with a first stage is the pipeline's step (``finerank.fusion.Fusion``)."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .models import BiEncoder, CrossEncoder


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores texts against a query, higher meaning more relevant: one float per
    text, a relevance in [0, 1], or the model's raw score with ``raw=True``; ``calibrate`` maps
    raw scores to the relevance. A text's score never depends on the other texts or their order."""

    name: str

    def score(self, query: str, texts: Sequence[str], *, raw: bool = False) -> np.ndarray: ...

    def calibrate(self, raw: np.ndarray) -> np.ndarray: ...


__all__ = ["BiEncoder", "CrossEncoder", "Scorer"]
