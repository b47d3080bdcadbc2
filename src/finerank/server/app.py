"""The ASGI app: ``create_app()`` loads the model and index once (lifespan), routes map the
de-facto rerank APIs and finerank's search onto :class:`~finerank.server.backend.Service`, and
the document routes onto :class:`~finerank.server.admin.Admin`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..analysis import language
from ..errors import NotFoundError
from ..evaluate import evaluate
from ..highlight import highlight
from ..judgments import Judgments, compare, disagreement, next_query, pool, read_query_log
from ..pipeline import second_stage
from ..registry import DEFAULT_RERANKER, load_reranker
from ..types import Document, Hit, Ranking
from . import errors
from .admin import Admin, unwritable
from .backend import VENDOR_ALIASES, InvalidRequest, Limits, Service
from .schemas import (
    DeleteRequest,
    Health,
    IndexChange,
    InfinityRerankResponse,
    Info,
    JudgmentRequest,
    JudgmentStored,
    ModuleMeta,
    PoolRequest,
    ScoreRequest,
    ScoreResponse,
    SearchRequest,
    SearchResponse,
    StoredDocument,
    TEIResult,
    TextRerankRequest,
    UpsertRequest,
    V1RerankRequest,
    V1RerankResponse,
    V2RerankRequest,
    V2RerankResponse,
    WeaviateRerankResponse,
)

logger = logging.getLogger(__name__)

PAGES = Path(__file__).parent / "pages"  # the search and evaluation pages: plain HTML, CSS and JavaScript, no CDN
# the pages load only their own files (the heat map's cells are coloured by style attributes)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


DEFAULT_LIMITS = Limits()  # frozen, so one shared default is safe

WRITES = ("/v1/documents", "/v1/documents/delete")  # the routes that change the served index


class RequestTimeout:
    """Cancels a request whose response has not started within ``seconds`` and answers 408 (a
    write under way may still land, and the answer says so), so no client waits without end."""

    def __init__(self, app, seconds: float | None):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.seconds:
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, sending), self.seconds)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
            if started:  # the answer was already under way: nothing else can be said
                return
            write = scope["method"] not in ("GET", "HEAD") and scope["path"] in WRITES
            said = (
                "it was cancelled, but a write may still land: read the index before retrying"
                if write
                else "the request was cancelled"
            )
            await errors.error_response(408, f"no answer within {self.seconds:g} s; {said}")(scope, receive, send)


class Unauthorized(Exception):
    """No or a wrong API key (401)."""


def authorize(request: Request) -> None:
    """Raises Unauthorized unless the request carries one of the app's API keys (when it has any);
    ``request.state.user`` is the user that key names (None for the shared key)."""
    keys = request.app.state.api_keys  # key -> user name (None: the shared key)
    request.state.user = None
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare bytes: a header may hold any byte (Starlette decodes it as Latin-1)
    given = token.strip().encode("utf-8", "surrogateescape")
    matched = [user for key, user in keys.items() if secrets.compare_digest(given, key.encode("utf-8"))]
    if scheme.lower() != "bearer" or not matched:
        raise Unauthorized()
    request.state.user = matched[0]


JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


async def read_json(request: Request) -> None:
    """Parse the body as a JSON object, which Starlette keeps for the route to validate; a body
    that is not one is an InvalidRequest naming what is wrong, in the server's error shape."""
    if not (await request.body()).strip():
        raise InvalidRequest("body", "is empty; send a JSON object")
    try:
        value = await request.json()
    except UnicodeDecodeError as err:
        raise InvalidRequest("body", f"not UTF-8 text: {err.reason} at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise InvalidRequest("body", f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise InvalidRequest("body", "JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidRequest("body", f"a JSON {JSON_TYPES[type(value)]} where an object is expected")


def _json_type(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class Guarded(APIRoute):
    """A route behind the API key: the key is checked first, then the body is read as JSON, so
    nothing of a request without the key is parsed and a malformed body is named like any other
    error; a body that does not say it is JSON is refused (415) naming its Content-Type. FastAPI
    reads no body without a Content-Type as JSON (so no cross-site form post can write), except on
    a route that sets ``strict_content_type`` false (:class:`Untyped`)."""

    def get_route_handler(self):
        handle = super().get_route_handler()
        strict = getattr(self, "strict_content_type", False)  # FastAPI versions without the check read any body
        strict = getattr(strict, "value", strict)  # a default is wrapped

        async def guarded(request: Request) -> Response:
            authorize(request)
            if self.body_field is not None:
                await read_json(request)
                content_type = request.headers.get("content-type")
                if content_type is None and strict:
                    raise errors.NotJSON(
                        "content-type", "missing: send the JSON body with Content-Type: application/json"
                    )
                if content_type is not None and not _json_type(content_type):
                    raise errors.NotJSON("content-type", f"{content_type!r} is not JSON: send application/json")
            return await handle(request)

        return guarded


class Untyped(Guarded):
    """A guarded route that reads a body sent without a Content-Type as JSON, for clients that send
    none (Weaviate's reranker module does not); only for routes that change nothing."""

    def get_route_handler(self):
        self.strict_content_type = False
        return super().get_route_handler()


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, whether it declares its length or
    streams it in chunks: the body is counted as it arrives and never read past the limit. A
    client that disconnects before its whole body has come is answered 499 (as nginx logs it):
    nothing reaches it, but the measuring middleware counts it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send, f"body: {int(declared)} bytes; at most {self.max_bytes}")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":  # nobody to answer: one log line, and 499 (nginx's) for /metrics
                logger.info(
                    "%s %s: the client disconnected after %d bytes of the body", scope["method"], scope["path"], size
                )
                gone = errors.error_response(499, "body: the client disconnected before sending all of it", "body")
                return await gone(scope, receive, send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, f"body: more than {self.max_bytes} bytes")
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send, message: str):
        await errors.error_response(413, message, "body")(scope, receive, send)


