"""Does converting Traditional Chinese to Simplified before multilingual-e5-small encodes it
bring dense search on DRCD closer to BM25? Dense nDCG@10 on the DRCD train split, passages and
questions as they are and converted (OpenCC t2s, as BM25's analyzer does), beside BM25.

    python benchmarks/dense_traditional.py [--queries 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from finerank import BM25, Document, Index, load_encoder, read_corpus
from finerank.analysis import _to_simplified
from finerank.evaluate import load_dataset
from finerank.metrics import mean_scores
from finerank.retrievers import Dense

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    folder = DATASETS / "drcd-retrieval"
    data = load_dataset(folder, "train", args.queries)
    docs = list(read_corpus(folder))
    e5 = load_encoder("multilingual-e5-small")
    print(
        f"DRCD train, {len(data.queries)} questions, {len(docs)} passages\n\n"
        "| method | nDCG@10 | Hit@1 | seconds |\n|---|---|---|---|"
    )
    for label, convert in (("dense, as is", lambda x: x), ("dense, converted to Simplified", _to_simplified())):
        start = time.perf_counter()
        dense = Dense(
            Index.build([Document(d.id, convert(d.text), convert(d.title), d.metadata) for d in docs], encoder=e5), e5
        )
        scores = mean_scores(
            {q: [h.id for h in dense.search(convert(text), 10)] for q, text in data.queries.items()}, data.qrels
        )
        print(f"| {label} | {scores['ndcg@10']:.4f} | {scores['hit@1']:.3f} | {time.perf_counter() - start:.0f} |")
    bm25 = BM25(Index.build(docs))
    scores = mean_scores({q: [h.id for h in bm25.search(text, 10)] for q, text in data.queries.items()}, data.qrels)
    print(f"| BM25 | {scores['ndcg@10']:.4f} | {scores['hit@1']:.3f} | |")


if __name__ == "__main__":
    main()
