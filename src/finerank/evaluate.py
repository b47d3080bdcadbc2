"""The evaluation harness: a first stage and its reranked result side by side over a dataset's
judged queries (metrics from :mod:`finerank.metrics`), with how candidates moved, latency and
cost; fitting fusion and collecting judged scores for calibration."""

from __future__ import annotations

import functools
import logging
import resource
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .corpus import read_qrels, read_queries
from .errors import CorpusError
from .metrics import bootstrap_interval, mean_scores, means, ndcg, per_query, randomization_test
from .types import Document

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .models import Scorer
    from .pipeline import Reranker, Reranking, SecondStage
    from .retrievers import Retriever

# --- the harness: first stage and reranked, side by side ---------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The judged queries of one split of a BEIR folder."""

    name: str
    folder: Path
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    skipped: int  # queries without a relevant judgement in this split, or without text
    judged: int  # judged queries in all (``queries`` may hold fewer, see max_queries)


def load_dataset(folder: str | Path, split: str = "test", max_queries: int | None = None) -> Dataset:
    """Queries with at least one relevant judgement in ``qrels/<split>.tsv``, in file order;
    ``max_queries`` keeps the first N of them (the rest count as skipped)."""
    folder = Path(folder)
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise CorpusError(f"no judgements for split {split!r} (expected {qrels_file})", folder)
    all_queries = read_queries(folder / "queries.jsonl")
    qrels = read_qrels(qrels_file)
    judged = [q for q in all_queries if any(g > 0 for g in qrels.get(q, {}).values()) and all_queries[q].strip()]
    kept = judged[:max_queries] if max_queries else judged
    return Dataset(
        name=folder.name,
        folder=folder,
        split=split,
        queries={q: all_queries[q] for q in kept},
        qrels={q: qrels[q] for q in kept},
        skipped=len(set(all_queries) | set(qrels)) - len(judged),
        judged=len(judged),
    )


@dataclass(frozen=True)
class Evaluation:
    """First stage and reranked metrics for one dataset, with what the rerank stage cost."""

    dataset: str
    split: str
    queries: int
    judged: int
    skipped: int
    first_stage: str
    reranker: str | None
    candidates: int
    scores: dict[str, dict[str, float] | None]  # "first_stage" / "reranked" -> metric -> mean
    per_query: dict[str, dict[str, dict[str, float]] | None]  # stage -> metric -> query id -> value
    p_value: float | None  # paired randomization test on nDCG@10, first stage vs reranked
    gain_interval: tuple[float, float] | None  # 95 % bootstrap interval of the mean nDCG@10 gain
    latency_ms: dict[str, dict[str, float]]  # stage -> p50 / p95 / mean per query
    pairs_per_s: float | None
    peak_rss_mb: float
    moves: tuple[
        tuple[int, int | None], ...
    ]  # per relevant document: (first-stage rank or 0 if missed, reranked rank or None)
    # per query: its text and the top ten ids of each list (reranked is empty without a reranker)
    tops: dict[str, QueryTops] = field(default_factory=dict)
    labels: dict[str, str] = field(
        default_factory=dict
    )  # id -> a short label (title or opening words) of each id in tops

    def to_json(self) -> dict:
        """Everything a report needs, the per-query rankings and the move matrix included
        (what the evaluation page of ``finerank serve`` renders)."""
        matrix = move_matrix(self)
        ndcg = {stage: (values or {}).get("ndcg@10", {}) for stage, values in self.per_query.items()}
        return {
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.queries,
            "judged_queries": self.judged,
            "skipped_queries": self.skipped,
            "first_stage_name": self.first_stage,
            "reranker_name": self.reranker,
            "candidates": self.candidates,
            "metric_notes": "nDCG@10 with trec_eval's linear gain; relevant = grade > 0; "
            "relevant documents the first stage missed count as misses",
            "first_stage": self.scores["first_stage"],
            "reranked": self.scores["reranked"],
            "p_value": self.p_value,
            "gain_interval": list(self.gain_interval) if self.gain_interval else None,
            "latency_ms": self.latency_ms,
            "pairs_per_s": self.pairs_per_s,
            "peak_rss_mb": self.peak_rss_mb,
            "moves": {
                "buckets": list(BUCKET_NAMES[: len(matrix)]),
                "matrix": matrix.tolist(),
                "missed": missed(self),
                "dropped": dropped(self),
            },
            "per_query": [
                {
                    "id": q,
                    "query": t.query,
                    "ndcg@10": [ndcg["first_stage"].get(q), ndcg["reranked"].get(q)],
                    "first_stage": list(t.first_stage),
                    "reranked": list(t.reranked),
                    "relevant": t.relevant,
                }
                for q, t in self.tops.items()
            ],
            "labels": self.labels,
        }


