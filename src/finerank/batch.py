"""Reranking a whole TREC run offline, resumable. The run's queries are split into shards; each
shard is reranked through :class:`~finerank.pipeline.Reranking` and written atomically beside
the output (``OUT.parts/``) when it is done, so a crash loses at most the shard in progress and
a rerun skips the shards already written. When every shard is there they are joined into the
output run, atomically, and the shards are removed. The settings (reranker and how it reads,
depth, the run, its queries and documents) are recorded with the shards, and a rerun with other
settings is refused rather than mixing two rerankings in one run.

With ``ray_address`` the unfinished shards are reranked by the workers of a Ray cluster
(:func:`finerank.cluster.map_on_cluster`) and written here as they come back: the same shards,
the same output, and the same resuming.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from ._storage import replaced
from .errors import CorpusError
from .pipeline import ByLanguage, Reranking, hits_of_run, run_reranking, second_stage
from .types import Document

logger = logging.getLogger(__name__)


def shards_of(run: Mapping[str, Mapping[str, float]], queries: Mapping[str, str], shard_size: int) -> list[list[str]]:
    """The run's query ids, sorted, in groups of ``shard_size``; CorpusError naming query ids the
    queries file lacks."""
    missing = sorted(q for q in run if q not in queries)
    if missing:
        raise CorpusError(f"the run names {len(missing)} query id(s) not in the queries file: {', '.join(missing[:5])}")
    qids = sorted(run)
    return [qids[i : i + shard_size] for i in range(0, len(qids), shard_size)]


def rerank_shard(
    pipeline: Reranking,
    qids: list[str],
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    documents: Mapping[str, Document],
    depth: int,
    tag: str,
) -> str:
    """One shard's reranked run as TREC lines."""
    lines = []
    for qid in qids:
        ranking = pipeline.rerank(queries[qid], hits_of_run(run[qid], documents, depth))
        lines += [
            f"{qid} Q0 {h.id} {h.rank} {h.score!r} {tag}\n" for h in ranking.hits
        ]  # every digit: trec_eval sorts by score
    return "".join(lines)


def rerank_run(
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    documents: Mapping[str, Document],
    reranker,
    out: str | Path,
    *,
    depth: int = 100,
    shard_size: int = 50,
    tag: str = "finerank",
    show_progress: bool = False,
    ray_address: str | None = None,
    load: Callable | None = None,
    workers: int | None = None,
    start_timeout_s: float | None = None,
) -> Path:
    """Rerank the top ``depth`` of every query of ``run`` with ``reranker`` and write a TREC run
    to ``out`` (see the module's docstring for resuming). Returns ``out``.

    With ``ray_address`` the shards are reranked on that Ray cluster by ``workers`` workers
    (default: one per free CPU), each loading its own reranker with ``load()``, a function of no
    arguments that makes the same reranker as ``reranker`` (same model, backend and precision).
    A cluster that starts no worker within ``start_timeout_s`` (default
    :data:`finerank.cluster.WORKER_START_TIMEOUT_S`) is a ClusterError."""
    from tqdm.auto import tqdm

    if depth < 1 or shard_size < 1:
        raise ValueError(f"depth and shard_size must be at least 1, got {depth} and {shard_size}")
    if ray_address:
        from .cluster import connect, map_on_cluster

        if load is None:
            raise ValueError("with ray_address, pass load: a function that loads the reranker on each worker")
        connect(ray_address, quiet=not show_progress)  # an unreachable cluster: an error before anything is written
    unknown = sorted({d for scored in run.values() for d in scored} - set(documents))
    if unknown:
        raise CorpusError(f"the run names {len(unknown)} document(s) not in the corpus: {', '.join(unknown[:5])}")
    out = Path(out)
    shards = shards_of(run, queries, shard_size)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    pipeline = Reranking(reranker, top_k=depth)
    settings = {
        "reranker": pipeline.second.name,
        "reading": _reading(reranker),
        "depth": depth,
        "shard_size": shard_size,
        "tag": tag,
        "inputs": _fingerprint(
            run, {q: queries[q] for q in run}, {d: documents[d].content for s in run.values() for d in s}
        ),
    }
    recorded = parts / "settings.json"
    if recorded.is_file() and json.loads(recorded.read_text(encoding="utf-8")) != settings:
        raise CorpusError(
            f"{parts} holds shards of another reranking ({recorded.read_text(encoding='utf-8').strip()}): "
            "delete it, or rerun with the same run and settings"
        )
    _write(recorded, json.dumps(settings))
    todo = [n for n in range(len(shards)) if not (parts / f"shard-{n:05d}.trec").is_file()]
    if len(todo) < len(shards):
        logger.info(
            "%d of %d shards were already done and are not reranked again", len(shards) - len(todo), len(shards)
        )
    progress = tqdm(
        total=len(shards),
        initial=len(shards) - len(todo),
        desc="reranking the run",
        unit=" shards",
        disable=not show_progress,
    )
    if ray_address:
        work = {
            n: (
                shards[n],
                {q: run[q] for q in shards[n]},
                {q: queries[q] for q in shards[n]},
                {d: documents[d] for q in shards[n] for d in run[q]},
            )
            for n in todo
        }
        finished = map_on_cluster(
            ray_address,
            functools.partial(run_reranking, load, depth),
            functools.partial(_rerank_item, depth=depth, tag=tag),
            work,
            workers=workers,
            start_timeout_s=start_timeout_s,
            show_progress=show_progress,
        )
    else:
        finished = ((n, rerank_shard(pipeline, shards[n], run, queries, documents, depth, tag)) for n in todo)
    with progress:
        for number, lines in finished:
            _write(parts / f"shard-{number:05d}.trec", lines)
            progress.update()
    with replaced(out) as tmp, open(tmp, "wb") as joined:  # shard by shard: a run of any size
        for n in range(len(shards)):
            with open(parts / f"shard-{n:05d}.trec", "rb") as shard:
                shutil.copyfileobj(shard, joined)
    finished = parts.with_name(
        parts.name + ".finished"
    )  # out of the way first: a crash while deleting leaves no shards to mix
    shutil.rmtree(finished, ignore_errors=True)
    parts.rename(finished)
    shutil.rmtree(finished)
    return out


def _rerank_item(pipeline: Reranking, shard: tuple, *, depth: int, tag: str) -> str:
    return rerank_shard(pipeline, *shard, depth, tag)


def _reading(reranker) -> dict:
    """How the reranker reads: every setting that changes its scores (its scorer's ``reading``,
    and the engine); a per-language reranker by its routes' names."""
    if isinstance(reranker, ByLanguage):
        return {"routes": sorted(reranker.routes), "languages": sorted(reranker.languages)}
    stage = second_stage(reranker)
    scorer = stage.scorer
    fusion = stage.fusion.name if stage.fusion else None
    engine = {"backend": scorer.backend_name, "precision": scorer.precision, "fusion": fusion}
    return {scorer.name: scorer.reading | engine}


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _write(path: Path, text: str) -> None:
    with replaced(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
