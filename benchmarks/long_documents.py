"""Long documents: a cross-encoder that cuts each document to fit against the same model reading
up to N overlapping windows (max pooling), on SciFact test (abstracts of ~250 words), BM25
top-``--candidates`` reranked through ``Pipeline``, at two ``max_length`` settings.

    python benchmarks/long_documents.py --model /tmp/ce/nf-distill [--candidates 50] [--max-queries N]

``--model``: a cross-encoder made by ``finerank train`` (the trained one in docs/models.md:
``finerank train ../shared/datasets/nfcorpus --out /tmp/ce/nf-distill --teacher minilm-fused
--max-queries 600 --max-steps 450 --max-length 256``). Prints nDCG@10, Hit@1, the share of
candidates longer than one window, and the rerank p50 per query.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from finerank import BM25, CrossEncoder, Index, Pipeline, read_corpus
from finerank.evaluate import load_dataset
from finerank.metrics import mean_scores

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--chunks", type=int, default=4)
    args = parser.parse_args()

    dataset = load_dataset(DATASETS / "scifact", "test", args.max_queries)
    first = BM25(Index.build(read_corpus(DATASETS / "scifact")))
    first_run = {q: [h.id for h in first.search(t, args.candidates)] for q, t in dataset.queries.items()}
    print(
        f"SciFact test, {len(dataset.queries)} queries, BM25 top {args.candidates}: "
        f"nDCG@10 {mean_scores(first_run, dataset.qrels)['ndcg@10']:.4f}"
    )
    print("| max_length | reading | nDCG@10 | Hit@1 | candidates longer than one window | rerank p50 ms/query |")
    print("|---|---|---|---|---|---|")
    for length in args.lengths:
        for chunks in (1, args.chunks):
            model = CrossEncoder(args.model, max_length=length, max_chunks_per_doc=chunks)
            pipeline = Pipeline(first, model, candidates=args.candidates, top_k=args.candidates)
            run, times, long = {}, [], 0
            for qid, text in dataset.queries.items():
                ranking = pipeline.search(text)
                run[qid] = [h.id for h in ranking.hits]
                times.append(ranking.timings["rerank"])
                if chunks == 1:
                    long += sum(len(model.windows(text, [h.document.content], 8)[0]) > 1 for h in ranking.candidates)
            scores = mean_scores(run, dataset.qrels)
            share = f"{long / (len(run) * args.candidates):.0%}" if chunks == 1 else ""
            reading = "cut to fit" if chunks == 1 else f"up to {chunks} windows, max"
            print(
                f"| {length} | {reading} | {scores['ndcg@10']:.4f} | {scores['hit@1']:.3f} | {share} | "
                f"{np.median(times) * 1000:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"({time.time() - t:.0f} s)")
