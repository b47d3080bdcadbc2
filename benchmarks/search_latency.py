"""What a reranked search costs per second stage, end to end, beside what a user would
otherwise run: sentence-transformers rescoring the same candidates.

    python benchmarks/search_latency.py [--model CE_DIR] [--dataset scifact] [--queries 30] [--threads 2] [--json]

The index (BM25 + all-MiniLM-L6-v2 vectors, as ``finerank index --dense`` builds it) is built
once; every query recalls the BM25 top-100 and each second stage reorders them, top 10.
Second stages:

- ``minilm-fused`` over the index's stored vectors: only the query is encoded (the default
  when the index has vectors; ``Pipeline`` and ``finerank serve`` do this by themselves);
- ``minilm-fused`` and ``minilm-fused-fast`` encoding the candidates' texts (an index without
  vectors, or ``POST /v1/rerank`` with texts);
- ``--model``: a cross-encoder directory (e.g. one made by ``finerank train``), finerank's
  default backend, and sentence-transformers ``CrossEncoder.predict`` (fp32) on the same pairs;
- sentence-transformers ``SentenceTransformer.encode`` of query and candidates (fp32), cosine
  fused as ``minilm-fused`` fuses it: what the default second stage costs without finerank.

Reported per second stage: rerank-stage p50 / p95 ms per query (first stage excluded),
x sentence-transformers, and nDCG@10 on the measured queries (BM25 alone for reference).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from finerank import BM25, Index, Pipeline, load_encoder, load_reranker, read_corpus
from finerank.evaluate import load_dataset
from finerank.fusion import fuse
from finerank.metrics import ndcg

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
K = 100


def timed(run, queries: dict[str, str], candidates: dict[str, list]) -> tuple[list[float], dict[str, list[str]]]:
    """run(query, hits) -> ids best first; seconds per query and the rankings."""
    first = next(iter(queries))
    run(queries[first], candidates[first])  # warm-up
    seconds, rankings = [], {}
    for qid, text in queries.items():
        start = time.perf_counter()
        rankings[qid] = run(text, candidates[qid])
        seconds.append(time.perf_counter() - start)
    return seconds, rankings


def finerank_stage(reranker, index: Index, stored: bool = False):
    """The rerank stage of Pipeline.search (Pipeline.rerank on the same candidates); with
    ``stored``, over the vectors the index stores, else encoding the candidates' texts."""
    pipeline = Pipeline(BM25(index), reranker, candidates=K, top_k=10)
    if stored and pipeline._vectors is None:
        raise SystemExit("the index holds no vectors of this reranker's model")
    if not stored:
        pipeline._vectors = None

    def run(query, hits):
        return [h.id for h in pipeline.rerank(query, hits).hits]

    return run


def sentence_transformers_bi_encoder(threads: int):
    import torch
    from sentence_transformers import SentenceTransformer

    from finerank.registry import MODELS

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(MODELS["all-minilm-l6-v2"].locate()), device="cpu")

    def run(query, hits):
        vectors = model.encode([query] + [h.document.content for h in hits], batch_size=32, normalize_embeddings=True)
        fused = fuse("minmax", 0.7, vectors[1:] @ vectors[0], [h.rank for h in hits], [h.score for h in hits])
        return [hits[i].id for i in np.argsort(-fused, kind="stable")[:10]]

    return run


def sentence_transformers_cross_encoder(model: Path, threads: int):
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    ce = CrossEncoder(str(model), device="cpu", max_length=512)

    def run(query, hits):
        scores = ce.predict([(query, h.document.content) for h in hits], batch_size=32)
        return [hits[i].id for i in np.argsort(-scores, kind="stable")[:10]]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a cross-encoder directory to time beside the bi-encoder stages")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--queries", type=int, default=30, help="first N test queries")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset(DATASETS / args.dataset, "test", args.queries)
    encoder = load_encoder(threads=args.threads)
    start = time.perf_counter()
    index = Index.build(read_corpus(DATASETS / args.dataset), encoder=encoder)
    build_s = time.perf_counter() - start
    candidates = {qid: BM25(index).search(text, K) for qid, text in dataset.queries.items()}

    stages = {
        "minilm-fused, stored vectors": finerank_stage(
            load_reranker("minilm-fused", threads=args.threads), index, stored=True
        ),
        "minilm-fused, texts encoded": finerank_stage(load_reranker("minilm-fused", threads=args.threads), index),
        "minilm-fused-fast, texts encoded": finerank_stage(
            load_reranker("minilm-fused-fast", threads=args.threads), index
        ),
        "sentence-transformers bi-encoder fp32 (fused the same way)": sentence_transformers_bi_encoder(args.threads),
    }
    if args.model:
        stages[f"cross-encoder {args.model.name}, finerank default backend"] = finerank_stage(
            load_reranker(args.model, threads=args.threads), index
        )
        stages[f"cross-encoder {args.model.name}, sentence-transformers fp32"] = sentence_transformers_cross_encoder(
            args.model, args.threads
        )

    bm25 = float(np.mean([ndcg([h.id for h in candidates[q]], dataset.qrels[q]) for q in dataset.queries]))
    rows = {}
    for label, run in stages.items():
        seconds, rankings = timed(run, dataset.queries, candidates)
        rows[label] = {
            "p50_ms": 1000 * float(np.percentile(seconds, 50)),
            "p95_ms": 1000 * float(np.percentile(seconds, 95)),
            "ndcg@10": float(np.mean([ndcg(rankings[q], dataset.qrels[q]) for q in dataset.queries])),
        }
    summary = {
        "dataset": args.dataset,
        "queries": len(dataset.queries),
        "documents": len(index),
        "index_build_s": build_s,
        "bm25_ndcg@10": bm25,
        "threads": args.threads,
        "stages": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    st_bi = rows["sentence-transformers bi-encoder fp32 (fused the same way)"]["p50_ms"]
    print(
        f"{args.dataset}: {len(index)} documents (index with vectors built in {build_s:.0f} s), "
        f"first {len(dataset.queries)} test queries, "
        f"BM25 top-{K} reranked, top 10, {args.threads} threads; BM25 alone nDCG@10 {bm25:.4f}\n"
    )
    print("| second stage | rerank p50 ms | p95 ms | x sentence-transformers bi-encoder (p50) | nDCG@10 |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {st_bi / r['p50_ms']:.1f} | {r['ndcg@10']:.4f} |")


if __name__ == "__main__":
    main()
