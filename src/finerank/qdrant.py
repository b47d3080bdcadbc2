"""A first stage in Qdrant: the same ``search(query, k, filter=None)`` as finerank's own, over a
Qdrant collection, so a corpus too large for one machine is searched by Qdrant's cluster and
reranked here. The client is Qdrant's own (``qdrant-client``): a server or cluster
(``QdrantClient(url=...)``) or its local mode (``QdrantClient(path=...)``, what the tests run)
speak the same API.

A collection holds one point per document: its finerank id, title, text and metadata as payload,
and up to two vectors. ``bm25`` is a sparse vector of BM25's term weights (Lucene's variant: each
term's saturated frequency from finerank's analyzer, terms hashed to 32-bit indices with CRC-32,
and Qdrant's IDF modifier supplying the inverse document frequency at query time). ``dense`` is
a multivector of the rows finerank's index stores for the document (:meth:`BiEncoder.embed_document_windows`:
one row, or one per window of ``document_window`` tokens plus, with ``whole_document``, the whole
text last), compared by dot product as finerank's vectors are. Qdrant's MAX_SIM gives a document
its best row's score, which is finerank's score when there is no whole-text row. With one, the
document's score mixes its best window and its whole text (:func:`finerank.models.chunks.pool`)
and is at most its best row's: the documents Qdrant returns are rescored from their rows here,
and the search is widened until the k-th beats the best row of any document not yet returned.
Hybrid search composes two of these with :class:`finerank.Hybrid`, as it does finerank's own.

Filters select exactly what :func:`finerank.filters.matches` selects. Qdrant's own semantics
differ (a number matches only a number of the same type, true is not 1, a condition holds when
any element of an array payload does, a dot in a key walks into an object), so each condition is
sent to Qdrant as one that lets through at least the documents finerank's would: a number as a
range of that one value, plus true or false when it equals 1 or 0; a string as a match; None as
is-null; a membership list as any of its elements; a range as itself, plus true or false when
they fall in it. A metadata key is quoted, so a dot or a bracket is part of its name. Qdrant's
hits are then checked with finerank's own ``matches`` (an array payload that merely contains the
value is dropped there), and the search is widened until k hits pass or Qdrant has no more.
Refused with a ValueError naming the field, as Qdrant cannot hold them exactly: ranges with
string bounds, numbers that are not finite or reach 2**53 (Qdrant compares numbers as 64-bit
floats), lists or objects as the values of a membership list, and keys with a double quote or
a backslash.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import analysis
from .errors import MissingDependencyError
from .filters import RANGE_OPS, matches, validate
from .models import chunks
from .retrievers import _check_k
from .types import Document, Hit

logger = logging.getLogger(__name__)

KINDS = ("bm25", "dense")
EXACT = 2**53  # numbers below it in magnitude compare in Qdrant's 64-bit floats as in Python
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


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


def create(
    client,
    collection: str,
    documents: Iterable[Document],
    *,
    encoder=None,
    analyzer: str = "english",
    k1: float = 0.9,
    b: float = 0.4,
    batch_size: int = 256,
    show_progress: bool = False,
) -> int:
    """Create ``collection`` (replacing one of that name) and index ``documents`` into it: BM25
    term weights always, with ``encoder`` also each document's rows as finerank's index stores
    them (its windows). Returns the number of documents."""
    from tqdm.auto import tqdm

    models = _models()
    documents = list(documents)
    analyze = analysis.analyzer(analyzer)
    tokens = [analyze(d.content) for d in documents]
    avgdl = max(1.0, sum(map(len, tokens)) / max(1, len(documents)))
    vectors = {}
    if encoder:  # a document's rows, compared by dot product; its score, its best row's
        rows = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        vectors["dense"] = models.VectorParams(
            size=encoder.dimension, distance=models.Distance.DOT, multivector_config=rows
        )
    if client.collection_exists(collection):
        client.delete_collection(collection)
    client.create_collection(
        collection,
        vectors_config=vectors,
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    batches = range(0, len(documents), batch_size)
    for start in tqdm(batches, desc=f"indexing into Qdrant {collection!r}", unit=" batches", disable=not show_progress):
        batch = documents[start : start + batch_size]
        dense = _rows(encoder, batch) if encoder else None
        points = []
        for j, document in enumerate(batch):
            weights = term_weights(tokens[start + j], k1=k1, b=b, avgdl=avgdl)
            vector: dict[str, Any] = {"bm25": models.SparseVector(indices=list(weights), values=list(weights.values()))}
            if dense is not None:
                vector["dense"] = dense[j].tolist()
            payload = {
                "id": document.id,
                "title": document.title,
                "text": document.text,
                "metadata": dict(document.metadata),
            }
            points.append(models.PointStruct(id=start + j, vector=vector, payload=payload))
        client.upsert(collection, points)
    return len(documents)


def _rows(encoder, documents: Sequence[Document]) -> list[np.ndarray]:
    """Per document, the rows finerank's index stores for it (:func:`finerank.index._embed`)."""
    vectors, counts = encoder.embed_document_windows([d.content for d in documents])
    return np.split(vectors, np.cumsum(counts)[:-1])


