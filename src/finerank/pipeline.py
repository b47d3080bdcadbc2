"""Coarse recall, then fine ranking: the one place that composes the stages.

first stage (a Retriever) -> [a cascade's cheap second stage] -> scorer (a cross- or bi-encoder)
-> fusion step (when the second stage fuses with the ranking before it) -> top k, with seconds
per stage. Evaluation, the server and the benchmarks run :class:`Pipeline`; :func:`rerank`
scores a plain list, which has no first stage and so is never fused: its scores do not depend
on the order of the list.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Sequence

from .analysis import UNDETERMINED, language
from .errors import FinerankError, MissingDependencyError, ModelError
from .fusion import Fusion
from .models import Scorer
from .retrievers import Retriever
from .types import Document, Hit, ModelScore, Ranking

logger = logging.getLogger(__name__)

MIN_PACED = 10  # candidates a rerank must read for its time to update the measured pace (budget_ms)


@dataclass(frozen=True)
class SecondStage:
    """A scorer and, optionally, how its scores are fused with the first stage's ranking.
    What :func:`finerank.load_reranker` returns; :class:`Pipeline` also takes a bare scorer."""

    scorer: Scorer
    fusion: Fusion | None = None
    name: str = ""

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.scorer.name if self.fusion is None else f"{self.scorer.name} fused ({self.fusion.name})")

    def route(self, query: str, *, required: bool = False) -> "SecondStage":
        """The stage for this query: itself (see :class:`ByLanguage` for one that chooses)."""
        return self


class ByLanguage:
    """A second stage per query language (:func:`finerank.analysis.language`): ``routes`` for
    some languages (English to an English model), ``default`` for every other language in
    ``languages`` (what its model reads; text without letters goes there too). Each stage loads
    at its first use. In a pipeline, a query in a language no stage reads, or whose stage cannot
    load (its extra is not installed), keeps the first stage's order, with a warning, rather than
    being reranked by a model that does not read it; :func:`rerank` raises instead."""

    def __init__(self, routes: Mapping[str, Callable[[], SecondStage]], default: Callable[[], SecondStage],
                 languages: Collection[str], name: str):
        self.routes, self.default, self.languages, self.name = dict(routes), default, frozenset(languages), name
        self._loaded: dict[str, SecondStage | FinerankError] = {}
        self._lock = threading.Lock()

    def route(self, query: str, *, required: bool = False) -> SecondStage | None:
        lang = language(query)
        key = lang if lang in self.routes else "*" if lang in self.languages or lang == UNDETERMINED else lang
        return self._stage(key, lang, required)

    def _stage(self, key: str, lang: str, required: bool = False) -> SecondStage | None:
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = self._load(key, lang)
            stage = self._loaded[key]
        if isinstance(stage, FinerankError):
            if required:
                raise stage
            return None
        return stage

    def _load(self, key: str, lang: str) -> SecondStage | FinerankError:
        if key != "*" and key not in self.routes:
            logger.warning("no second stage of %s reads %s queries: they keep the first stage's order", self.name, lang)
            return ModelError(f"no second stage of {self.name} reads {lang} queries")
        try:
            return (self.default if key == "*" else self.routes[key])()
        except MissingDependencyError as err:
            logger.warning("no second stage for %s queries: %s (they keep the first stage's order)", lang, err)
            return err

    def stages(self) -> dict[str, SecondStage | None]:
        """Every route's stage ("*": the default's), loaded now."""
        return {key: self._stage(key, key) for key in [*self.routes, "*"]}

    def mapped(self, make: Callable[[SecondStage], SecondStage]) -> "ByLanguage":
        """The same routing over ``make(stage)`` for each of its stages (all loaded now)."""
        made = {key: self._loaded[key] if stage is None else make(stage) for key, stage in self.stages().items()}

        def load(key: str) -> SecondStage:
            if isinstance(made[key], FinerankError):
                raise made[key]
            return made[key]

        return ByLanguage({key: functools.partial(load, key) for key in self.routes}, functools.partial(load, "*"), self.languages, self.name)


Reranker = SecondStage | ByLanguage


def second_stage(reranker: "Reranker | Scorer") -> "Reranker":
    if isinstance(reranker, (SecondStage, ByLanguage)):
        return reranker
    if not isinstance(reranker, Scorer):
        raise TypeError(f"a second stage is a finerank.Scorer (subclass it and implement raw_scores), a SecondStage or a "
                        f"per-language one; got {type(reranker).__name__}")
    return SecondStage(reranker)


class Pipeline:
    """``first_stage`` recalls ``candidates`` documents, ``reranker`` (a :class:`SecondStage` or
    a bare scorer) reorders them, the best ``top_k`` are returned. Without a reranker the first
    stage's top ``top_k`` come back as they are."""

    def __init__(self, first_stage: Retriever, reranker: "Reranker | Scorer | None" = None, *, candidates: int = 100, top_k: int = 3,
                 cheap: "Reranker | Scorer | None" = None, keep: int = 30):
        """``cheap`` (with a ``reranker``): a cascade. A cheap second stage (e.g. the bi-encoder
        over the index's stored vectors) reads all candidates and keeps its best ``keep``; only
        those go to ``reranker``, which orders them, fusing (when it fuses) with the cheap
        stage's ranking, the one before it. At most ``keep`` hits come back; each one's
        ``original_rank`` is still its first-stage rank."""
        _check_counts(candidates=candidates, top_k=top_k, keep=keep)
        self.first_stage = first_stage
        self.second = second_stage(reranker) if reranker is not None else None
        self.candidates, self.top_k = candidates, top_k
        self._vectors = _stored_vectors(first_stage, self.second.scorer) if isinstance(self.second, SecondStage) else None
        if cheap is not None and self.second is None:
            raise ValueError("a cascade's cheap stage needs a reranker after it")
        self.keep = keep
        self._cheap = Pipeline(first_stage, cheap, candidates=candidates, top_k=keep) if cheap is not None else None
        self._pace: dict[int, float] = {}  # id(scorer) -> seconds per candidate it read, as measured here

    @property
    def reranker(self) -> str | None:
        """The second stage's name (a cascade's names both stages); None without one."""
        return None if self.second is None else self._named(self.second.name)

    def _named(self, name: str) -> str:
        return f"{self._cheap.second.name} keeps {self.keep}, then {name}" if self._cheap is not None else name

    def search(self, query: str, *, filter: Mapping[str, Any] | None = None, candidates: int | None = None,
               top_k: int | None = None, min_score: float | None = None, budget_ms: float | None = None) -> Ranking:
        """``filter``: see :mod:`finerank.filters`; ``candidates`` / ``top_k`` override the
        pipeline's for this call; ``min_score`` drops hits whose calibrated model score (a
        probability of relevance once the model is calibrated) is below it; ``budget_ms``: the
        reranker reads only as many of the best candidates (the cheap stage's best in a cascade,
        else the first stage's) as fit the time left, at its pace measured on this machine
        (by earlier calls, else by backend tuning; never fewer than ``top_k``)."""
        check_query(query)
        candidates = self.candidates if candidates is None else candidates
        top_k = self.top_k if top_k is None else top_k
        _check_counts(candidates=candidates, top_k=top_k)
        start = time.perf_counter()
        k = candidates if self.second else top_k
        hits = self.first_stage.search(query, k, filter=filter) if filter else self.first_stage.search(query, k)
        timings = {"first_stage": time.perf_counter() - start}
        return self.rerank(query, hits, top_k=top_k, timings=timings, min_score=min_score,
                           budget_ms=None if budget_ms is None else budget_ms - 1000 * timings["first_stage"])

    def rerank(self, query: str, hits: Sequence[Hit], *, top_k: int | None = None, timings: Mapping[str, float] | None = None,
               min_score: float | None = None, budget_ms: float | None = None) -> Ranking:
        """The second half of :meth:`search`, for first-stage hits from elsewhere (a TREC run):
        score, fuse with the hits' ranks and scores when the second stage fuses, cut to top k.
        ``budget_ms``: the time the second stage may take (see :meth:`search`)."""
        check_query(query)
        top_k = self.top_k if top_k is None else top_k
        _check_counts(top_k=top_k)
        if budget_ms is not None and not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms)):
            raise ValueError(f"budget_ms must be a finite number of milliseconds, got {budget_ms!r}")
        timings = dict(timings or {})
        reranked, model_scores, candidates = list(hits), {}, hits
        second = self.second.route(query) if self.second is not None else None
        begin = time.perf_counter()
        original = {h.id: h.rank for h in hits}
        if second is not None and self._cheap is not None:  # the reranker reads, and fuses with, the cheap stage's best
            hits = self._cheap.rerank(query, hits).hits
            timings["cheap"] = time.perf_counter() - begin
        best_first = [h.id for h in hits]
        if second is not None and budget_ms is not None:
            rate = second.scorer.pairs_per_second
            pace = self._pace.get(id(second.scorer)) or (1 / rate if rate else None)
            if pace:  # unmeasured: read them all this once, and measure
                left = budget_ms / 1000 - (time.perf_counter() - begin)
                best_first = best_first[: max(top_k, int(left / pace))]
        if len(best_first) < len(hits):
            read = set(best_first)
            hits = [h for h in hits if h.id in read]  # in the previous stage's order, with its ranks and scores (for fusion)
        if second is not None and hits:
            start = time.perf_counter()
            texts, fusion, scorer = [h.document.content for h in hits], second.fusion, second.scorer
            vectors = self._vectors if second is self.second else _stored_vectors(self.first_stage, scorer)
            if vectors is not None:  # the index stores this model's reading of each document: only the query is encoded
                raw, passages = scorer.score_vectors(query, vectors([h.id for h in hits]), raw=True), [None] * len(hits)
            else:  # a long document is read in windows; fusion reads the model's raw scores
                raw, passages = scorer.score_passages(query, texts, raw=True)
            calibrated = scorer.calibrate(raw)
            scores = calibrated if fusion is None else fusion(raw, [h.rank for h in hits], [h.score for h in hits])
            reranked = rank([h.document for h in hits], [original[h.id] for h in hits], scores)
            model_scores = {h.id: ModelScore(float(r), float(c), p) for h, r, c, p in zip(hits, raw, calibrated, passages)}
            if min_score is not None:
                reranked = [h for h in reranked if model_scores[h.id].calibrated >= min_score]
            timings["rerank"] = time.perf_counter() - start
            previous = self._pace.get(id(second.scorer))
            if previous is None or len(hits) >= MIN_PACED:  # a few reads are mostly fixed costs: they do not set the pace
                pace = timings["rerank"] / len(hits)
                self._pace[id(second.scorer)] = pace if previous is None else 0.7 * previous + 0.3 * pace
        return Ranking(query, tuple(reranked[:top_k]), timings, self.first_stage.name, None if second is None else self._named(second.name),
                       candidates=tuple(candidates), model_scores=model_scores)