@dataclass(frozen=True)
class QueryTops:
    """One query of an evaluation: its text, the top ten of each list, its relevant documents."""

    query: str
    first_stage: tuple[str, ...]
    reranked: tuple[str, ...]
    relevant: dict[str, int]


BUCKETS = ((1, 1), (2, 3), (4, 10), (11, 20), (21, 50), (51, 100), (101, 10**9))
BUCKET_NAMES = ("1", "2-3", "4-10", "11-20", "21-50", "51-100", ">100")


def move_matrix(ev: Evaluation) -> np.ndarray:
    """Relevant documents among the candidates, counted by first-stage rank bucket (rows) and
    reranked rank bucket (columns); buckets up to the candidate depth."""
    size = _bucket(ev.candidates) + 1
    matrix = np.zeros((size, size), dtype=int)
    for before, after in ev.moves:
        if before and after is not None:
            matrix[_bucket(before), _bucket(after)] += 1
    return matrix


def missed(ev: Evaluation) -> int:
    """Relevant documents the first stage did not recall among its candidates."""
    return sum(1 for before, _ in ev.moves if not before)


def dropped(ev: Evaluation) -> int:
    """Relevant documents among the candidates that the reranked list left out (a cascade's
    cheap stage did not keep them)."""
    return sum(1 for before, after in ev.moves if before and after is None)


def _bucket(rank: int) -> int:
    return next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= rank <= hi)


def evaluate(
    dataset: Dataset,
    first_stage: Retriever | Mapping[str, Mapping[str, float]],
    reranker: SecondStage | Scorer | None = None,
    *,
    documents: Mapping[str, Document] | None = None,
    candidates: int = 100,
    first_stage_name: str | None = None,
    show_progress: bool = False,
    ray_address: str | None = None,
    load: Callable | None = None,
    cheap: SecondStage | Scorer | None = None,
    keep: int = 30,
) -> Evaluation:
    """Run the first stage (a Retriever, or a run: query id -> {doc id: score}) over the dataset's
    judged queries, rerank its top ``candidates`` if a reranker is given (through
    :class:`finerank.Pipeline`, as a search would; with ``cheap``, a cascade that returns the
    ``keep`` best), and score both lists.

    Reranking a run needs ``documents`` (id -> Document); a run that names a document missing
    from them raises CorpusError naming it. With ``ray_address`` a run's queries are reranked on
    that Ray cluster's workers, each loading the reranker with ``load()`` (the same rankings;
    the latencies are the workers').
    """
    from tqdm.auto import tqdm

    from .pipeline import Pipeline, Reranking, hits_of_run, run_reranking

    is_run = isinstance(first_stage, Mapping)
    if is_run and reranker is not None:
        unknown = sorted({d for q in dataset.queries for d in first_stage.get(q, {})} - set(documents or {}))
        if unknown:
            raise CorpusError(f"the run names {len(unknown)} document(s) not in the corpus: {', '.join(unknown[:5])}")
    name = first_stage_name or ("run" if is_run else first_stage.name)
    pipeline = (
        Reranking(reranker, top_k=candidates, cheap=cheap, keep=keep, source=name)
        if is_run
        else Pipeline(first_stage, reranker, candidates=candidates, top_k=candidates, cheap=cheap, keep=keep)
    )
    first_run, reranked_run, documents_seen = {}, {}, {}
    times: dict[str, list[float]] = {"first_stage": [], "cheap": [], "rerank": []}
    pairs = 0
    if ray_address is not None:
        if not is_run or reranker is None or load is None:
            raise ValueError("on a Ray cluster, evaluate reranks a run: give a run, a reranker and load")
        if cheap is not None:
            raise ValueError("a cascade is evaluated on this machine: a Ray cluster's workers rerank with one stage")
        from .cluster import map_on_cluster

        queries = [
            (q, text, hits_of_run(first_stage.get(q, {}), documents, candidates)) for q, text in dataset.queries.items()
        ]
        chunks = {n: queries[i : i + 20] for n, i in enumerate(range(0, len(queries), 20))}
        done = {
            q: r
            for _, chunk in map_on_cluster(
                ray_address,
                functools.partial(run_reranking, load, candidates, name),
                _rerank_queries,
                chunks,
                show_progress=show_progress,
            )
            for q, r in chunk
        }
        rankings = ((q, done[q]) for q in dataset.queries)
    else:
        rankings = (
            (
                q,
                pipeline.rerank(text, hits_of_run(first_stage.get(q, {}), documents, candidates))
                if is_run
                else pipeline.search(text),
            )
            for q, text in tqdm(dataset.queries.items(), desc=dataset.name, unit=" queries", disable=not show_progress)
        )
    for qid, ranking in rankings:
        first_run[qid] = [h.id for h in ranking.candidates]
        documents_seen.update((h.id, h.document) for h in (*ranking.candidates[:10], *ranking.hits[:10]))
        for stage, seconds in ranking.timings.items():
            times[stage].append(seconds)
        if reranker is not None:
            reranked_run[qid] = [h.id for h in ranking.hits]
            pairs += len(ranking.model_scores)  # the pairs the reranker read (a cascade's cheap stage passes it fewer)
    first_per_query = per_query(first_run, dataset.qrels)
    reranked_per_query = per_query(reranked_run, dataset.qrels) if reranker is not None else None
    moves = []
    if reranker is not None:
        for qid, judged in dataset.qrels.items():
            first_pos = {d: i for i, d in enumerate(first_run[qid], 1)}
            new_pos = {d: i for i, d in enumerate(reranked_run[qid], 1)}
            moves += [(first_pos.get(d, 0), new_pos.get(d)) for d, g in judged.items() if g > 0]
    paired = (
        [list(p["ndcg@10"].values()) for p in (first_per_query, reranked_per_query)] if reranked_per_query else None
    )
    return Evaluation(
        dataset=dataset.name,
        split=dataset.split,
        queries=len(dataset.queries),
        judged=dataset.judged,
        skipped=dataset.skipped,
        first_stage=name,
        reranker=pipeline.reranker,
        candidates=candidates,
        scores={
            "first_stage": means(first_per_query),
            "reranked": means(reranked_per_query) if reranked_per_query else None,
        },
        per_query={"first_stage": first_per_query, "reranked": reranked_per_query},
        p_value=randomization_test(*paired) if paired else None,
        gain_interval=bootstrap_interval(*paired) if paired else None,
        latency_ms={stage: _percentiles(t) for stage, t in times.items() if t},
        pairs_per_s=pairs / sum(times["rerank"]) if times["rerank"] and sum(times["rerank"]) > 0 else None,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        moves=tuple(moves),
        tops={
            q: QueryTops(
                text,
                tuple(first_run[q][:10]),
                tuple(reranked_run.get(q, ())[:10]),
                {d: g for d, g in dataset.qrels[q].items() if g > 0},
            )
            for q, text in dataset.queries.items()
        },
        labels={d: _label(doc) for d, doc in documents_seen.items()},
    )


