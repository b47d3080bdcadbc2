"""The HTTP service over a real loopback socket: official clients, raw shapes, limits, the index
administration under concurrency, and the OpenAPI spec fuzzed."""

import asyncio
import json
import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import cohere
import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from support import LiveServer

import finerank
from finerank import BM25, Document, Index, Pipeline, first_stage, load_reranker, load_scorer
from finerank.analysis import english
from finerank.server import Limits, create_app
from finerank.server.batching import Batcher, Overloaded

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = "How do I read a CSV file in Python?"
DOCS = [
    "Reading Excel files in Java",
    "Use pd.read_csv() to read the data",
    "Pandas basics tutorial",
    "Bake bread at 220 degrees",
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, scifact_docs):
    docs = [Document(d.id, d.text, d.title, {"group": i % 3}) for i, d in enumerate(scifact_docs[:300])]
    path = tmp_path_factory.mktemp("served") / "idx"
    Index.build(docs).save(path)
    return path


@pytest.fixture(scope="module")
def reference():
    return load_scorer("all-minilm-l6-v2", precision="fp32")


@pytest.fixture(scope="module")
def live(index_dir, reference):
    limits = Limits(max_documents=50, max_document_tokens=300, max_body_bytes=300_000)
    with LiveServer(create_app(reference, index=index_dir, api_key=KEY, limits=limits)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as c:
        yield c


def test_cohere_sdk_v1_and_v2(live, reference):
    expected = reference.score(QUERY, DOCS)
    order = list(np.argsort(-expected, kind="stable"))
    assert order[0] == 1  # pd.read_csv is the answer
    v1 = cohere.Client(api_key=KEY, base_url=live.url).rerank(
        model="all-minilm-l6-v2", query=QUERY, documents=DOCS, top_n=3, return_documents=True
    )
    assert [r.index for r in v1.results] == order[:3]
    assert [r.document.text for r in v1.results] == [DOCS[i] for i in order[:3]]
    np.testing.assert_allclose([r.relevance_score for r in v1.results], expected[order[:3]], atol=1e-4)
    v2 = cohere.ClientV2(api_key=KEY, base_url=live.url).rerank(
        model="all-minilm-l6-v2", query=QUERY, documents=DOCS, top_n=2
    )
    assert [r.index for r in v2.results] == order[:2]
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=live.url).rerank(
            model="all-minilm-l6-v2", query=QUERY, documents=DOCS
        )
    # a client written for Cohere names Cohere's model: the served model answers to it; an unknown name is a 404
    hosted = cohere.ClientV2(api_key=KEY, base_url=live.url).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert [r.index for r in hosted.results] == order
    with pytest.raises(cohere.errors.NotFoundError):
        cohere.ClientV2(api_key=KEY, base_url=live.url).rerank(model="my-typo", query=QUERY, documents=DOCS)


def test_tei_infinity_and_jina_shapes(client, reference):
    expected = reference.score(QUERY, DOCS)
    raw = reference.score(QUERY, DOCS, raw=True)
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    assert isinstance(tei, list) and [r["index"] for r in tei] == list(np.argsort(-expected, kind="stable"))
    assert all(r["text"] == DOCS[r["index"]] for r in tei)
    tei_raw = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    np.testing.assert_allclose([r["score"] for r in tei_raw], np.sort(raw)[::-1], atol=1e-4)
    assert "text" not in tei_raw[0]
    infinity = client.post(
        "/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": True, "top_n": 2}
    ).json()
    assert infinity["object"] == "rerank" and [r["document"] for r in infinity["results"]] == [
        DOCS[1],
        DOCS[infinity["results"][1]["index"]],
    ]
    jina = client.post(
        "/v1/rerank",
        json={
            "model": "all-minilm-l6-v2",
            "query": QUERY,
            "documents": [{"text": d, "source": i} for i, d in enumerate(DOCS)],
            "return_documents": True,
        },
    ).json()
    assert jina["usage"]["total_tokens"] > 0 and jina["results"][0]["document"] == {"text": DOCS[1], "source": 1}
    assert all(0 <= r["relevance_score"] <= 1 for r in jina["results"])
    v2_cut = client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 2}).json()
    assert v2_cut["meta"]["tokens"]["input_tokens"] < jina["usage"]["total_tokens"]


