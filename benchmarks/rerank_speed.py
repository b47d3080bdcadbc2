"""Cross-encoder speed side by side: sentence-transformers on each of its backends, a plain
onnxruntime session and finerank's engines, on the same model weights and the same real
100-candidate requests, with a yardstick of what this machine attains on the model's own products.

Requests: BM25 top-100 of SciFact test queries (long abstracts) and of TREC DL 2019 queries
(the official BM25 run; short passages), alternating, about 200 tokens per pair on average.
Each engine runs in its own spawned process (2 threads by default), so peak RSS is its own; ratios
("x ...") and agreement (max abs logit diff; min Kendall tau per request, near-ties of the reference not
counted) are against the first row that ran.

    python benchmarks/rerank_speed.py [--model DIR] [--requests 10] [--ndcg-queries 30] [--threads 2]
        [--engines NAME ...] [--peers-only] [--json] [--quick] [--head-to-head [--passes 3]]

Rows (``--engines`` takes these labels, with or without dashes for spaces, or ``peers`` / ``finerank``):

- ``sentence-transformers fp32``: sentence-transformers ``CrossEncoder``, torch fp32, ``predict`` in batches of 32.
- ``sentence-transformers openvino``: ``CrossEncoder(backend="openvino")``; OpenVINO picks the precision
  itself (bf16 on CPUs with bf16 units); the "runs as" column says which.
- ``sentence-transformers onnx fp32``: ``CrossEncoder(backend="onnx")``.
- ``sentence-transformers onnx int8``: ``export_dynamic_quantized_onnx_model`` with the configuration fitting
  this CPU (avx512_vnni, avx512, avx2 or arm64).
- ``sentence-transformers openvino int8``: ``export_static_quantized_openvino_model`` (NNCF, ST's default
  configuration), calibrated on 300 local pairs: NFCorpus train queries with their BM25 top 10.
- ``onnxruntime plain fp32``: one onnxruntime session, all 100 pairs padded to the longest, one run (as FlashRank).
- ``finerank <backend> <precision>``: ``finerank.CrossEncoder(model, backend=..., precision=...)``.
- ``finerank auto``: ``finerank.CrossEncoder(model)`` (FINERANK_AUTOTUNE unset); timed after its measurement
  of the engines has finished, so on the engine it chose ("runs as").

The sentence-transformers rows need ``pip install -e ".[bench]"`` (sentence-transformers[openvino] 6.3 or later,
whose ``predict`` sorts pairs by length as finerank does, and datasets), its ONNX rows ``pip install -e
".[bench-onnx]"`` in an environment of their own (optimum-onnx pins transformers below 4.58, and pip then
resolves sentence-transformers 5.7, which pads each batch of 32 in the order given); a row whose package is
missing is skipped with a note. Their exports go to a temporary folder, removed after the row.

Yardstick ("of attainable", replacing a square product's "peak", which is no stable measure on these CPUs):
the model's own matrix products (Q/K/V/output projections, FFN up and down, attention's QK^T and PV at its
head dimension), each timed alone with torch, best of 10, at each request kind's shape (batch 32 x the mean
padded length of its pairs sorted into batches of 32), at the precision the engine runs it in: fp32, bf16,
or int8 for the weight products of int8 engines (the faster of ``torch._int_mm`` and onnxruntime's
``MatMulInteger`` of unsigned activations by signed weights: on CPUs without VNNI torch's int8 product is
far slower than onnxruntime's). OpenVINO runs bf16 as fp32 on CPUs without bf16 units; "runs as" says what
it compiled. Attention's products stay in floats in
finerank's int8 and in OpenVINO's; sentence-transformers' dynamic ONNX int8 quantizes them too, and those are
rated at fp32 (torch has no batched int8 product). Attainable seconds per pair = the sum over the pairs'
products of FLOPs / that product's rate; a row's share = attainable / its measured time per pair (the
target is at least 75 %). The rates are printed as a table (``attainable_gflops`` in --json).

``--quick``: 2 requests, no nDCG, and unless ``--engines`` says otherwise three rows (sentence-transformers
fp32, onnxruntime plain, finerank openvino bf16). ``--peers-only``: the rows that are not finerank's.

``--head-to-head``: instead of the table, the engines (by default sentence-transformers' OpenVINO backend and
finerank ``auto``) loaded side by side in one process and timed request by request in a rotating order, for
``--passes`` passes over the requests, so the machine's drift (10-40 % within a run) falls on every row alike;
it prints each pass's pairs/s and the median of the per-pass ratios to the first row. The engines then share the
CPU's caches, which the one-process-a-row table avoids; read the two together.

``--model`` is any cross-encoder directory; the default is all-MiniLM-L6-v2 with a fresh one-logit head
(speed does not depend on the weights; nDCG does, so pass a trained one for the quality column, e.g. one
made by ``finerank train``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _support import first_missing, interleaved, speedup

from finerank.models.tuning import kendall_tau

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# label -> (engine, backend, precision); "auto" precision: the engine decides
ENGINES = {
    "sentence-transformers fp32": ("sentence_transformers", "torch", "fp32"),
    "sentence-transformers openvino": ("sentence_transformers", "openvino", "auto"),
    "sentence-transformers onnx fp32": ("sentence_transformers", "onnx", "fp32"),
    "sentence-transformers onnx int8": ("sentence_transformers", "onnx", "int8"),
    "sentence-transformers openvino int8": ("sentence_transformers", "openvino", "int8"),
    "onnxruntime plain fp32": ("onnxruntime_plain", "onnx", "fp32"),
    "finerank torch fp32": ("finerank", "torch", "fp32"),
    "finerank onnx fp32": ("finerank", "onnx", "fp32"),
    "finerank onnx int8": ("finerank", "onnx", "int8"),
    "finerank torch bf16": ("finerank", "torch", "bf16"),
    "finerank openvino fp32": ("finerank", "openvino", "fp32"),
    "finerank openvino bf16": ("finerank", "openvino", "bf16"),
    "finerank auto": ("finerank", "auto", "auto"),
}
PEERS = [label for label, (engine, _, _) in ENGINES.items() if engine != "finerank"]
DEFAULT_ENGINE = "finerank openvino bf16"  # "finerank" in --json: what backend="auto" chose on the machines measured
QUICK = ["sentence-transformers fp32", "onnxruntime plain fp32", DEFAULT_ENGINE]
JSON_NAMES = {
    "sentence-transformers fp32": "sentence_transformers_fp32",
    "onnxruntime plain fp32": "onnxruntime_plain",
    DEFAULT_ENGINE: "finerank",
}
KINDS = ("SciFact", "DL19")  # requests alternate: even ones SciFact, odd ones DL19
BATCH = 32
REPEATS = 10
LINEAR = {"Q/K/V/out": ("hidden", "hidden"), "FFN up": ("hidden", "inner"), "FFN down": ("inner", "hidden")}
ATTENTION = ("QK^T", "PV")
CALIBRATION_QUERIES, CALIBRATION_PER_QUERY = 30, 10  # 300 pairs: the number ST's own calibration takes


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


def calibration_pairs() -> list[tuple[str, str]]:
    """A local calibration set: NFCorpus train queries, each with its BM25 top candidates."""
    from finerank import BM25, Index, read_corpus, read_queries

    nfcorpus = DATASETS / "nfcorpus"
    queries = read_queries(nfcorpus / "queries.jsonl")
    lines = (nfcorpus / "qrels" / "train.tsv").read_text().splitlines()[1:]
    train = [q for q in dict.fromkeys(line.split("\t")[0] for line in lines) if q in queries]
    bm25 = BM25(Index.build(read_corpus(nfcorpus)))
    return [
        (queries[q], hit.document.content)
        for q in train[:CALIBRATION_QUERIES]
        for hit in bm25.search(queries[q], CALIBRATION_PER_QUERY)
    ]


def write_calibration_set(folder: Path) -> Path:
    """The calibration pairs as a local dataset folder (train.jsonl, column "pair" = [query, passage]): the
    tokenizer ST's static quantization applies to the column encodes a list of two texts as a pair."""
    folder.mkdir(parents=True)
    with open(folder / "train.jsonl", "w") as out:
        for query, passage in calibration_pairs():
            out.write(json.dumps({"pair": [query, passage]}) + "\n")
    return folder