def _rerank_queries(pipeline: Reranking, queries: list) -> list:
    return [(q, pipeline.rerank(text, hits)) for q, text, hits in queries]


def _label(document: Document) -> str:
    """A document's title, or its opening words (about 80 characters)."""
    text = " ".join((document.title or document.text).split())
    return text if len(text) <= 80 else text[:79] + "…"


def evaluate_folder(
    folder: str | Path,
    reranker: SecondStage | Scorer | None = None,
    *,
    split: str = "test",
    run: str | Path | None = None,
    official_run: bool = False,
    index: str | Path | None = None,
    analyzer: str = "auto",
    candidates: int = 100,
    max_queries: int | None = None,
    first_stage: str = "bm25",
    encoder=None,
    show_progress: bool = False,
    ray_address: str | None = None,
    load: Callable | None = None,
    cheap: SecondStage | Scorer | None = None,
    keep: int = 30,
) -> Evaluation:
    """Evaluate a BEIR folder. The first stage is, in this order: ``run`` (a TREC run file, as a
    path or relative to the folder); with ``official_run``, the folder's ``runs/BM25.top100.trec``
    if it has one; else ``first_stage`` (bm25, dense or hybrid) over an existing ``index`` or
    one built from the folder's corpus (with ``encoder``, default all-MiniLM-L6-v2, for dense
    and hybrid). ``ray_address`` and ``load``: a run reranked on a Ray cluster; ``cheap`` and
    ``keep``: a cascade (see :func:`evaluate`)."""
    from .corpus import read_corpus, read_run
    from .index import Index
    from .registry import first_stage as make_first_stage
    from .registry import load_encoder
    from .retrievers import BM25

    folder = Path(folder)
    dataset = load_dataset(folder, split, max_queries)
    if run is not None:
        run_file = Path(run) if Path(run).is_file() else folder / run
        if not run_file.is_file():
            raise FileNotFoundError(f"no such run file: {run}")
    else:
        run_file = folder / "runs" / "BM25.top100.trec" if official_run else None
    if run_file is not None and run_file.is_file():
        documents = {d.id: d for d in read_corpus(folder)} if reranker is not None else None
        return evaluate(
            dataset,
            read_run(run_file),
            reranker,
            documents=documents,
            candidates=candidates,
            first_stage_name=f"run {run_file.name}",
            show_progress=show_progress,
            ray_address=ray_address,
            load=load,
            cheap=cheap,
            keep=keep,
        )
    if ray_address is not None:
        raise ValueError("on a Ray cluster, eval reranks a run: give one (--run FILE)")
    if index:
        loaded = Index.load(index)
        _check_index_matches(loaded, dataset, read_corpus(folder))
    else:
        if first_stage != "bm25" and encoder is None:
            encoder = load_encoder()
        stored = encoder if first_stage != "bm25" else _vector_reader(reranker, dataset)
        if stored is not None and first_stage == "bm25":
            logger.info(
                "storing %s's vectors of the corpus once: the second stage then encodes only the queries", stored.name
            )
        loaded = Index.build(read_corpus(folder), analyzer=analyzer, encoder=stored, show_progress=show_progress)
    retriever = BM25(loaded) if first_stage == "bm25" else make_first_stage(loaded, first_stage, encoder)
    return evaluate(
        dataset, retriever, reranker, candidates=candidates, show_progress=show_progress, cheap=cheap, keep=keep
    )


