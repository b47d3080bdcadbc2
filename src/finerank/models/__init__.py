"""Scorers: models that score texts against a query, every one a :class:`Scorer`
(``base.py``): cross-encoders and bi-encoders (``models.py``), LLM rerankers (``llm.py``);
their backends (openvino, torch, onnxruntime), model resolution and caches. A scorer only
scores: fusing with a first stage is the pipeline's step (``finerank.fusion.Fusion``)."""

from __future__ import annotations

from .base import Scorer
from .llm import LLMReranker
from .models import BiEncoder, CrossEncoder

__all__ = ["BiEncoder", "CrossEncoder", "LLMReranker", "Scorer"]