def create_app(
    reranker: Any = DEFAULT_RERANKER,
    *,
    index: str | os.PathLike | None = None,
    first_stage: str = "bm25",
    api_key: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    reranker_options: dict | None = None,
    reports: Sequence[str | os.PathLike] = (),
    users: Mapping[str, str] | None = None,
    judgments: str | os.PathLike | None = None,
    queries: str | os.PathLike | None = None,
) -> FastAPI:
    """The finerank service. ``reranker`` is a model name/path (loaded at start-up) or a loaded
    reranker; ``index`` an index folder to search (with ``first_stage`` bm25, dense or hybrid)
    and administer; ``reports`` saved ``finerank eval --json`` files the evaluation page lists.
    With ``api_key`` every route but health, metrics, the docs and the pages' own files needs
    ``Authorization: Bearer <api_key>`` (the pages ask for the key); ``users`` (name -> key) are
    keys that also name who judged. With an index, grades given on the search page (or to
    ``/v1/judgments``) go to ``judgments`` (default: ``judgments.jsonl`` in the index folder);
    ``queries``, a file of queries to judge (a query log), feeds the page's "next query"."""
    loaded_reports = read_reports(reports)
    named = list((users or {}).values()) + ([api_key] if api_key else [])
    if len(set(named)) < len(named):
        raise ValueError("two users (or a user and --api-key) share a key: give each judge a key of their own")
    api_keys = {key: name for name, key in (users or {}).items()} | ({api_key: None} if api_key else {})
    store = Judgments(judgments) if judgments else Judgments.of_index(index) if index else None
    to_judge = read_query_log(queries) if queries else []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model = (
            load_reranker(reranker, **(reranker_options or {}))
            if isinstance(reranker, (str, os.PathLike))
            else second_stage(reranker)
        )
        service = await asyncio.to_thread(Service, model, index=index, first_stage=first_stage, limits=limits)
        service.start()
        app.state.service, app.state.admin = service, Admin(service)
        yield
        await service.stop()

    app = FastAPI(
        title="finerank",
        version=__version__,
        lifespan=lifespan,
        description="Rerank (Cohere v1/v2, Jina, TEI, Infinity, Weaviate shapes) and two-stage search.",
    )
    app.state.reports, app.state.api_keys = loaded_reports, api_keys
    app.state.judgments, app.state.to_judge, app.state.disagreements = store, to_judge, {}
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(RequestTimeout, seconds=limits.request_timeout_s)
    app.mount("/static", StaticFiles(directory=PAGES), name="static")

    @app.get("/", include_in_schema=False)
    async def search_page() -> FileResponse:
        return FileResponse(PAGES / "search.html", headers=PAGE_HEADERS)

    @app.get("/eval", include_in_schema=False)
    async def evaluation_page() -> FileResponse:
        return FileResponse(PAGES / "eval.html", headers=PAGE_HEADERS)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, error: Unauthorized):
        response = errors.error_response(401, "missing or wrong API key (Authorization: Bearer <key>)", "authorization")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    app.include_router(_routes())

    @app.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        service: Service = request.app.state.service
        return Health(
            status="ok",
            model=service.model_name,
            index_documents=await asyncio.to_thread(service.documents),
            api_key_required=bool(api_keys),
        )

    # Weaviate's reranker-transformers module waits for GET /.well-known/ready (any 2xx) before it
    # starts, and reads GET /meta; like /health they need no key
    @app.get("/.well-known/ready", status_code=204, response_class=Response, include_in_schema=False)
    @app.get("/.well-known/live", status_code=204, response_class=Response, include_in_schema=False)
    async def ready() -> Response:
        return Response(status_code=204)  # the lifespan has loaded the model before any request is answered

    @app.get("/meta", response_model=ModuleMeta)
    async def meta(request: Request) -> dict:
        return {"model": {"name": request.app.state.service.model_name}}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> str:
        return await asyncio.to_thread(request.app.state.service.metrics)

    return app


