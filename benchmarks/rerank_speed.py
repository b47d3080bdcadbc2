"""Reranking speed per backend and precision on real 100-candidate requests.

Builds a MiniLM-L6 cross-encoder (all-MiniLM-L6-v2 weights + a one-logit head; speed does not
depend on the head's training), takes the BM25 top-100 of SciFact test queries, and times
finerank's backends. Agreement is measured against torch fp32 on the same pairs.

    python benchmarks/rerank_speed.py [--queries 5] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from finerank import BM25Index, CrossEncoder, read_corpus, read_queries
from finerank.registry import MODELS

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    i, j = np.triu_indices(len(a), 1)
    s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s.sum() / len(s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = MODELS["all-minilm-l6-v2"].locate()
    model_dir = Path(tempfile.mkdtemp(prefix="finerank-bench-")) / "minilm-ce"
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(model_dir)

    index = BM25Index.build(read_corpus(DATASETS / "scifact"))
    queries = list(read_queries(DATASETS / "scifact" / "queries.jsonl").values())[: args.queries]
    requests = [(q, [h.document.content for h in index.search(q, 100)]) for q in queries]
    pairs = sum(len(texts) for _, texts in requests)

    configs = {"torch fp32": ("torch", "fp32"), "torch bf16": ("torch", "bf16"), "onnx fp32": ("onnx", "fp32")}
    rows, reference = {}, None
    for label, (backend, precision) in configs.items():
        ce = CrossEncoder(model_dir, backend=backend, precision=precision, threads=args.threads)
        ce.score(*requests[0])  # warm-up
        latencies, scores = [], []
        for query, texts in requests:
            start = time.perf_counter()
            scores.append(ce.score(query, texts, raw=True))
            latencies.append(time.perf_counter() - start)
        if reference is None:
            reference = scores
        rows[label] = {
            "pairs_per_s": pairs / sum(latencies),
            "p50_ms_100": 1000 * statistics.median(latencies),
            "max_abs_diff": max(float(np.abs(s - r).max()) for s, r in zip(scores, reference)),
            "kendall_tau": min(kendall_tau(s, r) for s, r in zip(scores, reference)),
        }
    if args.json:
        print(json.dumps({"pairs": pairs, "threads": args.threads, "backends": rows}, indent=2))
        return
    print(f"{len(requests)} SciFact requests x 100 BM25 candidates, max_length 512, {args.threads} threads")
    print(f"{'backend':<12} {'pairs/s':>8} {'p50 ms/100':>11} {'x fp32':>7} {'max|d| logit':>13} {'min tau':>8}")
    base_rate = rows["torch fp32"]["pairs_per_s"]
    for label, r in rows.items():
        print(f"{label:<12} {r['pairs_per_s']:>8.1f} {r['p50_ms_100']:>11.0f} {r['pairs_per_s'] / base_rate:>7.2f} {r['max_abs_diff']:>13.4f} {r['kendall_tau']:>8.3f}")


if __name__ == "__main__":
    main()
