"""BM25 first stage on bm25s: build, save (atomic, versioned), load (memory-mapped), search."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import filters, registry
from ._storage import live_generation, new_generation
from .errors import CorpusError, IndexFormatError
from .types import Document, Hit

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@functools.lru_cache(maxsize=1)
def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)  # bm25s sets DEBUG at import; follow the application
    return bm25s


class DocumentStore:
    """Documents as JSON lines in one byte buffer (in memory or memory-mapped) plus offsets."""

    def __init__(self, blob: bytes | np.ndarray, offsets: np.ndarray):
        self._blob, self._offsets = blob, offsets
        self._positions: dict[str, int] | None = None

    @classmethod
    def from_documents(cls, documents: Sequence[Document]) -> "DocumentStore":
        lines = [_encode(d) for d in documents]
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum([len(line) for line in lines], out=offsets[1:])
        return cls(b"".join(lines), offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, position: int) -> Document:
        start, end = self._offsets[position], self._offsets[position + 1]
        record = json.loads(bytes(self._blob[start:end]))
        return Document(record["id"], record["text"], record["title"], record["metadata"])

    def position(self, doc_id: str) -> int:
        """The position of a document id; KeyError naming the id if the index lacks it."""
        if self._positions is None:
            self._positions = {self[i].id: i for i in range(len(self))}
        try:
            return self._positions[doc_id]
        except KeyError:
            raise KeyError(f"unknown document id {doc_id!r}") from None

    def save(self, folder: Path) -> None:
        (folder / "documents.jsonl").write_bytes(bytes(self._blob))
        np.save(folder / "offsets.npy", self._offsets)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> "DocumentStore":
        blob = np.memmap(folder / "documents.jsonl", dtype=np.uint8, mode="r") if mmap else (folder / "documents.jsonl").read_bytes()
        return cls(blob, np.load(folder / "offsets.npy", mmap_mode="r" if mmap else None))


def _encode(doc: Document) -> bytes:
    record = {"id": doc.id, "title": doc.title, "text": doc.text, "metadata": dict(doc.metadata)}
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class BM25Index:
    """A BM25 index over title + text (Lucene's BM25 variant by default: k1=0.9, b=0.4).

    Implements the :class:`finerank.Retriever` protocol (``search``, ``batch_search``).
    """

    def __init__(self, model, documents: DocumentStore, params: dict):
        self._model, self.documents, self.params = model, documents, params
        self.analyzer = registry.analyzer(params["analyzer"])
        self.name = f"bm25({params['method']}, k1={params['k1']}, b={params['b']}, {params['analyzer']})"

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        *,
        analyzer: str = "auto",
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        show_progress: bool = False,
    ) -> "BM25Index":
        from tqdm.auto import tqdm

        analyze = registry.analyzer(analyzer)
        docs: list[Document] = []
        vocab: dict[str, int] = {"": 0}
        token_ids: list[list[int]] = []
        for doc in tqdm(documents, desc="analyzing", unit=" docs", disable=not show_progress):
            docs.append(doc)
            token_ids.append([vocab.setdefault(t, len(vocab)) for t in analyze(doc.content)])
        if not docs:
            raise CorpusError("cannot build an index from an empty corpus")
        bm25s = _bm25s()
        model = bm25s.BM25(method=method, k1=k1, b=b)
        model.index(bm25s.tokenization.Tokenized(ids=token_ids, vocab=vocab), show_progress=show_progress)
        params = {"format_version": FORMAT_VERSION, "analyzer": analyzer, "k1": k1, "b": b, "method": method, "documents": len(docs)}
        logger.info("indexed %d documents, %d terms", len(docs), len(vocab))
        return cls(model, DocumentStore.from_documents(docs), params)

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (the old index stays intact until the new one is complete)."""
        with new_generation(path) as folder:
            self._model.save(folder / "bm25", show_progress=False)
            self.documents.save(folder)
            (folder / "meta.json").write_text(json.dumps(self.params, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True) -> "BM25Index":
        folder = live_generation(path)
        try:
            params = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IndexFormatError(f"{path} is corrupt: cannot read meta.json ({err})") from None
        if params.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(f"{path} has index format {params.get('format_version')}, this finerank reads format {FORMAT_VERSION}: rebuild it")
        try:
            model = _bm25s().BM25.load(folder / "bm25", mmap=mmap, show_progress=False, verbosity=0)
            documents = DocumentStore.load(folder, mmap=mmap)
        except (OSError, ValueError) as err:
            raise IndexFormatError(f"{path} is corrupt: {err}") from None
        return cls(model, documents, params)

    def __len__(self) -> int:
        return len(self.documents)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (terms unknown to the index are ignored)."""
        vocab = self._model.vocab_dict
        ids = [vocab[t] for t in self.analyzer(query) if t in vocab]
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return self._model.get_scores(ids)

    def search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The top ``k`` documents with a positive score, best first (ties by index order).

        With ``filter`` (see :mod:`finerank.filters`), only matching documents are ranked, so
        k results come back whenever k matching documents have a positive score.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        scores = self.scores(query)
        if filter:
            filters.validate(filter)
            keep = np.zeros(len(scores), dtype=bool)
            for i in np.flatnonzero(scores > 0):
                keep[i] = filters.matches(self.documents[int(i)], filter)
            scores = np.where(keep, scores, 0)
        top = top_k(scores, k)
        return [Hit(self.documents[int(i)], float(scores[i]), r, r) for r, i in enumerate(top, 1)]

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest positive scores, best first, ties broken by position."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:  # keep every candidate tied with the k-th, so ties resolve by position
        kth = np.partition(scores[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[scores[candidates] >= kth]
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]
