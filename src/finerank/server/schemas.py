"""Request and response bodies of the rerank APIs finerank speaks (Cohere v1/v2, Jina, TEI,
Infinity, Weaviate's reranker-transformers) and of its own search and index endpoints."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

Document = str | dict[str, Any]


def _surrogate_at(value: Any, path: str) -> str | None:
    """The path of the first string holding a lone surrogate (JSON allows "\\ud800"; UTF-8 does not)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        return next(
            (p for k, v in value.items() if (p := _surrogate_at(k, path) or _surrogate_at(v, f"{path}.{k}"))), None
        )
    elif isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _surrogate_at(v, f"{path}[{i}]"))), None)
    return None


class Request(BaseModel):
    """A request body: every string in it must be valid Unicode (no lone surrogates)."""

    @model_validator(mode="after")
    def _valid_text(self):
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                value = value.model_dump()
            elif isinstance(value, list):
                value = [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
            if (where := _surrogate_at(value, name)) is not None:
                raise ValueError(f"{where} holds a lone surrogate: not valid Unicode text")
        return self


class V1RerankRequest(Request):
    """Cohere v1 and Jina: documents are strings or objects with a ``text`` (or ``rank_fields``)."""

    model: str | None = None
    query: str = Field(min_length=1)
    documents: list[Document] = Field(min_length=1)
    top_n: StrictInt | None = Field(None, ge=1)
    return_documents: bool = False
    rank_fields: list[str] | None = None
    # read a long document as up to N windows (default: the model's setting)
    max_chunks_per_doc: StrictInt | None = Field(None, ge=1, le=32)
    instruction: str | None = None  # an LLM reranker's instruction for this request (its default otherwise)
    raw_scores: bool = False


class V2RerankRequest(Request):
    """Cohere v2: documents are strings; ``max_tokens_per_doc`` cuts each one."""

    model: str | None = None
    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    top_n: StrictInt | None = Field(None, ge=1)
    max_tokens_per_doc: StrictInt | None = Field(None, ge=1)
    # read a long document as up to N windows (default: the model's setting)
    max_chunks_per_doc: StrictInt | None = Field(None, ge=1, le=32)
    instruction: str | None = None  # an LLM reranker's instruction for this request (its default otherwise)
    raw_scores: bool = False


class ScoreRequest(Request):
    """vLLM's score API: ``text_1`` (the query) against each of ``text_2`` (one text or a list)."""

    model: str | None = None
    text_1: str = Field(min_length=1)
    text_2: str | list[str] = Field(min_length=1)
    instruction: str | None = None


class ScoreData(BaseModel):
    index: int
    object: str = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class TextRerankRequest(Request):
    """``POST /rerank``, whose shape its fields tell: TEI (``texts``, answered with a bare list),
    Weaviate's reranker-transformers module (``property``, which it always sends, "" beside its
    ``documents``: answered ``{query, scores}`` in input order; ``property`` alone asks for its
    one score) or Infinity (``documents`` alone, answered with an object)."""

    model: str | None = None
    query: str = Field(min_length=1)
    texts: list[str] | None = Field(None, min_length=1)
    documents: list[str] | None = Field(None, min_length=1)
    property: str | None = None
    top_n: StrictInt | None = Field(None, ge=1)
    # read a long document as up to N windows (default: the model's setting)
    max_chunks_per_doc: StrictInt | None = Field(None, ge=1, le=32)
    instruction: str | None = None  # an LLM reranker's instruction for this request (its default otherwise)
    raw_scores: bool = False
    return_text: bool = False
    return_documents: bool = False
    # TEI's: a text longer than the model reads of it is cut (true, or absent: TEI's --auto-truncate default), or
    # refused with 413 (false); the cut text loses its end ("Right") or its start ("Left"); TEI takes either case
    truncate: bool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"


class V1Result(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None  # as sent (a string document comes back as {"text": ...})


class Usage(BaseModel):
    total_tokens: int
    prompt_tokens: int | None = None


class V1RerankResponse(BaseModel):
    id: str
    model: str
    results: list[V1Result]
    meta: dict[str, Any]
    usage: Usage


class V2Result(BaseModel):
    index: int
    relevance_score: float


class V2RerankResponse(BaseModel):
    id: str
    results: list[V2Result]
    meta: dict[str, Any]


class TEIResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class InfinityResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = None


class InfinityRerankResponse(BaseModel):
    object: str = "rerank"
    id: str
    created: int
    model: str
    results: list[InfinityResult]
    usage: Usage


class WeaviateScore(BaseModel):
    document: str
    score: float


class WeaviateRerankResponse(BaseModel):
    """Weaviate's reranker-transformers: every document's score in input order, or ``property``'s one."""

    query: str
    scores: list[WeaviateScore] | None = None
    property: str | None = None
    score: float | None = None


class ModuleMeta(BaseModel):
    """What ``GET /meta`` tells Weaviate about the module's model."""

    model: dict[str, Any]


class SearchRequest(Request):
    query: str = Field(min_length=1)
    candidates: StrictInt = Field(100, ge=1)
    top_n: StrictInt = Field(3, ge=1)
    filter: dict[str, Any] | None = None
    rerank: bool = True
    first_stage: str | None = None  # bm25, dense or hybrid, among those the server offers (GET /v1/info)


class JudgmentRequest(Request):
    query: str = Field(min_length=1)
    id: str = Field(min_length=1)
    grade: StrictInt = Field(ge=0, le=3)  # 0 not relevant, 1 related, 2 relevant, 3 perfect


class JudgmentStored(BaseModel):
    query: str
    id: str
    grade: int
    user: str | None
    time: float
    graded: int  # documents of this query graded so far


class PoolRequest(Request):
    query: str = Field(min_length=1)
    depth: StrictInt = Field(10, ge=1, le=100)  # from the top of each list


class StoredDocument(BaseModel):
    id: str = Field(min_length=1)
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class Highlight(BaseModel):
    """The passage of the document where most query words are: ``text`` is the document's text
    from ``start`` to ``end`` (characters); ``spans`` mark the matching words within ``text``."""

    text: str
    start: int
    end: int
    spans: list[tuple[int, int]]


class ModelScore(BaseModel):
    """The second stage's model on this document: its raw score and that score in [0, 1], a
    probability of relevance when ``probability`` (the model is calibrated), else only the model's
    own squashing of its score."""

    raw: float
    calibrated: float
    probability: bool


class SearchResult(BaseModel):
    id: str
    score: float  # what the ranking used: the calibrated model score, or its fusion with the first stage
    rank: int
    original_rank: int
    document: StoredDocument
    model_score: ModelScore | None = None  # null when the search was not reranked
    highlight: Highlight


class SearchResponse(BaseModel):
    query: str
    first_stage: str
    reranker: str | None
    language: str  # the query's language (ISO 639-1, "und" without letters): it chose the reranker's route
    analysis: (
        str  # how BM25 analysed the query: the index's analyzer and, for a per-language one, the language it read it as
    )
    results: list[SearchResult]
    first_stage_results: list[SearchResult]  # the first stage's own top ``top_n``, before reranking
    timings_ms: dict[str, float]
    note: str | None = None  # why there are no results, when a reason is known (an unknown filter field, ...)


class Info(BaseModel):
    """What this server offers: its reranker, the first stages a search may choose, the index's
    size, and the evaluation reports it serves."""

    model: str
    model_aliases: list[str]  # other names a request may give the served model (hosted rerankers' names)
    first_stage: str | None
    first_stages: list[str]
    index_documents: int | None
    reports: list[str]
    queries_to_judge: int = 0  # queries of serve --queries, offered one by one for grading


MAX_ID_CHARS = 1000


class NewDocument(StoredDocument):
    """A document to add: an id that can be fetched again (one line, at most 1,000 characters)
    and metadata JSON can store as sent (no NaN or Infinity, which would come back as null)."""

    @model_validator(mode="after")
    def _storable(self):
        if len(self.id) > MAX_ID_CHARS or any(c in self.id for c in "\n\r\x00") or not self.id.strip():
            raise ValueError(f"id must be one line of 1 to {MAX_ID_CHARS} characters (got {len(self.id)} characters)")
        if (where := _non_finite_at(self.metadata, "metadata")) is not None:
            raise ValueError(f"{where} is NaN or infinite, which JSON cannot store")
        return self


def _non_finite_at(value: Any, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _non_finite_at(v, f"{path}.{k}"))), None)
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _non_finite_at(v, f"{path}[{i}]"))), None)
    return None


class UpsertRequest(Request):
    documents: list[NewDocument] = Field(min_length=1)


class DeleteRequest(Request):
    ids: list[str] = Field(min_length=1)


class IndexChange(BaseModel):
    changed: int
    documents: int


class Health(BaseModel):
    status: str
    model: str
    index_documents: int | None
    api_key_required: bool  # the pages ask for the key before their first API call


class ErrorBody(BaseModel):
    message: str
    field: str | None = None
