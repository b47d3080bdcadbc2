"""The values finerank passes around: documents, hits and rankings (frozen, never mutated)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One retrievable unit. Fields other than id, title and text live in ``metadata``."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str:
        """Title and text as one string: what BM25 indexes and what a reranker reads."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class Hit:
    """A document at a position in a ranking.

    ``rank`` is the 1-based position in this ranking; ``original_rank`` the 1-based
    position the document had in the list that was reranked (equal to ``rank`` for a
    first stage).
    """

    document: Document
    score: float
    rank: int
    original_rank: int

    @property
    def id(self) -> str:
        return self.document.id


@dataclass(frozen=True)
class ModelScore:
    """What the second stage's model said of one candidate: its raw score (a logit, a cosine)
    and that score mapped to [0, 1]: a probability of relevance when the model is calibrated
    (``probability``: finerank ships calibrations of its registered models, ``finerank calibrate``
    fits one), else only the model's own squashing (a sigmoid of a logit, (cosine + 1) / 2), which
    orders candidates but is no probability. A hit's own ``score`` is what the ranking used: this
    [0, 1] score, or the fusion of the raw score with the first stage."""

    raw: float
    calibrated: float
    passage: tuple[int, int] | None = (
        None  # the character span of the document's content the model scored best (its best window)
    )
    probability: bool = False  # whether ``calibrated`` is a fitted probability of relevance


@dataclass(frozen=True)
class Ranking:
    """What a pipeline returns for one query: the hits, seconds spent per stage, the first
    stage's candidates in its own order and, when a second stage ran, its model's score of each
    candidate it read, by id (every candidate, unless a cascade's cheap stage or a time budget
    passed it fewer)."""

    query: str
    hits: tuple[Hit, ...]
    timings: Mapping[str, float]
    first_stage: str
    reranker: str | None = None
    candidates: tuple[Hit, ...] = ()
    model_scores: Mapping[str, ModelScore] = field(default_factory=dict)
    note: str | None = None  # why there are no hits, when a reason is known (see finerank.retrievers.why_empty)