def qdrant_filter(spec: Mapping[str, Any] | None):
    """finerank's filter (:mod:`finerank.filters`) as a Qdrant filter that lets through at least
    the documents finerank's does (see the module's docstring); ValueError for what it cannot."""
    if not spec:
        return None
    validate(spec)
    models = _models()
    conditions = []
    for field, condition in spec.items():
        key = _key(field)
        if isinstance(condition, Mapping):
            conditions.append(_in_range(field, key, condition))
        else:
            values = condition if isinstance(condition, list) else [condition]
            conditions.append(models.Filter(should=[c for value in values for c in _equal(field, key, value)]))
    return models.Filter(must=conditions)


def _key(field: str) -> str:
    """The payload path of a filter field: id and title, or a metadata key quoted unless plain."""
    if field in ("id", "title"):
        return field
    if '"' in field or "\\" in field:
        raise ValueError(f"filter on {field!r}: Qdrant cannot name a payload key with a double quote or a backslash")
    return f"metadata.{field}" if _PLAIN_KEY.fullmatch(field) else f'metadata."{field}"'


def _number(field: str, value) -> float:
    if not math.isfinite(value) or abs(value) >= EXACT:
        raise ValueError(f"filter on {field!r}: Qdrant compares exactly only finite numbers below 2**53, not {value!r}")
    return float(value)


def _equal(field: str, key: str, value) -> list:
    """Conditions, any of which holds for every payload value that equals ``value`` in Python."""
    models = _models()
    if value is None:
        return [models.IsNullCondition(is_null=models.PayloadField(key=key))]
    if isinstance(value, str):
        return [models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    if not isinstance(value, (int, float)):
        raise ValueError(f"filter on {field!r}: Qdrant cannot match a list or object value ({value!r})")
    number = _number(field, value)
    flags = [_flag(key, flag) for flag in (False, True) if flag == value]
    return [models.FieldCondition(key=key, range=models.Range(gte=number, lte=number)), *flags]


def _in_range(field: str, key: str, condition: Mapping[str, Any]):
    """A range, and true or false when they fall in it (True >= 1 in Python, not in Qdrant)."""
    models = _models()
    if not all(isinstance(v, (int, float)) for v in condition.values()):
        raise ValueError(f"filter on {field!r}: Qdrant's ranges are numeric; got {condition}")
    bounds = {op: _number(field, bound) for op, bound in condition.items()}
    flags = [_flag(key, f) for f in (False, True) if all(RANGE_OPS[op](f, bound) for op, bound in condition.items())]
    return models.Filter(should=[models.FieldCondition(key=key, range=models.Range(**bounds)), *flags])


def _flag(key: str, flag: bool):
    models = _models()
    return models.FieldCondition(key=key, match=models.MatchValue(value=flag))


class Qdrant:
    """Search a collection made by :func:`create` by ``kind``: ``bm25`` (queries analysed with
    the same ``analyzer``) or ``dense`` (queries embedded by the same ``encoder``)."""

    def __init__(self, client, collection: str, kind: str = "bm25", *, encoder=None, analyzer: str = "english"):
        if kind not in KINDS:
            raise ValueError(f"unknown Qdrant search {kind!r}; choose one of {', '.join(KINDS)}")
        if kind == "dense" and encoder is None:
            raise ValueError("dense search in Qdrant needs the encoder the collection was built with")
        self.client, self.collection, self.kind, self.encoder = client, collection, kind, encoder
        self.whole = encoder.whole_document if kind == "dense" else 0.0
        self.analyze = analysis.analyzer(analyzer)
        self.index = None
        self.name = f"qdrant({collection}, {kind}, {encoder.name if kind == 'dense' else analyzer})"

    def query(self, query: str):
        """The query as Qdrant reads it: a sparse vector of term counts, or the embedding (one row)."""
        if self.kind == "dense":
            return [self.encoder.embed_queries([query])[0].tolist()]
        counts = Counter(_term(t) for t in self.analyze(query))
        return _models().SparseVector(indices=list(counts), values=[float(c) for c in counts.values()])

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        _check_k(k)
        conditions = qdrant_filter(filter)
        vector = self.query(query)
        if (self.kind == "bm25" and not vector.indices) or any(c == [] for c in (filter or {}).values()):
            return []  # no terms, or a field's value in an empty list
        limit = k
        while True:
            points = self.client.query_points(
                self.collection,
                query=vector,
                using=self.kind,
                limit=limit,
                query_filter=conditions,
                with_payload=True,
                with_vectors=[self.kind] if self.whole else False,
            ).points
            found = [(_document(p.payload), self._score(p, vector), p.id) for p in points]
            found = [f for f in found if (f[1] > 0 or self.kind == "dense") and (not filter or matches(f[0], filter))]
            if self.whole:
                found.sort(key=lambda f: (-f[1], f[2]))
            # an unreturned document scores at most the last returned one's best row
            bound = points[-1].score if self.whole and len(points) == limit else -math.inf
            if len(points) < limit or (len(found) >= k and found[k - 1][1] >= bound):
                break
            logger.debug("%s: %d of %d points pass for k=%d; widening", self.name, len(found), limit, k)
            limit *= 4
        return [Hit(document, score, r, r) for r, (document, score, _) in enumerate(found[:k], 1)]

    def _score(self, point, query) -> float:
        """The document's score: Qdrant's (its best row), or its rows pooled as finerank's index does."""
        if not self.whole:
            return point.score
        rows = np.asarray(point.vector[self.kind], dtype=np.float32)
        return float(chunks.pool(rows @ np.asarray(query[0], dtype=np.float32), [len(rows)], "max", self.whole)[0][0])


def _document(payload: Mapping[str, Any]) -> Document:
    return Document(payload["id"], payload["text"], payload["title"], payload["metadata"])
