"""Every registered second stage over the same BM25 top-100, on the test sets, in one pass.

    python benchmarks/second_stages.py [--max-queries N]

Each second stage is the registry's (load_reranker), run through finerank.Reranking as a search
runs it; the latency is its own. Fusion weights were fitted on NFCorpus dev
(benchmarks/tune_fusion.py); no test query was used to choose anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from finerank import BM25, Document, Hit, Index, load_reranker, read_corpus, read_run
from finerank.evaluate import load_dataset
from finerank.metrics import mean_scores
from finerank.pipeline import Reranking

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PUBLISHED = {  # ../shared/datasets/README.md: BM25, and BM25 top-100 reranked by ms-marco-MiniLM-L-6-v2
    "nfcorpus": (0.325, 0.350),
    "scifact": (0.665, 0.688),
    "trec-dl-2019-passage-pool": (0.506, 0.743),
}
VARIANTS = ("all-minilm-l6-v2", "minilm-rrf", "minilm-fused")


def candidates(name: str, dataset, documents: dict[str, Document]) -> dict[str, list[Hit]]:
    if name == "trec-dl-2019-passage-pool":
        run = read_run(DATASETS / name / "runs" / "BM25.top100.trec")
        ordered = {q: sorted(run[q], key=lambda d: (run[q][d], d), reverse=True) for q in dataset.queries}
        return {q: [Hit(documents[d], run[q][d], r, r) for r, d in enumerate(ordered[q], 1)] for q in dataset.queries}
    index = Index.build(documents.values())
    return {q: BM25(index).search(text, 100) for q, text in dataset.queries.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-queries", type=int)
    args = parser.parse_args()
    stages = {variant: Reranking(load_reranker(variant), top_k=100, source="BM25") for variant in VARIANTS}
    print(
        "| set | queries | second stage | nDCG@10 | Hit@1 | Hit@3 | rerank p50 ms / query "
        "| published BM25 / MiniLM-L6 CE |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in PUBLISHED:
        dataset = load_dataset(DATASETS / name, "test", args.max_queries)
        documents = {d.id: d for d in read_corpus(DATASETS / name)}
        hits = candidates(name, dataset, documents)
        rows, cost = {"BM25": {q: [h.id for h in hits[q]] for q in dataset.queries}}, {"BM25": "–"}
        for variant, reranking in stages.items():
            rankings = {q: reranking.rerank(text, hits[q]) for q, text in dataset.queries.items()}
            rows[variant] = {q: [h.id for h in r.hits] for q, r in rankings.items()}
            cost[variant] = f"{1000 * float(np.median([r.timings['rerank'] for r in rankings.values()])):.0f}"
        published = "{:.3f} / {:.3f}".format(*PUBLISHED[name])
        for variant, run in rows.items():
            m = mean_scores(run, dataset.qrels)
            print(
                f"| {name} | {len(dataset.queries)} | {variant} | {m['ndcg@10']:.4f} | {m['hit@1']:.3f} | "
                f"{m['hit@3']:.3f} "
                f"| {cost[variant]} | {published} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
