r"""BM25 first-stage speed side by side: finerank, plain bm25s and rank_bm25, on the same corpora
and the same test queries, in one run; then `Pipeline.search` latency split by stage.

    python benchmarks/first_stage_speed.py [--max-queries N] [--rank-bm25-queries 50] [--pipeline-queries 20] \
        [--threads 2] [--json] [--quick]

Per set (SciFact, NFCorpus; every test query with a relevant judgement): build time from
documents in memory to a searchable index, top-100 single-query throughput (one call per query,
query analysis included), batch throughput (one call for all queries), each the fastest of 3
passes, and nDCG@10.

- finerank: ``Index.build``, ``BM25(index).search(q, 100)`` per query (hits whose documents are
  read from the store when first used); and the same reading every hit's title and text, as a
  reranker does.
- bm25s: Lucene BM25 (k1=0.9, b=0.4) over title + " " + text, ``bm25s.tokenize`` with English
  stopwords and the Snowball stemmer; ``retrieve`` with one query, and with all queries on
  --threads threads.
- rank_bm25 (``pip install rank_bm25``): ``BM25Okapi`` (k1=0.9, b=0.4) over the same stemmed
  tokens, ``get_scores`` + argpartition; it has no batch call, and is timed and scored on the
  first --rank-bm25-queries queries only (it is pure Python over every document per term).

The pipeline table runs ``Pipeline(index, load_reranker("minilm-fused"), candidates=100,
top_k=10)`` on SciFact queries and reports ``Ranking.timings`` per stage.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from finerank import BM25, Index, Pipeline, load_reranker, read_corpus
from finerank.evaluate import load_dataset
from finerank.metrics import ndcg

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = ("scifact", "nfcorpus")
K = 100
REPEATS = 3  # timed query loops run this often; the fastest counts (the machine may be shared)


def fastest(run):
    """(seconds of the fastest of REPEATS calls, the last call's result)."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def mean_ndcg(rankings: dict[str, list[str]], qrels: dict) -> float:
    return float(np.mean([ndcg(ids, qrels[q]) for q, ids in rankings.items()]))


def bench_finerank(documents: list, queries: dict[str, str]) -> dict:
    start = time.perf_counter()
    index = Index.build(documents)
    build_s = time.perf_counter() - start
    ids, texts = list(queries), list(queries.values())
    bm25 = BM25(index)
    bm25.search(texts[0], K)  # warm-up
    single_s, single = fastest(lambda: [bm25.search(q, K) for q in texts])
    batch_s = single_s  # finerank's BM25 has no batch call: a batch is a loop of searches
    rankings = {q: [h.id for h in hits] for q, hits in zip(ids, single)}
    # hits hold documents read from the store when used; what a reranker pays to read all 100
    read_s, _ = fastest(lambda: [[h.document.content for h in bm25.search(q, K)] for q in texts])
    read = {"build_s": build_s, "single_s": read_s, "batch_s": read_s, "queries": len(texts), "rankings": rankings}
    return {
        "index": index,
        "build_s": build_s,
        "single_s": single_s,
        "batch_s": batch_s,
        "queries": len(texts),
        "rankings": rankings,
        "read": read,
    }


def bench_bm25s(documents: list, queries: dict[str, str], threads: int) -> dict:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids = np.array([d.id for d in documents])
    start = time.perf_counter()
    corpus_tokens = bm25s.tokenize(
        [f"{d.title} {d.text}" for d in documents], stopwords="en", stemmer=stemmer, show_progress=False
    )
    model = bm25s.BM25(method="lucene", k1=0.9, b=0.4)
    model.index(corpus_tokens, show_progress=False)
    build_s = time.perf_counter() - start
    ids, texts = list(queries), list(queries.values())

    def retrieve(batch: list[str], n_threads: int = 0):
        tokens = bm25s.tokenize(batch, stopwords="en", stemmer=stemmer, show_progress=False)
        return model.retrieve(tokens, corpus=doc_ids, k=K, n_threads=n_threads, show_progress=False)

    retrieve(texts[:1])  # warm-up
    single_s, single = fastest(lambda: [retrieve([q]).documents[0] for q in texts])
    batch_s, _ = fastest(lambda: retrieve(texts, threads))
    # top-k keeps zero-score documents when fewer than k match; finerank returns positive scores only
    rankings = {q: list(found) for q, found in zip(ids, single)}
    return {"build_s": build_s, "single_s": single_s, "batch_s": batch_s, "queries": len(texts), "rankings": rankings}


def bench_rank_bm25(documents: list, queries: dict[str, str], limit: int) -> dict:
    import bm25s
    import Stemmer
    from rank_bm25 import BM25Okapi

    stemmer = Stemmer.Stemmer("english")

    def tokenize(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)

    doc_ids = [d.id for d in documents]
    start = time.perf_counter()
    model = BM25Okapi(tokenize([f"{d.title} {d.text}" for d in documents]), k1=0.9, b=0.4)
    build_s = time.perf_counter() - start
    chosen = list(queries.items())[:limit]
    rankings = {}
    start = time.perf_counter()
    for q, text in chosen:
        scores = model.get_scores(tokenize([text])[0])
        top = np.argpartition(-scores, K)[:K]
        top = top[np.argsort(-scores[top], kind="stable")]
        rankings[q] = [doc_ids[i] for i in top]
    single_s = time.perf_counter() - start
    return {"build_s": build_s, "single_s": single_s, "batch_s": None, "queries": len(chosen), "rankings": rankings}


def bench_pipeline(index: Index, queries: list[str], threads: int) -> dict:
    pipeline = Pipeline(BM25(index), load_reranker("minilm-fused", threads=threads), candidates=K, top_k=10)
    pipeline.search(queries[0])  # warm-up: model load and first inference
    stages: dict[str, list[float]] = {"first_stage": [], "rerank": [], "total": []}
    for q in queries:
        start = time.perf_counter()
        ranking = pipeline.search(q)
        stages["total"].append(time.perf_counter() - start)
        for stage in ("first_stage", "rerank"):
            stages[stage].append(ranking.timings[stage])
    return {
        stage: {
            "p50_ms": 1000 * float(np.percentile(s, 50)),
            "p95_ms": 1000 * float(np.percentile(s, 95)),
            "mean_ms": 1000 * float(np.mean(s)),
        }
        for stage, s in stages.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-queries", type=int, help="first N test queries per set (default: all)")
    parser.add_argument("--rank-bm25-queries", type=int, default=50, help="queries timed and scored for rank_bm25")
    parser.add_argument("--pipeline-queries", type=int, default=20, help="SciFact queries through Pipeline.search")
    parser.add_argument("--threads", type=int, default=2, help="bm25s batch threads and reranker threads")
    parser.add_argument(
        "--quick", action="store_true", help="50 queries per set, 20 for rank_bm25, 5 through the pipeline"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.max_queries, args.rank_bm25_queries, args.pipeline_queries = 50, 20, 5

    results, scifact_index, scifact_queries = {}, None, []
    for name in SETS:
        dataset = load_dataset(DATASETS / name, "test", args.max_queries)
        documents = list(read_corpus(DATASETS / name))
        mine = bench_finerank(documents, dataset.queries)
        tools = {
            "finerank": mine,
            "finerank, every text read": mine.pop("read"),
            "bm25s": bench_bm25s(documents, dataset.queries, args.threads),
            "rank_bm25": bench_rank_bm25(documents, dataset.queries, args.rank_bm25_queries),
        }
        if name == "scifact":
            scifact_index, scifact_queries = tools["finerank"].pop("index"), list(dataset.queries.values())
        tools["finerank"].pop("index", None)
        subset = list(tools["rank_bm25"]["rankings"])
        for r in tools.values():
            r["single_qps"] = r["queries"] / r["single_s"]
            r["batch_qps"] = r["queries"] / r["batch_s"] if r["batch_s"] else None
            r["ndcg@10"] = mean_ndcg(r["rankings"], dataset.qrels)
            r["ndcg@10_rank_bm25_subset"] = mean_ndcg({q: r["rankings"][q] for q in subset}, dataset.qrels)
            del r["rankings"], r["single_s"], r["batch_s"]
        results[name] = {"documents": len(documents), "queries": len(dataset.queries), "tools": tools}
    if args.pipeline_queries:
        pipeline = bench_pipeline(scifact_index, scifact_queries[: args.pipeline_queries], args.threads)
        results["pipeline"] = {
            "dataset": "scifact",
            "queries": min(args.pipeline_queries, len(scifact_queries)),
            "reranker": "minilm-fused",
            "candidates": K,
            "top_k": 10,
            "stages": pipeline,
        }

    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name in SETS:
        r = results[name]
        tools = r["tools"]
        base_single, base_batch = tools["finerank"]["single_qps"], tools["finerank"]["batch_qps"]
        print(
            f"\n{name}: {r['documents']} documents, {r['queries']} test queries, top-{K}, "
            f"batch on {args.threads} threads\n"
        )
        print("| tool | build s | single q/s | x finerank | batch q/s | batch x finerank | nDCG@10 |")
        print("|---|---|---|---|---|---|---|")
        for tool, t in tools.items():
            label, quality = tool, f"{t['ndcg@10']:.4f}"
            if t["queries"] < r["queries"]:
                label = f"{tool} (first {t['queries']} queries)"
                quality += f" (finerank on the same: {tools['finerank']['ndcg@10_rank_bm25_subset']:.4f})"
            batch = f"{t['batch_qps']:.0f}" if t["batch_qps"] else "no batch call"
            ratio = f"{t['batch_qps'] / base_batch:.2f}" if t["batch_qps"] else "-"
            print(
                f"| {label} | {t['build_s']:.2f} | {t['single_qps']:.0f} | {t['single_qps'] / base_single:.2f} | "
                f"{batch} | {ratio} | {quality} |"
            )
    p = results.get("pipeline")
    if not p:
        return
    print(
        f"\nPipeline.search on {p['queries']} SciFact test queries: BM25 top-{K}, reranked by minilm-fused, "
        f"top 10, {args.threads} threads\n"
    )
    print("| stage | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for stage, s in p["stages"].items():
        print(f"| {stage} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['mean_ms']:.1f} |")


if __name__ == "__main__":
    main()
