"""Relevance judgments of a user's own queries: grades 0-3 of (query, document) pairs, and the
loop they feed, from "does reranking help me?" to a trained second stage that provably does.

Grades are kept in a JSON-lines file beside the index (``judgments.jsonl`` in its folder, or a
file of the caller's), one line a grade with who gave it and when. A grade is appended under an
exclusive ``flock`` in one write, so two people judging at once lose nothing (threads and
processes alike); the latest grade of a (query, document) pair counts. The file reads as a BEIR
dataset (:meth:`Judgments.dataset`, :meth:`Judgments.export`), so ``finerank eval`` and
``finerank train`` read it like any other; a fixed share of the queries, chosen by a hash of their
text, is held out (the ``test`` split) and never trained on.

What is offered for grading is the pool of both lists (:func:`pool`, TREC's pooling): the first
stage's top results and the reranked ones, interleaved, so a comparison of the two is biased
toward neither. :func:`disagreement` says how far the two lists differ, to judge first the
queries where they disagree most.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import CorpusError
from .types import Hit, Ranking

logger = logging.getLogger(__name__)

FILE = "judgments.jsonl"
GRADES = {0: "not relevant", 1: "related", 2: "relevant", 3: "perfect"}
HELD_OUT = 0.3  # the share of judged queries in the test split


@dataclass(frozen=True)
class Judgment:
    query: str
    id: str  # the document's id
    grade: int  # 0-3, see GRADES
    user: str | None = None
    time: float = 0.0  # seconds since the epoch


def query_id(query: str) -> str:
    """A stable id for a query's text (the BEIR files name queries by id)."""
    return "q-" + hashlib.sha256(query.encode("utf-8")).hexdigest()[:12]


def held_out(query: str) -> bool:
    """Whether a query belongs to the test split: fixed by its text, so it never moves to train."""
    return int(hashlib.sha256(b"split:" + query.encode("utf-8")).hexdigest()[:8], 16) < HELD_OUT * 16**8


def _text(value: object) -> bool:
    """A string that is text: encodable as UTF-8 (no lone surrogate)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check(query: object, doc_id: object, grade: object) -> tuple[str, str, int]:
    """The grade's fields, or ValueError naming the one that is wrong."""
    if not _text(query) or not query.strip():
        raise ValueError("query: a judgment needs a non-empty query of UTF-8 text")
    if not _text(doc_id) or not doc_id:
        raise ValueError("id: a judgment needs the document's id (UTF-8 text)")
    if isinstance(grade, bool) or not isinstance(grade, int) or grade not in GRADES:
        raise ValueError(f"grade: a whole number from 0 to 3 ({', '.join(f'{g} {w}' for g, w in GRADES.items())})")
    return query.strip(), doc_id, grade


