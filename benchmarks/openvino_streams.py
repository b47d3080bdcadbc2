"""Does OpenVINO run faster as 2 streams of 1 thread (two batches in flight) than as 1 stream of
2 threads (finerank's setting: the LATENCY hint)? Same batches, same model, bf16, one run.

    python benchmarks/openvino_streams.py [MODEL] [--head encoder|classification] [--pairs 400]

MODEL: a registry name or folder (default all-minilm-l6-v2, read as an encoder; the cost per
token is a cross-encoder's of the same shape). SciFact queries x abstracts, length-bucketed
batches as finerank cuts them, best of two passes after a warm-up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import openvino

from finerank import read_corpus, read_queries
from finerank.models.files import onnx_file
from finerank.models.tokenization import TextEncoder, batches
from finerank.registry import MODELS

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
CONFIGS = {
    "1 stream x 2 threads (LATENCY, finerank's)": ({"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}, 1),
    "2 streams x 1 thread (THROUGHPUT)": (
        {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2},
        2,
    ),
}


def rate(onnx: Path, encodings: list, pad_id: int, config: dict, jobs: int, budget: int) -> float:
    compiled = openvino.Core().compile_model(str(onnx), "CPU", {**config, "INFERENCE_PRECISION_HINT": "bf16"})
    names = [i.get_any_name() for i in compiled.inputs]
    feeds = [{n: b.feeds[n] for n in names} for b in batches(encodings, 64, budget, pad_id)]
    queue = openvino.AsyncInferQueue(compiled, jobs)
    for f in feeds[:4]:  # warm-up
        queue.start_async(f)
    queue.wait_all()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for f in feeds:
            queue.start_async(f)
        queue.wait_all()
        best = min(best, time.perf_counter() - start)
    return len(encodings) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="all-minilm-l6-v2")
    parser.add_argument("--head", default="encoder", choices=("encoder", "classification"))
    parser.add_argument("--pairs", type=int, default=400)
    args = parser.parse_args()
    spec = MODELS.get(args.model)
    folder = spec.locate() if spec is not None else Path(args.model)
    encoder = TextEncoder(folder, 512)
    documents = [d.content for d in read_corpus(SCIFACT)][:100]
    queries = list(read_queries(SCIFACT / "queries.jsonl").values())
    encodings = [e for q in queries[: max(1, args.pairs // 100)] for e in encoder.pairs(q, documents)]
    print(
        f"{args.model}: {len(encodings)} pairs, {np.mean([len(e.ids) for e in encodings]):.0f} tokens on average, "
        "bf16\n"
    )
    print("| configuration | token budget | pairs/s | vs finerank's |\n|---|---|---|---|")
    baseline = {}
    for name, (config, jobs) in CONFIGS.items():
        for budget in (2048, 4096):
            r = rate(onnx_file(folder, args.head), encodings, encoder.pad_id, config, jobs, budget)
            baseline.setdefault(budget, r)
            print(f"| {name} | {budget} | {r:.1f} | {r / baseline[budget]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