def rerank(reranker: "Reranker | Scorer", query: str, candidates: Sequence[Hit | Document | str], top_k: int | None = None) -> list[Hit]:
    """Score a plain list of candidates against ``query`` and return them best first as new Hits.

    The list has no first stage, so a second stage's fusion does not apply: only its scorer
    runs, and each score depends on its own (query, document) pair alone, never on the order
    of the list. Each hit's ``original_rank`` is the candidate's rank in the input (a Hit keeps
    its own ``rank``; a Document or string is ranked by position, from 1). Strings become
    documents whose id is their 0-based input index. Ties keep the input order. The caller's
    list is not changed.
    """
    check_query(query)
    if top_k is not None:
        _check_counts(top_k=top_k)
    documents, original = as_documents(candidates)
    scores = second_stage(reranker).route(query, required=True).scorer.score(query, [d.content for d in documents])
    return rank(documents, original, scores, top_k)


def as_documents(candidates: Sequence[Hit | Document | str]) -> tuple[list[Document], list[int]]:
    """The candidates as Documents, with each one's original (1-based) rank."""
    documents: list[Document] = []
    original: list[int] = []
    for position, candidate in enumerate(candidates):
        if isinstance(candidate, Hit):
            documents.append(candidate.document)
            original.append(candidate.rank)
        elif isinstance(candidate, Document):
            documents.append(candidate)
            original.append(position + 1)
        elif isinstance(candidate, str):
            documents.append(Document(id=str(position), text=candidate))
            original.append(position + 1)
        else:
            raise TypeError(f"candidate {position} is a {type(candidate).__name__}; expected a Hit, Document or str")
    return documents, original


