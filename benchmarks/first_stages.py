"""BM25, dense and hybrid first stages side by side, and the default second stage on top of each.

For each dataset one index holds BM25 and all-MiniLM-L6-v2 vectors (built once, kept under
--cache); every judged test query is searched by each first stage (Recall@100, nDCG@10; hybrid
is min-max fusion, equal weights, and RRF beside it), and
the first --rerank-queries of them are reranked by the default second stage.

    python benchmarks/first_stages.py [--datasets scifact nfcorpus trec-dl-2019-passage-pool] [--rerank-queries 100]

This is the same as ``finerank index DATA --dense --out DIR`` then
``finerank eval DATA --index DIR --first-stage bm25|dense|hybrid [--no-rerank | --max-queries N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from finerank import BM25, Dense, Hybrid, Index, first_stage, load_reranker, read_corpus
from finerank.evaluate import evaluate, load_dataset
from finerank.registry import DEFAULT_RERANKER, FIRST_STAGES, load_encoder

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "trec-dl-2019-passage-pool"])
    parser.add_argument(
        "--rerank-queries", type=int, default=100, help="judged queries reranked per first stage (0: none)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/finerank-first-stages"), help="where the indexes are kept"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    encoder = load_encoder()
    reranker = load_reranker(DEFAULT_RERANKER) if args.rerank_queries else None
    rows = []
    for name in args.datasets:
        folder = DATASETS / name
        path = args.cache / name
        if not (path / "CURRENT").is_file():
            start = time.perf_counter()
            Index.build(read_corpus(folder), encoder=encoder, show_progress=True).save(path)
            print(f"{name}: indexed with vectors in {time.perf_counter() - start:.0f} s")
        index = Index.load(path)
        dataset = load_dataset(folder)
        stages = {kind: first_stage(index, kind, encoder) for kind in FIRST_STAGES}
        stages["hybrid (RRF)"] = Hybrid(BM25(index), Dense(index, encoder), method="rrf")  # the default before min-max
        for kind, retriever in stages.items():
            full = evaluate(dataset, retriever)
            row = {
                "dataset": name,
                "first_stage": kind,
                "queries": full.queries,
                **{m: full.scores["first_stage"][m] for m in ("recall@100", "ndcg@10")},
                "first_stage_p50_ms": full.latency_ms["first_stage"]["p50"],
            }
            if reranker is not None:
                part = evaluate(load_dataset(folder, max_queries=args.rerank_queries), retriever, reranker)
                row |= {
                    "reranked_queries": part.queries,
                    "first_ndcg@10_same_queries": part.scores["first_stage"]["ndcg@10"],
                    "reranked_ndcg@10": part.scores["reranked"]["ndcg@10"],
                    "p_value": part.p_value,
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"\nfirst stages on all judged test queries; reranked by {DEFAULT_RERANKER} "
        f"on the first {args.rerank_queries} of them"
    )
    print(
        "| dataset | first stage | Recall@100 | nDCG@10 | p50 ms | nDCG@10 (reranked queries) | reranked nDCG@10 | p |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        reranked = (
            f"{r['first_ndcg@10_same_queries']:.4f} | {r['reranked_ndcg@10']:.4f} | {r['p_value']:.4f}"
            if "reranked_ndcg@10" in r
            else "- | - | -"
        )
        print(
            f"| {r['dataset']} | {r['first_stage']} | {r['recall@100']:.4f} | {r['ndcg@10']:.4f} | "
            f"{r['first_stage_p50_ms']:.1f} | {reranked} |"
        )


if __name__ == "__main__":
    main()
