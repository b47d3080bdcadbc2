"""Choose how the default second stage fuses with BM25, on a dev split only.

    python benchmarks/tune_fusion.py [--dataset nfcorpus] [--split dev]

Prints nDCG@10 on the dev split for the first stage alone, the second stage alone (weight 1),
and every fusion method x weight. Test queries are never used here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finerank import BM25, Index, load_scorer, read_corpus
from finerank.evaluate import fit_fusion, load_dataset

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="nfcorpus")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--reranker", default="all-minilm-l6-v2")
    args = parser.parse_args()
    dataset = load_dataset(DATASETS / args.dataset, args.split)
    index = Index.build(read_corpus(DATASETS / args.dataset))
    rows = fit_fusion(dataset, BM25(index), load_scorer(args.reranker), show_progress=True)
    print(f"{args.dataset} {args.split}: {len(dataset.queries)} queries, BM25 top 100 fused with {args.reranker}")
    print(f"{'method':<8} {'weight':>6} {'nDCG@10':>8}")
    for method, weight, ndcg in sorted(rows, key=lambda r: (r[0], r[1])):
        print(f"{method:<8} {weight:>6.1f} {ndcg:>8.4f}")
    best = rows[0]
    print(f"best: {best[0]} with second-stage weight {best[1]:.1f}: nDCG@10 {best[2]:.4f}")


if __name__ == "__main__":
    main()
