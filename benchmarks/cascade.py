"""Quality per millisecond: nDCG@10 against p50 latency per query (100 BM25 candidates) for
finerank's second stages, a cascade (the bi-encoder over the index's stored vectors keeps the
best N, the cross-encoder reads only those), sentence-transformers' ``CrossEncoder`` and a plain
onnxruntime session (FlashRank's approach: every pair padded to the longest, one run), all in
one run on the same queries. Prints a table and draws the Pareto frontier.

    python benchmarks/cascade.py --model DIR [--dataset nfcorpus] [--queries 40] [--png docs/cascade.png]

``--model`` is a trained cross-encoder (one made by ``finerank train``, e.g. the NFCorpus model
of docs/models.md). Test split; the first ``--queries`` judged queries. 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from finerank import BM25, Index, Pipeline, load_encoder, load_reranker, read_corpus
from finerank.evaluate import load_dataset
from finerank.metrics import ndcg

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MAX_LENGTH = 256


def st_scorer(model: Path):
    import torch
    from sentence_transformers import CrossEncoder

    st = CrossEncoder(str(model), device="cpu", max_length=MAX_LENGTH)
    return lambda q, texts: st.predict([(q, t) for t in texts], batch_size=32, activation_fn=torch.nn.Identity())


def onnx_plain_scorer(model: Path):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from finerank.models.files import onnx_file

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_file(model, "classification")), options, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding()
    names = [i.name for i in session.get_inputs()]

    def score(q, texts):
        enc = tok.encode_batch([(q, t) for t in texts])
        feeds = {
            "input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
        }
        return session.run(None, {n: feeds[n] for n in names})[0][:, 0]

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained cross-encoder folder")
    parser.add_argument("--dataset", default="nfcorpus")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--keep", type=int, nargs="+", default=[10, 20, 30, 50])
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()

    folder = DATASETS / args.dataset
    data = load_dataset(folder, "test", args.queries)
    index = Index.build(read_corpus(folder), encoder=load_encoder("all-minilm-l6-v2", threads=2))
    bm25 = BM25(index)
    candidates = {q: bm25.search(text, 100) for q, text in data.queries.items()}
    cheap = load_reranker("minilm-fused", threads=2)
    ce = load_reranker(str(args.model), max_length=MAX_LENGTH, threads=2)
    configs = {
        "BM25 alone": Pipeline(bm25, None, top_k=10),
        "bi-encoder (minilm-fused, stored vectors)": Pipeline(bm25, cheap, top_k=10),
        "cross-encoder, all 100": Pipeline(bm25, ce, top_k=10),
    }
    for keep in args.keep:
        configs[f"cascade: bi-encoder keeps {keep}, cross-encoder"] = Pipeline(
            bm25, ce, top_k=10, cheap=cheap, keep=keep
        )
    plain = {
        "sentence-transformers CrossEncoder, all 100": st_scorer(args.model),
        "onnxruntime plain session, all 100": onnx_plain_scorer(args.model),
    }
    rows = []
    first_q = next(iter(data.queries))
    for label, pipeline in configs.items():
        pipeline.rerank(data.queries[first_q], candidates[first_q])  # warm-up
        latencies, ndcgs = [], []
        for q, text in data.queries.items():
            start = time.perf_counter()
            ranking = pipeline.rerank(text, candidates[q])
            latencies.append(time.perf_counter() - start)
            ndcgs.append(ndcg([h.id for h in ranking.hits], data.qrels[q]))
        rows.append((label, float(np.mean(ndcgs)), 1000 * statistics.median(latencies)))
        print(f"{label}: {rows[-1][1]:.4f} {rows[-1][2]:.0f} ms", flush=True)
    for label, score in plain.items():
        hits = candidates[first_q]
        score(data.queries[first_q], [h.document.content for h in hits])
        latencies, ndcgs = [], []
        for q, text in data.queries.items():
            hits = candidates[q]
            start = time.perf_counter()
            scores = np.asarray(score(text, [h.document.content for h in hits]))
            order = [hits[i].id for i in np.argsort(-scores, kind="stable")[:10]]
            latencies.append(time.perf_counter() - start)
            ndcgs.append(ndcg(order, data.qrels[q]))
        rows.append((label, float(np.mean(ndcgs)), 1000 * statistics.median(latencies)))
        print(f"{label}: {rows[-1][1]:.4f} {rows[-1][2]:.0f} ms", flush=True)

    full = next(r for r in rows if r[0] == "cross-encoder, all 100")
    frontier = {r[0] for r in rows if not any(o[1] >= r[1] and o[2] <= r[2] and o != r for o in rows)}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(
        f"\n{args.dataset} test, {len(data.queries)} queries, BM25 top 100, max_length {MAX_LENGTH}, {cpu}, 2 threads\n"
    )
    print(
        "| configuration | nDCG@10 | vs cross-encoder | p50 ms per query | latency vs cross-encoder | on the frontier |"
    )
    print("|---|---|---|---|---|---|")
    for label, quality, p50 in rows:
        print(
            f"| {label} | {quality:.4f} | {quality - full[1]:+.4f} | {p50:.0f} | {p50 / full[2]:.2f} | "
            f"{'yes' if label in frontier else ''} |"
        )
    if args.png:
        draw(
            rows,
            frontier,
            args.png,
            f"{args.dataset} test, {len(data.queries)} queries: quality per millisecond ({cpu}, 2 threads)",
        )


def short(label: str) -> str:
    """A point's name on the figure."""
    if label.startswith("cascade"):
        return f"cascade {label.split('keeps ')[1].split(',')[0]}"
    return {
        "BM25 alone": "BM25",
        "cross-encoder, all 100": "cross-encoder 100",
        "sentence-transformers CrossEncoder, all 100": "sentence-transformers 100",
        "onnxruntime plain session, all 100": "onnxruntime plain 100",
    }.get(label, label.split(" (")[0])


def draw(rows: list[tuple[str, float, float]], frontier: set[str], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, quality, p50) in enumerate(sorted(rows, key=lambda r: r[2])):
        x = max(p50, 1)
        ax.scatter(x, quality, color="tab:green" if label in frontier else "tab:grey", zorder=3)
        ax.annotate(short(label), (x, quality), fontsize=8, xytext=(5, 6 if i % 2 else -11), textcoords="offset points")
    points = sorted((max(r[2], 1), r[1]) for r in rows if r[0] in frontier)
    ax.plot(*zip(*points), color="tab:green", linewidth=1, label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlim(0.5, 4 * max(r[2] for r in rows))
    ax.set_xlabel("p50 latency per query, ms (log; 100 candidates; 1 = under a millisecond)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main()
