"""Chinese (Simplified and Traditional) and English side by side: first stages and candidate
default second stages, chosen on train/dev splits, reported on test splits.

    python benchmarks/chinese.py [--max-queries N] [--cache /tmp/finerank-zh] [--json]
    python benchmarks/chinese.py --cross-encoder /tmp/ce/zh-e5 --splits test --max-queries 1000 --no-first-stages

Per dataset, one index (BM25 + multilingual-e5-small vectors, as ``finerank index --dense``
builds for a Chinese corpus: one vector per 32-token window) is built once under ``--cache``.
Rows: BM25, dense (e5), hybrid (RRF, and min-max at three weights), and BM25 top-100 reranked by each candidate second stage through ``Pipeline`` (the
bi-encoders read the stored vectors, so only the query is encoded, once: the encoder caches
query embeddings across rows). The e5-fused weight is chosen on the train splits (CMRC trial
questions, DRCD dev questions); test splits are only reported. Latency: p50 ms per query of the
rerank stage (of the first stage for first-stage rows), the first row to encode a query pays
for it. ``--minilm`` adds the English default (it encodes 100 candidates per query: slow).
``--cross-encoder MODEL`` adds a cross-encoder (e.g. one ``finerank train`` made from
multilingual-e5-small on the Chinese train splits) over BM25's top ``--ce-candidates``, alone and
fused at the weight e5-fused uses (0.5, fixed beforehand: the train splits it could be chosen on
are the ones it was trained on), beside e5-fused over the same candidates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from finerank import BM25, Dense, Fusion, Hybrid, Index, Pipeline, SecondStage, load_encoder, load_reranker, read_corpus
from finerank.evaluate import load_dataset, mean_scores, per_query, randomization_test

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = {"cmrc2018-dev-retrieval": ("train", "test"), "drcd-retrieval": ("train", "test")}
WEIGHTS = (0.3, 0.5, 0.7, 0.9)


def index_of(key: str, name: str, cache: Path, encoder) -> Index:
    path = cache / key
    try:
        return Index.load(path)
    except Exception:
        index = Index.build(read_corpus(DATASETS / name), encoder=encoder, show_progress=True)
        index.save(path)
        return index


def run(pipeline: Pipeline, dataset) -> dict:
    ranked, seconds = {}, []
    for qid, text in dataset.queries.items():
        ranking = pipeline.search(text)
        ranked[qid] = [h.id for h in ranking.hits]
        seconds.append(ranking.timings.get("rerank", ranking.timings["first_stage"]))
    scores = mean_scores(ranked, dataset.qrels)
    return {"ndcg@10": scores["ndcg@10"], "hit@1": scores["hit@1"], "hit@3": scores["hit@3"], "p50_ms": 1000 * float(np.median(seconds)),
            "per_query": list(per_query(ranked, dataset.qrels)["ndcg@10"].values())}


def against(row: dict, base: dict) -> dict:
    """``row`` with the paired randomization test of its per-query nDCG@10 against ``base``'s."""
    return row | {"p": randomization_test(base["per_query"], row["per_query"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/finerank-zh"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--minilm", action="store_true", help="also BM25 -> minilm-fused (encodes every candidate)")
    parser.add_argument("--cross-encoder", help="also this cross-encoder over BM25's top --ce-candidates, alone and fused")
    parser.add_argument("--ce-candidates", type=int, default=20)
    parser.add_argument("--ce-rows", choices=("both", "alone", "fused"), default="both",
                        help="the cross-encoder alone, fused with BM25, or both (each row scores every pair again)")
    parser.add_argument("--max-length", type=int, default=256, help="the cross-encoder's tokens per pair")
    parser.add_argument("--max-chunks-per-doc", type=int, default=1, help="the cross-encoder reads a longer text as up to N windows")
    parser.add_argument("--splits", choices=("both", "train", "test"), default="both")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--window", type=int, help="e5 reads documents in windows of this many tokens (default: the model's, 32; 0: whole)")
    parser.add_argument("--no-first-stages", action="store_true", help="skip the first-stage and e5 weight rows")
    args = parser.parse_args()
    window = {} if args.window is None else {"document_window": args.window}
    e5 = load_encoder("multilingual-e5-small", cache_size=100_000, **window)  # also the scorer: one embedding per query
    minilm = load_reranker("minilm-fused") if args.minilm else None
    ce = (load_reranker(args.cross_encoder, max_length=args.max_length, max_chunks_per_doc=args.max_chunks_per_doc).scorer
          if args.cross_encoder else None)
    results = {}
    for name in args.sets:
        choose, report = SETS[name]
        index = index_of(f"{name}-w{e5.document_window}", name, args.cache, e5)
        bm25 = BM25(index)
        for split in {"both": (choose, report), "train": (choose,), "test": (report,)}[args.splits]:
            dataset = load_dataset(DATASETS / name, split, args.max_queries)
            rows = {"BM25": run(Pipeline(bm25, None, top_k=10), dataset)}
            if ce is not None:
                n, fused = args.ce_candidates, Fusion("minmax", 0.5)
                base = rows[f"BM25 top {n} -> e5-fused w=0.5"] = run(Pipeline(bm25, SecondStage(e5, fused), candidates=n, top_k=10), dataset)
                if args.ce_rows != "fused":
                    rows[f"BM25 top {n} -> cross-encoder alone"] = against(run(Pipeline(bm25, ce, candidates=n, top_k=10), dataset), base)
                if args.ce_rows != "alone":
                    rows[f"BM25 top {n} -> cross-encoder fused w=0.5"] = against(
                        run(Pipeline(bm25, SecondStage(ce, fused), candidates=n, top_k=10), dataset), base)
            if not args.no_first_stages:
                rows |= {
                    "BM25 -> e5 alone": run(Pipeline(bm25, e5, top_k=10), dataset),
                    "dense (e5)": run(Pipeline(Dense(index, e5), None, top_k=10), dataset),
                    "hybrid (BM25 + e5, RRF)": run(Pipeline(Hybrid(bm25, Dense(index, e5), method="rrf"), None, top_k=10), dataset),
                }
                for weight in WEIGHTS[:3]:
                    hybrid = Hybrid(bm25, Dense(index, e5), method="minmax", weight=weight)
                    rows[f"hybrid (BM25 + e5, min-max w={weight})"] = run(Pipeline(hybrid, None, top_k=10), dataset)
                if minilm is not None:
                    rows["BM25 -> minilm-fused"] = run(Pipeline(bm25, minilm, top_k=10), dataset)
                for weight in WEIGHTS:
                    rows[f"BM25 -> e5-fused w={weight}"] = run(Pipeline(bm25, SecondStage(e5, Fusion("minmax", weight)), top_k=10), dataset)
            results[f"{name} ({split})"] = rows
            print(f"{name} ({split}, {len(dataset.queries)} queries) done", flush=True)
    for rows in results.values():
        for r in rows.values():
            del r["per_query"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for title, rows in results.items():
        print(f"\n### {title}\n\n| method | nDCG@10 | Hit@1 | Hit@3 | p50 ms | p vs e5-fused |\n|---|---|---|---|---|---|")
        for method, r in rows.items():
            p = f"{r['p']:.4f}" if "p" in r else ""
            print(f"| {method} | {r['ndcg@10']:.4f} | {r['hit@1']:.4f} | {r['hit@3']:.4f} | {r['p50_ms']:.1f} | {p} |")
    if ce is not None:
        print("\np vs e5-fused: paired randomization test (10,000 sign flips) on per-query nDCG@10 against the e5-fused row")


if __name__ == "__main__":
    main()
