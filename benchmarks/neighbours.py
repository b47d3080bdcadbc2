"""How much a text's score moves with the texts batched beside it, per engine and precision.

    python benchmarks/neighbours.py [--model all-minilm-l6-v2] [--docs 100]

Texts are sorted by length into batches and padded to the longest of each batch. In fp32 padding
is masked out exactly; in bf16 and int8 the padded length changes the products' shapes and so
their rounding. For NFCorpus dev documents against their queries, each document is scored three
ways: in the default batches, alone, and beside the longest documents of the set (padded to their
length). The table gives the largest move of the raw score and of the [0, 1] score, and how many
of the queries' top 10 change order between alone and batched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from finerank import load_scorer, read_corpus
from finerank.evaluate import load_dataset
from finerank.models.backends import BACKENDS

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--queries", type=int, default=10)
    args = parser.parse_args()
    data = load_dataset(DATASETS / "nfcorpus", "dev", args.queries)
    texts = [d.content for d in list(read_corpus(DATASETS / "nfcorpus"))[: args.docs]]
    longest = sorted(texts, key=len)[-7:]
    print("| engine | precision | max move, raw | max move, [0, 1] | top-10 order changes (of queries) |")
    print("|---|---|---|---|---|")
    for backend, engine in BACKENDS.items():
        for precision in engine.precisions:
            try:
                scorer = load_scorer(args.model, backend=backend, precision=precision)
            except Exception as err:  # an engine not installed here: say so and go on
                print(f"| {backend} | {precision} | not run: {type(err).__name__} | | |")
                continue
            raw_moves, moves, changed = [], [], 0
            for query in data.queries.values():
                batched = scorer.score(query, texts, raw=True)
                alone = np.array([scorer.score(query, [t], raw=True)[0] for t in texts])
                beside = np.array([scorer.score(query, [t, *longest], raw=True)[0] for t in texts])
                raw_moves.append(max(np.abs(batched - alone).max(), np.abs(beside - alone).max()))
                moves.append(
                    max(
                        np.abs(scorer.calibrate(batched) - scorer.calibrate(alone)).max(),
                        np.abs(scorer.calibrate(beside) - scorer.calibrate(alone)).max(),
                    )
                )
                changed += list(np.argsort(-batched, kind="stable")[:10]) != list(
                    np.argsort(-alone, kind="stable")[:10]
                )
            print(
                f"| {backend} | {precision} | {max(raw_moves):.1e} | {max(moves):.1e} | "
                f"{changed} of {len(data.queries)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
