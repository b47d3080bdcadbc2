"""The framework components (finerank.integrations) in each framework's own pipeline: its BM25
retriever over SciFact, then finerank, gaining nDCG@10 over the retriever alone; the async path;
a live finerank server with its API key; the caller's objects untouched; and each framework's
own conventions (LangChain's CrossEncoderReranker, LlamaIndex's rerank events, Haystack's
serialisation). Each framework's tests skip where it is not installed."""

import asyncio
import copy
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # Haystack would try to send usage data

import finerank  # noqa: E402
from finerank.errors import FinerankError  # noqa: E402
from finerank.evaluate import load_dataset  # noqa: E402
from finerank.metrics import ndcg  # noqa: E402

QUERIES = 30  # SciFact test queries whose nDCG@10 is compared
DISTRACTORS = 1000  # documents no chosen query is judged relevant to, beside those that are
CANDIDATES = 10  # what each framework's retriever returns; finerank reorders them all
AGAIN = 5  # queries the async path and the server answer again
KEY = "integration-key"
pytestmark = pytest.mark.filterwarnings("ignore:`langchain-community` is being sunset:DeprecationWarning")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


class Overlap(finerank.Scorer):
    """A scorer of one's own (words shared with the query)."""

    name = "overlap"

    def raw_scores(self, requests):
        return [len(set(tokens(q)) & set(tokens(t))) for q, texts in requests for t in texts]


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


# --- each framework's own pipeline: its retriever, then finerank --------------------------------


class LangChain:
    """BM25Retriever -> ContextualCompressionRetriever(FinerankRerank)."""

    def __init__(self, documents: list[finerank.Document]):
        pytest.importorskip("rank_bm25")
        BM25Retriever = pytest.importorskip("langchain_community.retrievers").BM25Retriever
        from langchain_core.documents import Document

        self.retriever = BM25Retriever.from_documents(
            [Document(page_content=d.content, metadata={"id": d.id}, id=d.id) for d in documents], k=CANDIDATES
        )

    def component(self, **options):
        from finerank.integrations.langchain import FinerankRerank

        return FinerankRerank(**{"top_n": CANDIDATES, **options})

    def retrieve(self, query: str) -> list:
        return self.retriever.invoke(query)

    def apply(self, component, query: str, retrieved: list) -> list[tuple[str, float | None]]:
        return self.ranked(component.compress_documents(retrieved, query))

    def pipeline(self, **options):
        from langchain_classic.retrievers import ContextualCompressionRetriever

        chain = ContextualCompressionRetriever(base_compressor=self.component(**options), base_retriever=self.retriever)

        async def arun(query):
            return self.ranked(await chain.ainvoke(query))

        return lambda query: self.ranked(chain.invoke(query)), arun

    @staticmethod
    def ranked(documents) -> list[tuple[str, float | None]]:
        return [(d.metadata["id"], d.metadata.get("relevance_score")) for d in documents]

    key = staticmethod(lambda key: key)


class LlamaIndex:
    """A BM25 retriever (LlamaIndex's BaseRetriever over rank_bm25) -> RetrieverQueryEngine with
    FinerankRerank as its node postprocessor (no LLM: the engine returns the source nodes)."""

    def __init__(self, documents: list[finerank.Document]):
        rank_bm25 = pytest.importorskip("rank_bm25")
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, TextNode

        nodes = [TextNode(text=d.text, id_=d.id, metadata={"title": d.title}) for d in documents]

        class BM25(BaseRetriever):
            def __init__(self):
                super().__init__()
                self.index = rank_bm25.BM25Okapi([tokens(n.get_content(metadata_mode="embed")) for n in nodes])

            def _retrieve(self, query_bundle):
                scores = self.index.get_scores(tokens(query_bundle.query_str))
                best = sorted(range(len(nodes)), key=lambda i: -scores[i])[:CANDIDATES]
                return [NodeWithScore(node=nodes[i], score=float(scores[i])) for i in best]

        self.retriever = BM25()

    def component(self, **options):
        from finerank.integrations.llama_index import FinerankRerank

        return FinerankRerank(**{"top_n": CANDIDATES, **options})

    def retrieve(self, query: str) -> list:
        return self.retriever.retrieve(query)

    def apply(self, component, query: str, retrieved: list) -> list[tuple[str, float | None]]:
        return self.ranked(component.postprocess_nodes(retrieved, query_str=query))

    def pipeline(self, **options):
        from llama_index.core.llms.mock import MockLLM
        from llama_index.core.query_engine import RetrieverQueryEngine
        from llama_index.core.response_synthesizers.no_text import NoText

        engine = RetrieverQueryEngine(
            self.retriever, response_synthesizer=NoText(llm=MockLLM()), node_postprocessors=[self.component(**options)]
        )

        async def arun(query):
            return self.ranked((await engine.aquery(query)).source_nodes)

        return lambda query: self.ranked(engine.query(query).source_nodes), arun

    @staticmethod
    def ranked(nodes) -> list[tuple[str, float | None]]:
        return [(n.node.id_, n.score) for n in nodes]

    key = staticmethod(lambda key: key)