def _check_index_matches(index, dataset: Dataset, corpus: Iterable[Document]) -> None:
    """An index of another corpus, or of this one since changed, would give numbers that are not the
    dataset's: refuse it, naming what differs."""
    ids = {d.id for d in corpus}
    extra = sum(1 for d in index.documents if d.id not in ids)
    missing = len(ids) - (len(index) - extra)
    if extra or missing:
        why = "built from another corpus" if missing > len(ids) / 2 else "changed since it was built"
        raise CorpusError(
            f"the index does not match {dataset.name}'s corpus: it holds {extra} document(s) the corpus lacks "
            f"and lacks {missing} of its {len(ids)} (was it {why}?); rebuild it, or evaluate without --index"
        )


def _vector_reader(reranker: Reranker | Scorer | None, dataset: Dataset):
    """The bi-encoder the second stage reads the dataset's queries with, when it reads stored
    vectors (so the index built for the evaluation stores them: each document encoded once,
    not once per query that recalls it); None otherwise."""
    from .pipeline import ByLanguage, second_stage

    if reranker is None:
        return None
    stage = second_stage(reranker)
    if isinstance(stage, ByLanguage):  # the route most of the queries take
        taken = [r for r in map(stage.route, list(dataset.queries.values())[:50]) if r is not None]
        stage = max(taken, key=taken.count) if taken else None
    return stage.scorer if stage is not None and stage.scorer.vector_reading is not None else None


def fit_fusion(
    dataset: Dataset,
    first_stage: Retriever,
    second: Scorer,
    *,
    candidates: int = 100,
    weights: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
    show_progress: bool = False,
) -> list[tuple[str, float, float]]:
    """Learn how to fuse ``second`` with the first stage on a (dev) split: nDCG@10 of every
    fusion method and second-stage weight, best first, as (method, weight, nDCG@10) rows.
    The second stage scores each query's candidates once."""
    from tqdm.auto import tqdm

    from .fusion import METHODS, fuse
    from .pipeline import Pipeline

    pipeline, scored = Pipeline(first_stage, second, candidates=candidates, top_k=candidates), []
    for qid, text in tqdm(
        dataset.queries.items(), desc=f"fit {dataset.name}", unit=" queries", disable=not show_progress
    ):
        ranking = pipeline.search(text)
        hits = ranking.candidates
        scored.append((qid, hits, np.array([ranking.model_scores[h.id].raw for h in hits], np.float32)))
    rows = []
    for method in METHODS:
        for weight in weights:
            run = {}
            for qid, hits, second_scores in scored:
                fused = fuse(method, float(weight), second_scores, [h.rank for h in hits], [h.score for h in hits])
                run[qid] = [hits[i].id for i in np.argsort(-fused, kind="stable")]
            rows.append((method, float(weight), mean_scores(run, dataset.qrels)["ndcg@10"]))
    return sorted(rows, key=lambda r: -r[2])


