"""Cross-encoder speed side by side: sentence-transformers, a plain onnxruntime session and
finerank's engine, on the same model weights and the same real 100-candidate requests.

Requests: BM25 top-100 of SciFact test queries (long abstracts) and of TREC DL 2019 queries
(the official BM25 run; short passages), alternating, about 200 tokens per pair on average.
Each engine runs in its own process (2 threads by default), so peak RSS is its own.

    python benchmarks/rerank_speed.py [--model DIR] [--requests 10] [--ndcg-queries 30] [--json] [--quick]

``--model`` is any cross-encoder directory; the default is all-MiniLM-L6-v2 with a fresh
one-logit head (speed does not depend on the weights; nDCG does, so pass a trained one for the
quality column, e.g. one made by ``finerank train``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from finerank.models.tuning import kendall_tau

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# label -> (engine, backend, precision); "finerank" in --json is the engine finerank picks by default
ENGINES = {
    "sentence-transformers fp32": ("sentence_transformers", "torch", "fp32"),
    "onnxruntime plain fp32": ("onnxruntime_plain", "onnx", "fp32"),
    "finerank torch fp32": ("finerank", "torch", "fp32"),
    "finerank onnx fp32": ("finerank", "onnx", "fp32"),
    "finerank onnx int8": ("finerank", "onnx", "int8"),
    "finerank torch bf16": ("finerank", "torch", "bf16"),
    "finerank openvino fp32": ("finerank", "openvino", "fp32"),
    "finerank openvino bf16": ("finerank", "openvino", "bf16"),
}
DEFAULT_ENGINE = "finerank openvino bf16"  # what backend="auto" picks on this machine


def default_model() -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finerank.registry import MODELS

    base = MODELS["all-minilm-l6-v2"].locate()
    target = Path(tempfile.mkdtemp(prefix="finerank-bench-")) / "minilm-ce"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    return target


def build_requests(count: int, ndcg_queries: int) -> tuple[list, list, dict]:
    """(speed requests, SciFact quality requests with document ids, SciFact qrels)."""
    from finerank import BM25, Index, read_corpus, read_queries, read_run
    from finerank.evaluate import load_dataset

    scifact = load_dataset(DATASETS / "scifact")
    index = Index.build(read_corpus(DATASETS / "scifact"))
    dl = DATASETS / "trec-dl-2019-passage-pool"
    dl_queries = read_queries(dl / "queries.jsonl")
    run = read_run(dl / "runs" / "BM25.top100.trec")
    dl_ids = [q for q in run if q in dl_queries]
    wanted = {d for q in dl_ids[: count // 2] for d in run[q]}
    dl_docs = {d.id: d.content for d in read_corpus(dl) if d.id in wanted}

    sci = list(scifact.queries.items())
    requests = []
    for i in range(count):
        if i % 2 == 0:
            text = sci[i // 2][1]
            requests.append((text, [h.document.content for h in BM25(index).search(text, 100)]))
        else:
            q = dl_ids[i // 2]
            ranked = sorted(run[q], key=run[q].get, reverse=True)[:100]
            requests.append((dl_queries[q], [dl_docs[d] for d in ranked]))
    quality = []
    for qid, text in sci[:ndcg_queries]:
        hits = BM25(index).search(text, 100)
        quality.append((qid, text, [h.document.id for h in hits], [h.document.content for h in hits]))
    return requests, quality, scifact.qrels


def make_scorer(engine: str, backend: str, precision: str, model: Path, threads: int):
    """A function (query, texts) -> raw scores for one engine."""
    if engine == "sentence_transformers":
        import torch
        from sentence_transformers import CrossEncoder as STCrossEncoder

        torch.set_num_threads(threads)
        st = STCrossEncoder(str(model), device="cpu", max_length=512)
        return lambda q, texts: st.predict([(q, t) for t in texts], batch_size=32, activation_fn=torch.nn.Identity())
    if engine == "onnxruntime_plain":  # as FlashRank does it: pad all pairs to the longest, one session.run
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from finerank.models.files import onnx_file

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(onnx_file(model, "classification")), options, providers=["CPUExecutionProvider"]
        )
        tok = Tokenizer.from_file(str(model / "tokenizer.json"))
        tok.enable_truncation(512)
        tok.enable_padding()
        names = [i.name for i in session.get_inputs()]

        def score(q, texts):
            enc = tok.encode_batch([(q, t) for t in texts])
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            return session.run(None, {n: feeds[n] for n in names})[0][:, 0]

        return score
    from finerank import CrossEncoder

    ce = CrossEncoder(model, backend=backend, precision=precision, threads=threads)
    return lambda q, texts: ce.score(q, texts, raw=True)


def run_engine(label: str, model: Path, requests: list, quality: list, threads: int) -> dict:
    """Runs in a child process: warm-up, then timed requests, then the quality requests."""
    start = time.perf_counter()
    score = make_scorer(*ENGINES[label], model, threads)
    score(requests[0][0], requests[0][1][:16])  # warm-up: any one-time export, compilation or allocation
    load_s = time.perf_counter() - start
    latencies, scores = [], []
    for query, texts in requests:
        t = time.perf_counter()
        scores.append(np.asarray(score(query, texts), dtype=np.float32))
        latencies.append(time.perf_counter() - t)
    quality_scores = [np.asarray(score(text, texts), dtype=np.float32) for _, text, _, texts in quality]
    return {
        "latencies": latencies,
        "scores": scores,
        "quality_scores": quality_scores,
        "load_s": load_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def flops_per_pair(model: Path, lengths: list[int]) -> float:
    """Multiply-adds x 2 of a BERT-style encoder over the given sequence lengths, averaged."""
    config = json.loads((model / "config.json").read_text())
    h, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_length = [layers * n * (2 * (4 * h * h + 2 * h * inner) + 2 * 2 * n * h) for n in lengths]
    return float(np.mean(per_length))


def peak_flops(precision: str, threads: int) -> float:
    """The machine's measured matrix-product rate at a precision (large square products, best of 5)."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:  # int8: torch's int8 product (VNNI/AMX through oneDNN)
        a = torch.randint(-64, 64, (n, n), dtype=torch.int8)
        b = torch.randint(-64, 64, (n, n), dtype=torch.int8)
        product = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        product = lambda: a @ b  # noqa: E731
    product()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def ndcg_at_10(quality: list, scores: list, qrels: dict) -> float:
    from finerank.metrics import ndcg

    values = [
        ndcg([ids[i] for i in np.argsort(-s, kind="stable")], qrels[qid])
        for (qid, _, ids, _), s in zip(quality, scores)
    ]
    return float(np.mean(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, help="a cross-encoder directory (default: all-MiniLM-L6-v2 + a fresh head)"
    )
    parser.add_argument(
        "--requests", type=int, default=10, help="timed 100-candidate requests (half SciFact, half DL19)"
    )
    parser.add_argument(
        "--ndcg-queries", type=int, default=30, help="SciFact test queries reranked for nDCG@10 per engine"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--quick", action="store_true", help="2 requests, no nDCG, three engines: within a minute")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.ndcg_queries = 2, 0
        args.engines = ["sentence-transformers fp32", "onnxruntime plain fp32", DEFAULT_ENGINE]

    from finerank.models import CrossEncoder

    model = args.model or default_model()
    requests, quality, qrels = build_requests(args.requests, args.ndcg_queries)
    encoder = CrossEncoder(model, backend="onnx").encoder  # token counts as the engines see them
    lengths = [len(e.ids) for q, texts in requests for e in encoder.pairs(q, texts)]
    pairs = len(lengths)

    context = multiprocessing.get_context("spawn")
    results = {}
    for label in args.engines:
        with context.Pool(1) as pool:
            results[label] = pool.apply(run_engine, (label, model, requests, quality, args.threads))
    reference = results[args.engines[0]]
    flops = flops_per_pair(model, lengths)
    peaks = {p: peak_flops(p, args.threads) for p in sorted({ENGINES[label][2] for label in args.engines})}

    rows = {}
    for label, r in results.items():
        precision = ENGINES[label][2]
        rate = pairs / sum(r["latencies"])
        rows[label] = {
            "pairs_per_s": rate,
            "p50_ms_100": 1000 * statistics.median(r["latencies"]),
            "p95_ms_100": 1000 * float(np.percentile(r["latencies"], 95)),
            "p50_ms_100_scifact": 1000 * statistics.median(r["latencies"][0::2]),
            "p50_ms_100_dl19": 1000 * statistics.median(r["latencies"][1::2]),
            "peak_rss_mb": r["peak_rss_mb"],
            "load_s": r["load_s"],
            "max_abs_diff": max(float(np.abs(s - t).max()) for s, t in zip(r["scores"], reference["scores"])),
            "kendall_tau": min(kendall_tau(s, t) for s, t in zip(r["scores"], reference["scores"])),
            "ndcg@10": ndcg_at_10(quality, r["quality_scores"], qrels) if quality else None,
            "gflops": rate * flops / 1e9,
            "fraction_of_peak": rate * flops / peaks[precision],
        }
    names = {
        "sentence-transformers fp32": "sentence_transformers_fp32",
        "onnxruntime plain fp32": "onnxruntime_plain",
        DEFAULT_ENGINE: "finerank",
    }
    if args.json:
        summary = {
            key: {names.get(label, label): row[key] for label, row in rows.items()}
            for key in (
                "pairs_per_s",
                "p50_ms_100",
                "p95_ms_100",
                "p50_ms_100_scifact",
                "p50_ms_100_dl19",
                "ndcg@10",
                "peak_rss_mb",
                "max_abs_diff",
                "kendall_tau",
                "fraction_of_peak",
            )
        }
        summary |= {
            "pairs": pairs,
            "mean_tokens": float(np.mean(lengths)),
            "gflop_per_pair": flops / 1e9,
            "peak_gflops": {p: v / 1e9 for p, v in peaks.items()},
        }
        print(json.dumps(summary, indent=2))
        return
    print(
        f"model {model}: {pairs} pairs in {len(requests)} requests of 100 (SciFact / DL19 alternating), "
        f"{np.mean(lengths):.0f} tokens per pair on average, {flops / 1e9:.2f} GFLOP per pair, {args.threads} threads"
    )
    print("measured peak (2048^3 product): " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))
    if quality:
        print(f"nDCG@10 on the first {len(quality)} SciFact test queries (BM25 top-100 reranked)")
    base = rows[args.engines[0]]["pairs_per_s"]
    header = (
        f"| engine | pairs/s | x {args.engines[0]} | p50 ms / 100 | p95 ms / 100 | p50 SciFact | p50 DL19 | "
        "peak RSS MB | max abs diff | min Kendall tau | nDCG@10 | GFLOP/s | of peak |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, r in rows.items():
        ndcg = f"{r['ndcg@10']:.4f}" if r["ndcg@10"] is not None else "-"
        print(
            f"| {label} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / base:.2f} | {r['p50_ms_100']:.0f} | "
            f"{r['p95_ms_100']:.0f} | "
            f"{r['p50_ms_100_scifact']:.0f} | {r['p50_ms_100_dl19']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['max_abs_diff']:.4f} | {r['kendall_tau']:.3f} | {ndcg} | {r['gflops']:.0f} | "
            f"{r['fraction_of_peak']:.1%} |"
        )


if __name__ == "__main__":
    main()
