"""Coarse recall, then fine ranking: the one place that composes the stages.

first stage (a Retriever) -> [a cascade's cheap second stage] -> scorer (a cross- or bi-encoder)
-> fusion step (when the second stage fuses with the ranking before it) -> top k, with seconds
per stage. Evaluation, the server and the benchmarks run :class:`Pipeline`; :func:`rerank`
scores a plain list, which has no first stage and so is never fused: its scores do not depend
on the order of the list.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .analysis import UNDETERMINED, language
from .errors import FinerankError, MissingDependencyError, ModelError
from .fusion import Fusion
from .models import Scorer
from .retrievers import Retriever, why_empty
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
            object.__setattr__(
                self,
                "name",
                self.scorer.name if self.fusion is None else f"{self.scorer.name} fused ({self.fusion.name})",
            )

    def route(self, query: str, *, required: bool = False) -> SecondStage:
        """The stage for this query: itself (see :class:`ByLanguage` for one that chooses)."""
        return self


class ByLanguage:
    """A second stage per query language (:func:`finerank.analysis.language`): ``routes`` for
    some languages (English to an English model), ``default`` for every other language in
    ``languages`` (what its model reads; text without letters goes there too). Each stage loads
    at its first use. In a pipeline, a query in a language no stage reads, or whose stage cannot
    load (its extra is not installed), keeps the first stage's order, with a warning, rather than
    being reranked by a model that does not read it; :func:`rerank` raises instead."""

    def __init__(
        self,
        routes: Mapping[str, Callable[[], SecondStage]],
        default: Callable[[], SecondStage],
        languages: Collection[str],
        name: str,
    ):
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

    def mapped(self, make: Callable[[SecondStage], SecondStage]) -> ByLanguage:
        """The same routing over ``make(stage)`` for each of its stages (all loaded now)."""
        made = {key: self._loaded[key] if stage is None else make(stage) for key, stage in self.stages().items()}

        def load(key: str) -> SecondStage:
            if isinstance(made[key], FinerankError):
                raise made[key]
            return made[key]

        return ByLanguage(
            {key: functools.partial(load, key) for key in self.routes},
            functools.partial(load, "*"),
            self.languages,
            self.name,
        )


Reranker = SecondStage | ByLanguage


def second_stage(reranker: Reranker | Scorer) -> Reranker:
    if isinstance(reranker, (SecondStage, ByLanguage)):
        return reranker
    if not isinstance(reranker, Scorer):
        raise TypeError(
            f"a second stage is a finerank.Scorer (subclass it and implement raw_scores), a SecondStage or a "
            f"per-language one; got {type(reranker).__name__}"
        )
    return SecondStage(reranker)


class Pipeline:
    """``first_stage`` recalls ``candidates`` documents, ``reranker`` (a :class:`SecondStage` or
    a bare scorer) reorders them, the best ``top_k`` are returned. Without a reranker the first
    stage's top ``top_k`` come back as they are."""

    def __init__(
        self,
        first_stage: Retriever,
        reranker: Reranker | Scorer | None = None,
        *,
        candidates: int = 100,
        top_k: int = 3,
        cheap: Reranker | Scorer | None = None,
        keep: int = 30,
    ):
        """``cheap`` (with a ``reranker``): a cascade. A cheap second stage (e.g. the bi-encoder
        over the index's stored vectors) reads all candidates and keeps its best ``keep``; only
        those go to ``reranker``, which orders them, fusing (when it fuses) with the cheap
        stage's ranking, the one before it. At most ``keep`` hits come back; each one's
        ``original_rank`` is still its first-stage rank."""
        _check_counts(candidates=candidates)
        self.first_stage, self.candidates = first_stage, candidates
        self.reranking = Reranking(
            reranker,
            top_k=top_k,
            cheap=cheap,
            keep=keep,
            source=first_stage.name,
            vectors=functools.partial(_stored_vectors, first_stage),
        )

    @property
    def second(self) -> Reranker | None:
        return self.reranking.second

    @property
    def top_k(self) -> int:
        return self.reranking.top_k

    @property
    def reranker(self) -> str | None:
        """The second stage's name (a cascade's names both stages); None without one."""
        return self.reranking.reranker

    def search(
        self,
        query: str,
        *,
        filter: Mapping[str, Any] | None = None,
        candidates: int | None = None,
        top_k: int | None = None,
        min_score: float | None = None,
        budget_ms: float | None = None,
    ) -> Ranking:
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
        ranking = self.reranking.rerank(
            query,
            hits,
            top_k=top_k,
            timings=timings,
            min_score=min_score,
            budget_ms=None if budget_ms is None else budget_ms - 1000 * timings["first_stage"],
        )
        if ranking.hits:
            return ranking
        note = (
            why_empty(self.first_stage, query, filter)
            if not hits
            else f"every candidate's model score is below min_score {min_score}"
        )
        return dataclasses.replace(ranking, note=note)

    def search_many(
        self, queries: Sequence[str], *, candidates: int | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """:meth:`search` for several queries, their candidates scored in shared batches."""
        candidates = self.candidates if candidates is None else candidates
        _check_counts(candidates=candidates)
        for query in queries:
            check_query(query)
        k = candidates if self.second else (self.top_k if top_k is None else top_k)
        return self.reranking.rerank_many([(q, self.first_stage.search(q, k)) for q in queries], top_k=top_k)

    def rerank(self, query: str, hits: Sequence[Hit], **options) -> Ranking:
        """The second half of :meth:`search`, for first-stage hits from elsewhere (see
        :meth:`Reranking.rerank`)."""
        return self.reranking.rerank(query, hits, **options)


class Reranking:
    """The second half of a pipeline: hits from any first stage (a :class:`Pipeline`'s
    retriever, a TREC run's, another engine's) scored, fused with their ranks and scores when
    the second stage fuses, and cut to ``top_k``. ``source`` names where the hits come from;
    ``vectors(scorer)``, when given, looks up the documents' stored vectors for a scorer that
    reads them (see :class:`Pipeline`), or returns None. ``cheap`` and ``keep``: a cascade (see
    :class:`Pipeline`)."""

    def __init__(
        self,
        reranker: Reranker | Scorer | None,
        *,
        top_k: int = 3,
        cheap: Reranker | Scorer | None = None,
        keep: int = 30,
        source: str = "run",
        vectors: Callable[[Scorer], Any] | None = None,
    ):
        _check_counts(top_k=top_k, keep=keep)
        self.second = second_stage(reranker) if reranker is not None else None
        self.top_k, self.keep, self.source = top_k, keep, source
        self._lookup = vectors or (lambda scorer: None)
        # the index's lookup of the documents' vectors as the second stage reads them (None: it reads their texts)
        self.stored_vectors = self._lookup(self.second.scorer) if isinstance(self.second, SecondStage) else None
        if cheap is not None and self.second is None:
            raise ValueError("a cascade's cheap stage needs a reranker after it")
        self._cheap = Reranking(cheap, top_k=keep, source=source, vectors=vectors) if cheap is not None else None
        self._pace: dict[int, float] = {}  # id(scorer) -> seconds per candidate it read, as measured here
        self._warned: set[str] = set()  # scorers whose uncalibrated scores met a min_score (said once)

    @property
    def reranker(self) -> str | None:
        """The second stage's name (a cascade's names both stages); None without one."""
        return None if self.second is None else self._named(self.second.name)

    def _named(self, name: str) -> str:
        return f"{self._cheap.second.name} keeps {self.keep}, then {name}" if self._cheap is not None else name

    def rerank(
        self,
        query: str,
        hits: Sequence[Hit],
        *,
        top_k: int | None = None,
        timings: Mapping[str, float] | None = None,
        min_score: float | None = None,
        budget_ms: float | None = None,
    ) -> Ranking:
        """Score, fuse with the hits' ranks and scores when the second stage fuses, cut to top k.
        ``budget_ms``: the time the second stage may take: it reads only as many of the best
        hits as fit, at its pace measured here (never fewer than ``top_k``)."""
        if budget_ms is not None and not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms)):
            raise ValueError(f"budget_ms must be a finite number of milliseconds, got {budget_ms!r}")
        return self.rerank_many(
            [(query, hits)], top_k=top_k, min_score=min_score, timings=[timings or {}], budget_ms=budget_ms
        )[0]

    def rerank_many(
        self,
        requests: Sequence[tuple[str, Sequence[Hit]]],
        *,
        top_k: int | None = None,
        min_score: float | None = None,
        timings: Sequence[Mapping[str, float]] | None = None,
        budget_ms: float | None = None,
    ) -> list[Ranking]:
        """:meth:`rerank` for several (query, hits), the pairs of those sharing a second stage
        scored in shared batches; each ranking's rerank time is its share (by pairs) of its batch's."""
        top_k = self.top_k if top_k is None else top_k
        _check_counts(top_k=top_k)
        for query, _ in requests:
            check_query(query)
        work = []
        for (query, hits), spent in zip(requests, timings or [{} for _ in requests]):
            spent = dict(spent)
            second = self.second.route(query) if self.second is not None else None
            read = list(hits)
            if (
                second is not None and self._cheap is not None
            ):  # the reranker reads, and fuses with, the cheap stage's best
                begin = time.perf_counter()
                read = list(self._cheap.rerank(query, hits).hits)
                spent["cheap"] = time.perf_counter() - begin
            if second is not None and budget_ms is not None:
                read = read[: self._affordable(second.scorer, top_k, budget_ms / 1000 - spent.get("cheap", 0.0))]
            work.append((query, list(hits), read, second, spent))
        scored: dict[int, tuple] = {}
        for second in {id(w[3]): w[3] for w in work if w[3] is not None and w[2]}.values():
            mine = [j for j, w in enumerate(work) if w[3] is second and w[2]]
            start = time.perf_counter()
            for j, result in zip(mine, self._score(second, [(work[j][0], work[j][2]) for j in mine])):
                scored[j] = result
            seconds, pairs = time.perf_counter() - start, sum(len(work[j][2]) for j in mine)
            for j in mine:
                work[j][4]["rerank"] = seconds * len(work[j][2]) / pairs
            self._measured(second.scorer, seconds, pairs, len(mine))
        return [
            self._ranking(query, hits, read if j in scored else hits, second, spent, scored.get(j), top_k, min_score)
            for j, (query, hits, read, second, spent) in enumerate(work)
        ]

    def _affordable(self, scorer: Scorer, top_k: int, seconds: float) -> int | None:
        """How many candidates ``scorer`` reads in ``seconds`` at its pace (None: all, unmeasured)."""
        rate = scorer.pairs_per_second
        pace = self._pace.get(id(scorer)) or (1 / rate if rate else None)
        return max(top_k, int(seconds / pace)) if pace else None  # unmeasured: read them all this once, and measure

    def _measured(self, scorer: Scorer, seconds: float, pairs: int, queries: int) -> None:
        previous, pace = self._pace.get(id(scorer)), seconds / pairs
        if (
            previous is None or pairs / queries >= MIN_PACED
        ):  # a few reads are mostly fixed costs: they do not set the pace
            self._pace[id(scorer)] = pace if previous is None else 0.7 * previous + 0.3 * pace

    def _score(self, second: SecondStage, requests: list[tuple[str, list[Hit]]]) -> list[tuple]:
        """Per request, the raw scores of its hits and each one's best passage."""
        scorer = second.scorer
        vectors = self.stored_vectors if second is self.second else self._lookup(scorer)
        if vectors is not None:  # the index stores this model's reading of each document: only the query is encoded
            return [
                (scorer.score_vectors(q, vectors([h.id for h in hits]), raw=True), [None] * len(hits))
                for q, hits in requests
            ]
        # a long document is read in windows; fusion reads the model's raw scores
        return scorer.score_passages_many([(q, [h.document.content for h in hits]) for q, hits in requests], raw=True)

    def _ranking(
        self,
        query: str,
        candidates: list[Hit],
        hits: list[Hit],
        second: SecondStage | None,
        timings: dict,
        scored: tuple | None,
        top_k: int,
        min_score: float | None,
    ) -> Ranking:
        original = {h.id: h.rank for h in candidates}
        reranked, model_scores = list(hits), {}
        if scored is not None:
            raw, passages = scored
            calibrated = second.scorer.calibrate(raw)
            fusion = second.fusion
            scores = calibrated if fusion is None else fusion(raw, [h.rank for h in hits], [h.score for h in hits])
            reranked = rank([h.document for h in hits], [original[h.id] for h in hits], scores)
            model_scores = {
                h.id: ModelScore(float(r), float(c), p, second.scorer.calibration is not None)
                for h, r, c, p in zip(hits, raw, calibrated, passages)
            }
            if min_score is not None:
                if second.scorer.calibration is None and second.scorer.name not in self._warned:
                    self._warned.add(second.scorer.name)
                    logger.warning(
                        "min_score compares %s's scores, which are not calibrated (no probability of relevance): "
                        "fit a calibration with finerank calibrate",
                        second.scorer.name,
                    )
                reranked = [h for h in reranked if model_scores[h.id].calibrated >= min_score]
        return Ranking(
            query,
            tuple(reranked[:top_k]),
            timings,
            self.source,
            None if second is None else self._named(second.name),
            candidates=tuple(candidates),
            model_scores=model_scores,
        )