class Haystack:
    """Pipeline: InMemoryBM25Retriever over an InMemoryDocumentStore -> FinerankRanker."""

    def __init__(self, documents: list[finerank.Document]):
        from haystack import Document
        from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        self.store = InMemoryDocumentStore()
        self.store.write_documents([Document(id=d.id, content=d.text, meta={"title": d.title}) for d in documents])
        self.retriever = lambda: InMemoryBM25Retriever(
            self.store, top_k=CANDIDATES
        )  # one per pipeline, as Haystack asks

    def component(self, **options):
        from finerank.integrations.haystack import FinerankRanker

        return FinerankRanker(**{"top_k": CANDIDATES, "meta_fields_to_embed": ["title"], **options})

    def retrieve(self, query: str) -> list:
        return self.retriever().run(query=query)["documents"]

    def apply(self, component, query: str, retrieved: list) -> list[tuple[str, float | None]]:
        return self.ranked(component.run(query, retrieved)["documents"])

    def pipeline(self, **options):
        from haystack import Pipeline

        pipeline = Pipeline()
        pipeline.add_component("retriever", self.retriever())
        pipeline.add_component("ranker", self.component(**options))
        pipeline.connect("retriever.documents", "ranker.documents")
        data = lambda query: {"retriever": {"query": query}, "ranker": {"query": query}}

        async def arun(query):
            return self.ranked((await pipeline.run_async(data(query)))["ranker"]["documents"])

        return lambda query: self.ranked(pipeline.run(data(query))["ranker"]["documents"]), arun

    @staticmethod
    def ranked(documents) -> list[tuple[str, float | None]]:
        return [(d.id, d.score) for d in documents]

    @staticmethod
    def key(key):
        from haystack.utils import Secret

        return Secret.from_token(key)


FRAMEWORKS = {"langchain": ("langchain_classic", LangChain), "llama_index": ("llama_index.core", LlamaIndex),
              "haystack": ("haystack", Haystack)}  # fmt: skip


@pytest.fixture(scope="module")
def scifact(datasets):
    """The first SciFact test queries, their judgments, and a corpus of the documents judged for
    them beside distractors."""
    dataset = load_dataset(datasets / "scifact", max_queries=QUERIES)
    judged = {d for judgments in dataset.qrels.values() for d in judgments}
    corpus = list(finerank.read_corpus(datasets / "scifact"))
    documents = [d for d in corpus if d.id in judged] + [d for d in corpus if d.id not in judged][:DISTRACTORS]
    return dataset, documents


@pytest.fixture(scope="module")
def reranker():
    """``auto``, loaded once and shared (the components also load it by name: see the docs test);
    it remembers embeddings, so the three frameworks read the same documents once."""
    return finerank.load_reranker(cache_size=100_000)


@pytest.fixture(scope="module")
def unfused():
    """The model ``auto`` reads English with, unfused: what a server's plain-list rerank scores
    with (loaded apart, without the cache, so the server and the local model both compute)."""
    return finerank.SecondStage(finerank.load_reranker().route("Does vitamin D prevent fractures?").scorer)


@pytest.fixture(scope="module")
def server(unfused):
    pytest.importorskip("uvicorn")
    from support import LiveServer

    from finerank.server import create_app

    with LiveServer(create_app(unfused, api_key=KEY)) as live:
        yield live


@pytest.fixture(scope="module", params=list(FRAMEWORKS))
def framework(request, scifact):
    module, make = FRAMEWORKS[request.param]
    pytest.importorskip(module)
    return make(scifact[1])