def judged_scores(
    dataset: Dataset,
    first_stage: Retriever,
    scorer: Scorer,
    *,
    candidates: int = 20,
    show_progress: bool = False,
    batch_queries: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's raw scores of each query's top ``candidates`` and whether each is relevant
    (unjudged counts as not): what ``finerank calibrate`` fits, and how a threshold is checked.
    ``batch_queries`` queries' candidates are read in shared batches."""
    from tqdm.auto import tqdm

    from .pipeline import Pipeline

    pipeline, queries = (
        Pipeline(first_stage, scorer, candidates=candidates, top_k=candidates),
        list(dataset.queries.items()),
    )
    raw, relevant = [], []
    with tqdm(total=len(queries), desc=f"score {dataset.name}", unit=" queries", disable=not show_progress) as bar:
        for start in range(0, len(queries), batch_queries):
            part = queries[start : start + batch_queries]
            for (qid, _), ranking in zip(part, pipeline.search_many([text for _, text in part])):
                raw += [ranking.model_scores[h.id].raw for h in ranking.candidates]
                relevant += [dataset.qrels[qid].get(h.id, 0) > 0 for h in ranking.candidates]
            bar.update(len(part))
    return np.array(raw, np.float32), np.array(relevant, bool)


def dev_quality(
    folder: str | Path, split: str = "dev", max_queries: int | None = None, candidates: int = 30
) -> Callable:
    """A function of a scorer: its mean nDCG@10 reranking BM25's top ``candidates`` of the
    dataset's judged queries of ``split`` (what backend tuning keeps a choice within)."""
    from .corpus import read_corpus
    from .index import Index
    from .pipeline import Reranking
    from .retrievers import BM25

    data = load_dataset(folder, split, max_queries)
    bm25 = BM25(Index.build(read_corpus(folder)))
    pools = [(text, bm25.search(text, candidates)) for text in data.queries.values()]

    def quality(scorer: Scorer) -> float:
        rankings = Reranking(scorer, top_k=candidates, source=bm25.name).rerank_many(pools)
        return float(np.mean([ndcg([h.id for h in r.hits], data.qrels[q]) for q, r in zip(data.queries, rankings)]))

    quality.source = f"{Path(folder).name} {split} ({len(data.queries)} queries, BM25 top {candidates})"
    return quality


def calibrate(
    folder: str | Path,
    scorer: Scorer,
    *,
    split: str = "dev",
    method: str = "platt",
    candidates: int = 20,
    max_queries: int | None = None,
    check_split: str | None = None,
    threshold: float = 0.5,
    show_progress: bool = False,
) -> tuple[Path, str, list[tuple[str, dict[str, float]]]]:
    """Fit ``scorer``'s calibration on the judged BM25 top ``candidates`` of ``split`` and store it
    with the model (see :mod:`finerank.models.calibration`). Returns where it was stored, what it
    was fitted on, and per split (``split``, then ``check_split``) the precision and recall of
    keeping the candidates at or above ``threshold``."""
    from .corpus import read_corpus
    from .index import Index
    from .models import calibration
    from .retrievers import BM25

    folder = Path(folder)
    first = BM25(Index.build(read_corpus(folder), show_progress=show_progress))
    dataset = load_dataset(folder, split, max_queries)
    raw, relevant = judged_scores(dataset, first, scorer, candidates=candidates, show_progress=show_progress)
    fitted_on = f"{folder.name} {split}: {len(raw)} pairs of {len(dataset.queries)} queries, BM25 top {candidates}"
    fitted = calibration.fit(raw, relevant, method, fitted_on=fitted_on)
    path = calibration.save(fitted, calibration.location(scorer.model_dir, scorer.calibration_key))
    checks = [(split, raw, relevant)]
    if check_split:
        checks.append(
            (
                check_split,
                *judged_scores(
                    load_dataset(folder, check_split, max_queries),
                    first,
                    scorer,
                    candidates=candidates,
                    show_progress=show_progress,
                ),
            )
        )
    return (
        path,
        fitted_on,
        [(name, threshold_quality(fitted(scores), labels, threshold)) for name, scores, labels in checks],
    )


def threshold_quality(probability: np.ndarray, relevant: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Precision and recall of keeping the candidates at or above ``threshold``, and the share kept."""
    kept = probability >= threshold
    return {
        "precision": float(relevant[kept].mean()) if kept.any() else float("nan"),
        "recall": float(relevant[kept].sum() / max(1, relevant.sum())),
        "kept": float(kept.mean()),
    }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean())}
