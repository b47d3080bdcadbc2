"""Read documents, queries, judgements and runs from files, with errors that name the file and line.

Corpus formats (chosen by :func:`read_corpus` from the path):

- JSONL: one object per line with ``_id`` (or ``id``), ``text`` and optional ``title``;
  every other field is kept as metadata.
- BEIR folder: a folder holding ``corpus.jsonl`` (and ``queries.jsonl``, ``qrels/<split>.tsv``).
- CSV / TSV: a header row naming an ``_id``/``id`` column and a ``text`` column.
- A folder of ``.txt`` / ``.md`` files: one document per file, its path as id.

Records are streamed, never loaded twice. A bad record raises :class:`CorpusError`;
with ``skip_invalid=True`` it is logged with its line and skipped instead.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import CorpusError
from .types import Document

logger = logging.getLogger(__name__)

ID_KEYS = ("_id", "id")
TEXT_SUFFIXES = (".txt", ".md")


def read_corpus(
    path: str | Path, *, skip_invalid: bool = False, number_missing_ids: bool = False
) -> Iterator[Document]:
    """Yield the documents of a corpus file or folder, in file order.

    Raises :class:`CorpusError` for a missing path, a malformed record, a missing id (unless
    ``number_missing_ids``: a record without one is named by its 0-based position, as lines of
    plain text are) or text, a duplicate id, bytes that are not UTF-8, or a corpus with no documents.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            records = _jsonl_records(path / "corpus.jsonl")
        else:
            records = _folder_records(path)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            records = _csv_records(path, "\t" if suffix == ".tsv" else ",", ids=not number_missing_ids)
        elif suffix in TEXT_SUFFIXES:
            records = _folder_records(path)
        else:
            records = _jsonl_records(path)
    else:
        raise CorpusError("no such file or folder", path)

    seen: dict[str, int] = {}
    skipped = 0
    for position, (where, line, record) in enumerate(records):
        try:
            if isinstance(record, CorpusError):
                raise record
            if number_missing_ids and isinstance(record, dict) and not any(k in record for k in ID_KEYS):
                record = {"_id": str(position), **record}
            doc = _to_document(record, where, line)
            if doc.id in seen:
                raise CorpusError(f"duplicate document id {doc.id!r} (first seen on line {seen[doc.id]})", where, line)
        except CorpusError as err:
            if not skip_invalid:
                raise
            skipped += 1
            logger.warning("skipped: %s", err)
            continue
        seen[doc.id] = line
        yield doc
    if skipped:
        logger.warning("skipped %d invalid record(s) in %s", skipped, path)
    if not seen:
        raise CorpusError("no documents found (empty corpus)", path)