def run_pipeline(load: Callable, candidates: int, name: str = "run") -> "Pipeline":
    """The pipeline that reranks a run's top ``candidates`` with the reranker ``load()`` makes
    (what a Ray worker builds once: see :func:`finerank.cluster.map_on_cluster`)."""
    return Pipeline(RunStage(name), load(), candidates=candidates, top_k=candidates)


class RunStage:
    """Stands for a TREC run as a pipeline's first stage: its hits (:func:`hits_of_run`) are given
    to :meth:`Pipeline.rerank`, never searched."""

    def __init__(self, name: str = "run"):
        self.name = name

    def search(self, query: str, k: int = 10, *, filter=None) -> list[Hit]:
        raise TypeError("a run is searched by query id: pass its hits to Pipeline.rerank")


def hits_of_run(scored: Mapping[str, float], documents: Mapping[str, Document] | None, depth: int) -> list[Hit]:
    """One query's run (doc id -> score) as hits, best first in trec_eval's order (score, then
    doc id, descending), cut to ``depth``; documents looked up in ``documents`` (empty ones
    without it)."""
    ranked = sorted(scored, key=lambda d: (scored[d], d), reverse=True)[:depth]
    return [Hit(documents[d] if documents else Document(d, ""), scored[d], r, r) for r, d in enumerate(ranked, 1)]


