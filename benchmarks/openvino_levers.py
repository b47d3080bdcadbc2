"""What each OpenVINO lever is worth on finerank's batches: the rows run the same model on the same real
requests (rerank_speed.py's: BM25 top 100 of SciFact and TREC DL 2019 queries, alternating), cut into
length-sorted batches under finerank's token budget, bf16, 2 threads, the rows interleaved in
one process, request by request in a rotating order (this machine's speed drifts by 10-40 % within a
run; interleaving spreads the drift over every row).

    python benchmarks/openvino_levers.py [--model DIR] [--requests 6] [--passes 3]

Rows (the first is how finerank runs a model; "x finerank" is the median of the per-pass ratios):

- ``finerank``: the export with attention's key transpose folded into the product (``fuse_key_transposes``),
  each batch padded to a multiple of 16 tokens (``width_multiple``), one stream of 2 threads (the LATENCY hint).
- ``widths as long as the longest pair``: no padding past the batch's longest pair.
- ``key transpose as exported``: the export as torch writes it, ``Q @ transpose(K, [0, 2, 3, 1])``.
- ``TBB partitioner STATIC``: OpenVINO's ``TBB_PARTITIONER`` property (its default lets TBB balance the work).
- ``2 streams x 1 thread``: two batches in flight on one thread each (the THROUGHPUT hint).
- ``static lengths (16-token buckets)``: one compiled model per padded length (rounded up to 16 tokens), the
  batch dimension left dynamic; the compiled models' count and the process's memory growth are printed.
- ``int8 FFN (NNCF static)`` and ``int8 linear (NNCF static)``: NNCF's static int8 quantization, calibrated on
  300 local NFCorpus pairs, of the feed-forward products only, or of every linear product but attention's;
  skipped without nncf. Kendall tau is against fp32 (ties of the reference not counted), the lowest per request.

``--model`` is any cross-encoder folder (default: all-MiniLM-L6-v2 with a fresh one-logit head).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import openvino
from _support import interleaved, speedup
from rerank_speed import build_requests, calibration_pairs, default_model

from finerank.models.backends import fuse_key_transposes
from finerank.models.files import onnx_file
from finerank.models.tokenization import TextEncoder, batches, pad
from finerank.models.tuning import kendall_tau

LATENCY = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16"}
BUDGET, BATCH, BUCKET = 4096, 32, 16


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


class Engine:
    """Scores a request's encodings, batch by batch, with one compiled model (or one per padded length)."""

    def __init__(
        self,
        model,
        config: dict,
        *,
        streams: int = 1,
        static_lengths: bool = False,
        pad_id: int = 0,
        max_width: int | None = None,
        multiple: int = 16,
    ):
        self.model, self.config, self.pad_id, self.multiple = model, config, pad_id, multiple
        self.max_width = max_width
        self.names = [i.get_any_name() for i in model.inputs]
        self.static = {} if static_lengths else None
        self.compiled = None if static_lengths else openvino.Core().compile_model(model, "CPU", config)
        self.queue = openvino.AsyncInferQueue(self.compiled, streams) if streams > 1 else None
        self.request = self.compiled.create_infer_request() if self.compiled and streams == 1 else None

    def _request(self, feeds: dict):
        if self.static is None:
            return self.request, feeds
        width = feeds["input_ids"].shape[1]
        length = -(-width // BUCKET) * BUCKET
        if length not in self.static:
            model = self.model.clone()
            model.reshape({n: openvino.PartialShape([-1, length]) for n in self.names})
            self.static[length] = openvino.Core().compile_model(model, "CPU", self.config).create_infer_request()
        grown = {}
        for n, a in feeds.items():
            grown[n] = np.full((a.shape[0], length), self.pad_id if n == "input_ids" else 0, dtype=np.int64)
            grown[n][:, :width] = a
        return self.static[length], grown

    def __call__(self, encodings: list) -> np.ndarray:
        out = np.empty(len(encodings), dtype=np.float32)
        work = [
            (b.positions, {n: b.feeds[n] for n in self.names})
            for b in batches(encodings, BATCH, BUDGET, self.pad_id, self.multiple, self.max_width)
        ]
        if self.queue is not None:
            self.queue.set_callback(
                lambda request, rows: out.__setitem__(rows, request.get_output_tensor(0).data[:, 0])
            )
            for rows, feeds in work:
                self.queue.start_async(feeds, rows)
            self.queue.wait_all()
            return out
        for rows, feeds in work:
            request, feeds = self._request(feeds)
            out[rows] = request.infer(feeds)[0][:, 0]
        return out


def quantized(model, encoder: TextEncoder, ignore: list[str]):
    import nncf

    names = [i.get_any_name() for i in model.inputs]
    data = [{n: pad([e])[n] for n in names} for e in (encoder.pairs(q, [p])[0] for q, p in calibration_pairs())]
    return nncf.quantize(
        model.clone(),
        nncf.Dataset(data),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(data),
        ignored_scope=nncf.IgnoredScope(patterns=ignore, validate=False),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    model_dir = args.model or default_model()
    requests, _, _ = build_requests(args.requests, 0)
    encoder = TextEncoder(model_dir, 512)
    encodings = [encoder.pairs(q, texts) for q, texts in requests]
    pairs = sum(len(e) for e in encodings)
    core = openvino.Core()
    exported = core.read_model(str(onnx_file(model_dir, "classification")))
    fused = exported.clone()
    fuse_key_transposes(fused)

    common = {"pad_id": encoder.pad_id, "max_width": encoder.max_length}
    rows = {
        "finerank": lambda: Engine(fused, LATENCY, **common),
        "widths as long as the longest pair": lambda: Engine(fused, LATENCY, **common, multiple=1),
        "key transpose as exported": lambda: Engine(exported, LATENCY, **common),
        "TBB partitioner STATIC": lambda: Engine(fused, LATENCY | {"TBB_PARTITIONER": "STATIC"}, **common),
        "2 streams x 1 thread": lambda: Engine(
            fused, LATENCY | {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}, streams=2, **common
        ),
        "static lengths (16-token buckets)": lambda: Engine(fused, LATENCY, static_lengths=True, **common),
    }
    if importlib.util.find_spec("nncf"):
        for label, ignore in (
            ("int8 FFN (NNCF static)", [".*attention.*", ".*pooler.*", ".*classifier.*"]),
            ("int8 linear (NNCF static)", [".*attention/self/MatMul.*", ".*pooler.*", ".*classifier.*"]),
        ):
            model = quantized(exported, encoder, ignore)
            fuse_key_transposes(model)
            rows[label] = lambda model=model: Engine(model, LATENCY, **common)
    else:
        print("int8 rows skipped: nncf is not installed")
    reference = Engine(exported, LATENCY | {"INFERENCE_PRECISION_HINT": "f32"}, **common)
    expected = [reference(e) for e in encodings]

    engines, memory = {}, {}
    for label, make in rows.items():
        before = rss_mb()
        engines[label] = make()
        for e in encodings:  # warm-up: compiles every shape the requests need
            engines[label](e)
        memory[label] = rss_mb() - before
    labels = list(engines)
    seconds, scores = interleaved(engines, encodings, args.passes)
    rates = {label: [pairs / s for s in seconds[label]] for label in labels}
    taus = {label: min(kendall_tau(s, x) for s, x in zip(scores[label], expected)) for label in labels}
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    amx = "AMX" if "amx_bf16" in Path("/proc/cpuinfo").read_text() else "no AMX"
    print(f"{cpu} ({amx}), 2 threads; {model_dir}: {pairs} pairs in {len(encodings)} requests, {args.passes} passes")
    print("| row | pairs/s (each pass) | x finerank | memory growth MB | compiled shapes | min Kendall tau vs fp32 |")
    print("|---|---|---|---|---|---|")
    for label, values in rates.items():
        ratio = speedup(seconds[label], seconds["finerank"])
        shapes = len(engines[label].static) if engines[label].static is not None else 1
        print(
            f"| {label} | {' / '.join(f'{v:.1f}' for v in values)} | {ratio:.2f} | {memory[label]:.0f} | {shapes} "
            f"| {taus[label]:.3f} |"
        )


if __name__ == "__main__":
    main()
