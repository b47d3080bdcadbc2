"""The server as the rerank service of search engines and vector databases, over real SciFact text.

None of these engines runs here, so each test does what the engine does, and says where each
part comes from:

- what an engine's official client builds (the ``elasticsearch`` and ``opensearch-py`` clients
  build the endpoint/connector definitions and the search; LlamaIndex's and Haystack's TEI
  components build the rerank call itself) is built by that client, sent to a recording server;
- the rerank call that the engine itself makes (Elasticsearch's inference service, OpenSearch's
  ml-commons connector, Weaviate's Go module) is built here from the definition the client sent,
  following the engine's source, cited at each step; the request templates are copied from the
  engine's documentation, with only the URL, the key and the model name changed.

Each test asserts the answer's shape as the engine reads it, that the scores are the model's own,
and that the judged document, which BM25 (standing in for the engine's first stage) ranks below
others, comes first.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import LiveServer

from finerank import Index, first_stage, load_scorer, read_corpus, read_queries
from finerank.server import create_app

KEY = "engine-key"
# SciFact test claims whose judged abstract BM25 finds in its top 10 but does not rank first
QUERIES = ("36", "54", "72")
WINDOW = 10  # the engine's rank_window_size: BM25's top 10 are reranked


@pytest.fixture(scope="module")
def reference():
    return load_scorer("all-minilm-l6-v2", precision="fp32")


@pytest.fixture(scope="module")
def claims(datasets):
    """(query, [(doc id, text)] BM25's top WINDOW, judged ids) per claim of QUERIES."""
    folder = datasets / "scifact"
    queries = read_queries(folder / "queries.jsonl")
    judged: dict[str, set[str]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, doc, _ = line.split("\t")
        judged.setdefault(q, set()).add(doc)
    bm25 = first_stage(Index.build(list(read_corpus(folder))), "bm25")
    found = []
    for q in QUERIES:
        hits = bm25.search(queries[q], WINDOW)
        assert hits[0].id not in judged[q] and judged[q] & {h.id for h in hits}, q  # reranking has work to do
        found.append((queries[q], [(h.id, h.document.text) for h in hits], judged[q]))
    return found


@pytest.fixture(scope="module")
def expected(reference):
    """The model's own scores of the texts for the query (computed once), which the engine must get."""

    @functools.cache
    def scores(query: str, texts: tuple[str, ...], raw: bool = False) -> np.ndarray:
        return reference.score(query, list(texts), raw=raw)

    return scores


@pytest.fixture(scope="module")
def live(reference):
    with LiveServer(create_app(reference, api_key=KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def open_live(reference):
    """Without an API key: Weaviate's module sends none."""
    with LiveServer(create_app(reference)) as server:
        yield server


@pytest.fixture
def recorder():
    """A stand-in for the engine's REST API: records what its official client sends and answers
    as the engine acknowledges it (with the header the Elasticsearch client checks for)."""
    sent: list[tuple[str, str, dict | None]] = []

    async def record(request: Request) -> JSONResponse:
        body = await request.body()
        sent.append((request.method, request.url.path, json.loads(body) if body else None))
        return JSONResponse({"acknowledged": True}, headers={"X-Elastic-Product": "Elasticsearch"})

    methods = ["GET", "PUT", "POST", "DELETE"]
    with LiveServer(Starlette(routes=[Route("/{path:path}", record, methods=methods)])) as server:
        server.sent = sent
        yield server


def assert_judged_first(scores: dict[int, float], candidates, judged, expected, query) -> None:
    """Every candidate scored, each with the model's own score, and the judged one best."""
    texts = [text for _, text in candidates]
    assert sorted(scores) == list(range(len(candidates)))
    np.testing.assert_allclose([scores[i] for i in range(len(texts))], expected(query, tuple(texts)), atol=1e-4)
    assert candidates[max(scores, key=scores.get)][0] in judged


# --- Elasticsearch: the inference API's custom and cohere services, used by text_similarity_reranker ----------

# elastic/elasticsearch-specification, specification/inference/put_custom/examples/request/PutCustomRequestExample2.yaml
# ("Custom rerank task (Cohere APIv2)")
ES_CUSTOM_COHERE = {
    "secret_parameters": {"api_key": "<api key>"},
    "url": "https://api.cohere.com/v2/rerank",
    "headers": {"Authorization": "bearer ${api_key}", "Content-Type": "application/json"},
    "request": '{"documents": ${input}, "query": ${query}, "model": "rerank-v3.5"}',
    "response": {
        "json_parser": {"reranked_index": "$.results[*].index", "relevance_score": "$.results[*].relevance_score"}
    },
}
# the same repository, specification/inference/put_custom/examples/PutCustomRequestExample4.yaml ("Custom rerank
# task (Jina AI)")
ES_CUSTOM_JINA = {
    "secret_parameters": {"api_key": "<api key>"},
    "url": "https://api.jina.ai/v1/rerank",
    "headers": {"Content-Type": "application/json", "Authorization": "Bearer ${api_key}"},
    "request": '{"model": "jina-reranker-v2-base-multilingual","query": ${query},"documents":${input}}',
    "response": {
        "json_parser": {"relevance_score": "$.results[*].relevance_score", "reranked_index": "$.results[*].index"}
    },
}


def text_similarity_reranker(query: str, inference_id: str) -> dict:
    """elastic/elasticsearch, docs/reference/elasticsearch/rest-apis/retrievers/text-similarity-reranker-retriever.md
    ("Example: Cohere Rerank"), with this query, this endpoint and BM25's top WINDOW."""
    return {
        "text_similarity_reranker": {
            "retriever": {"standard": {"query": {"match": {"text": query}}}},
            "field": "text",
            "inference_id": inference_id,
            "inference_text": query,
            "rank_window_size": WINDOW,
        }
    }


def es_custom_request(settings: dict, query: str, documents: list[str]) -> tuple[str, dict, str]:
    """The URL, headers and body Elasticsearch's custom service sends for a rerank task
    (x-pack/plugin/inference/.../services/custom/request/CustomRequest.java and RerankParameters.java):
    in the body ``${input}`` is the documents and ``${query}`` the query, as JSON (CustomRequestTests
    shows ``"query": "query string"``), and secret parameters are JSON too; in the URL and the
    headers secret parameters are plain strings. A placeholder left unfilled is an error there
    (ValidatingSubstitutor), a KeyError here."""
    secrets = settings.get("secret_parameters", {})

    def fill(template: str, values: dict) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], template)

    in_body = {k: json.dumps(v) for k, v in secrets.items()} | {
        "input": json.dumps(documents),
        "query": json.dumps(query),
    }
    headers = {"Content-Type": "application/json"} | {
        k: fill(v, secrets) for k, v in settings.get("headers", {}).items()
    }
    return fill(settings["url"], secrets), headers, fill(settings["request"], in_body)


def json_path(value, path: str) -> list:
    """The values at a path of the form ``$.results[*].index`` (what the custom service's
    json_parser paths read, services/custom/response/RerankResponseParser.java)."""
    values = [value]
    for part in path.removeprefix("$.").split("."):
        values = [v[part.removesuffix("[*]")] for v in values]
        if part.endswith("[*]"):
            values = [item for v in values for item in v]
    return values


@pytest.mark.parametrize("example", [ES_CUSTOM_COHERE, ES_CUSTOM_JINA], ids=["cohere-v2", "jina"])
def test_elasticsearch_custom_service(example, recorder, live, claims, reference, expected):
    from elasticsearch import Elasticsearch

    host = re.match(r"https://[^/]+", example["url"]).group(0)
    model = re.search(r'"model": ?"([^"]+)"', example["request"]).group(1)
    settings = example | {
        "secret_parameters": {"api_key": KEY},
        "url": example["url"].replace(host, live.url),
        "request": example["request"].replace(model, reference.name),
    }
    es = Elasticsearch(recorder.url)
    es.inference.put_custom(
        task_type="rerank", custom_inference_id="finerank", service="custom", service_settings=settings
    )
    method, path, endpoint = recorder.sent[-1]
    assert (method, path) == ("PUT", "/_inference/rerank/finerank") and endpoint["service"] == "custom"
    for query, candidates, judged in claims:
        es.search(index="scifact", retriever=text_similarity_reranker(query, "finerank"))
        retriever = recorder.sent[-1][2]["retriever"]["text_similarity_reranker"]
        assert retriever["inference_id"] == "finerank" and retriever["rank_window_size"] == WINDOW
        # Elasticsearch reranks the `field` of the first stage's top rank_window_size hits against inference_text
        url, headers, body = es_custom_request(
            endpoint["service_settings"], retriever["inference_text"], [text for _, text in candidates]
        )
        response = httpx.post(url, headers=headers, content=body.encode(), timeout=60)
        assert response.status_code == 200, response.text
        parser = endpoint["service_settings"]["response"]["json_parser"]
        indexes = json_path(response.json(), parser["reranked_index"])
        scores = json_path(response.json(), parser["relevance_score"])
        assert len(indexes) == len(scores) == WINDOW  # RerankResponseParser: one index per score
        # calibrated, in [0, 1]: the retriever's normalisation (max(s, 0) + min(exp(s), 1), in the doc above) keeps
        # their order, and no score is negative
        assert all(0 <= s <= 1 for s in scores)
        assert_judged_first(dict(zip(indexes, scores)), candidates, judged, expected, query)


# elastic/elasticsearch-specification, specification/inference/put_cohere/examples/request/PutCohereRequestExample2.yaml
# ("A rerank task"); `url` is a service setting of the cohere service (services/cohere/CohereCommonServiceSettings.java)
ES_COHERE = {
    "service": "cohere",
    "service_settings": {"api_key": "Cohere-API-key", "model_id": "rerank-english-v3.0"},
    "task_settings": {"top_n": 10, "return_documents": True},
}


def es_cohere_request(endpoint: dict, query: str, documents: list[str]) -> tuple[dict, dict]:
    """The headers and body of Elasticsearch's cohere rerank request (services/cohere/request/v2/
    CohereV2RerankRequest.java, v1 alike): model, query, documents, then the task settings'
    return_documents and top_n; a bearer key (CohereRequest.decorateWithAuthHeader)."""
    settings, task = endpoint["service_settings"], endpoint.get("task_settings", {})
    body = {"model": settings["model_id"], "query": query, "documents": documents}
    body |= {k: task[k] for k in ("return_documents", "top_n", "max_chunks_per_doc") if k in task}
    return {"Authorization": f"Bearer {settings['api_key']}", "Content-Type": "application/json"}, body


def es_cohere_results(text: str) -> list[tuple[int, float, str | None]]:
    """(index, relevance_score, document text) as Elasticsearch reads a Cohere rerank answer
    (services/cohere/response/CohereRankedResponseEntity.java): a field it does not know in a
    result is an error there."""
    parsed = []
    for result in json.loads(text)["results"]:
        assert set(result) <= {"index", "relevance_score", "document"}, result
        document = result.get("document")
        parsed.append((result["index"], result["relevance_score"], document["text"] if document else None))
    return parsed


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_elasticsearch_cohere_service_with_a_url(version, recorder, live, claims, reference, expected):
    from elasticsearch import Elasticsearch

    settings = ES_COHERE["service_settings"] | {"api_key": KEY, "model_id": reference.name}
    # the whole URL, used as it is where CohereAccount.of takes model.uri() (services/cohere/CohereAccount.java; the
    # newest source keeps the override for tests only); v1 is what endpoints stored with api_version V1 call
    settings["url"] = f"{live.url}/{version}/rerank"
    Elasticsearch(recorder.url).inference.put_cohere(
        task_type="rerank",
        cohere_inference_id="finerank-cohere",
        service="cohere",
        service_settings=settings,
        task_settings=ES_COHERE["task_settings"],
    )
    endpoint = recorder.sent[-1][2]
    for query, candidates, judged in claims:
        texts = [text for _, text in candidates]
        headers, body = es_cohere_request(endpoint, query, texts)
        response = httpx.post(endpoint["service_settings"]["url"], headers=headers, json=body, timeout=60)
        assert response.status_code == 200, response.text
        results = es_cohere_results(response.text)
        # return_documents: v1 answers with each document's text; Cohere's v2 API has no documents in its answer
        assert len(results) == WINDOW and all(d == (texts[i] if version == "v1" else None) for i, _, d in results)
        assert [s for _, s, _ in results] == sorted((s for _, s, _ in results), reverse=True)
        assert_judged_first({i: s for i, s, _ in results}, candidates, judged, expected, query)


# --- OpenSearch: an ml-commons connector with the Cohere rerank pre- and post-processing ----------------------

# opensearch-project/ml-commons, docs/tutorials/rerank/rerank_pipeline_with_Cohere_Rerank_model.md, step 1
OPENSEARCH_CONNECTOR = {
    "name": "cohere-rerank",
    "description": "The connector to Cohere reanker model",
    "version": "1",
    "protocol": "http",
    "credential": {"cohere_key": "your_cohere_api_key"},
    "parameters": {"model": "rerank-english-v2.0"},
    "actions": [
        {
            "action_type": "predict",
            "method": "POST",
            "url": "https://api.cohere.ai/v1/rerank",
            "headers": {"Authorization": "Bearer ${credential.cohere_key}"},
            "request_body": '{ "documents": ${parameters.documents}, "query": "${parameters.query}", '
            '"model": "${parameters.model}", "top_n": ${parameters.top_n} }',
            "pre_process_function": "connector.pre_process.cohere.rerank",
            "post_process_function": "connector.post_process.cohere.rerank",
        }
    ],
}
# the same tutorial, step 2.2: the search pipeline whose rerank processor calls the model
OPENSEARCH_PIPELINE = {
    "description": "Pipeline for reranking with Cohere Rerank model",
    "response_processors": [
        {
            "rerank": {
                "ml_opensearch": {"model_id": "your_model_id_created_in_step1"},
                "context": {"document_fields": ["passage_text"]},
            }
        }
    ],
}


def escape_json(text: str) -> str:
    """A string parameter as ml-commons puts it between the template's quotes (ConnectorUtils.
    escapeRemoteInferenceInputData: parameters that are not JSON already are JSON-escaped)."""
    return json.dumps(text)[1:-1]


def ml_commons_request(connector: dict, query: str, documents: list[str]) -> tuple[str, dict, str]:
    """What ml-commons sends for a predict with this connector: the cohere rerank pre-process
    function (connector/functions/preprocess/CohereRerankPreProcessFunction.java) makes the
    parameters query, documents (as JSON) and top_n (the number of documents); the connector's own
    parameters join them; then ${parameters.*} and ${credential.*} are filled in."""
    action = connector["actions"][0]
    parameters = connector["parameters"] | {
        "query": escape_json(query),
        "documents": json.dumps(documents),
        "top_n": str(len(documents)),
    }
    values = {f"parameters.{k}": str(v) for k, v in parameters.items()}
    values |= {f"credential.{k}": v for k, v in connector["credential"].items()}

    def fill(template: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], template)

    headers = {k: fill(v) for k, v in action["headers"].items()}
    headers.setdefault("Content-Type", "application/json")  # ConnectorUtils.buildSdkRequest adds it when absent
    return fill(action["url"]), headers, fill(action["request_body"])


class JavaDouble(float):
    """A JSON number with a fraction or an exponent: what json-smart (ml-commons' JsonPath) reads as a Double."""


def ml_commons_similarities(text: str) -> list[float]:
    """The cohere rerank post-process function (connector/functions/postprocess/
    CohereRerankPostProcessFunction.java) over ``$.results`` (MLPostProcessFunction): each result's
    ``index`` is cast to Integer and its ``relevance_score`` to Double, and scores[index] is the
    similarity of the index-th document, in input order, for as many documents as results."""
    results = json.loads(text, parse_float=JavaDouble)["results"]
    scores: list[float | None] = [None] * len(results)
    for result in results:
        assert type(result["index"]) is int and isinstance(result["relevance_score"], JavaDouble), result
        scores[result["index"]] = result["relevance_score"]
    assert None not in scores
    return scores


def test_opensearch_connector_with_cohere_rerank_processing(recorder, live, claims, reference, expected):
    from opensearchpy import OpenSearch

    connector = OPENSEARCH_CONNECTOR | {
        "credential": {"cohere_key": KEY},
        "parameters": {"model": reference.name},
        "actions": [OPENSEARCH_CONNECTOR["actions"][0] | {"url": f"{live.url}/v1/rerank"}],
    }
    client = OpenSearch(hosts=[recorder.url])
    client.plugins.ml.create_connector(body=connector)
    assert recorder.sent[-1][:2] == ("POST", "/_plugins/_ml/connectors/_create")
    created = recorder.sent[-1][2]
    client.search_pipeline.put(id="rerank_pipeline_cohere", body=OPENSEARCH_PIPELINE)
    fields = recorder.sent[-1][2]["response_processors"][0]["rerank"]["context"]["document_fields"]
    for query, candidates, judged in claims:
        # the tutorial's search (step 2.2): the rerank processor reads query_text and each hit's document_fields
        client.search(
            index="my-test-data",
            params={"search_pipeline": "rerank_pipeline_cohere"},
            body={"query": {"match_all": {}}, "ext": {"rerank": {"query_context": {"query_text": query}}}},
        )
        query_text = recorder.sent[-1][2]["ext"]["rerank"]["query_context"]["query_text"]
        hits = [{fields[0]: text} for _, text in candidates]
        url, headers, body = ml_commons_request(created, query_text, [hit[fields[0]] for hit in hits])
        response = httpx.post(url, headers=headers, content=body.encode(), timeout=60)
        assert response.status_code == 200, response.text
        similarities = ml_commons_similarities(response.text)
        assert len(similarities) == len(hits)  # top_n = every document, as the pre-process function asks
        assert_judged_first(dict(enumerate(similarities)), candidates, judged, expected, query)


# --- Weaviate: the reranker-transformers module -------------------------------------------------------------


def weaviate_rank_input(query: str, documents: list[str]) -> bytes:
    """weaviate/weaviate, modules/reranker-transformers/clients/ranker.go: ``json.Marshal(RankInput{Query,
    Documents})``, whose ``property`` field has no omitempty, so it is always sent (""), after the
    query and the documents; the module sends at most 32 documents a request (maxDocuments)."""
    return json.dumps({"query": query, "documents": documents, "property": ""}, separators=(",", ":")).encode()


def test_weaviate_reranker_transformers(open_live, claims, reference, expected):
    # clients/startup.go: WaitForStartup polls GET /.well-known/ready until a status <= 299;
    # clients/ranker_meta.go: GET /meta, unmarshalled into a map
    assert httpx.get(f"{open_live.url}/.well-known/ready").status_code <= 299
    assert httpx.get(f"{open_live.url}/.well-known/live").status_code <= 299
    meta = httpx.get(f"{open_live.url}/meta").json()
    assert isinstance(meta, dict) and meta["model"]["name"] == reference.name
    for query, candidates, judged in claims:
        texts = [text for _, text in candidates]
        # clients/ranker.go performRank: POST {origin}/rerank, no key, the body above
        response = httpx.post(f"{open_live.url}/rerank", content=weaviate_rank_input(query, texts), timeout=60)
        assert response.status_code == 200, response.text
        answer = response.json()  # RankResponse: query, scores [{document, score}], property, score, error
        assert answer["query"] == query and "error" not in answer
        # toRankResult appends the scores as they come, and Weaviate pairs them with its objects by position
        assert [s["document"] for s in answer["scores"]] == texts
        assert_judged_first(
            {i: s["score"] for i, s in enumerate(answer["scores"])}, candidates, judged, expected, query
        )
    # weaviate/reranker-transformers, smoke_tests.py testRerank: `property` alone is scored alone
    query, candidates, _ = claims[0]
    one = httpx.post(f"{open_live.url}/rerank", json={"query": query, "property": candidates[0][1]}, timeout=60).json()
    assert one["property"] == candidates[0][1]
    assert one["score"] == pytest.approx(float(expected(query, (candidates[0][1],))[0]), abs=1e-4)


def test_a_body_without_content_type_is_read_only_where_a_client_sends_none(open_live):
    """Weaviate's module posts its JSON with no Content-Type (ranker.go sets none), so /rerank, which
    changes nothing, reads such a body; elsewhere FastAPI's strict check stands, and its refusal says why."""
    body = json.dumps({"query": "q", "documents": ["a"]}).encode()
    assert httpx.post(f"{open_live.url}/rerank", content=body).status_code == 200
    for headers in ({}, {"Content-Type": "text/plain"}):
        refused = httpx.post(f"{open_live.url}/v1/rerank", content=body, headers=headers)
        assert refused.status_code == 415 and refused.json()["field"] == "content-type", refused.text
    plain = httpx.post(f"{open_live.url}/rerank", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415


@pytest.mark.parametrize(
    "body, shape",
    [
        ({"texts": ["a", "b"]}, "tei"),
        ({"documents": ["a", "b"]}, "infinity"),
        ({"documents": ["a", "b"], "property": ""}, "weaviate"),
        ({"documents": ["a", "b"], "model": "all-minilm-l6-v2"}, "infinity"),
    ],
)
def test_one_rerank_path_tells_the_shapes_apart_by_their_fields(body, shape, open_live):
    answer = httpx.post(f"{open_live.url}/rerank", json={"query": "q", **body}, timeout=60).json()
    told = "tei" if isinstance(answer, list) else "weaviate" if "scores" in answer else "infinity"
    assert told == shape, answer


# --- TEI clients: LlamaIndex's TextEmbeddingInference postprocessor and Haystack's HuggingFaceTEIRanker --------


def test_llama_index_tei_postprocessor(live, claims, expected):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    # its auth_token is sent as the whole Authorization header (base.py _call_api)
    rerank = TextEmbeddingInference(base_url=live.url, top_n=3, auth_token=f"Bearer {KEY}", timeout=60)
    for query, candidates, judged in claims:
        nodes = [
            NodeWithScore(node=TextNode(text=text, id_=doc), score=float(WINDOW - i))
            for i, (doc, text) in enumerate(candidates)
        ]
        kept = rerank.postprocess_nodes(nodes, query_str=query)
        assert len(kept) == 3 and kept[0].node.node_id in judged
        model = expected(query, tuple(text for _, text in candidates))
        np.testing.assert_allclose([n.score for n in kept], np.sort(model)[::-1][:3], atol=1e-4)


def test_haystack_tei_ranker_sync_async_and_raw_scores(live, claims, expected):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    ranker = HuggingFaceTEIRanker(url=live.url, top_k=3, token=Secret.from_token(KEY), timeout=60)
    raw = HuggingFaceTEIRanker(url=live.url, top_k=WINDOW, token=Secret.from_token(KEY), raw_scores=True, timeout=60)
    for query, candidates, judged in claims:
        documents = [Document(id=doc, content=text) for doc, text in candidates]
        ranked = ranker.run(query=query, documents=documents)["documents"]
        assert len(ranked) == 3 and ranked[0].id in judged
        assert [d.id for d in asyncio.run(ranker.run_async(query=query, documents=documents))["documents"]] == [
            d.id for d in ranked
        ]
        by_id = {d.id: d.score for d in raw.run(query=query, documents=documents)["documents"]}
        model = expected(query, tuple(text for _, text in candidates), raw=True)
        np.testing.assert_allclose([by_id[doc] for doc, _ in candidates], model, atol=1e-4)


def test_tei_truncation_is_honoured(live, claims, reference):
    """A claim's judged abstract after 400 words of other abstracts: cut on the right (TEI's default
    direction, the model's own reading) the model never sees it; cut on the left it does; not cut
    (truncate: false) it is refused, as TEI refuses an input longer than the model takes."""
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker, TruncationDirection

    (query, candidates, judged), (_, others, _) = claims[1], claims[2]
    judged_text = next(text for doc, text in candidates if doc in judged)
    filler = " ".join(" ".join(text for _, text in others).split()[:400])
    long = f"{filler} {' '.join(judged_text.split()[:120])}"
    distractors = [text for doc, text in candidates if doc not in judged]
    documents = [Document(id="long", content=long)] + [
        Document(id=str(i), content=t) for i, t in enumerate(distractors)
    ]
    ranker = HuggingFaceTEIRanker(url=live.url, top_k=WINDOW, token=Secret.from_token(KEY), timeout=60)

    right = ranker.run(query=query, documents=documents)["documents"]  # Haystack sends no truncate fields
    assert right[0].id != "long"
    assert {d.id: d.score for d in right}["long"] == pytest.approx(float(reference.score(query, [long])[0]), abs=1e-4)
    left = ranker.run(query=query, documents=documents, truncation_direction=TruncationDirection.LEFT)["documents"]
    assert left[0].id == "long"  # sent as {"truncate": true, "truncation_direction": "Left"}

    # huggingface/text-embeddings-inference, router/src/http/types.rs RerankRequest: query, texts, truncate,
    # truncation_direction ("Left"/"left", "Right"/"right"), raw_scores, return_text
    auth = {"Authorization": f"Bearer {KEY}"}
    refused = httpx.post(
        f"{live.url}/rerank",
        headers=auth,
        json={"query": query, "texts": [distractors[0], long], "truncate": False},
        timeout=60,
    )
    assert refused.status_code == 413 and refused.json()["field"] == "texts[1]", refused.text
    short = [" ".join(t.split()[:60]) for t in distractors[:2]]  # abstracts cut to fit the model
    fits = httpx.post(
        f"{live.url}/rerank",
        headers=auth,
        json={"query": query, "texts": short, "truncate": False},
        timeout=60,
    )
    assert fits.status_code == 200 and len(fits.json()) == 2
    lower = httpx.post(
        f"{live.url}/rerank",
        headers=auth,
        json={"query": query, "texts": [long], "truncation_direction": "left"},
        timeout=60,
    )
    assert lower.json()[0]["score"] == pytest.approx({d.id: d.score for d in left}["long"], abs=1e-6)
    wrong = httpx.post(
        f"{live.url}/rerank",
        headers=auth,
        json={"query": query, "texts": [long], "truncation_direction": "Up"},
        timeout=60,
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "truncation_direction"


# --- docs/integrations.md: the engines' examples ------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
VITAMIN_D = "Does vitamin D prevent fractures in the elderly?"
VITAMIN_D_DOCS = [  # the documents of the frameworks' examples above them
    "Fracture risk in older adults: vitamin D alone did not lower it in a large trial.",
    "Vitamin D with calcium reduced hip fractures among elderly women in care homes.",
    "Vitamin C and the common cold: a review of supplement trials.",
]


def engine_examples(url: str) -> tuple[list[dict], str]:
    """The JSON examples of the docs' engines section, and its Weaviate environment's URL, with the
    placeholders filled in."""
    section = DOCS.read_text(encoding="utf-8").split("## Search engines and vector databases", 1)[1]
    section = section.replace("http://finerank:8000", url).replace("<finerank api key>", KEY)
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, flags=re.S)]
    return blocks, re.search(r"RERANKER_INFERENCE_API: (\S+)", section)[1]


def test_the_docs_engine_examples_work(live, open_live, reference):
    blocks, _ = engine_examples(live.url)
    kinds = {
        "custom" if b.get("service") == "custom" else "cohere" if b.get("service") else "opensearch": b for b in blocks
    }
    assert sorted(kinds) == ["cohere", "custom", "opensearch"] and len(blocks) == 3
    expected = reference.score(VITAMIN_D, VITAMIN_D_DOCS)

    url, headers, body = es_custom_request(kinds["custom"]["service_settings"], VITAMIN_D, VITAMIN_D_DOCS)
    answer = httpx.post(url, headers=headers, content=body.encode(), timeout=60).json()
    parser = kinds["custom"]["service_settings"]["response"]["json_parser"]
    custom = dict(zip(json_path(answer, parser["reranked_index"]), json_path(answer, parser["relevance_score"])))

    headers, body = es_cohere_request(kinds["cohere"], VITAMIN_D, VITAMIN_D_DOCS)
    response = httpx.post(kinds["cohere"]["service_settings"]["url"], headers=headers, json=body, timeout=60)
    cohere = {i: s for i, s, _ in es_cohere_results(response.text)}

    url, headers, body = ml_commons_request(kinds["opensearch"], VITAMIN_D, VITAMIN_D_DOCS)
    response = httpx.post(url, headers=headers, content=body.encode(), timeout=60)
    opensearch = dict(enumerate(ml_commons_similarities(response.text)))

    _, weaviate_url = engine_examples(open_live.url)
    answer = httpx.post(f"{weaviate_url}/rerank", content=weaviate_rank_input(VITAMIN_D, VITAMIN_D_DOCS)).json()
    weaviate = {i: s["score"] for i, s in enumerate(answer["scores"])}

    for scores in (custom, cohere, opensearch, weaviate):
        np.testing.assert_allclose([scores[i] for i in range(3)], expected, atol=1e-4)
        assert min(scores, key=scores.get) == 2  # the common cold review last (the SciFact tests above judge more)