def rank(documents: Sequence[Document], original: Sequence[int], scores: Sequence[float], top_k: int | None = None) -> list[Hit]:
    """Hits ordered by score (ties by original rank), cut to ``top_k``."""
    order = sorted(range(len(documents)), key=lambda j: (-scores[j], original[j]))[:top_k]
    return [Hit(documents[j], float(scores[j]), new_rank, original[j]) for new_rank, j in enumerate(order, 1)]


def _stored_vectors(first_stage: Retriever, scorer: Scorer):
    """When the first stage's index stores vectors made as ``scorer`` reads documents (its
    :attr:`~finerank.BiEncoder.vector_reading`: model, document prefix, dimension, max_length,
    window and whole-text share), the index's lookup of stored vectors by id, so candidates are
    not encoded again; otherwise None."""
    index = getattr(first_stage, "index", None)  # a Retriever's index: None for one outside finerank
    made_by = None if index is None else index.params.get("dense")
    if made_by is None or scorer.vector_reading is None:
        return None
    stored = {"model": made_by["model"], "document_prefix": made_by["document_prefix"], "dimension": made_by["dimension"],
              "max_length": made_by["max_length"], "window": made_by.get("window", 0), "whole": made_by.get("whole", 0.0)}
    return index.vectors_of if stored == scorer.vector_reading else None


def check_query(query: str) -> None:
    """ValueError for a query that is empty or not valid Unicode text."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the query holds a lone surrogate or undecodable bytes: not valid Unicode text") from None


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


__all__ = ["ByLanguage", "Pipeline", "Reranker", "RunStage", "SecondStage", "as_documents", "check_query", "hits_of_run", "rank", "rerank",
           "second_stage"]
