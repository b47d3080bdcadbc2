"""The index, storage only: documents, their analyzed tokens, BM25's arrays and (when built
with an encoder) dense vectors, in one folder with one format version. Saves are atomic and
safe across processes (see ``_storage``); loads memory-map the arrays and documents. Searching
it is the retrievers' job (``finerank.retrievers``).

Updates (:meth:`Index.update`) analyze and encode only the documents they add. BM25's
statistics are recomputed from the stored tokens, so scores equal a full rebuild's; vectors and
the HNSW graph keep their unchanged rows and nodes.
"""

from __future__ import annotations

import functools
import json
import logging
import mmap as _mmap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import analysis, filters
from ._storage import current, live_generation, locked, new_generation
from .errors import CorpusError, IndexFormatError, ModelError, NotFoundError
from .lexical import bm25_model, load_bm25
from .types import Document
from .vectors import VectorIndex

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2


class StoredDocument(Document):
    """A document of an index, read from the store when first used: a search returns a hundred
    candidates and their ids, and only some are ever read in full. Its id is parsed from the
    front of its record (written first by :func:`encode`) without parsing the rest. Equal to,
    and pickled as, the plain :class:`Document` with the same fields."""

    def __new__(cls, *args, **kwargs):
        if kwargs or len(args) != 2 or not isinstance(args[0], DocumentStore):
            return Document(*args, **kwargs)  # dataclasses.replace(...) and copies: a plain document
        return object.__new__(cls)

    def __init__(self, store: DocumentStore, position: int):  # noqa: D107 - fields come from the store
        self.__dict__.update(_store=store, _position=position)

    @property
    def id(self) -> str:  # type: ignore[override]
        if "_id" not in self.__dict__:
            line = self._store.line(self._position).decode("utf-8")
            object.__setattr__(
                self,
                "_id",
                _scan_string(line, len(_ID_START))[0] if line.startswith(_ID_START) else self._record()["id"],
            )
        return self.__dict__["_id"]

    text = property(lambda self: self._record()["text"])  # type: ignore[assignment]
    title = property(lambda self: self._record()["title"])  # type: ignore[assignment]
    metadata = property(lambda self: self._record()["metadata"])  # type: ignore[assignment]

    def _record(self) -> dict:
        if "_fields" not in self.__dict__:
            object.__setattr__(self, "_fields", json.loads(self._store.line(self._position)))
        return self.__dict__["_fields"]

    def plain(self) -> Document:
        return Document(self.id, self.text, self.title, self.metadata)

    def __eq__(self, other):
        return isinstance(other, Document) and (self.id, self.text, self.title, self.metadata) == (
            other.id,
            other.text,
            other.title,
            other.metadata,
        )

    __hash__ = Document.__hash__

    def __reduce__(self):
        return Document, (self.id, self.text, self.title, self.metadata)

    def __repr__(self) -> str:
        return repr(self.plain())


_ID_START = '{"id": "'
_scan_string = json.decoder.scanstring


