"""Stored document vectors, searched exactly (one matrix product) or through an HNSW graph
(usearch). Storage and search kernels only; the dense retriever lives in ``retrievers``.

Vectors are float32 rows in the index's document order. A document read in windows (a long
text embedded as several short passages) has one row per window, consecutive, and scores as its
best window: ``counts`` says how many rows each document has. The HNSW graph names rows by
their document's stable key (``Index.keys``, increasing in document order; a multi-key graph,
so a key may have several rows), so updates can remove and add graph nodes without renumbering
the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import IndexFormatError
from .lexical import top_k
from .models import chunks

ANN = ("auto", "exact", "hnsw")
HNSW_THRESHOLD = 100_000  # documents; below it exact search is as fast and never misses (benchmarks/dense_ann.py)
HNSW_OPTIONS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 256}


def _usearch():
    from usearch.index import Index as HNSW

    return HNSW


class VectorIndex:
    """Document vectors, ``counts[i]`` consecutive rows for document i (default: one each);
    ``hnsw`` is a usearch graph over them or None."""

    def __init__(
        self, vectors: np.ndarray, keys: np.ndarray, hnsw=None, counts: np.ndarray | None = None, whole: float = 0.0
    ):
        self.vectors, self.keys, self.hnsw, self.whole = vectors, keys, hnsw, whole
        self.counts = np.ones(len(keys), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        self.windowed = len(vectors) > len(keys)  # some document has several rows
        self._starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self._lasts = self._starts + self.counts - 1
        if (
            whole and self.windowed
        ):  # the whole-text rows (the last of each document of several), kept out of the best window
            self._whole_rows = np.zeros(len(vectors), dtype=bool)
            self._whole_rows[self._lasts[self.counts > 1]] = True

    def rows(self, positions) -> list[np.ndarray]:
        """The vectors of the documents at ``positions``: per document, its rows (its windows)."""
        return [
            np.asarray(self.vectors[self._starts[p] : self._starts[p] + self.counts[p]], dtype=np.float32)
            for p in positions
        ]

    def document_scores(self, row_scores: np.ndarray) -> np.ndarray:
        """Per document, the best of its rows' scores (the last axis is rows); with ``whole``, a
        document of several rows scores (1 - whole) x its best window + whole x its last row,
        its whole text (as :func:`finerank.models.chunks.pool`)."""
        if not self.windowed:
            return row_scores
        if not self.whole:
            return np.maximum.reduceat(row_scores, self._starts, axis=-1)
        best = np.maximum.reduceat(np.where(self._whole_rows, -np.inf, row_scores), self._starts, axis=-1)
        last = row_scores[..., self._lasts]
        return np.where(self.counts > 1, (1 - self.whole) * best + self.whole * last, last).astype(np.float32)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def ann(self) -> str:
        return "exact" if self.hnsw is None else "hnsw"

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        keys: np.ndarray,
        ann: str = "auto",
        counts: np.ndarray | None = None,
        whole: float = 0.0,
    ) -> VectorIndex:
        """``counts``: rows per document (its windows), None for one each; ``whole``: see :meth:`document_scores`."""
        if ann not in ANN:
            raise ValueError(f"unknown ann {ann!r}; choose one of {', '.join(ANN)}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        counts = np.ones(len(keys), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        if len(counts) != len(keys) or counts.sum() != len(vectors) or counts.min(initial=1) < 1:
            raise ValueError(f"{len(vectors)} vectors do not split into {len(keys)} documents of at least one row each")
        use_hnsw = ann == "hnsw" or (ann == "auto" and len(keys) >= HNSW_THRESHOLD)
        return cls(vectors, keys, _new_graph(vectors, np.repeat(keys, counts)) if use_hnsw else None, counts, whole)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions and inner products of the ``k`` nearest documents, best first; ``allowed``
        (a boolean mask over documents) restricts the result, and k come back whenever k
        documents are allowed."""
        query = np.asarray(query, dtype=np.float32)
        if query.shape != (self.dimension,):
            raise ValueError(
                f"query vector has shape {query.shape}; this index holds {self.dimension}-dimensional vectors"
            )
        candidates = None if allowed is None else np.flatnonzero(allowed)
        if self.hnsw is not None and (candidates is None or len(candidates) > 0.2 * len(self.keys)):
            found = self._graph_search(query, k, allowed)
            if found is not None:
                return found
        scores = self.document_scores(np.asarray(self.vectors) @ query)
        if candidates is None:
            return _best(scores, k, np.arange(len(scores)))
        return _best(scores[candidates], k, candidates)

    def search_many(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for several query vectors: one matrix product on an exact index."""
        queries = np.asarray(queries, dtype=np.float32)
        if self.hnsw is not None:
            return [self.search(q, k) for q in queries]
        scores = self.document_scores(queries @ np.asarray(self.vectors).T)
        return [_best(row, k, np.arange(len(row))) for row in scores]

    def _graph_search(self, query: np.ndarray, k: int, allowed: np.ndarray | None):
        """HNSW search, widened until k allowed documents are found (None: let exact search do it)."""
        windows = int(np.ceil(len(self.vectors) / len(self.keys)))  # rows a document, on average
        count = windows * (k if allowed is None else 2 * k)
        while count <= 8 * windows * max(k, 100):
            matches = self.hnsw.search(query, count=min(count, len(self.vectors)))
            _, first = np.unique(matches.keys.astype(np.int64), return_index=True)  # a document's best row comes first
            first = np.sort(first)
            positions = np.searchsorted(self.keys, matches.keys[first].astype(np.int64))
            scores = 1.0 - matches.distances[first].astype(np.float32)  # usearch's "ip" distance is 1 - dot
            if allowed is not None:
                keep = allowed[positions]
                positions, scores = positions[keep], scores[keep]
            if self.whole and len(positions) >= k:
                # a document's score mixes its best window and its whole text, and is at most its best row's: the
                # documents found, scored exactly, are the top k once the k-th beats the best row of any not yet found
                bound = scores[-1] if count < len(self.vectors) else -np.inf
                scores = np.array([self.document_scores_of(p, query) for p in positions], dtype=np.float32)
                order = np.lexsort((positions, -scores))
                positions, scores = positions[order], scores[order]
                if scores[k - 1] < bound:
                    positions = positions[:0]  # widen
            if len(positions) >= k:
                return positions[:k], scores[:k]
            if count >= len(self.vectors):
                return (
                    None  # the graph reaches fewer than k of them (nodes cut off by removals): exact search finds all
                )
            count *= 2
        return None

    def document_scores_of(self, position: int, query: np.ndarray) -> float:
        """The score of the document at ``position`` for a query vector, from its rows."""
        rows = np.asarray(
            self.vectors[self._starts[position] : self._starts[position] + self.counts[position]], dtype=np.float32
        )
        return float(chunks.pool(rows @ query, [len(rows)], "max", self.whole)[0][0])

    def updated(
        self, keep: np.ndarray, vectors: np.ndarray, keys: np.ndarray, counts: np.ndarray | None = None
    ) -> VectorIndex:
        """A new VectorIndex without the documents ``keep`` drops, with ``vectors`` appended
        (``counts`` rows for each of the new ``keys``; None: one each); graph nodes are removed
        and added, not rebuilt. This one is left as it was."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1:] != (self.dimension,):
            raise ValueError(f"new vectors have {vectors.shape[1:]} dimensions; this index holds {self.dimension}")
        counts = np.ones(len(keys), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        rows = np.concatenate([np.asarray(self.vectors)[np.repeat(keep, self.counts)], vectors])
        graph = None
        if self.hnsw is not None:
            graph = self.hnsw.copy()
            dropped = self.keys[~keep]
            if len(dropped):
                graph.remove(dropped.astype(np.uint64))
            if len(vectors):
                graph.add(np.repeat(keys, counts).astype(np.uint64), vectors)
        return VectorIndex(
            rows,
            np.concatenate([self.keys[keep], keys]),
            graph,
            np.concatenate([self.counts[keep], counts]),
            self.whole,
        )

    def save(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", np.asarray(self.vectors))
        if self.windowed:  # an index of one row a document reads as before
            np.save(folder / "vector_counts.npy", self.counts)
        if self.hnsw is not None:
            self.hnsw.save(str(folder / "vectors.hnsw"))

    @classmethod
    def load(cls, folder: Path, keys: np.ndarray, ann: str, mmap: bool = True, whole: float = 0.0) -> VectorIndex:
        try:
            vectors = np.load(folder / "vectors.npy", mmap_mode="r" if mmap else None)
            counts = np.load(folder / "vector_counts.npy") if (folder / "vector_counts.npy").exists() else None
            graph = (
                _usearch().restore(
                    str(folder / "vectors.hnsw"), view=mmap, expansion_search=HNSW_OPTIONS["expansion_search"]
                )
                if ann == "hnsw"
                else None
            )
        except (OSError, ValueError, RuntimeError) as err:
            raise IndexFormatError(f"{folder.parent} is corrupt: cannot read its vectors ({err})") from None
        rows = len(keys) if counts is None else int(counts.sum())
        if (
            vectors.ndim != 2
            or len(vectors) != rows
            or (counts is not None and (len(counts) != len(keys) or counts.min(initial=1) < 1))
            or (ann == "hnsw" and (graph is None or len(graph) != rows))
        ):
            raise IndexFormatError(f"{folder.parent} is corrupt: its vectors do not match its {len(keys)} documents")
        return cls(vectors, keys, graph, counts, whole)


def _new_graph(vectors: np.ndarray, keys: np.ndarray):
    """A multi-key graph: a document's windows are rows under its one key."""
    graph = _usearch()(ndim=vectors.shape[1], metric="ip", dtype="f32", multi=True, **HNSW_OPTIONS)
    graph.add(keys.astype(np.uint64), vectors)
    return graph


def _best(scores: np.ndarray, k: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # top_k ranks positive scores only: shift so every row counts, ties broken by position
    best = top_k(scores - scores.min() + 1.0, k) if len(scores) else np.empty(0, dtype=np.int64)
    return positions[best], scores[best]