@pytest.mark.parametrize(
    "path, body, status, field",
    [
        ("/v1/rerank", {"query": "", "documents": ["a"]}, 422, "query"),
        ("/v1/rerank", {"query": "q", "documents": []}, 422, "documents"),
        ("/v1/rerank", {"query": "q", "documents": [1, 2]}, 422, "documents.0.str"),
        ("/v1/rerank", {"documents": ["a"]}, 422, "query"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "no text"}]}, 422, "documents[0]"),
        ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 422, "query"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "model": "nope"}, 404, "model"),
        ("/v2/rerank", {"query": "q", "documents": ["a"] * 51}, 413, "documents"),
        ("/v2/rerank", {"query": "q", "documents": ["ok", "word " * 400]}, 413, "documents[1]"),
        (
            "/v2/rerank",
            {"query": "q", "documents": ["ok", "x" * 4000]},
            413,
            "documents[1]",
        ),  # one token, refused by its length
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": True}, 422, "top_n"),
        ("/rerank", {"query": "q"}, 422, "texts"),
        ("/rerank", {"query": "q", "texts": ["a"], "documents": ["b"]}, 422, "texts"),
        ("/v1/search", {"query": "q", "candidates": 5000}, 413, "candidates"),
        ("/v1/search", {"query": "q", "top_n": 1031, "rerank": False}, 413, "top_n"),
        ("/v1/search", {"query": "q", "filter": {"group": {"near": 1}}}, 422, "filter"),
        ("/v1/documents/delete", {"ids": ["no-such-doc"]}, 404, "ids"),
        ("/v1/documents", {"documents": [{"id": "x", "text": " "}]}, 422, "documents[0]"),
        ("/v1/documents", {"documents": [{"id": "two\nlines", "text": "t"}]}, 422, "documents.0"),
        ("/v1/documents", {"documents": [{"id": "x" * 10_001, "text": "t"}]}, 422, "documents.0"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(client, path, body, status, field):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field, response.json()


def test_metadata_json_cannot_store_is_refused(client):
    response = client.post(
        "/v1/documents",
        content=b'{"documents": [{"id": "n", "text": "t", "metadata": {"score": NaN}}]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422 and "metadata.score is NaN" in response.json()["message"], response.text


def test_a_query_with_a_lone_surrogate_is_named(client):
    response = client.post(
        "/v1/search", content=b'{"query": "a \\ud800 b"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["field"] == "query"


def test_oversized_body_and_missing_key(client, live):
    big = client.post("/v1/rerank", json={"query": "q", "documents": ["x" * 1000] * 400})
    assert big.status_code == 413 and big.json()["field"] == "body"
    assert httpx.post(f"{live.url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 401
    assert httpx.get(f"{live.url}/health").json()["api_key_required"] is True  # health and metrics stay open
    metrics = httpx.get(f"{live.url}/metrics").text
    assert (
        'finerank_requests_total{route="/v1/rerank",status="401"}' in metrics
        and "finerank_pairs_scored_total" in metrics
    )
    assert httpx.get(f"{live.url}/docs").status_code == 200


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"query": "q", "documents": [}', "body: malformed JSON at line 1 column 30: Expecting value"),
        (b'{"query": "q",\n  "documents": }', "body: malformed JSON at line 2 column 16: Expecting value"),
        (b'{"query": "caf\xe9", "documents": ["a"]}', "body: not UTF-8 text: invalid continuation byte at byte 14"),
        (b"", "body: is empty; send a JSON object"),
        (b'["q", ["a"]]', "body: a JSON array where an object is expected"),
        (b"[" * 100_000, "body: JSON nested too deeply"),
    ],
    ids=["malformed", "malformed-line-2", "latin-1", "empty", "array", "nested"],
)
def test_a_body_that_is_not_a_json_object_is_named_after_the_key_is_checked(client, live, content, message):
    """Issue 35, defect 16: the key first (nothing of a request without it is parsed), then the
    body's problem in the server's one error shape, field "body", never a character offset or a 500."""
    headers = {"content-type": "application/json"}
    anonymous = httpx.post(f"{live.url}/v1/rerank", content=content, headers=headers)
    assert anonymous.status_code == 401 and anonymous.json()["field"] == "authorization", anonymous.text
    response = client.post("/v1/rerank", content=content, headers=headers)
    assert response.status_code == 422 and response.json() == {"message": message, "field": "body"}, response.text


def test_an_unknown_route_or_method_answers_in_the_same_shape(client):
    missing, wrong = client.get("/v1/no-such-route"), client.get("/v1/rerank")
    assert missing.status_code == 404 and missing.json() == {
        "message": "GET /v1/no-such-route: Not Found",
        "field": None,
    }
    assert wrong.status_code == 405 and wrong.json()["message"] == "GET /v1/rerank: Method Not Allowed"
    assert wrong.headers["allow"] == "POST"


def test_a_client_that_disconnects_mid_body_is_counted_and_leaves_no_traceback(live, caplog):
    """Issue 35, defect 14: a body cut short (Content-Length 100, 15 bytes sent, then the socket
    closed) is one INFO line and a 499 in /metrics (nginx's status for it), not an ASGI traceback."""
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    counted = 'finerank_requests_total{route="unmatched",status="499"} 1'
    try:
        with socket.create_connection((live.sock.getsockname()[0], live.sock.getsockname()[1])) as sock:
            sock.sendall(
                b"POST /v1/rerank HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"query": "q", '
            )
        deadline = time.time() + 10
        while counted not in httpx.get(f"{live.url}/metrics").text and time.time() < deadline:
            time.sleep(0.05)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert counted in httpx.get(f"{live.url}/metrics").text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    said = [r for r in caplog.records if r.name.startswith(("finerank", "uvicorn"))]
    assert len(said) == 1 and said[0].levelno == logging.INFO and "disconnected" in said[0].getMessage(), caplog.text


def test_index_administration_is_a_module_apart_from_serving(tmp_path, scifact_docs):
    """The Service serves (scorers, limits, search); adding, deleting and reading documents by id,
    and the storage errors, are server/admin.py's, whose writes the Service then serves."""
    from fastapi.testclient import TestClient

    from finerank.server.admin import Admin, IndexNotWritable, StorageFull
    from finerank.server.backend import Service

    assert issubclass(StorageFull, IndexNotWritable) and not {"upsert", "delete", "document"} & set(dir(Service))
    path = tmp_path / "idx"
    Index.build(scifact_docs[:5]).save(path)

    class Zero(finerank.Scorer):
        name = "zero"

        def raw_scores(self, requests):
            return np.zeros(sum(len(texts) for _, texts in requests))

    with TestClient(create_app(Zero(), index=path)) as test_client:
        admin = test_client.app.state.admin
        assert isinstance(admin, Admin) and admin.service is test_client.app.state.service
        assert admin.upsert([Document("new", "a zebrafish regenerates its fins")]) == 6
        assert admin.document("new").text == "a zebrafish regenerates its fins"
        found = test_client.post("/v1/search", json={"query": "zebrafish fins", "top_n": 1, "rerank": False}).json()
        assert found["results"][0]["id"] == "new"  # the Service serves the generation the admin saved
        assert admin.delete(["new"]) == 5 and test_client.get("/health").json()["index_documents"] == 5


def test_search_filters_and_index_administration(client, index_dir):
    found = client.post("/v1/search", json={"query": "vitamin D bone fractures", "candidates": 30, "top_n": 5}).json()
    assert [r["rank"] for r in found["results"]] == [1, 2, 3, 4, 5] and set(found["timings_ms"]) == {
        "first_stage",
        "rerank",
    }
    first = {h.id: h.rank for h in BM25(Index.load(index_dir)).search("vitamin D bone fractures", 30)}
    assert all(first[r["id"]] == r["original_rank"] for r in found["results"])
    filtered = client.post(
        "/v1/search", json={"query": "cells", "top_n": 7, "filter": {"group": [1]}, "rerank": False}
    ).json()
    assert len(filtered["results"]) == 7 and all(r["document"]["metadata"]["group"] == 1 for r in filtered["results"])
    unknown = client.post("/v1/search", json={"query": "cells", "filter": {"lang": "en"}, "rerank": False}).json()
    assert (
        unknown["results"] == []
        and unknown["note"] == "no document has the field 'lang': check the filter's field names"
    )

    doc = {
        "id": "new-1",
        "title": "Zebrafish fin regeneration",
        "text": "Zebrafish regenerate fins through blastema formation.",
        "metadata": {"group": 9},
    }
    assert client.post("/v1/documents", json={"documents": [doc]}).json() == {"changed": 1, "documents": 301}
    hits = client.post("/v1/search", json={"query": "zebrafish fin blastema", "top_n": 1}).json()["results"]
    assert hits[0]["id"] == "new-1" and hits[0]["document"]["metadata"] == {"group": 9}
    assert client.get("/v1/documents/new-1").json()["title"] == doc["title"]
    assert BM25(Index.load(index_dir)).search("zebrafish blastema", 1)[0].id == "new-1"  # persisted
    assert client.post("/v1/documents/delete", json={"ids": ["new-1"]}).json() == {"changed": 1, "documents": 300}
    assert client.get("/v1/documents/new-1").status_code == 404
    assert "new-1" not in [h.id for h in BM25(Index.load(index_dir)).search("zebrafish blastema", 5)]


def test_concurrent_add_delete_search_loses_nothing(client, index_dir):
    before = len(Index.load(index_dir))
    victims = [h.id for h in BM25(Index.load(index_dir)).search("cancer", 6)]

    def add(worker):
        for j in range(4):
            d = {"id": f"w{worker}-{j}", "text": f"concurrency marker{worker} item{j} text"}
            assert client.post("/v1/documents", json={"documents": [d]}).status_code == 200

    def remove(doc_id):
        assert client.post("/v1/documents/delete", json={"ids": [doc_id]}).status_code == 200

    def search(_):
        for _ in range(5):
            assert (
                client.post("/v1/search", json={"query": "cancer cells", "top_n": 3, "candidates": 10}).status_code
                == 200
            )

    with ThreadPoolExecutor(8) as pool:
        jobs = (
            [pool.submit(add, w) for w in range(4)]
            + [pool.submit(remove, v) for v in victims]
            + [pool.submit(search, s) for s in range(3)]
        )
        for job in jobs:
            job.result()
    on_disk = Index.load(index_dir)
    assert len(on_disk) == before + 16 - len(victims)
    ids = {d.id for d in on_disk.documents}
    assert all(f"w{w}-{j}" in ids for w in range(4) for j in range(4)) and not ids & set(victims)
    assert client.get("/health").json()["index_documents"] == len(on_disk)


def test_concurrent_requests_share_batches_and_get_their_own_scores(reference):
    """On a server of its own (counters start at zero): 12 concurrent requests, each answered with
    its own scores, in fewer scoring calls than requests; the same load with batching off (a
    zero wait and a batch of one pair at most) takes one call per pair."""
    queries = [f"{QUERY} {i}" for i in range(12)]

    def load(limits):
        with (
            LiveServer(create_app(reference, limits=limits)) as server,
            httpx.Client(base_url=server.url, timeout=60) as c,
        ):
            with ThreadPoolExecutor(12) as pool:
                answers = list(
                    pool.map(
                        lambda q: c.post("/v2/rerank", json={"query": q, "documents": DOCS, "raw_scores": True}).json(),
                        queries,
                    )
                )
            for q, answer in zip(queries, answers):
                got = {r["index"]: r["relevance_score"] for r in answer["results"]}
                np.testing.assert_allclose(
                    [got[i] for i in range(len(DOCS))], reference.score(q, DOCS, raw=True), atol=1e-4
                )
            metrics = c.get("/metrics").text
        return int(
            next(line for line in metrics.splitlines() if line.startswith("finerank_batches_total")).rsplit(" ", 1)[1]
        )

    assert load(Limits(batch_wait_ms=50)) < len(queries)
    assert load(Limits(batch_wait_ms=0, max_batch_pairs=1)) == len(queries) * len(DOCS)  # a pair a call


def test_rerank_scores_do_not_depend_on_input_order(client, reference):
    """Any permutation of the documents gives each document the same score, on every route,
    and one document gets its own score (not 1.0); the default fused second stage too."""
    docs = DOCS + ["CSV stands for comma-separated values", "Python's csv module reads rows"]
    rng = np.random.default_rng(0)
    expected = reference.score(QUERY, docs)
    for _ in range(5):
        order = rng.permutation(len(docs))
        shuffled = [docs[i] for i in order]
        for path, body, key in (
            ("/v1/rerank", {"documents": shuffled}, "relevance_score"),
            ("/v2/rerank", {"documents": shuffled}, "relevance_score"),
            ("/rerank", {"texts": shuffled}, "score"),
        ):
            answer = client.post(path, json={"query": QUERY, **body}).json()
            results = answer if isinstance(answer, list) else answer["results"]
            got = {shuffled[r["index"]]: r[key] for r in results}
            np.testing.assert_allclose([got[d] for d in docs], expected, atol=1e-4)
        scored = client.post("/score", json={"text_1": QUERY, "text_2": shuffled}).json()[
            "data"
        ]  # vLLM's shape, input order
        assert [d["index"] for d in scored] == list(range(len(docs)))
        np.testing.assert_allclose([d["score"] for d in scored], [expected[i] for i in order], atol=1e-4)
    single = client.post("/v1/rerank", json={"query": QUERY, "documents": [DOCS[3]]}).json()["results"][0][
        "relevance_score"
    ]
    assert single == pytest.approx(expected[3], abs=1e-4) and single < 0.9


def test_inputs_that_used_to_give_500s(client, live):
    lone = b'{"query": "q", "documents": ["fine", "bad \\ud800 text"]}'
    for path in ("/v1/rerank", "/v2/rerank"):
        response = client.post(path, content=lone, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "lone surrogate" in response.json()["message"]
    response = client.post(
        "/v1/documents",
        content=b'{"documents": [{"id": "s", "text": "\\udfff"}]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "lone surrogate" in response.json()["message"]
    response = httpx.post(
        f"{live.url}/v1/rerank",
        json={"query": "q", "documents": ["a"]},
        headers={"Authorization": "Bearer clé-ünïcode".encode()},
    )
    assert response.status_code == 401
    # rank_fields and return_documents on an object without a text field: the object comes back as sent
    jina = client.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": [{"body": DOCS[1]}], "rank_fields": ["body"], "return_documents": True},
    )
    assert jina.status_code == 200 and jina.json()["results"][0]["document"] == {"body": DOCS[1]}
    # an id holding a slash can be stored and fetched
    assert client.post("/v1/documents", json={"documents": [{"id": "a/b c", "text": "slashed id"}]}).status_code == 200
    assert client.get("/v1/documents/a/b c").json()["id"] == "a/b c"
    assert client.post("/v1/documents/delete", json={"ids": ["a/b c"]}).status_code == 200


def test_chunked_bodies_are_limited_too(client, live):
    def chunks(total):
        yield b'{"query": "q", "documents": ["'
        for _ in range(total // 65536):
            yield b"x" * 65536
        yield b'"]}'

    response = client.post("/v1/rerank", content=chunks(2_000_000), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"
    small = client.post(
        "/v1/rerank",
        content=iter([b'{"query": "q", ', b'"documents": ["a"]}']),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200


def test_the_server_follows_updates_made_by_the_cli(client, index_dir):
    """An update published by another process is served at once, and the server's own next
    update builds on it instead of discarding it."""
    from finerank.cli import main

    marker = {"_id": "cli-1", "text": "narwhal tusks are sensory organs"}
    added = index_dir.parent / "cli-add.jsonl"
    added.write_text(json.dumps(marker) + "\n")
    assert main(["-q", "index", "--out", str(index_dir), "--add", str(added)]) == 0
    hits = client.post("/v1/search", json={"query": "narwhal tusks", "top_n": 1, "rerank": False}).json()["results"]
    assert hits[0]["id"] == "cli-1"
    assert (
        client.post("/v1/documents", json={"documents": [{"id": "srv-1", "text": "beluga whales sing"}]}).status_code
        == 200
    )
    ids = {d.id for d in Index.load(index_dir).documents}
    assert {"cli-1", "srv-1"} <= ids
    assert client.post("/v1/documents/delete", json={"ids": ["cli-1", "srv-1"]}).status_code == 200


class SlowScorer(finerank.Scorer):
    """A fake scorer for the batcher's plumbing: records each call."""

    def __init__(self):
        self.calls, self.queries = [], []  # per call: how many requests, and their queries

    def raw_scores(self, requests):
        self.calls.append(len(requests))
        self.queries.append([q for q, _ in requests])
        time.sleep(0.05)
        return np.concatenate([np.full(len(texts), float(len(query))) for query, texts in requests])


def test_batcher_groups_requests_and_refuses_when_full():
    async def scenario():
        scorer = SlowScorer()
        batcher = Batcher(scorer, max_wait_ms=20, max_pairs=100, max_queue=50)
        batcher.start()
        results = await asyncio.gather(*(batcher.score("q" * n, ["a", "b"]) for n in range(1, 11)))
        assert [r.tolist() for r in results] == [[float(n), float(n)] for n in range(1, 11)]
        assert sum(scorer.calls) == 10 and len(scorer.calls) < 10
        small = Batcher(SlowScorer(), max_wait_ms=0, max_queue=2)
        small.start()
        outcomes = await asyncio.gather(*(small.score("q", ["a"]) for _ in range(8)), return_exceptions=True)
        assert any(isinstance(o, Overloaded) for o in outcomes) and any(isinstance(o, np.ndarray) for o in outcomes)
        await batcher.stop()
        await small.stop()

    asyncio.run(scenario())


def test_a_large_request_does_not_hold_a_small_one_for_its_whole_length():
    """A request of 10 parts is queued a part at a time: one sent while its first part is scored
    is scored before its second (deterministic: the scorer records the order of its calls)."""

    async def scenario():
        scorer = SlowScorer()
        batcher = Batcher(scorer, max_wait_ms=0, max_pairs=4, part_pairs=4)
        batcher.start()
        large = asyncio.create_task(batcher.score("large", ["t"] * 40))
        while not scorer.calls:  # the first part is being scored
            await asyncio.sleep(0.001)
        small = await batcher.score("sm", ["a", "b"])
        assert small.tolist() == [2.0, 2.0] and (await large).tolist() == [5.0] * 40
        calls = scorer.queries
        assert calls[0] == ["large"] and "sm" in calls[1] and sum(q.count("large") for q in calls) == 10, calls
        await batcher.stop()

    asyncio.run(scenario())


def test_a_request_over_the_work_budget_is_refused(reference):
    from fastapi.testclient import TestClient

    docs = ["word " * 200] * 20  # about 4,000 tokens for the model to read, windows of one each
    with TestClient(create_app(reference, limits=Limits(max_request_tokens=2_000))) as test_client:
        refused = test_client.post("/v1/rerank", json={"query": "q", "documents": docs})
        fits = test_client.post("/v1/rerank", json={"query": "q", "documents": docs[:5]})
    assert (
        refused.status_code == 413 and refused.json()["field"] == "documents" and "tokens" in refused.json()["message"]
    )
    assert fits.status_code == 200


def test_full_queue_answers_429(reference):
    from fastapi.testclient import TestClient

    with TestClient(create_app(reference, limits=Limits(max_queue=0))) as test_client:
        response = test_client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert response.status_code == 429 and "queue is full" in response.json()["message"]


@pytest.mark.slow
def test_openapi_fuzz_never_500(tmp_path, scifact_docs, reference):
    """Every operation, the index administration included, fuzzed from the served spec on a
    server and index of its own: 30 examples per operation, no 5xx."""
    from hypothesis import given

    path = tmp_path / "fuzzed"
    Index.build(scifact_docs[:100]).save(path)
    limits = Limits(max_documents=50, max_document_tokens=300, max_body_bytes=300_000)
    with LiveServer(create_app(reference, index=path, api_key=KEY, limits=limits)) as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {
            "/v1/rerank",
            "/v2/rerank",
            "/rerank",
            "/v1/search",
            "/health",
            "/v1/documents",
            "/v1/documents/delete",
        }
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case):
                case.call_and_validate(base_url=live.url, headers=AUTH, checks=[schemathesis.checks.not_a_server_error])

            check()
    assert len(Index.load(path)) >= 1


def test_search_ranks_as_the_library_pipeline_does(index_dir):
    # a fused second stage reads the first stage's scores (min-max), on the server as in the library
    fused = load_reranker("minilm-fused", precision="fp32")
    query = "vitamin D deficiency and bone fractures"
    expected = Pipeline(BM25(Index.load(index_dir)), fused, candidates=30, top_k=5).search(query)
    with LiveServer(create_app(fused, index=index_dir)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        response = c.post("/v1/search", json={"query": query, "candidates": 30, "top_n": 5}).json()
    found = response["results"]
    assert [h["id"] for h in found] == [h.id for h in expected.hits]
    np.testing.assert_allclose([h["score"] for h in found], [h.score for h in expected.hits], atol=1e-5)
    assert [h["original_rank"] for h in found] == [h.original_rank for h in expected.hits]
    # what the page draws: the first stage's own top 5 beside the reranked top 5, the model's
    # raw and calibrated scores (the ranking fused the raw one), the passage that matched
    assert [(h["id"], h["rank"]) for h in response["first_stage_results"]] == [
        (h.id, h.rank) for h in expected.candidates[:5]
    ]
    for h in found + response["first_stage_results"]:
        model = expected.model_scores[h["id"]]
        assert h["model_score"]["raw"] == pytest.approx(model.raw, abs=1e-5)
        assert h["model_score"]["calibrated"] == pytest.approx(
            float(fused.scorer.calibrate(np.array([model.raw]))[0]), abs=1e-5
        )
        marked = h["highlight"]
        assert h["document"]["text"][marked["start"] : marked["end"]] == marked["text"]
        words = [marked["text"][s:e] for s, e in marked["spans"]]
        assert words and all(set(english(w)) & set(english(query)) for w in words), words


def test_hybrid_search_over_a_dense_index_follows_updates(tmp_path, scifact_docs, reference):
    from finerank.registry import load_encoder

    path = tmp_path / "dense-idx"
    docs = [Document(d.id, d.text, d.title, {"group": i % 3}) for i, d in enumerate(scifact_docs[:60])]
    Index.build(docs, encoder=load_encoder()).save(path)
    with (
        LiveServer(create_app(reference, index=path, first_stage="hybrid")) as server,
        httpx.Client(base_url=server.url, timeout=60) as c,
    ):
        found = c.post("/v1/search", json={"query": "regrowing fins in fish", "top_n": 3, "rerank": False}).json()
        assert found["first_stage"].startswith("hybrid(minmax") and len(found["results"]) == 3
        assert found["first_stage_results"] == found["results"] and all(
            h["model_score"] is None for h in found["results"]
        )
        # a request may choose any first stage the index offers
        assert c.get("/v1/info").json()["first_stages"] == ["bm25", "dense", "hybrid"]
        dense = c.post(
            "/v1/search", json={"query": "regrowing fins in fish", "top_n": 3, "first_stage": "dense"}
        ).json()
        expected = first_stage(Index.load(path), "dense", load_encoder()).search("regrowing fins in fish", 100)
        assert dense["first_stage"].startswith("dense(") and [h["id"] for h in dense["first_stage_results"]] == [
            h.id for h in expected[:3]
        ]
        doc = {
            "id": "new-1",
            "text": "Zebrafish regenerate amputated fins through blastema formation.",
            "metadata": {"group": 1},
        }
        assert c.post("/v1/documents", json={"documents": [doc]}).json() == {"changed": 1, "documents": 61}
        # the new document is searchable at once, through both halves of the hybrid, and filters apply
        hits = c.post(
            "/v1/search", json={"query": "regrowing fins in fish", "top_n": 3, "rerank": False, "filter": {"group": 1}}
        ).json()["results"]
        assert hits[0]["id"] == "new-1" and all(h["document"]["metadata"]["group"] == 1 for h in hits)
        # reranked by the bi-encoder that made the stored vectors: it reads them (nothing is batched for
        # the model) and scores as if it had encoded the documents itself
        ranked = c.post("/v1/search", json={"query": "regrowing fins in fish", "top_n": 3}).json()["results"]
        assert ranked[0]["id"] == "new-1"
        assert abs(ranked[0]["score"] - reference.score("regrowing fins in fish", [doc["text"]])[0]) < 5e-3
        assert "finerank_batches_total 0" in c.get("/metrics").text
        assert c.post("/v1/documents/delete", json={"ids": ["new-1"]}).json()["documents"] == 60
    reloaded = Index.load(path)
    assert len(reloaded) == 60 and len(reloaded.vectors.vectors) == 60


def test_info_first_stage_choice_and_reports_are_checked(client, tmp_path, capsys):
    from finerank.cli import main
    from finerank.server.app import read_reports

    info = client.get("/v1/info").json()
    assert info["first_stages"] == ["bm25"] and info["reports"] == [] and info["model"] == "all-minilm-l6-v2"
    refused = client.post("/v1/search", json={"query": "cells", "first_stage": "dense"})
    assert (
        refused.status_code == 422 and refused.json()["field"] == "first_stage" and "bm25" in refused.json()["message"]
    )
    assert client.get("/v1/reports/0").status_code == 404
    bad = tmp_path / "bad.json"
    for content, problem in (
        ("{not json", "cannot read it as JSON"),
        ('{"dataset": "x"}', "not a `finerank eval --json` report"),
        (b"\xff\xfe", "cannot read it as JSON"),
    ):
        bad.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError, match=f"report {bad}: {re.escape(problem)}"):
            read_reports([bad])
    # the CLI says it in one line, before serving anything
    assert main(["-q", "serve", "--reranker", "all-minilm-l6-v2", "--report", str(bad)]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_counts_follow_another_writer_and_an_unwritable_index_is_named(tmp_path, scifact_docs, reference, monkeypatch):
    """/health, /v1/info and /metrics count what is on disk after another process's update,
    without a search first; a write the disk refuses is a JSON 503 (507 when it is full) and the
    index is left as it was."""
    import errno

    from fastapi.testclient import TestClient

    path = tmp_path / "idx"
    Index.build(scifact_docs[:20]).save(path)
    with TestClient(create_app(reference, index=path)) as test_client:
        assert test_client.get("/health").json()["index_documents"] == 20
        Index.edit(path, add=[Document("other-writer", "added by another process")])  # the CLI, say
        assert test_client.get("/health").json()["index_documents"] == 21
        assert test_client.get("/v1/info").json()["index_documents"] == 21
        assert "finerank_index_documents 21" in test_client.get("/metrics").text
        for error, status in (
            (PermissionError(errno.EACCES, "Permission denied"), 503),
            (OSError(errno.ENOSPC, "No space left on device"), 507),
        ):
            # the patched edit runs within this iteration, before the next one patches it again: no late binding
            edit = classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(error))  # noqa: B023
            monkeypatch.setattr(Index, "edit", edit)
            response = test_client.post("/v1/documents", json={"documents": [{"id": "x", "text": "new"}]})
            assert response.status_code == status and response.json()["field"] == "index", response.text
            assert error.strerror in response.json()["message"] and "nothing was changed" in response.json()["message"]
        monkeypatch.undo()
        assert len(Index.load(path)) == 21


def test_a_request_not_answered_in_time_gets_a_408():
    """The plain server cancels what it has not answered within request_timeout_s (the Ray front
    already did): a scorer that takes 3 s against a limit of 0.2 s."""
    from fastapi.testclient import TestClient

    class Stuck(finerank.Scorer):
        name = "stuck"

        def raw_scores(self, requests):
            time.sleep(3)
            return np.zeros(sum(len(texts) for _, texts in requests))

    with TestClient(create_app(Stuck(), limits=Limits(request_timeout_s=0.2))) as test_client:
        response = test_client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert response.status_code == 408 and "no answer within 0.2 s" in response.json()["message"]
        assert test_client.get("/health").status_code == 200  # the server goes on answering