def _to_document(record: object, path: Path, line: int) -> Document:
    if not isinstance(record, dict):
        raise CorpusError(f"expected a JSON object, got {type(record).__name__}", path, line)
    doc_id = next((record[k] for k in ID_KEYS if k in record), None)
    if doc_id is None or str(doc_id).strip() == "":
        raise CorpusError("missing document id (an '_id' or 'id' field)", path, line)
    text, title = record.get("text"), record.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise CorpusError("'text' must be a string (and 'title', if given)", path, line)
    if not text.strip() and not title.strip():
        raise CorpusError(f"document {doc_id!r} has no text", path, line)
    if not _is_unicode(text + title + str(doc_id)):
        raise CorpusError(
            f"document {doc_id!r} holds a lone surrogate (an escape like \\ud800): not valid Unicode text", path, line
        )
    metadata = {k: v for k, v in record.items() if k not in ID_KEYS and k not in ("text", "title")}
    return Document(id=str(doc_id), text=text, title=title, metadata=metadata)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | CorpusError]]:
    """Yield (line number, text) per line; a line that is not UTF-8 comes as a CorpusError."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield number, CorpusError(f"not UTF-8 text (byte {err.start})", path, number)


def _jsonl_records(path: Path) -> Iterator[tuple[Path, int, object]]:
    for number, text in _decoded_lines(path):
        if isinstance(text, CorpusError):
            yield path, number, text
        elif text.strip():
            try:
                yield path, number, json.loads(text)
            except json.JSONDecodeError as err:
                yield path, number, CorpusError(f"malformed JSON: {err.msg} (column {err.colno})", path, number)


def _csv_records(path: Path, delimiter: str, ids: bool = True) -> Iterator[tuple[Path, int, object]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if (
                not reader.fieldnames
                or (ids and not any(k in reader.fieldnames for k in ID_KEYS))
                or "text" not in reader.fieldnames
            ):
                needed = "an '_id' (or 'id') and a 'text' column" if ids else "a 'text' column"
                raise CorpusError(f"the header must name {needed}, got {reader.fieldnames}", path, 1)
            for row in reader:
                if None in row:
                    yield path, reader.line_num, CorpusError("more fields than the header names", path, reader.line_num)
                else:
                    yield path, reader.line_num, row
    except UnicodeDecodeError as err:
        raise CorpusError(f"not UTF-8 text (byte {err.start} of the file)", path) from None


def _folder_records(path: Path) -> Iterator[tuple[Path, int, object]]:
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
    )
    for file in files:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            yield file, 0, CorpusError(f"not UTF-8 text (byte {err.start})", file)
            continue
        doc_id = file.name if file == path else file.relative_to(path).as_posix()
        yield file, 0, {"_id": doc_id, "title": file.stem, "text": text, "path": str(file)}


def read_documents(source: str) -> list[Document]:
    """Documents to rerank from ``source``: a corpus file (JSONL, JSON, CSV, TSV; a record without an
    id is named by its position), or plain text with one document per line (ids 0, 1, ...); ``-``
    reads standard input (JSONL when its first line is a JSON object)."""
    path = Path(source)
    if source != "-" and path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
        return list(read_corpus(path, number_missing_ids=True))
    raw = sys.stdin.buffer.read() if source == "-" else path.read_bytes()
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CorpusError(f"{'stdin' if source == '-' else source}:{line}: not UTF-8 text (byte {err.start})") from None
    if source == "-" and lines and lines[0].lstrip().startswith("{"):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8", delete=False) as f:
            f.write("\n".join(lines))
        try:
            return list(read_corpus(f.name, number_missing_ids=True))
        finally:
            Path(f.name).unlink()
    documents = [Document(id=str(i), text=line) for i, line in enumerate(lines) if line.strip()]
    if not documents:
        raise CorpusError(f"no documents in {'stdin' if source == '-' else source}")
    return documents


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries from BEIR ``queries.jsonl`` (``_id``, ``text``) or a ``qid<TAB>text`` file."""
    path = Path(path)
    queries: dict[str, str] = {}
    for number, text in _decoded_lines(path):
        if isinstance(text, CorpusError):
            raise text
        if not text.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(text)
                qid, qtext = str(record["_id"]), record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CorpusError("expected a JSON object with '_id' and 'text'", path, number) from None
        else:
            qid, _, qtext = text.rstrip("\r\n").partition("\t")
        queries[qid] = qtext
    return queries


def _fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each non-blank line."""
    for number, text in _decoded_lines(path):
        if isinstance(text, CorpusError):
            raise text
        if text.strip():
            yield number, text.split()


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Judgements from a BEIR ``qrels/*.tsv`` (header, then qid, docid, grade) or TREC qrels
    (``qid 0 docid grade``)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for number, fields in _fields(path):
        if number == 1 and fields[0] == "query-id":
            continue
        if len(fields) not in (3, 4):
            raise CorpusError(f"expected 3 (BEIR) or 4 (TREC) fields, got {len(fields)}", path, number)
        qid, docid, grade = (fields[0], fields[1], fields[2]) if len(fields) == 3 else (fields[0], fields[2], fields[3])
        try:
            qrels.setdefault(qid, {})[docid] = int(grade)
        except ValueError:
            raise CorpusError(f"relevance grade {grade!r} is not an integer", path, number) from None
    return qrels


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """A first-stage run in TREC format (``qid Q0 docid rank score tag``): qid -> {docid: score}."""
    path = Path(path)
    run: dict[str, dict[str, float]] = {}
    for number, fields in _fields(path):
        if len(fields) != 6:
            raise CorpusError(f"expected 6 fields (qid Q0 docid rank score tag), got {len(fields)}", path, number)
        try:
            run.setdefault(fields[0], {})[fields[2]] = float(fields[4])
        except ValueError:
            raise CorpusError(f"score {fields[4]!r} is not a number", path, number) from None
    return run