class DocumentStore:
    """Documents as JSON lines in one byte buffer (in memory or memory-mapped) plus offsets."""

    def __init__(self, blob: bytes | _mmap.mmap, offsets: np.ndarray):
        self._blob, self._offsets = blob, offsets
        self._positions: dict[str, int] | None = None

    @classmethod
    def from_lines(cls, lines: Sequence[bytes]) -> DocumentStore:
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum([len(line) for line in lines], out=offsets[1:])
        return cls(b"".join(lines), offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def line(self, position: int) -> bytes:
        return self._blob[self._offsets[position] : self._offsets[position + 1]]

    def __getitem__(self, position: int) -> Document:
        return StoredDocument(self, position)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._ids()

    def position(self, doc_id: str) -> int:
        """The position of a document id; KeyError naming the id if the index lacks it."""
        try:
            return self._ids()[doc_id]
        except KeyError:
            raise KeyError(f"unknown document id {doc_id!r}") from None

    def _ids(self) -> dict[str, int]:
        if self._positions is None:
            self._positions = {self[i].id: i for i in range(len(self))}
        return self._positions

    def save(self, folder: Path) -> None:
        (folder / "documents.jsonl").write_bytes(bytes(self._blob))
        np.save(folder / "offsets.npy", self._offsets)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> DocumentStore:
        """Offsets are read into memory (8 bytes a document); the records are memory-mapped."""
        path = folder / "documents.jsonl"
        if mmap and path.stat().st_size:
            with open(path, "rb") as f:
                blob = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
        else:
            blob = path.read_bytes()
        return cls(blob, np.load(folder / "offsets.npy"))


def encode(doc: Document) -> bytes:
    record = {"id": doc.id, "title": doc.title, "text": doc.text, "metadata": dict(doc.metadata)}
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class Index:
    """Documents with BM25's arrays (Lucene's variant by default: k1=0.9, b=0.4) over title +
    text, and dense vectors when built with an encoder. ``generation`` names the saved
    generation it was loaded from (None for an index built or changed in memory since)."""

    def __init__(
        self,
        documents: DocumentStore,
        tokens: np.ndarray,
        token_offsets: np.ndarray,
        keys: np.ndarray,
        bm25,
        params: dict,
        vectors: VectorIndex | None = None,
        generation: str | None = None,
    ):
        self.documents, self.keys, self.params, self.vectors = documents, keys, params, vectors
        self._tokens, self._token_offsets, self.bm25 = tokens, token_offsets, bm25
        self.analyzer = analysis.analyzer_of(params)
        self.per_language = self.analyzer in (analysis.ANALYZERS[n] for n in analysis.PER_LANGUAGE)
        self.generation = generation
        self._base: tuple[Path, str] | None = (
            None  # (folder, generation) this index was loaded from or derives from (see save)
        )
        self._filterable: list[Document | None] = [None] * len(
            documents
        )  # what filters read, parsed once (see allowed)

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        *,
        analyzer: str = "auto",
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        encoder=None,
        ann: str = "auto",
        show_progress: bool = False,
    ) -> Index:
        """Index ``documents``; with ``encoder`` (a :class:`finerank.BiEncoder`) also their vectors,
        searched exactly or through HNSW (``ann``: auto picks HNSW from 100,000 documents)."""
        from tqdm.auto import tqdm

        docs = list(tqdm(documents, desc="reading", unit=" docs", disable=not show_progress))
        if not docs:
            raise CorpusError("cannot build an index from an empty corpus")
        _check_unique(docs)
        analyze = analysis.analyzer(analyzer)
        vocab: dict[str, int] = {"": 0}
        bar = {"unit": " docs", "total": len(docs), "disable": not show_progress}
        langs = analysis.corpus_languages(d.content for d in tqdm(docs, desc="identifying languages", **bar))
        analyzing = tqdm(zip(docs, langs), desc="analyzing", **bar)
        token_lists = [_token_ids(analyze, d, lang, vocab) for d, lang in analyzing]
        params = {
            "format_version": FORMAT_VERSION,
            "analyzer": analyzer,
            "analyzer_version": analysis.ANALYZER_VERSION,
            "k1": k1,
            "b": b,
            "method": method,
            "languages": _counts(langs),
        }
        tokens, offsets = _flatten(token_lists)
        keys = np.arange(len(docs), dtype=np.int64)
        vectors = None
        if encoder is not None:
            params["dense"] = _encoder_params(encoder)
            rows, counts = _embed(encoder, docs, show_progress)
            vectors = VectorIndex.build(rows, keys, ann, counts, encoder.whole_document)
            params["dense"]["ann"] = vectors.ann
        index = cls(
            DocumentStore.from_lines([encode(d) for d in docs]),
            tokens,
            offsets,
            keys,
            bm25_model(token_lists, vocab, params),
            params | {"documents": len(docs), "next_key": len(docs)},
            vectors,
        )
        logger.info(
            "indexed %d documents, %d terms%s", len(docs), len(vocab), f", {vectors.ann} vectors" if vectors else ""
        )
        return index

    def update(
        self, add: Iterable[Document] = (), delete: Iterable[str] = (), *, encoder=None, show_progress: bool = False
    ) -> Index:
        """A new index with ``add`` added (a document whose id exists replaces it) and the ids in
        ``delete`` removed; this one is left as it was. Only added documents are analyzed and
        encoded; an index with vectors needs the ``encoder`` it was built with to add documents.
        An unknown id in ``delete`` raises NotFoundError and changes nothing."""
        add, delete = list(add), list(dict.fromkeys(delete))
        _check_unique(add)
        unknown = [i for i in delete if i not in self.documents]
        if unknown:
            raise NotFoundError(
                f"unknown document id(s) {', '.join(map(repr, unknown[:5]))}; nothing was changed", "ids"
            )
        keep = np.ones(len(self), dtype=bool)
        for doc_id in [*delete, *(d.id for d in add if d.id in self.documents)]:
            keep[self.documents.position(doc_id)] = False
        if not keep.any() and not add:
            raise CorpusError("an update cannot delete every document of the index")
        kept = np.flatnonzero(keep)
        vocab = dict(self.bm25.vocab_dict)
        token_lists = [self._tokens[self._token_offsets[i] : self._token_offsets[i + 1]].tolist() for i in kept]
        added = analysis.corpus_languages((d.content for d in add), self.params.get("languages"))
        token_lists += [_token_ids(self.analyzer, d, lang, vocab) for d, lang in zip(add, added)]
        tokens, offsets = _flatten(token_lists)
        new_keys = np.arange(self.params["next_key"], self.params["next_key"] + len(add), dtype=np.int64)
        vectors = None
        if self.vectors is not None:
            if add and encoder is None:
                raise ModelError(
                    f"this index holds vectors from {self.params['dense']['model']}: pass that encoder to add documents"
                )
            reads = (self.params["dense"].get("window", 0), self.params["dense"].get("whole", 0.0))
            if add and (getattr(encoder, "document_window", 0), getattr(encoder, "whole_document", 0.0)) != reads:
                raise ModelError(
                    f"this index reads documents in windows of {reads[0]} tokens (0: whole), "
                    f"the whole text weighing {reads[1]}; "
                    f"the encoder given reads {getattr(encoder, 'document_window', 0)}: "
                    "pass the one it was built with (finerank.encoder_of)"
                )
            new_vectors, counts = (
                _embed(encoder, add, show_progress)
                if add
                else (np.empty((0, self.vectors.dimension), np.float32), None)
            )
            vectors = self.vectors.updated(keep, new_vectors, new_keys, counts)
        documents = DocumentStore.from_lines([self.documents.line(int(i)) for i in kept] + [encode(d) for d in add])
        counts = dict(self.params.get("languages", {}))  # documents per language: the removed out, the added in
        removed_texts = (self.documents[int(i)].content for i in np.flatnonzero(~keep))
        removed = _counts(analysis.corpus_languages(removed_texts, counts))
        for langs, sign in ((removed, -1), (_counts(added), 1)):
            for lang, n in langs.items():
                counts[lang] = counts.get(lang, 0) + sign * n
        params = self.params | {
            "documents": len(documents),
            "next_key": self.params["next_key"] + len(add),
            "languages": {lang: n for lang, n in sorted(counts.items()) if n > 0},
        }
        logger.info("updated index: %d kept, %d added, %d deleted", len(kept), len(add), len(delete))
        new = Index(
            documents,
            tokens,
            offsets,
            np.concatenate([self.keys[keep], new_keys]),
            bm25_model(token_lists, vocab, params),
            params,
            vectors,
        )
        new._base = self._base
        return new

    @classmethod
    def edit(
        cls,
        path: str | Path,
        *,
        add: Iterable[Document] = (),
        delete: Iterable[str] = (),
        encoder=None,
        show_progress: bool = False,
    ) -> tuple[Index, Index]:
        """Load the index in ``path``, update it and save it, all under its writer lock, so
        concurrent editors (processes or threads) queue and none loses another's update.
        Returns (the index before, the index after)."""
        with locked(path):
            old = cls.load(path)
            new = old.update(add, delete, encoder=encoder, show_progress=show_progress)
            new.save(path)
            return old, new

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically: the old index stays intact until the new one
        is complete. An index loaded from ``path`` (or updated from one) is saved only if
        ``path`` still holds the generation it came from (else IndexFormatError: load again);
        a newly built index replaces whatever ``path`` holds."""
        same_place = self._base is not None and self._base[0] == Path(path).resolve()
        with new_generation(path, self._base[1] if same_place else None, check=same_place) as folder:
            self.bm25.save(folder / "bm25", show_progress=False)
            self.documents.save(folder)
            np.save(folder / "tokens.npy", np.asarray(self._tokens))
            np.save(folder / "token_offsets.npy", np.asarray(self._token_offsets))
            np.save(folder / "keys.npy", np.asarray(self.keys))
            if self.vectors is not None:
                self.vectors.save(folder)
            (folder / "meta.json").write_text(json.dumps(self.params, indent=2), encoding="utf-8")
        self.generation, self._base = folder.name, (Path(path).resolve(), folder.name)

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True, attempts: int = 5) -> Index:
        """The live generation of the index in ``path``. A save that publishes and retires
        generations while this reads is retried (the old generation may vanish under it)."""
        for _ in range(attempts - 1):
            name = current(path)
            try:
                return cls._load(path, live_generation(path), mmap)
            except IndexFormatError:
                if name is None or current(path) == name:
                    raise  # nothing moved: the index really is missing or corrupt
        return cls._load(path, live_generation(path), mmap)

    @classmethod
    def _load(cls, path: str | Path, folder: Path, mmap: bool) -> Index:
        try:
            params = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IndexFormatError(f"{path} is corrupt: cannot read meta.json ({err})") from None
        if params.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{path} has index format {params.get('format_version')}, "
                f"this finerank reads format {FORMAT_VERSION}: rebuild it"
            )
        mode = "r" if mmap else None
        try:
            bm25 = load_bm25(folder / "bm25", mmap)
            documents = DocumentStore.load(folder, mmap=mmap)
            arrays = [np.load(folder / f"{name}.npy", mmap_mode=mode) for name in ("tokens", "token_offsets", "keys")]
        except (OSError, ValueError) as err:
            raise IndexFormatError(f"{path} is corrupt: {err}") from None
        if not len(documents) == len(arrays[2]) == len(arrays[1]) - 1 == params.get("documents"):
            raise IndexFormatError(f"{path} is corrupt: its files disagree on the number of documents")
        dense = params.get("dense")
        vectors = VectorIndex.load(folder, arrays[2], dense["ann"], mmap, dense.get("whole", 0.0)) if dense else None
        index = cls(documents, *arrays, bm25, params, vectors, generation=folder.name)
        index._base = (Path(path).resolve(), folder.name)
        return index

    def __len__(self) -> int:
        return len(self.documents)

    def query_language(self, query: str) -> str:
        """The language ``query`` is analysed as: the likeliest of the languages the index's
        documents are in, each weighted by its share of them (see :func:`finerank.analysis.language`)."""
        return analysis.language(query, self.params.get("languages", {}))

    def analyze_query(self, query: str) -> list[str]:
        """The query's terms, analysed as the documents of its language were."""
        return self.query_analyzer(query)(query)

    def query_analyzer(self, query: str):
        """The analysis of texts in the query's language (what highlighting matches words with)."""
        return functools.partial(self.analyzer, lang=self.query_language(query)) if self.per_language else self.analyzer

    def query_analysis(self, query: str) -> str:
        """How the query is analysed, in words: the analyzer's name, and the language for one
        that reads each language in its own way (e.g. "auto (ru)")."""
        name = self.params["analyzer"]
        return f"{name} ({self.query_language(query)})" if self.per_language else name

    def share(self, language: str) -> float:
        """The share of the index's documents in ``language`` (see :func:`finerank.analysis.language`)."""
        counts = self.params.get("languages", {})
        return counts.get(language, 0) / max(1, sum(counts.values()))

    def allowed(self, filter: Mapping[str, Any] | None, among: np.ndarray | None = None) -> np.ndarray | None:
        """A boolean mask of the documents ``filter`` lets through (None: no filter), checking
        only the positions in ``among`` when given (the rest are left out)."""
        if not filter:
            return None
        filters.validate(filter)
        mask = np.zeros(len(self), dtype=bool)
        for i in range(len(self)) if among is None else map(int, among):
            mask[i] = filters.matches(self._fields(i), filter)
        return mask

    def has_field(self, field: str) -> bool:
        """Whether any document has ``field`` (``id`` and ``title`` always; else a metadata key)."""
        return field in ("id", "title") or any(field in self._fields(i).metadata for i in range(len(self)))

    def _fields(self, i: int) -> Document:
        """Document ``i``'s id, title and metadata (not its text), read once: what filters read."""
        if self._filterable[i] is None:
            document = self.documents[i]
            self._filterable[i] = Document(document.id, "", document.title, document.metadata)
        return self._filterable[i]

    def vectors_of(self, ids: Sequence[str]) -> list[np.ndarray]:
        """The stored vectors of these documents: per id, the rows of its windows (one row for
        an index that reads documents whole)."""
        if self.vectors is None:
            raise IndexFormatError("this index has no dense vectors: build it with an encoder (finerank index --dense)")
        return self.vectors.rows([self.documents.position(i) for i in ids])