def rerank(
    reranker: Reranker | Scorer, query: str, candidates: Sequence[Hit | Document | str], top_k: int | None = None
) -> list[Hit]:
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


def run_reranking(load: Callable, depth: int, source: str = "run") -> Reranking:
    """The reranking of a run's top ``depth`` with the reranker ``load()`` makes (what a Ray
    worker builds once: see :func:`finerank.cluster.map_on_cluster`)."""
    return Reranking(load(), top_k=depth, source=source)


def hits_of_run(scored: Mapping[str, float], documents: Mapping[str, Document] | None, depth: int) -> list[Hit]:
    """One query's run (doc id -> score) as hits, best first in trec_eval's order (score, then
    doc id, descending), cut to ``depth``; documents looked up in ``documents`` (empty ones
    without it)."""
    ranked = sorted(scored, key=lambda d: (scored[d], d), reverse=True)[:depth]
    return [Hit(documents[d] if documents else Document(d, ""), scored[d], r, r) for r, d in enumerate(ranked, 1)]


def rank(
    documents: Sequence[Document], original: Sequence[int], scores: Sequence[float], top_k: int | None = None
) -> list[Hit]:
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
    stored = {
        "model": made_by["model"],
        "document_prefix": made_by["document_prefix"],
        "dimension": made_by["dimension"],
        "max_length": made_by["max_length"],
        "window": made_by.get("window", 0),
        "whole": made_by.get("whole", 0.0),
    }
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


__all__ = [
    "ByLanguage",
    "Pipeline",
    "Reranker",
    "Reranking",
    "SecondStage",
    "as_documents",
    "check_query",
    "hits_of_run",
    "rank",
    "rerank",
    "second_stage",
]