REPORT_KEYS = {
    "dataset",
    "split",
    "first_stage_name",
    "reranker_name",
    "first_stage",
    "reranked",
    "per_query",
    "moves",
    "labels",
}


def read_reports(paths: Sequence[str | os.PathLike]) -> list[tuple[str, dict]]:
    """(name, evaluation) for each evaluation in the ``finerank eval --json`` files (one, or a
    list from ``--all``); ValueError naming the file that is not one."""
    reports = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"report {path}: cannot read it as JSON ({err})") from None
        evaluations = data if isinstance(data, list) else [data]
        for i, ev in enumerate(evaluations):
            if not isinstance(ev, dict) or not REPORT_KEYS <= set(ev):
                raise ValueError(
                    f"report {path}: not a `finerank eval --json` report (rerun the evaluation with this version)"
                )
            where = Path(path).name + (f" #{i + 1}" if len(evaluations) > 1 else "")
            pair = f"{ev['first_stage_name']} → {ev['reranker_name'] or 'no reranker'}"
            reports.append((f"{where}: {ev['dataset']} ({ev['split']}), {pair}", ev))
    return reports


def _document_text(document: str | dict, rank_fields: list[str] | None, i: int) -> str:
    if isinstance(document, str):
        return document
    fields = rank_fields or ["text"]
    values = [document[f] for f in fields if isinstance(document.get(f), str)]
    if not values:
        raise InvalidRequest(f"documents[{i}]", f"an object document needs a string field among {fields}")
    return "\n".join(values)