def cpu_flags() -> set[str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in info.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def onnx_int8_config() -> str:
    """sentence-transformers' dynamic int8 configuration for this CPU."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def st_model_kwargs(backend: str, threads: int) -> dict:
    """The thread count for onnxruntime's and OpenVINO's own pools (torch's is set globally)."""
    if backend == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return {"session_options": options, "provider": "CPUExecutionProvider"}
    if backend == "openvino":
        return {"ov_config": {"INFERENCE_NUM_THREADS": str(threads)}}
    return {}


def st_quantized(backend: str, model: Path, threads: int, work: Path):
    """sentence-transformers' own int8 export of a copy of the model (in ``work``), loaded back."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.backend import (
        export_dynamic_quantized_onnx_model,
        export_static_quantized_openvino_model,
    )

    copy = work / "model"
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("onnx", "openvino"))
    kwargs = st_model_kwargs(backend, threads)
    st = STCrossEncoder(str(copy), device="cpu", max_length=512, backend=backend, model_kwargs=kwargs)
    if backend == "onnx":
        export_dynamic_quantized_onnx_model(st, onnx_int8_config(), str(copy), file_suffix="int8")
        file_name = "onnx/model_int8.onnx"
    else:
        data = write_calibration_set(work / "calibration")
        export_static_quantized_openvino_model(
            st, None, str(copy), str(data), "default", "train", "pair", file_suffix="int8"
        )
        file_name = "openvino/openvino_model_int8.xml"
    kwargs = st_model_kwargs(backend, threads) | {"file_name": file_name}
    return STCrossEncoder(str(copy), device="cpu", max_length=512, backend=backend, model_kwargs=kwargs)


def compiled_precision(compiled) -> str:
    """The precision an OpenVINO compiled model runs its floating-point work in."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return {"bf16": "bf16", "f32": "fp32"}.get(hint, hint)


def openvino_precision(st) -> str:
    """The precision OpenVINO chose for a sentence-transformers model's floating-point work."""
    ov_model = st.model
    if ov_model.request is None:
        ov_model.compile()
    return compiled_precision(ov_model.request)


def st_scorer(backend: str, precision: str, model: Path, threads: int, work: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model and a local calibration set
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    torch.set_num_threads(threads)
    if precision == "int8":
        st = st_quantized(backend, model, threads, work)
    else:
        kwargs = st_model_kwargs(backend, threads)
        st = STCrossEncoder(str(model), device="cpu", max_length=512, backend=backend, model_kwargs=kwargs)
    floats = openvino_precision(st) if backend == "openvino" else "fp32"
    linear = "int8" if precision == "int8" else floats
    # ST's dynamic ONNX int8 quantizes attention's products too; static OpenVINO int8 keeps attention fused in floats
    attention = "int8" if (backend, precision) == ("onnx", "int8") else floats

    def score(q, texts):
        return st.predict([(q, t) for t in texts], batch_size=BATCH, activation_fn=torch.nn.Identity())

    return score, (backend, linear, attention)


def plain_onnx_scorer(model: Path, threads: int):
    """As FlashRank does it: pad all pairs to the longest, one session.run."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from finerank.models.files import onnx_file

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file(model, "classification")), options, providers=["CPUExecutionProvider"])
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

    return score, ("onnx", "fp32", "fp32")


def finerank_scorer(backend: str, precision: str, model: Path, threads: int):
    from finerank import CrossEncoder

    if backend == "auto":
        os.environ.pop("FINERANK_AUTOTUNE", None)
    ce = CrossEncoder(model, backend=backend, precision=precision, threads=threads)
    if ce.measuring is not None:  # auto: time the engine it chose, not the one it serves with meanwhile
        ce.measuring.join()
    # finerank's int8 quantizes the weight products only; attention runs in fp32
    floats = "fp32" if ce.precision == "int8" else ce.precision
    if ce.backend_name == "openvino":  # bf16 asked for, fp32 compiled where the CPU has no bf16 units
        floats = compiled_precision(ce.backend._request.get_compiled_model())
    linear = "int8" if ce.precision == "int8" else floats
    return lambda q, texts: ce.score(q, texts, raw=True), (ce.backend_name, linear, floats)


def make_scorer(label: str, model: Path, threads: int, work: Path):
    """(a function (query, texts) -> raw scores, (backend, precision of the weight products, of attention's))."""
    engine, backend, precision = ENGINES[label]
    if engine == "sentence_transformers":
        return st_scorer(backend, precision, model, threads, work)
    if engine == "onnxruntime_plain":
        return plain_onnx_scorer(model, threads)
    return finerank_scorer(backend, precision, model, threads)


def needed_modules(label: str) -> list[str]:
    """The packages a row imports (a row missing one is skipped)."""
    engine, backend, precision = ENGINES[label]
    if engine == "sentence_transformers":
        extra = {"onnx": ["optimum.onnxruntime"], "openvino": ["optimum.intel", "openvino"]}.get(backend, [])
        static = ["nncf", "datasets"] if (backend, precision) == ("openvino", "int8") else []
        return ["torch", "sentence_transformers", *extra, *static]
    if engine == "onnxruntime_plain":
        return ["onnxruntime"]
    return {"openvino": ["openvino"], "torch": ["torch"]}.get(backend, [])


def missing_module(label: str) -> str | None:
    return first_missing(needed_modules(label))


def run_engine(label: str, model: Path, requests: list, quality: list, threads: int) -> dict:
    """Runs in a child process: load (and any export), warm-up, timed requests, then the quality requests.
    A row whose package is missing, or which fails, comes back as {"skipped": why}."""
    with tempfile.TemporaryDirectory(prefix="rerank-speed-") as work:
        try:
            return time_engine(label, model, requests, quality, threads, Path(work))
        except ImportError as err:
            return {"skipped": f"not installed ({err})"}
        except Exception as err:
            return {"skipped": f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def time_engine(label: str, model: Path, requests: list, quality: list, threads: int, work: Path) -> dict:
    start = time.perf_counter()
    score, runs_as = make_scorer(label, model, threads, work)
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
        "runs_as": runs_as,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def model_dims(model: Path) -> dict:
    config = json.loads((model / "config.json").read_text())
    return {
        "hidden": config["hidden_size"],
        "inner": config["intermediate_size"],
        "layers": config["num_hidden_layers"],
        "heads": config["num_attention_heads"],
    }


def product_flops(dims: dict, n: int) -> dict[str, float]:
    """Multiply-adds x 2 of each of a BERT-style encoder's products for one pair of n tokens, all layers."""
    h, inner, layers = dims["hidden"], dims["inner"], dims["layers"]
    return {
        "Q/K/V/out": layers * 4 * 2 * n * h * h,
        "FFN up": layers * 2 * n * h * inner,
        "FFN down": layers * 2 * n * inner * h,
        "QK^T": layers * 2 * n * n * h,  # heads x (n x head_dim) @ (head_dim x n)
        "PV": layers * 2 * n * n * h,
    }


def flops_per_pair(dims: dict, lengths: list[int]) -> float:
    return float(np.mean([sum(product_flops(dims, n).values()) for n in lengths]))


def request_shapes(lengths_by_kind: dict[str, list[int]]) -> dict[str, int]:
    """Per request kind, the mean padded length of its pairs sorted by length into batches of 32."""
    shapes = {}
    for kind, lengths in lengths_by_kind.items():
        ordered = sorted(lengths)
        shapes[kind] = round(statistics.mean(max(ordered[i : i + BATCH]) for i in range(0, len(ordered), BATCH)))
    return shapes


def onnx_int8_product(x, w, threads: int):
    """onnxruntime's int8 product alone (MatMulInteger, uint8 activations x int8 weights), as a function."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
        "int8",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [x.shape[0], w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


def product_calls(name: str, precision: str, dims: dict, n: int, threads: int):
    """([ways to run one product of the model at batch 32 x n tokens, as functions], its FLOPs)."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if name in ATTENTION:
        groups, d = BATCH * dims["heads"], dims["hidden"] // dims["heads"]
        left = torch.randn(groups, n, d if name == "QK^T" else n, dtype=dtype)
        right = torch.randn(groups, d if name == "QK^T" else n, n if name == "QK^T" else d, dtype=dtype)
        return [lambda: torch.bmm(left, right)], 2 * groups * n * n * d
    k, m = (dims[side] for side in LINEAR[name])
    rows = BATCH * n
    if precision == "int8":
        x = torch.randint(-64, 64, (rows, k), dtype=torch.int8)
        w = torch.randint(-64, 64, (k, m), dtype=torch.int8)
        calls = [lambda: torch._int_mm(x, w)]
        if importlib.util.find_spec("onnxruntime"):
            calls.append(onnx_int8_product((x.numpy().astype(np.int16) + 64).astype(np.uint8), w.numpy(), threads))
        return calls, 2 * rows * k * m
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(m, k, dtype=dtype)
    return [lambda: torch.nn.functional.linear(x, w)], 2 * rows * k * m


def best_seconds(product) -> float:
    product()
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t)
    return best


def measure_rates(dims: dict, shapes: dict[str, int], needs: dict[str, set[str]], threads: int) -> dict:
    """Runs in a child process: {precision: {kind: {product: FLOP/s}}} for the products each precision needs."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for precision, products in sorted(needs.items()):
        for kind, n in shapes.items():
            for name in [p for p in [*LINEAR, *ATTENTION] if p in products]:
                try:
                    calls, flops = product_calls(name, precision, dims, n, threads)
                    rate = max(flops / best_seconds(call) for call in calls)
                except RuntimeError as err:  # a product torch does not run at this precision here
                    print(f"no attainable rate for {name} in {precision}: {err}", file=sys.stderr)
                    continue
                rates.setdefault(precision, {}).setdefault(kind, {})[name] = rate
    return rates


def attention_rating(precision: str) -> str:
    """The precision attention's products are rated at: torch has no batched int8 product, so int8 is rated at fp32."""
    return "fp32" if precision == "int8" else precision


def yardstick_needs(results: dict) -> dict[str, set[str]]:
    """Which products each precision is needed for: weight products at the engine's precision,
    attention at its attention's."""
    needs: dict[str, set[str]] = {}
    for r in results.values():
        _, linear, attention = r["runs_as"]
        needs.setdefault(linear, set()).update(LINEAR)
        needs.setdefault(attention_rating(attention), set()).update(ATTENTION)
    return needs


def attainable_seconds(dims: dict, lengths_by_kind: dict, rates: dict | None, runs_as: tuple) -> float | None:
    """Seconds per pair if every product ran at the rate it attains alone, at the engine's precisions
    (None without the rates it needs)."""
    _, linear, attention = runs_as
    precisions = {name: attention_rating(attention) if name in ATTENTION else linear for name in [*LINEAR, *ATTENTION]}
    total, pairs = 0.0, 0
    for kind, lengths in lengths_by_kind.items():
        for n in lengths:
            for name, flops in product_flops(dims, n).items():
                rate = (rates or {}).get(precisions[name], {}).get(kind, {}).get(name)
                if rate is None:
                    return None
                total += flops / rate
        pairs += len(lengths)
    return total / pairs


def ndcg_at_10(quality: list, scores: list, qrels: dict) -> float:
    from finerank.metrics import ndcg

    values = [
        ndcg([ids[i] for i in np.argsort(-s, kind="stable")], qrels[qid])
        for (qid, _, ids, _), s in zip(quality, scores)
    ]
    return float(np.mean(values)) if values else float("nan")


def runs_as_text(runs_as: tuple) -> str:
    backend, linear, attention = runs_as
    return f"{backend} {linear}" + (f", attention {attention}" if attention != linear else "")


def make_row(r: dict, reference: dict, pairs: int, flops: float, attainable_s: float | None, quality, qrels) -> dict:
    rate = pairs / sum(r["latencies"])
    known = attainable_s is not None
    return {
        "runs_as": runs_as_text(r["runs_as"]),
        "pairs_per_s": rate,
        "p50_ms_100": 1000 * statistics.median(r["latencies"]),
        "p95_ms_100": 1000 * float(np.percentile(r["latencies"], 95)),
        "p50_ms_100_scifact": 1000 * statistics.median(r["latencies"][0::2]),
        "p50_ms_100_dl19": 1000 * statistics.median(r["latencies"][1::2]) if len(r["latencies"]) > 1 else None,
        "peak_rss_mb": r["peak_rss_mb"],
        "load_s": r["load_s"],
        "max_abs_diff": max(float(np.abs(s - t).max()) for s, t in zip(r["scores"], reference["scores"])),
        "kendall_tau": min(kendall_tau(s, t) for s, t in zip(r["scores"], reference["scores"])),
        "ndcg@10": ndcg_at_10(quality, r["quality_scores"], qrels) if quality else None,
        "gflops": rate * flops / 1e9,
        "attainable_ms_per_pair": 1000 * attainable_s if known else None,
        "share_of_attainable": attainable_s * rate if known else None,
    }


def pick_engines(args) -> list[str]:
    if args.peers_only:
        return PEERS
    if not args.engines:
        return QUICK if args.quick else list(ENGINES)
    keys = {label.replace(" ", "-"): label for label in ENGINES} | {label: label for label in ENGINES}
    groups = {"peers": PEERS, "finerank": [label for label in ENGINES if label not in PEERS]}
    chosen = []
    for name in args.engines:
        if name not in keys and name not in groups:
            raise SystemExit(f"unknown engine {name!r}; choose from: {', '.join(keys)}, peers, finerank")
        chosen += groups.get(name) or [keys[name]]
    return list(dict.fromkeys(chosen))


def parse_args():
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
    parser.add_argument(
        "--engines", nargs="+", metavar="NAME", help="rows to run, in order (labels, dashed labels, peers, finerank)"
    )
    parser.add_argument("--peers-only", action="store_true", help="only the rows that are not finerank")
    parser.add_argument(
        "--quick", action="store_true", help="2 requests, no nDCG, three engines unless --engines: about a minute"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--head-to-head", action="store_true", help="the engines in one process, interleaved")
    parser.add_argument("--passes", type=int, default=3, help="passes over the requests (--head-to-head)")
    args = parser.parse_args()
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    if args.head_to_head and not args.engines:
        args.engines = ["sentence-transformers openvino", "finerank auto"]
    if args.quick:
        args.requests, args.ndcg_queries = 2, 0
    args.engines = pick_engines(args)
    return args


def run_all(args, model: Path, requests: list, quality: list) -> tuple[dict, dict]:
    """Each engine in its own spawned process: (results of those that ran, {label: why skipped})."""
    context = multiprocessing.get_context("spawn")
    results, skipped = {}, {}
    for label in args.engines:
        missing = missing_module(label)
        if missing:
            r = {"skipped": f"{missing} is not installed"}
        else:
            with context.Pool(1) as pool:
                r = pool.apply(run_engine, (label, model, requests, quality, args.threads))
        if "skipped" in r:
            skipped[label] = r["skipped"]
            print(f"skipped {label}: {r['skipped']}", file=sys.stderr, flush=True)
        else:
            results[label] = r
    return results, skipped


def head_to_head(args, model: Path, requests: list) -> None:
    """The engines side by side in this process, interleaved request by request (``--head-to-head``)."""
    scorers, pairs = {}, sum(len(texts) for _, texts in requests)
    with tempfile.TemporaryDirectory(prefix="rerank-speed-") as work:
        for label in args.engines:
            missing = missing_module(label)
            if missing:
                print(f"skipped {label}: {missing} is not installed", file=sys.stderr)
                continue
            try:
                score, runs_as = make_scorer(label, model, args.threads, Path(work))
                score(requests[0][0], requests[0][1][:16])  # warm-up: exports, compilation, allocation
            except Exception as err:  # as in the table: a row that cannot run is skipped, the others run
                print(f"skipped {label}: {type(err).__name__}: {err}", file=sys.stderr)
                continue
            scorers[label] = (score, runs_as)
        labels = list(scorers)
        if not labels:
            raise SystemExit("no engine ran")
        calls = {label: lambda request, score=scorers[label][0]: score(*request) for label in labels}
        seconds, _ = interleaved(calls, requests, args.passes)
    first = labels[0]
    print(f"{pairs} pairs in {len(requests)} requests, {args.passes} passes, interleaved, {args.threads} threads")
    print(f"| engine | runs as | pairs/s (each pass) | x {first} (median of passes) |")
    print("|---|---|---|---|")
    for label in labels:
        rates = [pairs / s for s in seconds[label]]
        ratio = speedup(seconds[label], seconds[first])
        print(
            f"| {label} | {runs_as_text(scorers[label][1])} | {' / '.join(f'{r:.1f}' for r in rates)} | {ratio:.2f} |"
        )


def run_yardstick(dims: dict, shapes: dict, results: dict, threads: int) -> dict | None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        try:
            return pool.apply(measure_rates, (dims, shapes, yardstick_needs(results), threads))
        except ImportError as err:
            print(f"no yardstick: torch is not installed ({err})", file=sys.stderr)
            return None


def print_json(rows: dict, skipped: dict, summary: dict, rates: dict | None, shapes: dict) -> None:
    keys = [key for key in next(iter(rows.values()))] if rows else []
    out = {key: {JSON_NAMES.get(label, label): row[key] for label, row in rows.items()} for key in keys}
    out |= summary | {"skipped": skipped, "shapes": {kind: [BATCH, n] for kind, n in shapes.items()}}
    if rates:
        out["attainable_gflops"] = {
            p: {k: {name: v / 1e9 for name, v in by_name.items()} for k, by_name in by_kind.items()}
            for p, by_kind in rates.items()
        }
    print(json.dumps(out, indent=2))


def print_rates(dims: dict, shapes: dict, rates: dict, threads: int) -> None:
    h, inner, d = dims["hidden"], dims["inner"], dims["hidden"] // dims["heads"]
    names = {
        "Q/K/V/out": f"Q/K/V/out {h}x{h}",
        "FFN up": f"FFN up {h}x{inner}",
        "FFN down": f"FFN down {inner}x{h}",
        "QK^T": f"QK^T (head dim {d})",
        "PV": f"PV (head dim {d})",
    }
    print(f"attainable rates of the model's own products, GFLOP/s (torch, {threads} threads, best of {REPEATS}):")
    print("| precision | batch x tokens | " + " | ".join(names.values()) + " |")
    print("|" + "---|" * (len(names) + 2))
    for precision, by_kind in rates.items():
        for kind, by_name in by_kind.items():
            cells = [f"{by_name[name] / 1e9:.0f}" if name in by_name else "-" for name in names]
            print(f"| {precision} | {BATCH} x {shapes[kind]} ({kind}) | " + " | ".join(cells) + " |")


def print_table(rows: dict) -> None:
    first = next(iter(rows))
    base = rows[first]["pairs_per_s"]
    header = (
        f"| engine | runs as | pairs/s | x {first} | p50 ms / 100 | p95 ms / 100 | p50 SciFact | p50 DL19 | "
        "peak RSS MB | load s | max abs diff | min Kendall tau | nDCG@10 | GFLOP/s | of attainable |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, r in rows.items():
        ndcg = f"{r['ndcg@10']:.4f}" if r["ndcg@10"] is not None else "-"
        dl19 = f"{r['p50_ms_100_dl19']:.0f}" if r["p50_ms_100_dl19"] is not None else "-"
        share = f"{r['share_of_attainable']:.1%}" if r["share_of_attainable"] is not None else "-"
        print(
            f"| {label} | {r['runs_as']} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / base:.2f} | "
            f"{r['p50_ms_100']:.0f} | {r['p95_ms_100']:.0f} | {r['p50_ms_100_scifact']:.0f} | {dl19} | "
            f"{r['peak_rss_mb']:.0f} | {r['load_s']:.1f} | {r['max_abs_diff']:.4f} | {r['kendall_tau']:.3f} | "
            f"{ndcg} | {r['gflops']:.0f} | {share} |"
        )


def main() -> None:
    args = parse_args()
    from finerank.models.files import resolve_model
    from finerank.models.tokenization import TextEncoder

    model = resolve_model(args.model) if args.model else default_model()
    requests, quality, qrels = build_requests(args.requests, 0 if args.head_to_head else args.ndcg_queries)
    encoder = TextEncoder(model, 512)  # token counts as finerank's engines see them
    lengths_by_kind: dict[str, list[int]] = {}
    for i, (q, texts) in enumerate(requests):
        lengths_by_kind.setdefault(KINDS[i % 2], []).extend(len(e.ids) for e in encoder.pairs(q, texts))
    lengths = [n for kind in lengths_by_kind.values() for n in kind]
    pairs, dims = len(lengths), model_dims(model)
    flops = flops_per_pair(dims, lengths)

    if args.head_to_head:
        head_to_head(args, model, requests)
        return
    results, skipped = run_all(args, model, requests, quality)
    if not results:
        raise SystemExit("no engine ran")
    shapes = request_shapes(lengths_by_kind)
    rates = run_yardstick(dims, shapes, results, args.threads)
    reference = next(iter(results.values()))
    rows = {}
    for label, r in results.items():
        attainable = attainable_seconds(dims, lengths_by_kind, rates, r["runs_as"])
        rows[label] = make_row(r, reference, pairs, flops, attainable, quality, qrels)

    summary = {"pairs": pairs, "mean_tokens": float(np.mean(lengths)), "gflop_per_pair": flops / 1e9}
    if args.json:
        print_json(rows, skipped, summary, rates, shapes)
        return
    print(
        f"model {model}: {pairs} pairs in {len(requests)} requests of 100 (SciFact / DL19 alternating), "
        f"{np.mean(lengths):.0f} tokens per pair on average, {flops / 1e9:.2f} GFLOP per pair, {args.threads} threads"
    )
    if rates:
        print_rates(dims, shapes, rates, args.threads)
    if quality:
        print(f"nDCG@10 on the first {len(quality)} SciFact test queries (BM25 top-100 reranked)")
    print_table(rows)
    for label, why in skipped.items():
        print(f"skipped {label}: {why}")


if __name__ == "__main__":
    main()