@pytest.fixture(scope="module")
def reranked(framework, scifact, reranker):
    """Per query: the retriever's ids alone, and the framework's pipeline with finerank (id, score)."""
    dataset, _ = scifact
    run, _ = framework.pipeline(model=reranker)
    return ({q: [framework.ranked([d])[0][0] for d in framework.retrieve(text)] for q, text in dataset.queries.items()},
            {q: run(text) for q, text in dataset.queries.items()})  # fmt: skip


def mean_ndcg(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    return statistics.mean(ndcg(run[q], qrels[q], 10) for q in run)


def test_the_frameworks_pipeline_gains_ndcg_with_finerank(framework, reranked, scifact, record_property):
    dataset, _ = scifact
    first, ranked = reranked
    before = mean_ndcg(first, dataset.qrels)
    after = mean_ndcg({q: [i for i, _ in hits] for q, hits in ranked.items()}, dataset.qrels)
    record_property("ndcg@10", f"{before:.4f} -> {after:.4f}")
    assert after > before + 0.01, f"nDCG@10 {before:.4f} -> {after:.4f}"
    assert all(sorted(i for i, _ in ranked[q]) == sorted(first[q]) for q in first)  # reordered, none lost or added
    assert all(s == sorted(s, reverse=True) for s in ([x for _, x in hits] for hits in ranked.values()))


def test_the_async_path_gives_the_same_ranking(framework, reranked, scifact, reranker):
    dataset, _ = scifact
    queries = dict(list(dataset.queries.items())[:AGAIN])
    _, arun = framework.pipeline(model=reranker)

    async def all_at_once():
        return await asyncio.gather(*(arun(text) for text in queries.values()))

    answers = asyncio.run(all_at_once())
    for q, answer in zip(queries, answers):
        assert [i for i, _ in answer] == [i for i, _ in reranked[1][q]]
        assert [s for _, s in answer] == pytest.approx([s for _, s in reranked[1][q]])


def test_a_finerank_server_ranks_as_the_local_model(framework, scifact, unfused, server):
    dataset, _ = scifact
    queries = list(dataset.queries.values())[:AGAIN]
    local, _ = framework.pipeline(model=unfused)
    remote, aremote = framework.pipeline(url=server.url, api_key=framework.key(KEY))
    answers = [remote(query) for query in queries]
    for query, theirs in zip(queries, answers):
        assert [s for _, s in theirs] == sorted((s for _, s in theirs), reverse=True)
        assert dict(theirs) == pytest.approx(dict(local(query)), abs=5e-3)  # bf16: a score moves ~1e-3 with its batch

    async def all_at_once():
        return await asyncio.gather(*(aremote(query) for query in queries))

    for answer, theirs in zip(asyncio.run(all_at_once()), answers):  # the server batched them together
        assert dict(answer) == pytest.approx(dict(theirs), abs=5e-3)
    wrong = framework.component(url=server.url, api_key=framework.key("wrong"))
    with pytest.raises(FinerankError, match="answered 401: missing or wrong API key"):
        framework.apply(wrong, queries[0], framework.retrieve(queries[0]))


def test_the_callers_objects_are_not_changed(framework, scifact, reranker):
    query = next(iter(scifact[0].queries.values()))
    retrieved = framework.retrieve(query)
    before = copy.deepcopy(retrieved)
    assert framework.apply(framework.component(model=reranker), query, retrieved)
    assert retrieved == before


def test_a_score_threshold_and_top_n_cut_the_ranking(framework, scifact, unfused):
    query = next(iter(scifact[0].queries.values()))
    retrieved = framework.retrieve(query)
    ranked = lambda **options: framework.apply(framework.component(model=unfused, **options), query, retrieved)
    everything = ranked()  # unfused: each score is the model's calibrated score, what a threshold compares
    middle = statistics.median(s for _, s in everything)
    assert ranked(score_threshold=middle) == [(i, s) for i, s in everything if s >= middle]
    assert ranked(score_threshold=0.0) == everything and ranked(score_threshold=1.01) == []  # scores lie in [0, 1]
    assert framework.apply(framework.component(model=unfused), query, []) == []
    size = {"top_k": 2} if isinstance(framework, Haystack) else {"top_n": 2}
    assert ranked(**size) == everything[:2]
    with pytest.raises(ValueError, match="at least 1"):
        framework.component(model=unfused, **{name: 0 for name in size})


# --- what one framework has of its own -----------------------------------------------------------


def test_langchains_own_cross_encoder_reranker_runs_on_a_finerank_model(scifact, unfused, server):
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

    from finerank.integrations.langchain import FinerankCrossEncoder

    framework = LangChain(scifact[1])
    query = next(iter(scifact[0].queries.values()))
    retrieved = framework.retrieve(query)
    theirs = CrossEncoderReranker(model=FinerankCrossEncoder(unfused), top_n=CANDIDATES).compress_documents(
        retrieved, query
    )
    ours = framework.component(model=unfused).compress_documents(retrieved, query)
    assert [d.metadata["id"] for d in theirs] == [d.metadata["id"] for d in ours]
    assert [d.metadata["original_rank"] for d in ours] == [retrieved.index(d) + 1 for d in theirs]
    assert all(d.metadata["relevance_score"] == d.metadata["model_score"] for d in ours)  # unfused: the model's score
    pairs = [(query, d.page_content) for d in retrieved] + [
        ("an unrelated question about trains", retrieved[0].page_content)
    ]
    local = FinerankCrossEncoder(unfused).score(pairs)
    assert local[:-1] == pytest.approx([float(s) for s in unfused.scorer.score(query, [t for _, t in pairs[:-1]])])
    assert FinerankCrossEncoder(url=server.url, api_key=KEY).score(pairs) == pytest.approx(local, abs=5e-3)


def test_llama_index_sees_the_rerank_events_and_can_keep_the_retrieval_score(scifact, reranker):
    pytest.importorskip("llama_index.core")
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent

    from finerank.integrations.llama_index import FinerankRerank

    class Seen(BaseEventHandler):
        events: list = []

        def handle(self, event, **kwargs):
            self.events.append(event)

    framework = LlamaIndex(scifact[1])
    query = next(iter(scifact[0].queries.values()))
    nodes = framework.retrieve(query)
    debug, seen, root = LlamaDebugHandler(), Seen(), get_dispatcher()
    root.add_event_handler(seen)
    try:
        rerank = FinerankRerank(
            model=reranker, top_n=3, keep_retrieval_score=True, callback_manager=CallbackManager([debug])
        )
        reranked = rerank.postprocess_nodes(nodes, query_str=query)
    finally:
        root.event_handlers.remove(seen)
    start, end = [e for e in seen.events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
    assert isinstance(start, ReRankStartEvent) and start.query.query_str == query and start.top_n == 3
    assert start.model_name == reranker.name and start.nodes == nodes and end.nodes == reranked
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1 and FinerankRerank.class_name() == "FinerankRerank"
    retrieval = {n.node.id_: n.score for n in nodes}
    assert [n.node.metadata["retrieval_score"] for n in reranked] == [retrieval[n.node.id_] for n in reranked]
    assert all("retrieval_score" not in n.node.metadata for n in nodes)


def test_haystack_saves_and_loads_the_ranker_with_its_pipeline(scifact, monkeypatch):
    pytest.importorskip("haystack")
    from haystack import Pipeline
    from haystack.utils import Secret

    from finerank.integrations.haystack import FinerankRanker

    monkeypatch.setenv("FINERANK_API_KEY", KEY)
    ranker = FinerankRanker(top_k=3, score_threshold=0.0, meta_fields_to_embed=["title"])
    saved = ranker.to_dict()
    assert saved["init_parameters"]["api_key"] == {"type": "env_var", "env_vars": ["FINERANK_API_KEY"], "strict": False}
    again = FinerankRanker.from_dict(saved)
    assert again.to_dict() == saved and again._scoring.api_key == KEY and saved == ranker.to_dict()  # from_dict kept it
    with pytest.raises(TypeError, match="cannot be saved"):
        FinerankRanker(Overlap()).to_dict()
    with pytest.raises(ValueError):  # Haystack's own rule: a key given as a token is not written out
        FinerankRanker(url="http://127.0.0.1:1", api_key=Secret.from_token(KEY)).to_dict()

    pipeline = Pipeline()
    pipeline.add_component("ranker", ranker)
    loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=["finerank.integrations"])  # YAML; Haystack 3 asks
    framework = Haystack(scifact[1])
    query = next(iter(scifact[0].queries.values()))
    documents = framework.retrieve(query)
    answer = lambda p: framework.ranked(
        p.run({"ranker": {"query": query, "documents": documents}})["ranker"]["documents"]
    )
    assert answer(loaded) == answer(pipeline) and 0 < len(answer(loaded)) <= 3


# --- what the three share: a server's retries, routing, no framework at import -------------------


def flaky_server(statuses: list[int]):
    """A rerank server that answers the next of ``statuses`` while there is one, then scores (its
    results worst first: the client must place them by index); with the requests it received."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from support import LiveServer

    app, received = FastAPI(), []

    @app.post("/v2/rerank")
    async def rerank(body: dict, request: Request):
        received.append((request.headers.get("authorization"), body))
        if statuses:
            return JSONResponse({"message": "busy", "field": None}, status_code=statuses.pop(0))
        count = len(body["documents"])
        return {
            "id": "x",
            "results": [{"index": i, "relevance_score": (count - i) / count} for i in reversed(range(count))],
        }

    return LiveServer(app), received


def test_a_busy_server_is_asked_again(monkeypatch):
    pytest.importorskip("uvicorn")
    from finerank.integrations._common import Cut, Scoring

    monkeypatch.setattr("finerank.integrations._common.BACKOFF_S", 0.01)
    texts, statuses = ["first", "second", "third"], [503, 429]
    server, received = flaky_server(statuses)
    with server:
        scoring = Scoring(url=server.url, api_key=KEY, retries=2)
        assert [(r.index, r.score) for r in scoring.rank("q", texts, cut=Cut(top_n=2))] == [
            (0, 1.0),
            (1, pytest.approx(2 / 3)),
        ]
        assert received == [(f"Bearer {KEY}", {"query": "q", "documents": texts})] * 3
        statuses += [429, 503]
        assert [r.index for r in asyncio.run(scoring.arank("q", texts, cut=Cut(threshold=0.5)))] == [0, 1]
        statuses += [503, 503]
        with pytest.raises(FinerankError, match="answered 503: busy"):
            Scoring(url=server.url, api_key=KEY, retries=1).rank("q", texts)
        assert len(received) == 8 and statuses == []
    with pytest.raises(FinerankError, match="cannot reach the finerank server"):
        Scoring(url=server.url, retries=0).rank("q", texts)


def test_a_query_in_a_language_no_model_reads_keeps_the_frameworks_order(unfused):
    from finerank.integrations._common import Cut, Scoring
    from finerank.pipeline import ByLanguage

    def nothing():
        raise AssertionError("no default stage is loaded for an English-only reranker")

    english_only = ByLanguage({"en": lambda: unfused}, nothing, languages={"en"}, name="english-only")
    scoring = Scoring(english_only)
    texts = ["Le chat dort sur le canapé.", "Il pleut à Paris depuis ce matin.", "Une recette de tarte aux pommes."]
    assert [(r.index, r.score) for r in scoring.rank("Où dort le chat ce matin ?", texts, cut=Cut(threshold=0.9))] == [
        (0, None), (1, None), (2, None)]  # fmt: skip
    assert all(r.score is not None for r in scoring.rank("Where does the cat sleep?", texts))


def test_what_cannot_be_scored_is_refused_before_any_scoring(unfused):
    from finerank.integrations._common import Scoring

    for scoring in (Scoring(unfused), Scoring(url="http://127.0.0.1:9")):  # nothing listens there: never asked
        with pytest.raises(ValueError, match="the query is empty"):
            scoring.rank(" ", ["a text"])
    with pytest.raises(ValueError, match="the server scores with its own model"):
        Scoring(unfused, url="http://127.0.0.1:9")
    with pytest.raises(TypeError, match="a second stage is a finerank.Scorer"):
        Scoring(object())


def test_import_finerank_imports_no_framework():
    code = "import sys, finerank, finerank.integrations; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"langchain_core", "llama_index", "haystack", "httpx"} & set(eval(loaded))


# --- the documentation's examples ----------------------------------------------------------------


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("code", examples(), ids=lambda code: re.search(r"finerank\.integrations\.(\w+)", code)[1])
def test_the_docs_examples_run(code, capsys):
    for module in sorted(set(re.findall(r"^(?:from|import) (\w+)", code, flags=re.M)) - {"finerank"}):
        pytest.importorskip(module)
    if "BM25Retriever" in code:
        pytest.importorskip("rank_bm25")
    exec(compile(code, str(DOCS), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "Vitamin D with calcium" in printed[0], printed
