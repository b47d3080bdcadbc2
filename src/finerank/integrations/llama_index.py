"""LlamaIndex: :class:`FinerankRerank`, a node postprocessor (``node_postprocessors=[FinerankRerank()]``
in a query engine, or ``postprocess_nodes`` on any retriever's nodes).
``pip install 'finerank[llama-index]'``.

It reads each node as LlamaIndex's own rerankers do (``get_content(metadata_mode=EMBED)``) and
emits their instrumentation: ``ReRankStartEvent`` / ``ReRankEndEvent`` through the dispatcher and
the ``RERANKING`` callback event.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from ._common import SETTINGS, Cut, Ranked, Scoring

__all__ = ["FinerankRerank"]

dispatcher = get_dispatcher(__name__)


class FinerankRerank(BaseNodePostprocessor):
    """Reranks retrieved nodes, best ``top_n`` first (None: all), keeping those whose model score
    (a calibrated relevance in [0, 1]) reaches ``score_threshold``. Each comes back as a new
    ``NodeWithScore`` whose score is what ranked it (the model's score, fused with the retriever's
    order and scores when the model fuses, as ``auto`` does; None for a query in a language no
    model reads, whose list keeps its order); with ``keep_retrieval_score`` a copy of the node
    keeps the retriever's score in ``metadata["retrieval_score"]``. The caller's nodes are not changed.

    ``model``: a finerank model name or folder, or a loaded scorer (default ``auto``); ``url``: a
    finerank server's address instead, with ``api_key`` (default ``$FINERANK_API_KEY``)."""

    model: Any = Field(default=None, description="A finerank model name or folder, or a loaded scorer (default: auto).")
    url: str | None = Field(default=None, description="A finerank server to score on instead of a local model.")
    api_key: str | None = Field(default=None, exclude=True, repr=False, description="The server's API key.")
    top_n: int | None = Field(default=2, description="Nodes to return, best first (None: all).")
    score_threshold: float | None = Field(default=None, description="The least model score a node needs.")
    keep_retrieval_score: bool = Field(default=False, description="Keep the retriever's score in the metadata.")
    timeout: float = Field(default=60.0, description="Seconds to wait for the server.")
    retries: int = Field(default=3, description="Retries after a 429 or 503 answer.")

    _scoring: Scoring = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._cut()  # a ValueError now for what cannot cut a ranking
        settings = {name: getattr(self, name) for name in SETTINGS}
        self._scoring = Scoring(**settings, source="llama_index", extra="llama-index")

    def _cut(self) -> Cut:
        return Cut(self.top_n, self.score_threshold)

    @classmethod
    def class_name(cls) -> str:
        return "FinerankRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts, scores = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            ranked = self._scoring.rank(query, texts, scores, self._cut())
            return self._end(nodes, ranked, event)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts, scores = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            ranked = await self._scoring.arank(query, texts, scores, self._cut())
            return self._end(nodes, ranked, event)

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str], list]:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self._scoring.name
            )
        )
        if query_bundle is None:
            raise ValueError("FinerankRerank needs the query: pass query_str or query_bundle")
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        return query_bundle.query_str, texts, [n.score for n in nodes]

    def _payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self._scoring.name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    def _end(self, nodes: list[NodeWithScore], ranked: list[Ranked], event: Any) -> list[NodeWithScore]:
        reranked = [NodeWithScore(node=self._node(nodes[r.index]), score=r.score) for r in ranked]
        event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _node(self, given: NodeWithScore) -> Any:
        if not self.keep_retrieval_score:
            return given.node
        return given.node.model_copy(update={"metadata": {**given.node.metadata, "retrieval_score": given.score}})
