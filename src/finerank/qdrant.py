"""A first stage in Qdrant: the same ``search(query, k, filter=None)`` as finerank's own, over a
Qdrant collection, so a corpus too large for one machine is searched by Qdrant's cluster and
reranked here. The client is Qdrant's own (``qdrant-client``): a server or cluster
(``QdrantClient(url=...)``) or its local mode (``QdrantClient(path=...)``, what the tests run)
speak the same API.

A collection holds, per document, its finerank id, title, text and metadata as payload, and up
to two vectors: ``bm25``, a sparse vector of BM25's term weights (Lucene's variant: each term's
saturated frequency from finerank's analyzer, terms hashed to 32-bit indices with CRC-32, and
Qdrant's IDF modifier supplying the inverse document frequency at query time), and ``dense``,
the encoder's embedding (cosine). Hybrid search composes two of these with
:class:`finerank.Hybrid`, as it does finerank's own.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from . import analysis
from .errors import MissingDependencyError
from .filters import RANGE_OPS, validate
from .retrievers import _check_k
from .types import Document, Hit

logger = logging.getLogger(__name__)

KINDS = ("bm25", "dense")


def _models():
    try:
        from qdrant_client import models
    except ImportError:
        raise MissingDependencyError("qdrant-client", "qdrant") from None
    return models


def term_weights(tokens: Sequence[str], *, k1: float, b: float, avgdl: float) -> dict[int, float]:
    """A document's BM25 term weights (Lucene: tf / (tf + k1 (1 - b + b dl / avgdl))) by hashed term."""
    counts, length = Counter(_term(t) for t in tokens), len(tokens)
    return {t: tf / (tf + k1 * (1 - b + b * length / avgdl)) for t, tf in counts.items()}


def _term(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


def create(client, collection: str, documents: Iterable[Document], *, encoder=None, analyzer: str = "english",
           k1: float = 0.9, b: float = 0.4, batch_size: int = 256, show_progress: bool = False) -> int:
    """Create ``collection`` (replacing one of that name) and index ``documents`` into it: BM25
    term weights always, dense vectors too with ``encoder``. Returns the number of documents."""
    from tqdm.auto import tqdm

    models = _models()
    documents = list(documents)
    analyze = analysis.analyzer(analyzer)
    tokens = [analyze(d.content) for d in documents]
    avgdl = max(1.0, sum(map(len, tokens)) / max(1, len(documents)))
    vectors = {"dense": models.VectorParams(size=encoder.dimension, distance=models.Distance.COSINE)} if encoder else {}
    if client.collection_exists(collection):
        client.delete_collection(collection)
    client.create_collection(collection, vectors_config=vectors,
                             sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    for start in tqdm(range(0, len(documents), batch_size), desc=f"indexing into Qdrant {collection!r}", unit=" batches",
                      disable=not show_progress):
        batch = documents[start : start + batch_size]
        dense = encoder.embed_documents([d.content for d in batch]) if encoder else None
        points = []
        for j, document in enumerate(batch):
            weights = term_weights(tokens[start + j], k1=k1, b=b, avgdl=avgdl)
            vector: dict[str, Any] = {"bm25": models.SparseVector(indices=list(weights), values=list(weights.values()))}
            if dense is not None:
                vector["dense"] = dense[j].tolist()
            payload = {"id": document.id, "title": document.title, "text": document.text, "metadata": dict(document.metadata)}
            points.append(models.PointStruct(id=start + j, vector=vector, payload=payload))
        client.upsert(collection, points)
    return len(documents)


def qdrant_filter(spec: Mapping[str, Any] | None):
    """finerank's filter (:mod:`finerank.filters`) as Qdrant's: equality, membership, numeric ranges."""
    if not spec:
        return None
    validate(spec)
    models = _models()
    conditions = []
    for field, condition in spec.items():
        key = field if field in ("id", "title") else f"metadata.{field}"
        if isinstance(condition, Mapping):
            if not all(isinstance(v, (int, float)) for v in condition.values()):
                raise ValueError(f"filter on {field!r}: Qdrant's ranges are numeric; got {condition}")
            conditions.append(models.FieldCondition(key=key, range=models.Range(**{op: condition[op] for op in RANGE_OPS if op in condition})))
        elif isinstance(condition, list):
            conditions.append(models.FieldCondition(key=key, match=models.MatchAny(any=condition)))
        else:
            conditions.append(models.FieldCondition(key=key, match=models.MatchValue(value=condition)))
    return models.Filter(must=conditions)


class Qdrant:
    """Search a collection made by :func:`create` by ``kind``: ``bm25`` (queries analysed with
    the same ``analyzer``) or ``dense`` (queries embedded by the same ``encoder``)."""

    def __init__(self, client, collection: str, kind: str = "bm25", *, encoder=None, analyzer: str = "english"):
        if kind not in KINDS:
            raise ValueError(f"unknown Qdrant search {kind!r}; choose one of {', '.join(KINDS)}")
        if kind == "dense" and encoder is None:
            raise ValueError("dense search in Qdrant needs the encoder the collection was built with")
        self.client, self.collection, self.kind, self.encoder = client, collection, kind, encoder
        self.analyze = analysis.analyzer(analyzer)
        self.index = None
        self.name = f"qdrant({collection}, {kind}, {encoder.name if kind == 'dense' else analyzer})"

    def query(self, query: str):
        """The query as Qdrant reads it: a sparse vector of term counts, or the embedding."""
        if self.kind == "dense":
            return self.encoder.embed_queries([query])[0].tolist()
        counts = Counter(_term(t) for t in self.analyze(query))
        return _models().SparseVector(indices=list(counts), values=[float(c) for c in counts.values()])

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        _check_k(k)
        vector = self.query(query)
        if self.kind == "bm25" and not vector.indices:
            return []
        points = self.client.query_points(self.collection, query=vector, using=self.kind, limit=k, query_filter=qdrant_filter(filter),
                                          with_payload=True).points
        return [Hit(Document(p.payload["id"], p.payload["text"], p.payload["title"], p.payload["metadata"]), p.score, r, r)
                for r, p in enumerate((p for p in points if p.score > 0 or self.kind == "dense"), 1)]