def _check_unique(docs: Sequence[Document]) -> None:
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise CorpusError(f"duplicate document id {doc.id!r}")
        seen.add(doc.id)


def _token_ids(analyze, doc: Document, lang: str, vocab: dict[str, int]) -> list[int]:
    return [vocab.setdefault(t, len(vocab)) for t in analyze(doc.content, lang)]


def _counts(langs: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(langs).items()))


def _flatten(token_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in token_lists], out=offsets[1:])
    flat = np.fromiter((t for ids in token_lists for t in ids), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _encoder_params(encoder) -> dict:
    return {
        "model": encoder.name,
        "dimension": encoder.dimension,
        "max_length": encoder.max_length,
        "query_prefix": encoder.query_prefix,
        "document_prefix": encoder.document_prefix,
        "window": encoder.document_window,
        "whole": encoder.whole_document,
    }


def _embed(encoder, docs: Sequence[Document], show_progress: bool, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of the documents' windows, in order, and how many each document has."""
    from tqdm.auto import tqdm

    parts = [
        encoder.embed_document_windows([d.content for d in docs[i : i + chunk]])
        for i in tqdm(range(0, len(docs), chunk), desc="encoding", unit=f" x{chunk} docs", disable=not show_progress)
    ]
    if not parts:
        return np.empty((0, encoder.dimension), dtype=np.float32), np.empty(0, dtype=np.int64)
    return np.concatenate([v for v, _ in parts]), np.concatenate([c for _, c in parts])
