"""A first stage in Qdrant against finerank's own, on the same BEIR sets in the same run:
nDCG@10 and recall@100 of BM25, dense (all-minilm-l6-v2) and hybrid (RRF), and the time per
query. Qdrant runs in qdrant-client's local mode (pure Python, the same API as a Qdrant server
or cluster): its times say what the local mode costs, not what a Qdrant server does.

    python benchmarks/qdrant_first_stage.py [--datasets scifact nfcorpus] [--split test] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from qdrant_client import QdrantClient

from finerank import Hybrid, Index, first_stage, load_encoder, qdrant, read_corpus
from finerank.evaluate import load_dataset
from finerank.metrics import mean_scores

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


class Remembering:
    """The encoder, each document embedded once for both engines."""

    def __init__(self, encoder):
        self.encoder, self.seen = encoder, {}

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def embed_documents(self, texts):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if missing:
            self.seen.update(zip(missing, self.encoder.embed_documents(missing)))
        return np.stack([self.seen[t] for t in texts])


def measure(retriever, dataset) -> dict:
    start = time.perf_counter()
    run = {q: [h.id for h in retriever.search(text, 100)] for q, text in dataset.queries.items()}
    elapsed = time.perf_counter() - start
    scores = mean_scores(run, dataset.qrels)
    return {"ndcg@10": scores["ndcg@10"], "recall@100": scores["recall@100"], "ms_per_query": 1000 * elapsed / len(run)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    encoder = Remembering(load_encoder("all-minilm-l6-v2"))
    results = {}
    for name in args.datasets:
        folder = DATASETS / name
        documents, dataset = list(read_corpus(folder)), load_dataset(folder, args.split)
        index = Index.build(documents, encoder=encoder, ann="exact")
        client = QdrantClient(path=tempfile.mkdtemp(prefix="finerank-qdrant-"))
        qdrant.create(client, name, documents, encoder=encoder)
        ours = {kind: first_stage(index, kind, encoder) for kind in ("bm25", "dense", "hybrid")}
        theirs = {kind: qdrant.Qdrant(client, name, kind, encoder=encoder) for kind in ("bm25", "dense")}
        theirs["hybrid"] = Hybrid(theirs["bm25"], theirs["dense"])
        results[name] = {
            kind: {"finerank": measure(ours[kind], dataset), "qdrant": measure(theirs[kind], dataset)} for kind in ours
        }
        client.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"| set ({args.split}) | first stage | finerank nDCG@10 / R@100 | Qdrant nDCG@10 / R@100 | finerank ms/q "
        "| Qdrant local ms/q |"
    )
    print("|---|---|---|---|---|---|")
    for name, kinds in results.items():
        for kind, pair in kinds.items():
            a, b = pair["finerank"], pair["qdrant"]
            print(
                f"| {name} | {kind} | {a['ndcg@10']:.4f} / {a['recall@100']:.4f} | "
                f"{b['ndcg@10']:.4f} / {b['recall@100']:.4f} "
                f"| {a['ms_per_query']:.1f} | {b['ms_per_query']:.1f} |"
            )


if __name__ == "__main__":
    main()
