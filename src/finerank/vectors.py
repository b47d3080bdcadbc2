"""Stored document vectors, searched exactly (one matrix product) or through an HNSW graph
(usearch). Storage and search kernels only; the dense retriever lives in ``retrievers``.

Vectors are float32 rows in the index's document order. The HNSW graph names documents by
their stable keys (``Index.keys``, increasing in document order), so updates can remove and
add graph nodes without renumbering the rest.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from .errors import IndexFormatError
from .lexical import top_k

ANN = ("auto", "exact", "hnsw")
HNSW_THRESHOLD = 100_000  # documents; below it exact search is as fast and never misses (benchmarks/dense_ann.py)
HNSW_OPTIONS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 256}


def _usearch():
    from usearch.index import Index as HNSW

    return HNSW


class VectorIndex:
    """Document vectors, one row per document; ``hnsw`` is a usearch graph over them or None."""

    def __init__(self, vectors: np.ndarray, keys: np.ndarray, hnsw=None):
        self.vectors, self.keys, self.hnsw = vectors, keys, hnsw

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def ann(self) -> str:
        return "exact" if self.hnsw is None else "hnsw"

    @classmethod
    def build(cls, vectors: np.ndarray, keys: np.ndarray, ann: str = "auto") -> "VectorIndex":
        if ann not in ANN:
            raise ValueError(f"unknown ann {ann!r}; choose one of {', '.join(ANN)}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        use_hnsw = ann == "hnsw" or (ann == "auto" and len(vectors) >= HNSW_THRESHOLD)
        return cls(vectors, keys, _new_graph(vectors, keys) if use_hnsw else None)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions and inner products of the ``k`` nearest documents, best first; ``allowed``
        (a boolean mask over documents) restricts the result, and k come back whenever k
        documents are allowed."""
        query = np.asarray(query, dtype=np.float32)
        if query.shape != (self.dimension,):
            raise ValueError(f"query vector has shape {query.shape}; this index holds {self.dimension}-dimensional vectors")
        candidates = None if allowed is None else np.flatnonzero(allowed)
        if self.hnsw is not None and (candidates is None or len(candidates) > 0.2 * len(self.vectors)):
            found = self._graph_search(query, k, allowed)
            if found is not None:
                return found
        if candidates is None:
            return _exact(self.vectors, query, k, np.arange(len(self.vectors)))
        return _exact(self.vectors[candidates], query, k, candidates)

    def _graph_search(self, query: np.ndarray, k: int, allowed: np.ndarray | None):
        """HNSW search, widened until k allowed documents are found (None: let exact search do it)."""
        count = k if allowed is None else 2 * k
        while count <= 8 * max(k, 100):
            matches = self.hnsw.search(query, count=min(count, len(self.vectors)))
            positions = np.searchsorted(self.keys, matches.keys.astype(np.int64))
            scores = 1.0 - matches.distances.astype(np.float32)  # usearch's "ip" distance is 1 - dot
            if allowed is not None:
                keep = allowed[positions]
                positions, scores = positions[keep], scores[keep]
            if len(positions) >= k:
                return positions[:k], scores[:k]
            if count >= len(self.vectors):
                return None  # the graph reaches fewer than k of them (nodes cut off by removals): exact search finds all
            count *= 2
        return None

    def updated(self, keep: np.ndarray, vectors: np.ndarray, keys: np.ndarray) -> "VectorIndex":
        """A new VectorIndex without the rows ``keep`` drops, with ``vectors`` appended (graph
        nodes removed and added, not rebuilt). This one is left as it was."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1:] != (self.dimension,):
            raise ValueError(f"new vectors have {vectors.shape[1:]} dimensions; this index holds {self.dimension}")
        rows = np.concatenate([np.asarray(self.vectors)[keep], vectors])
        all_keys = np.concatenate([self.keys[keep], keys])
        graph = None
        if self.hnsw is not None:
            graph = self.hnsw.copy()
            dropped = self.keys[~keep]
            if len(dropped):
                graph.remove(dropped.astype(np.uint64))
            if len(vectors):
                graph.add(keys.astype(np.uint64), vectors)
        return VectorIndex(rows, all_keys, graph)

    def save(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", np.asarray(self.vectors))
        if self.hnsw is not None:
            self.hnsw.save(str(folder / "vectors.hnsw"))

    @classmethod
    def load(cls, folder: Path, keys: np.ndarray, ann: str, mmap: bool = True) -> "VectorIndex":
        try:
            vectors = np.load(folder / "vectors.npy", mmap_mode="r" if mmap else None)
            graph = _usearch().restore(str(folder / "vectors.hnsw"), view=mmap, expansion_search=HNSW_OPTIONS["expansion_search"]) if ann == "hnsw" else None
        except (OSError, ValueError, RuntimeError) as err:
            raise IndexFormatError(f"{folder.parent} is corrupt: cannot read its vectors ({err})") from None
        if vectors.ndim != 2 or len(vectors) != len(keys) or (ann == "hnsw" and (graph is None or len(graph) != len(keys))):
            raise IndexFormatError(f"{folder.parent} is corrupt: its vectors do not match its {len(keys)} documents")
        return cls(vectors, keys, graph)


def _new_graph(vectors: np.ndarray, keys: np.ndarray):
    graph = _usearch()(ndim=vectors.shape[1], metric="ip", dtype="f32", **HNSW_OPTIONS)
    graph.add(keys.astype(np.uint64), vectors)
    return graph


def exact_many(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top ``k`` (positions, inner products) of several query vectors: one matrix product."""
    return [_best(row, k, np.arange(len(row))) for row in np.asarray(queries, dtype=np.float32) @ np.asarray(vectors).T]


def _exact(vectors: np.ndarray, query: np.ndarray, k: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _best(np.asarray(vectors) @ query, k, positions)


def _best(scores: np.ndarray, k: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # top_k ranks positive scores only: shift so every row counts, ties broken by position
    best = top_k(scores - scores.min() + 1.0, k) if len(scores) else np.empty(0, dtype=np.int64)
    return positions[best], scores[best]