class Judgments:
    """The grades in one JSON-lines file (created at the first grade)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"judgments: {self.path} is a folder; give a file (it is created at the first grade)")
        folder = next((p for p in self.path.parents if p.exists()), None)
        if folder is not None and not folder.is_dir():
            raise ValueError(f"judgments: {folder} is a file, so {self.path} cannot be made")
        self._reading = threading.Lock()
        # (device and inode, bytes parsed, lines parsed, latest grades, the last bytes parsed)
        self._parsed: tuple = (None, 0, 0, {}, b"")

    @classmethod
    def of_index(cls, index_folder: str | os.PathLike) -> Judgments:
        """The judgments kept beside an index (its folder's ``judgments.jsonl``)."""
        return cls(Path(index_folder) / FILE)

    @contextlib.contextmanager
    def _locked(self, mode: str, lock: int) -> Iterator:
        with open(self.path, mode) as handle:
            fcntl.flock(handle, lock)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def add(self, query: str, doc_id: str, grade: int, user: str | None = None) -> Judgment:
        """Store one grade (it replaces the pair's earlier one), atomically and durably."""
        judgment = Judgment(*check(query, doc_id, grade), user=user, time=round(time.time(), 3))
        line = (json.dumps(asdict(judgment), ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked("a+b", fcntl.LOCK_EX) as handle:
            if handle.seek(0, os.SEEK_END):
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a writer killed mid-line: this grade starts a line of its own
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return judgment

    def read(self) -> list[Judgment]:
        """The latest grade of each (query, document) pair, in the order they were first graded.
        A line that is not a judgment is skipped with a warning naming it. The file only grows, so
        what was read before is kept and only the lines added since are parsed (a file replaced, or
        whose bytes before that point changed, is read again from its start)."""
        if not self.path.is_file():
            return []
        with self._reading, self._locked("rb", fcntl.LOCK_SH) as handle:
            stat = os.fstat(handle.fileno())
            file, offset, lines, latest, last = self._parsed
            handle.seek(offset - len(last))
            if file != (stat.st_dev, stat.st_ino) or stat.st_size < offset or handle.read(len(last)) != last:
                offset, lines, latest, last = 0, 0, {}, b""  # replaced, or cut and written again: from the start
                handle.seek(0)
            data = handle.read()
            end = data.rfind(b"\n") + 1  # whole lines are kept; a last line without its newline is read each time
            lines = self._parse(data[:end], lines, latest)
            offset += end
            last = (last + data[:end])[-64:]  # the bytes before the offset, which a later read finds unchanged
            self._parsed = ((stat.st_dev, stat.st_ino), offset, lines, latest, last)
            if end == len(data):
                return list(latest.values())
            with_tail = dict(latest)
            self._parse(data[end:], lines, with_tail)
            return list(with_tail.values())

    def _parse(self, data: bytes, lines: int, latest: dict[tuple[str, str], Judgment]) -> int:
        """Parse ``data`` (the file's lines after its first ``lines``) into ``latest``; the lines now read."""
        for number, raw in enumerate(data.splitlines(), lines + 1):
            lines = number
            try:
                record = json.loads(raw.decode("utf-8"))
                query, doc_id, grade = check(record.get("query"), record.get("id"), record.get("grade"))
                judgment = Judgment(query, doc_id, grade, record.get("user"), float(record.get("time") or 0))
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, ValueError, TypeError) as err:
                logger.warning("%s line %d: not a judgment, skipped (%s)", self.path, number, err)
                continue
            latest[(query, doc_id)] = judgment
        return lines

    def grades(self) -> dict[str, dict[str, int]]:
        """query -> {document id: grade}."""
        out: dict[str, dict[str, int]] = {}
        for j in self.read():
            out.setdefault(j.query, {})[j.id] = j.grade
        return out

    def dataset(self, split: str = "all", name: str | None = None):
        """The judged queries as an evaluation :class:`~finerank.evaluate.Dataset`: ``train``,
        ``test`` (the held-out share) or ``all``. Queries with no grade above 0 are skipped."""
        from .evaluate import Dataset

        if split not in ("all", "train", "test"):
            raise ValueError(f"split: all, train or test, not {split!r}")
        graded = self.grades()
        chosen = {q: g for q, g in graded.items() if split == "all" or held_out(q) == (split == "test")}
        kept = {q: g for q, g in chosen.items() if any(v > 0 for v in g.values())}
        return Dataset(
            name=name or self.path.name,
            folder=self.path.parent,
            split=split,
            queries={query_id(q): q for q in kept},
            qrels={query_id(q): g for q, g in kept.items()},
            skipped=len(chosen) - len(kept),
            judged=len(kept),
        )

    def beir_files(self) -> dict[str, str]:
        """``queries.jsonl`` and ``qrels/{train,test,all}.tsv`` of the judged queries (BEIR's files;
        test is the held-out share, all is both)."""
        graded = self.grades()
        spaced = next((d for grades in graded.values() for d in grades if len(d.split()) != 1), None)
        if spaced is not None:
            raise ValueError(
                f"document id {spaced!r} holds whitespace, which BEIR's qrels files cannot: "
                "evaluate and train with --judgments instead of exporting"
            )
        files = {
            "queries.jsonl": "".join(
                json.dumps({"_id": query_id(q), "text": q}, ensure_ascii=False) + "\n" for q in graded
            )
        }
        for split in ("train", "test", "all"):
            rows = [
                f"{query_id(q)}\t{doc_id}\t{grade}\n"
                for q, grades in graded.items()
                if split == "all" or held_out(q) == (split == "test")
                for doc_id, grade in grades.items()
            ]
            files[f"qrels/{split}.tsv"] = "query-id\tcorpus-id\tscore\n" + "".join(rows)
        return files

    def export(self, folder: str | os.PathLike, documents: Iterable) -> Path:
        """A BEIR folder: the judged queries, their qrels (train and the held-out test) and the
        ``documents`` (an index's) as ``corpus.jsonl``; ``finerank eval`` and ``train`` read it."""
        from ._storage import replaced

        folder = Path(folder)
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        with replaced(folder / "corpus.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
            for d in documents:
                row = {"_id": d.id, "title": d.title, "text": d.text, **dict(d.metadata)}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        for name, text in self.beir_files().items():
            with replaced(folder / name) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
        return folder

    def import_beir(
        self, folder: str | os.PathLike, split: str, user: str = "import", known: Container[str] | None = None
    ) -> int:
        """Add the grades of a BEIR folder's ``qrels/<split>.tsv`` (for queries it has text for, and
        documents in ``known`` when given: an index's ids); how many."""
        from .corpus import read_qrels, read_queries

        folder = Path(folder)
        queries, qrels = read_queries(folder / "queries.jsonl"), read_qrels(folder / "qrels" / f"{split}.tsv")
        added = 0
        for qid, grades in qrels.items():
            if qid not in queries or not queries[qid].strip():
                continue
            for doc_id, grade in grades.items():
                if known is None or doc_id in known:
                    self.add(queries[qid], doc_id, min(3, max(0, int(grade))), user)
                    added += 1
        if not added:
            raise CorpusError(f"no grades in qrels/{split}.tsv for queries with text and documents here", folder)
        return added


def pool(ranking: Ranking, depth: int = 10) -> list[Hit]:
    """What to grade for a query: the reranked top ``depth`` and the first stage's, interleaved
    (reranked first) with duplicates dropped, as TREC pools runs: neither list is favoured."""
    out, seen = [], set()
    for pair in zip(ranking.hits[:depth], ranking.candidates[:depth]):
        for hit in pair:
            if hit.id not in seen:
                seen.add(hit.id)
                out.append(hit)
    for hit in [*ranking.hits[:depth], *ranking.candidates[:depth]]:  # the longer list's tail
        if hit.id not in seen:
            seen.add(hit.id)
            out.append(hit)
    return out


def disagreement(ranking: Ranking, depth: int = 10) -> float:
    """How far the reranked top ``depth`` differs from the first stage's: 0 the same documents
    in the same order, 1 no document in common (1 minus the rank-biased overlap at depth, p=0.9)."""
    first, reranked = [h.id for h in ranking.candidates[:depth]], [h.id for h in ranking.hits[:depth]]
    if not first and not reranked:
        return 0.0
    depth = max(len(first), len(reranked))
    p, total, weight = 0.9, 0.0, 0.0
    for d in range(1, depth + 1):
        overlap = len(set(first[:d]) & set(reranked[:d])) / d
        total, weight = total + p ** (d - 1) * overlap, weight + p ** (d - 1)
    return 1.0 - total / weight


def read_query_log(path: str | os.PathLike) -> list[str]:
    """Queries to judge, one a line (a text file), or JSON lines with a ``text`` or ``query`` field;
    duplicates and blank lines dropped, in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise CorpusError(f"not UTF-8 text ({err.reason} at byte {err.start})", path) from None
    out: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("{"):
            try:
                text = json.loads(text).get("text", json.loads(text).get("query"))
            except (json.JSONDecodeError, AttributeError):
                raise CorpusError(
                    'not JSON: a query a line, or a JSON object with a text field (a query that starts with "{" '
                    'is written {"text": ...})',
                    path,
                    number,
                ) from None
            if not isinstance(text, str):
                raise CorpusError("a JSON line needs a string text (or query) field", path, number)
            text = text.strip()
        if not _text(text):
            raise CorpusError("not UTF-8 text (a lone surrogate)", path, number)
        if text and text not in out:
            out.append(text)
    if not out:
        raise CorpusError("no queries in it (a query a line)", path)
    return out


def next_query(queries: Sequence[str], judged: Iterable[str], disagreement_of, sample: int = 8) -> str | None:
    """Of the next ``sample`` queries not yet judged, the one whose lists disagree most
    (``disagreement_of(query)``); None when every query is judged."""
    done = set(judged)
    waiting = [q for q in queries if q not in done][:sample]
    return max(waiting, key=disagreement_of) if waiting else None


def compare(rankings: Sequence[Ranking], grades: dict[str, dict[str, int]]) -> dict:
    """First stage vs reranked over the judged queries of ``rankings`` (each Ranking's
    ``candidates`` and ``hits``; unjudged documents count as not relevant): each list's mean of
    every metric, the reranked gain in nDCG@10 with its paired randomization test, its 95 %
    bootstrap interval, and a sentence of what that means."""
    from .metrics import bootstrap_interval, means, per_query, randomization_test, verdict

    judged = {r.query: r for r in rankings if any(g > 0 for g in grades.get(r.query, {}).values())}
    qrels = {q: grades[q] for q in judged}
    first = per_query({q: [h.id for h in r.candidates] for q, r in judged.items()}, qrels)
    reranked = per_query({q: [h.id for h in r.hits] for q, r in judged.items()}, qrels)
    a, b = list(first["ndcg@10"].values()), list(reranked["ndcg@10"].values())
    gain = float(sum(b) - sum(a)) / len(a) if a else 0.0
    p = randomization_test(a, b) if a else 1.0
    interval = bootstrap_interval(a, b) if a else (0.0, 0.0)
    return {
        "queries": len(judged),
        "first_stage": means(first),
        "reranked": means(reranked),
        "gain": gain,
        "p_value": p,
        "interval": list(interval),
        "verdict": verdict(len(judged), gain, interval, p)
        if judged
        else "no judged query with a relevant document yet",
    }