def _routes() -> APIRouter:
    router = APIRouter(route_class=Guarded)

    @router.post("/v1/rerank", response_model=V1RerankResponse, response_model_exclude_none=True)
    async def rerank_v1(body: V1RerankRequest, request: Request) -> dict:
        service: Service = request.app.state.service
        service.check_model(body.model)
        texts = [_document_text(d, body.rank_fields, i) for i, d in enumerate(body.documents)]
        scored = await service.rerank(
            body.query,
            texts,
            top_n=body.top_n,
            raw=body.raw_scores,
            max_chunks_per_doc=body.max_chunks_per_doc,
            instruction=body.instruction,
        )
        results = []
        for i in scored.order:
            result = {"index": i, "relevance_score": float(scored.scores[i])}
            if body.return_documents:
                document = body.documents[i]
                result["document"] = {"text": document} if isinstance(document, str) else document
            results.append(result)
        return {
            "id": uuid.uuid4().hex,
            "model": service.model_name,
            "results": results,
            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
            "usage": {"total_tokens": scored.tokens, "prompt_tokens": scored.tokens},
        }

    @router.post("/v2/rerank", response_model=V2RerankResponse)
    async def rerank_v2(body: V2RerankRequest, request: Request) -> dict:
        service: Service = request.app.state.service
        service.check_model(body.model)
        scored = await service.rerank(
            body.query,
            body.documents,
            top_n=body.top_n,
            raw=body.raw_scores,
            max_tokens_per_doc=body.max_tokens_per_doc,
            max_chunks_per_doc=body.max_chunks_per_doc,
            instruction=body.instruction,
        )
        return {
            "id": uuid.uuid4().hex,
            "results": [{"index": i, "relevance_score": float(scored.scores[i])} for i in scored.order],
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"search_units": 1},
                "tokens": {"input_tokens": scored.tokens},
            },
        }

    @router.post("/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest, request: Request) -> dict:
        """vLLM-style: one score per text of ``text_2``, in input order (the model's calibrated score)."""
        service: Service = request.app.state.service
        service.check_model(body.model)
        texts = [body.text_2] if isinstance(body.text_2, str) else body.text_2
        scored = await service.rerank(body.text_1, texts, instruction=body.instruction)
        return {
            "id": uuid.uuid4().hex,
            "created": int(time.time()),
            "model": service.model_name,
            "data": [{"index": i, "score": float(v)} for i, v in enumerate(scored.scores)],
            "usage": {"total_tokens": scored.tokens, "prompt_tokens": scored.tokens},
        }

    async def rerank_text(body: TextRerankRequest, request: Request):
        """Three APIs share this path; the body's fields tell which, never a guess: ``texts`` is
        TEI's, ``property`` (sent by Weaviate's module with every request) Weaviate's, and
        ``documents`` alone Infinity's."""
        service: Service = request.app.state.service
        service.check_model(body.model)
        weaviate = "property" in body.model_fields_set
        if body.texts is not None and (body.documents is not None or weaviate):
            raise InvalidRequest("texts", "give 'texts' (TEI) or 'documents' (Infinity, Weaviate), not both")
        if body.texts is None and body.documents is None and not weaviate:
            raise InvalidRequest(
                "texts", "give 'texts' (TEI), 'documents' (Infinity) or 'documents' and 'property' (Weaviate)"
            )
        if weaviate and body.documents is None and not (body.property or "").strip():
            raise InvalidRequest("property", "give 'documents', or a 'property' text to score alone")
        texts = body.texts or body.documents or [body.property]
        scored = await service.rerank(
            body.query,
            texts,
            top_n=None if weaviate else body.top_n,
            raw=body.raw_scores,
            max_chunks_per_doc=body.max_chunks_per_doc,
            instruction=body.instruction,
            truncation="refuse" if body.truncate is False else body.truncation_direction.lower(),
            field="texts" if body.texts is not None else "documents" if body.documents is not None else "property",
        )
        scores = [float(v) for v in scored.scores]
        if body.texts is not None:  # TEI: a bare list, best first
            return [
                {"index": i, "score": scores[i], **({"text": texts[i]} if body.return_text else {})}
                for i in scored.order
            ]
        if weaviate:  # every document in input order (its module pairs them by position), or the one score
            if body.documents is None:
                return {"query": body.query, "property": body.property, "score": scores[0]}
            return {"query": body.query, "scores": [{"document": d, "score": v} for d, v in zip(texts, scores)]}
        return {
            "id": uuid.uuid4().hex,
            "created": int(time.time()),
            "model": service.model_name,
            "results": [
                {
                    "index": i,
                    "relevance_score": scores[i],
                    **({"document": texts[i]} if body.return_documents else {}),
                }
                for i in scored.order
            ],
            "usage": {"total_tokens": scored.tokens, "prompt_tokens": scored.tokens},
        }

    router.add_api_route(  # Weaviate's module posts its JSON without a Content-Type
        "/rerank",
        rerank_text,
        methods=["POST"],
        response_model=list[TEIResult] | InfinityRerankResponse | WeaviateRerankResponse,
        response_model_exclude_none=True,
        route_class_override=Untyped,
    )

    @router.post("/v1/search", response_model=SearchResponse)
    async def search(body: SearchRequest, request: Request) -> dict:
        service: Service = request.app.state.service
        ranking = await service.search(
            body.query,
            candidates=body.candidates,
            top_n=body.top_n,
            filter=body.filter,
            rerank=body.rerank,
            first_stage=body.first_stage,
        )
        analyzer = service.index.query_analyzer(body.query)  # the same in every generation of the index

        def shown(h: Hit) -> dict:  # what belongs to the document: the same in both lists
            model = ranking.model_scores.get(h.id)
            within = None
            if model and model.passage:  # the model's best window, a span of title + "\n" + text: as a span of the text
                shift = len(h.document.title) + 1 if h.document.title else 0
                within = (max(0, model.passage[0] - shift), max(0, model.passage[1] - shift))
            return {
                "id": h.id,
                "document": _stored(h.document),
                "model_score": {"raw": model.raw, "calibrated": model.calibrated, "probability": model.probability}
                if model
                else None,
                "highlight": asdict(highlight(h.document.text, body.query, analyzer, within=within)),
            }

        def results() -> tuple[list, list]:  # highlighting reads whole documents: off the event loop, once per document
            lists = (ranking.hits, ranking.candidates[: body.top_n])
            done = {h.id: shown(h) for hits in lists for h in hits}
            return tuple(
                [{**done[h.id], "score": h.score, "rank": h.rank, "original_rank": h.original_rank} for h in hits]
                for hits in lists
            )

        reranked, first = await asyncio.to_thread(results)
        return {
            "query": body.query,
            "first_stage": ranking.first_stage,
            "reranker": ranking.reranker,
            "language": language(body.query),
            "analysis": service.index.query_analysis(body.query),
            "results": reranked,
            "first_stage_results": first,
            "timings_ms": {k: v * 1000 for k, v in ranking.timings.items()},
            "note": ranking.note,
        }

    def judged_store(request: Request) -> tuple[Service, Judgments]:
        service, store = request.app.state.service, request.app.state.judgments
        if store is None or not service.index_path:
            raise InvalidRequest("index", "this server has no index: judgments need one (finerank serve --index DIR)")
        return service, store

    @router.post("/v1/judgments", response_model=JudgmentStored)
    async def judge(body: JudgmentRequest, request: Request) -> dict:
        """Grade one document for a query (0 not relevant, 1 related, 2 relevant, 3 perfect); a
        later grade of the same pair replaces it. Stored at once, safe with other judges."""
        service, store = judged_store(request)
        await asyncio.to_thread(request.app.state.admin.document, body.id)  # 404 naming an unknown id
        try:
            judgment = await asyncio.to_thread(store.add, body.query, body.id, body.grade, request.state.user)
        except ValueError as err:
            field, _, message = str(err).partition(": ")
            raise InvalidRequest(field, message) from None
        except OSError as err:  # the grade was not stored
            raise unwritable(err, f"the judgments {store.path} cannot be written; the grade was not stored") from None
        graded = (await asyncio.to_thread(store.grades)).get(judgment.query, {})
        return asdict(judgment) | {"graded": len(graded)}

    @router.get("/v1/judgments")
    async def judgments_list(request: Request, format: str = "json") -> dict:
        """Every grade (the latest of each pair) as JSON, or ``?format=beir``: the files of a BEIR
        dataset (queries.jsonl, qrels/train.tsv and the held-out qrels/test.tsv) by name."""
        _, store = judged_store(request)
        if format not in ("json", "beir"):
            raise InvalidRequest("format", "json or beir")
        if format == "beir":
            return {"files": await asyncio.to_thread(store.beir_files)}
        judged = await asyncio.to_thread(store.read)
        return {"judgments": [asdict(j) for j in judged], "queries": len({j.query for j in judged})}

    async def both_lists(service: Service, query: str, depth: int, candidates: int = 100) -> Ranking:
        return await service.search(query, candidates=candidates, top_n=depth, filter=None, rerank=True)

    @router.post("/v1/judgments/pool")
    async def judgment_pool(body: PoolRequest, request: Request) -> dict:
        """What to grade for a query: the first stage's and the reranked top ``depth``, interleaved
        (TREC pooling), each with its place in both lists and its grade so far."""
        service, store = judged_store(request)
        ranking = await both_lists(service, body.query, body.depth)
        first = {h.id: h.rank for h in ranking.candidates}
        reranked = {h.id: h.rank for h in ranking.hits}
        grades = (await asyncio.to_thread(store.grades)).get(body.query.strip(), {})
        return {
            "query": body.query,
            "results": [
                {
                    "id": h.id,
                    "document": _stored(h.document),
                    "first_stage_rank": first.get(h.id),
                    "reranked_rank": reranked.get(h.id),
                    "grade": grades.get(h.id),
                }
                for h in pool(ranking, body.depth)
            ],
        }

    @router.get("/v1/judgments/next")
    async def judgment_next(request: Request) -> dict:
        """The next query to judge from the server's query file (serve --queries): of the next
        few not yet judged, the one where the first stage and the reranked lists disagree most."""
        service, store = judged_store(request)
        queries, cache = request.app.state.to_judge, request.app.state.disagreements
        judged = set(await asyncio.to_thread(store.grades))
        for query in [q for q in queries if q not in judged and q not in cache][:8]:
            cache[query] = disagreement(await both_lists(service, query, 10))
        chosen = next_query(queries, judged, cache.get)
        return {
            "query": chosen,
            "disagreement": cache.get(chosen) if chosen else None,
            "left": sum(q not in judged for q in queries),
        }

    @router.get("/v1/judgments/eval")
    async def judgment_eval(request: Request, split: str = "all") -> dict:
        """First stage vs reranked on the judged queries (``split`` all, train or test): nDCG@10,
        Hit@1/3 and the rest, the paired test, the bootstrap interval and what they mean."""
        service, store = judged_store(request)
        if split not in ("all", "train", "test"):
            raise InvalidRequest("split", "all, train (the judged queries trained on) or test (the held-out ones)")
        dataset = await asyncio.to_thread(store.dataset, split)
        rankings = [await both_lists(service, q, 100) for q in dataset.queries.values()]
        return compare(rankings, {dataset.queries[q]: g for q, g in dataset.qrels.items()}) | {
            "model": service.model_name,
            "split": split,
        }

    @router.get("/v1/info", response_model=Info)
    async def info(request: Request) -> dict:
        service: Service = request.app.state.service
        return {
            "model": service.model_name,
            "model_aliases": ["default", *VENDOR_ALIASES],
            "first_stage": service.first_stage_kind if service.index_path else None,
            "first_stages": list(service.first_stages) if service.index_path else [],
            "index_documents": await asyncio.to_thread(service.documents),
            "reports": [name for name, _ in request.app.state.reports]
            + await asyncio.to_thread(judged_report, request),
            "queries_to_judge": len(request.app.state.to_judge),
        }

    def judged_report(request: Request) -> list[str]:
        """The live evaluation of the judged queries, listed after the saved reports (when there are any)."""
        store = request.app.state.judgments
        judged = store.dataset("all").judged if store is not None and request.app.state.service.index_path else 0
        return [f"your judgments: {judged} judged queries, first stage vs reranked (live)"] if judged else []

    @router.get("/v1/reports/{number}")
    async def report(number: int, request: Request) -> dict:
        """A saved report, or (the number after them) the live evaluation of the judged queries."""
        reports = request.app.state.reports
        live = await asyncio.to_thread(judged_report, request)
        if not 0 <= number < len(reports) + len(live):
            raise NotFoundError(f"report: no report {number}; this server has {len(reports) + len(live)}", "number")
        if number < len(reports):
            return reports[number][1]
        service: Service = request.app.state.service
        dataset = request.app.state.judgments.dataset("all", name="your judgments")
        retriever = service.served().search[service.first_stage_kind].first_stage
        ev = await asyncio.to_thread(evaluate, dataset, retriever, service.second)
        return ev.to_json()

    @router.get("/v1/documents/{doc_id:path}", response_model=StoredDocument)
    async def get_document(doc_id: str, request: Request) -> dict:
        return _stored(request.app.state.admin.document(doc_id))

    @router.post("/v1/documents", response_model=IndexChange)
    async def upsert(body: UpsertRequest, request: Request) -> dict:
        documents = [Document(d.id, d.text, d.title, d.metadata) for d in body.documents]
        for i, d in enumerate(documents):
            if not d.content.strip():
                raise InvalidRequest(f"documents[{i}]", "has no text")
        total = await asyncio.to_thread(request.app.state.admin.upsert, documents)
        return {"changed": len(documents), "documents": total}

    @router.post("/v1/documents/delete", response_model=IndexChange)
    async def delete(body: DeleteRequest, request: Request) -> dict:
        total = await asyncio.to_thread(request.app.state.admin.delete, body.ids)
        return {"changed": len(set(body.ids)), "documents": total}

    return router


def _stored(document: Document) -> dict:
    return {"id": document.id, "title": document.title, "text": document.text, "metadata": dict(document.metadata)}
