"""What the framework adapters share, so each stays a thin translation of its framework's types:
scoring a framework's list of texts for a query, with a local finerank second stage or on a
running finerank server, and the score threshold and top-n cut. No framework is imported here.

Locally, the framework's list is a first stage: :class:`~finerank.pipeline.Reranking` scores it and,
when the second stage fuses (``auto`` does), fuses the model's scores with the list's order and
the framework's own scores. A server's ``POST /v2/rerank`` (Cohere v2) scores a plain list: the
model's calibrated scores alone, never fused, as the server does for every client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import FinerankError, MissingDependencyError
from ..pipeline import Reranker, Reranking, check_query, rerank, second_stage
from ..registry import DEFAULT_RERANKER, load_reranker
from ..types import Document, Hit

logger = logging.getLogger(__name__)

API_KEY_VARIABLE = "FINERANK_API_KEY"  # the key when none is given (the server reads the same variable)
RETRY_STATUSES = (429, 503)  # the server's "queue full" and "not available now"
BACKOFF_S = 0.25  # the first wait before a retry; it doubles each time
MAX_WAIT_S = 10.0  # the longest wait a server's Retry-After may ask for

Scores = Sequence[float | None] | None  # a framework's own scores of its list, when it has them


@dataclass(frozen=True)
class Ranked:
    """One text of the caller's list, in the new order. ``score`` is what ranked it (the model's
    calibrated score, or its fusion with the list's order); ``model_score`` the model's calibrated
    relevance in [0, 1], what a score threshold compares. Both are None when the query was not
    scored (no second stage reads its language): the list then keeps its order."""

    index: int  # the position in the caller's list, from 0
    score: float | None
    model_score: float | None


@dataclass(frozen=True)
class Cut:
    """How much of a ranking to keep: the best ``top_n`` (None: all) of the texts whose model score
    reaches ``threshold`` (a text that was not scored stays). ValueError for values that are not these."""

    top_n: int | None = None
    threshold: float | None = None

    def __post_init__(self):
        top_n, threshold = self.top_n, self.threshold
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise ValueError(f"the number of documents to return must be at least 1 (or None for all), got {top_n!r}")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold)
        ):
            raise ValueError(f"score_threshold must be a finite number (or None), got {threshold!r}")

    def __call__(self, ranked: Sequence[Ranked]) -> list[Ranked]:
        kept = [r for r in ranked if self.threshold is None or r.model_score is None or r.model_score >= self.threshold]
        return kept[: self.top_n]


ALL = Cut()
SETTINGS = ("model", "url", "api_key", "timeout", "retries")  # what an adapter passes on to Scoring, by these names


class Scoring:
    """Scores texts for a query with ``model`` (a finerank model name or folder, or a loaded scorer
    or second stage; default ``auto``, which routes each query by its language), loaded at the
    first use or :meth:`warm_up`; or, with ``url``, on the finerank server there, which scores with
    its own model (``model``, a name, is then checked against it). ``api_key`` defaults to
    ``$FINERANK_API_KEY``; a 429 or 503 answer is retried ``retries`` times with a short backoff.
    ``extra`` names the finerank extra that installs what this needs."""

    def __init__(
        self,
        model: Any = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        source: str = "a framework",
        extra: str = "server",
    ):
        local = isinstance(model, (str, os.PathLike)) or model is None
        if url is not None and not isinstance(model, (str, type(None))):
            raise ValueError("with url=, the server scores with its own model: give model as its name, or leave it out")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number of at least 0, got {retries!r}")
        self.model, self.url, self.timeout, self.retries = model, url, timeout, retries
        self.source, self.extra = source, extra
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE)
        self._given: Reranker | None = None if local else second_stage(model)  # a TypeError for what cannot score
        self._reranking: Reranking | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The model's name (the server's address for a server's own model), for events and logs."""
        if self.url is not None:
            return self.model or f"finerank server {self.url}"
        return self._given.name if self._given is not None else str(self.model or DEFAULT_RERANKER)

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/v2/rerank"

    def warm_up(self) -> None:
        """Load the local model now rather than at the first query (nothing to load for a server)."""
        if self.url is None:
            self._local()

    def _local(self) -> Reranking:
        with self._lock:
            if self._reranking is None:
                stage = self._given or load_reranker(DEFAULT_RERANKER if self.model is None else self.model)
                self._reranking = Reranking(stage, source=self.source)
                logger.info("%s: reranking with %s", self.source, self._reranking.reranker)
            return self._reranking

    # --- ranking a framework's list --------------------------------------------------------------

    def rank(self, query: str, texts: Sequence[str], first_scores: Scores = None, cut: Cut = ALL) -> list[Ranked]:
        """The texts best first, as ``cut`` keeps them. ``first_scores``: the framework's own scores of
        the list (its retriever's), which a fusing second stage reads; without them (or with one
        missing) it reads the list's order."""
        if _nothing_to_score(query, texts):
            return []
        return cut(_ordered(self._post(query, texts)) if self.url else self._rank_local(query, texts, first_scores))

    async def arank(
        self, query: str, texts: Sequence[str], first_scores: Scores = None, cut: Cut = ALL
    ) -> list[Ranked]:
        """:meth:`rank` without blocking the event loop: over HTTP with an async client, or locally in a thread."""
        if _nothing_to_score(query, texts):
            return []
        if self.url:
            return cut(_ordered(await self._apost(query, texts)))
        return cut(await asyncio.to_thread(self._rank_local, query, texts, first_scores))

    def _rank_local(self, query: str, texts: Sequence[str], first_scores: Scores) -> list[Ranked]:
        given = list(first_scores) if first_scores is not None else []
        usable = len(given) == len(texts) and all(isinstance(s, (int, float)) and math.isfinite(s) for s in given)
        hits = [
            Hit(Document(str(i), text), float(given[i]) if usable else -float(i + 1), i + 1, i + 1)
            for i, text in enumerate(texts)
        ]
        ranking = self._local().rerank(query, hits, top_k=len(hits))
        scored = ranking.model_scores
        return [
            Ranked(int(h.id), h.score if scored else None, scored[h.id].calibrated if scored else None)
            for h in ranking.hits
        ]

    # --- one score per text, in input order (a cross-encoder's contract) --------------------------

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """The model's calibrated score of each text, in input order, never fused (a plain list)."""
        if _nothing_to_score(query, texts):
            return []
        if self.url:
            return self._post(query, texts)
        result = [0.0] * len(texts)
        for hit in rerank(self._local().second, query, list(texts)):
            result[int(hit.id)] = hit.score
        return result

    def pair_scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (query, text) pair, in input order: the texts of each query scored together."""
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        result = [0.0] * len(pairs)
        for query, positions in by_query.items():
            for i, score in zip(positions, self.scores(query, [pairs[i][1] for i in positions])):
                result[i] = score
        return result

    # --- a finerank server ------------------------------------------------------------------------

    def _request(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"timeout": self.timeout, "headers": headers}

    def _body(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        return {"query": query, "documents": list(texts), **({"model": self.model} if self.model else {})}

    def _post(self, query: str, texts: Sequence[str]) -> list[float]:
        with _httpx(self.extra).Client(**self._request()) as client, self._reaching():
            for attempt in range(self.retries + 1):
                response = client.post(self.endpoint, json=self._body(query, texts))
                if (wait := self._retry_wait(response, attempt)) is None:
                    return self._scores_of(response, len(texts))
                time.sleep(wait)

    async def _apost(self, query: str, texts: Sequence[str]) -> list[float]:
        async with _httpx(self.extra).AsyncClient(**self._request()) as client:
            with self._reaching():
                for attempt in range(self.retries + 1):
                    response = await client.post(self.endpoint, json=self._body(query, texts))
                    if (wait := self._retry_wait(response, attempt)) is None:
                        return self._scores_of(response, len(texts))
                    await asyncio.sleep(wait)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """A connection that fails or times out, as a FinerankError naming the server."""
        httpx = _httpx(self.extra)
        try:
            yield
        except httpx.TransportError as err:
            raise FinerankError(f"cannot reach the finerank server at {self.url}: {err or type(err).__name__}") from err

    def _retry_wait(self, response: Any, attempt: int) -> float | None:
        """Seconds to wait before trying again after a 429 or 503 (the server's Retry-After, when it
        sends one, up to 10 s); None to stop: the answer is final, or no retries are left."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        wait = BACKOFF_S * 2**attempt
        with contextlib.suppress(ValueError):
            wait = min(max(wait, float(response.headers.get("Retry-After", ""))), MAX_WAIT_S)
        logger.warning(
            "the finerank server at %s answered %d; retrying in %.2f s", self.url, response.status_code, wait
        )
        return wait

    def _scores_of(self, response: Any, count: int) -> list[float]:
        """The score of each text, by the index the server answered with (never by its order)."""
        if response.status_code != 200:
            raise FinerankError(
                f"the finerank server at {self.url} answered {response.status_code}: {_message(response)}"
            )
        try:
            answered = [(r["index"], float(r["relevance_score"])) for r in response.json()["results"]]
        except (ValueError, KeyError, TypeError):
            raise FinerankError(
                f"the finerank server at {self.url} answered no rerank results: {response.text[:200]}"
            ) from None
        scores: list[float | None] = [None] * count
        for index, score in answered:
            if not isinstance(index, int) or not 0 <= index < count or scores[index] is not None:
                raise FinerankError(f"the finerank server at {self.url} answered index {index!r} for {count} documents")
            scores[index] = score
        if None in scores:
            raise FinerankError(
                f"the finerank server at {self.url} scored {count - scores.count(None)} of {count} documents"
            )
        return scores


def _nothing_to_score(query: str, texts: Sequence[str]) -> bool:
    """ValueError for an empty query, wherever the texts are scored; True when there are no texts."""
    check_query(query)
    return not texts


def _ordered(scores: Sequence[float]) -> list[Ranked]:
    """Texts by score, ties in input order (as the server orders them)."""
    return [Ranked(i, scores[i], scores[i]) for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i))]


def _message(response: Any) -> str:
    """The server's own message (``{"message": ...}``), else the start of the body."""
    try:
        return str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _httpx(extra: str) -> Any:
    try:
        import httpx
    except ImportError:
        raise MissingDependencyError("httpx", extra) from None
    return httpx
