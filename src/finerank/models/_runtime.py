"""What the transformer rerankers share: finding a model, tokenizing (query once, documents
truncated, never the query), length-bucketed batches, and the openvino / torch / onnxruntime
backends.

Backends take padded numpy batches and return the model's output as float32 numpy:
logits for a classification head, the last hidden state for an encoder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._storage import replaced
from ..errors import InputTooLongError, MissingDependencyError, ModelError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local model directory, or a Hugging Face hub id downloaded (or found in the cache)."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
            raise ModelError(f"no such model directory: {name_or_path}")
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(name_or_path)))
        except Exception as err:  # offline, unknown repository, no permission: all say the same to the user
            raise ModelError(
                f"cannot load model {str(name_or_path)!r}: it is not a local directory and fetching it from "
                f"the Hugging Face hub failed ({type(err).__name__}: {err})"
            ) from None
    if not path.is_dir():
        raise ModelError(f"{path} is not a model directory")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face model directory: it has no config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(f"{path} has no model weights (none of {', '.join(WEIGHT_FILES)})")
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError as err:
        raise ModelError(f"{path} is not valid JSON: {err}") from None


@dataclass(frozen=True)
class Batch:
    positions: np.ndarray  # which inputs, in the caller's order
    feeds: dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids: int64 [n, length]


class TextEncoder:
    """Tokenizes with the model's own (Rust) tokenizer: (query, document) pairs or single texts."""

    def __init__(self, model_dir: Path, max_length: int):
        from tokenizers import Tokenizer

        file = model_dir / "tokenizer.json"
        if file.is_file():
            tokenizer = Tokenizer.from_file(str(file))
        elif importlib.util.find_spec("transformers"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True).backend_tokenizer
        else:
            raise ModelError(f"{model_dir} has no tokenizer.json (a model without one needs transformers: pip install 'finerank[torch]')")
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        config = read_json(model_dir / "config.json")
        self.pad_id = int(config.get("pad_token_id") or 0)
        limits = [max_length, usable_positions(config) or max_length]
        model_max = read_json(model_dir / "tokenizer_config.json").get("model_max_length")
        if isinstance(model_max, int) and model_max < 10**6:
            limits.append(model_max)
        self.max_length = min(limits)
        processor = tokenizer.post_processor
        self._pair_specials = processor.num_special_tokens_to_add(True) if processor else 0
        self.single_specials = processor.num_special_tokens_to_add(False) if processor else 0

    def document_budget(self, query: str) -> int:
        """Tokens left for a document beside ``query`` (InputTooLongError when none are)."""
        return self._budget(len(self.tokenizer.encode(query, add_special_tokens=False).ids))

    def _budget(self, n: int) -> int:
        budget = self.max_length - n - self._pair_specials
        if budget < 1:
            raise InputTooLongError(
                f"the query is {n} tokens; with room for a document it must be under {self.max_length - self._pair_specials} (max_length {self.max_length})"
            )
        return budget

    def pairs(self, query: str, texts: Sequence[str]) -> list:
        """Encodings of (query, text) pairs; each text is cut to fit, the query never is."""
        tok = self.tokenizer
        q = tok.encode(query, add_special_tokens=False)
        budget = self._budget(len(q.ids))
        docs = tok.encode_batch(list(texts), add_special_tokens=False)
        for d in docs:
            d.truncate(budget)
        return [tok.post_process(q, d, add_special_tokens=True) for d in docs]

    def singles(self, texts: Sequence[str]) -> list:
        tok = self.tokenizer
        encodings = tok.encode_batch(list(texts), add_special_tokens=False)
        for e in encodings:
            e.truncate(self.max_length - self.single_specials)
        return [tok.post_process(e, None, add_special_tokens=True) for e in encodings]


# models that number positions from their padding id + 1 (RoBERTa's scheme): of 514 position
# embeddings, 512 hold tokens
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl")


def usable_positions(config: dict) -> int | None:
    """How many tokens the model's position embeddings hold (None: no limit in its config)."""
    positions = config.get("max_position_embeddings")
    if positions and config.get("model_type") in OFFSET_POSITIONS:
        return positions - (config.get("pad_token_id", 1) + 1)
    return positions


def batches(encodings: list, batch_size: int, max_tokens: int, pad_id: int = 0) -> list[Batch]:
    """Sort by length (longest first) and cut into batches of at most ``batch_size`` inputs and
    ``max_tokens`` padded tokens, so little compute goes to padding."""
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(-lengths, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [Batch(np.array(group), pad([encodings[i] for i in group], pad_id)) for group in groups]


def pad(encodings: list, pad_id: int = 0) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / token_type_ids, padded (on the right, input ids with the
    model's padding id) to the longest encoding."""
    width = max(len(e.ids) for e in encodings)
    feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUT_NAMES}
    feeds["input_ids"][:] = pad_id
    for row, e in enumerate(encodings):
        feeds["input_ids"][row, : len(e.ids)] = e.ids
        feeds["attention_mask"][row, : len(e.ids)] = e.attention_mask
        feeds["token_type_ids"][row, : len(e.ids)] = e.type_ids
    return feeds


def run_batches(backend: Callable[[dict], np.ndarray], encodings: list, batch_size: int, max_tokens: int, reduce: Callable,
                pad_id: int = 0) -> np.ndarray:
    """Run every batch through the backend, apply ``reduce(output, feeds)`` and restore input order."""
    out: np.ndarray | None = None
    for batch in batches(encodings, batch_size, max_tokens, pad_id):
        rows = reduce(backend(batch.feeds), batch.feeds)
        if out is None:
            out = np.empty((len(encodings),) + rows.shape[1:], dtype=np.float32)
        out[batch.positions] = rows
    return out if out is not None else np.empty((0,), dtype=np.float32)


# --- backends ---------------------------------------------------------------------------------

HEADS = ("classification", "encoder")


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _torch_available() -> bool:
    return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"))


def choose_backend(backend: str, precision: str) -> tuple[str, str]:
    """Resolve ``auto`` by a fixed rule: openvino when installed (its fused attention in bf16 ran
    fastest on the machines measured, docs/performance.md), else torch, else onnxruntime; bf16 on
    CPUs with bf16 units, else fp32. Scorers loaded with backend and precision both ``auto``
    measure instead (:mod:`finerank.models.tuning`); this rule is what they fall back on."""
    if backend == "auto":
        backend = "openvino" if importlib.util.find_spec("openvino") else "torch" if _torch_available() else "onnx"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or auto")
    if precision == "auto":
        precision = "bf16" if "bf16" in BACKENDS[backend].precisions and _cpu_has_bf16() else "fp32"
    if precision not in BACKENDS[backend].precisions:
        raise ValueError(f"backend {backend!r} runs {'/'.join(BACKENDS[backend].precisions)}, not {precision!r}")
    return backend, precision


def _load_torch_model(model_dir: Path, head: str, attention: str | None = None):
    """``attention``: transformers' attn_implementation (None: its own choice, torch's fused kernel where it can)."""
    if not _torch_available():
        raise MissingDependencyError("torch (with transformers)", "torch")
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = {"classification": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM}.get(head, AutoModel)
    try:
        return cls.from_pretrained(model_dir, attn_implementation=attention).eval()
    except Exception as err:  # corrupt weights, a config transformers cannot read: one line naming the folder
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load {model_dir} as a {head} model: {first_line}") from None


def model_inputs(model) -> list[str]:
    """The inputs among input_ids / attention_mask / token_type_ids that the model's forward takes."""
    parameters = inspect.signature(model.forward).parameters
    return [n for n in INPUT_NAMES if n in parameters]


class TorchBackend:
    precisions = ("fp32", "bf16")

    def __init__(self, model_dir: Path, head: str, precision: str = "fp32", threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = _load_torch_model(model_dir, head)
        self.head, self.bf16 = head, precision == "bf16"
        self.inputs = model_inputs(self.model)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(**{n: torch.from_numpy(feeds[n]) for n in self.inputs})
            result = out.logits if self.head == "classification" else out.last_hidden_state
            return result.float().numpy()


class OnnxBackend:
    precisions = ("fp32", "int8")

    def __init__(self, model_dir: Path, head: str, precision: str = "fp32", threads: int | None = None):
        import onnxruntime as ort

        path = onnx_file(model_dir, head, precision)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {n: feeds[n] for n in self.inputs})[0].astype(np.float32, copy=False)


class OpenVinoBackend:
    """OpenVINO on the ONNX export: it fuses each attention block into one kernel and runs bf16
    on the CPU's bf16 units. One compiled model and inference request, used by one caller at a time."""

    precisions = ("fp32", "bf16")

    def __init__(self, model_dir: Path, head: str, precision: str = "fp32", threads: int | None = None):
        if not importlib.util.find_spec("openvino"):
            raise MissingDependencyError("openvino", "openvino")
        import openvino

        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = openvino.Core().compile_model(str(onnx_file(model_dir, head)), "CPU", config)
        self.inputs = [i.get_any_name() for i in compiled.inputs]
        self._output = compiled.outputs[0]
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            result = self._request.infer({n: feeds[n] for n in self.inputs})
            return np.array(result[self._output], dtype=np.float32)  # a copy: the request reuses its buffer


BACKENDS = {"openvino": OpenVinoBackend, "torch": TorchBackend, "onnx": OnnxBackend}


# 2: attention written as plain products and a softmax (which openvino and onnxruntime fuse);
# exports of an older version are made again, not reused.
EXPORT_VERSION = 2


def export_name(head: str, precision: str = "fp32") -> str:
    return f"finerank-{head}-v{EXPORT_VERSION}" + ("" if precision == "fp32" else f"-{precision}") + ".onnx"


def onnx_file(model_dir: Path, head: str, precision: str = "fp32") -> Path:
    """The ONNX export of a model, made from its torch weights once and cached in the user cache
    (``$FINERANK_CACHE``, default ~/.cache/finerank; never beside the model, which may lie in
    site-packages). A model folder that ships its own export in ``onnx/`` is read from there.
    ``int8``: the export with dynamic int8 quantization of its matrix products (per-channel)."""
    name = export_name(head, precision)
    for candidate in (model_dir / "onnx" / name, _cache_dir(model_dir) / name):
        if candidate.is_file() and candidate.stat().st_mtime >= _weights_mtime(model_dir):
            return candidate
    target = _cache_dir(model_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX %s (once): %s", model_dir, precision, target)
    if precision == "fp32":
        export_onnx(model_dir, head, target)
    else:
        quantize_onnx(onnx_file(model_dir, head), target)
    return target


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization (per-channel weights) after onnxruntime's pre-processing."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with replaced(target) as tmp:
        quant_pre_process(source, tmp, skip_symbolic_shape=True)
        quantize_dynamic(tmp, tmp, weight_type=QuantType.QInt8, per_channel=True)


def _weights_mtime(model_dir: Path) -> float:
    return max((model_dir / f).stat().st_mtime for f in WEIGHT_FILES if (model_dir / f).is_file())


def cache_root() -> Path:
    """The user cache folder for exports and converted models: ``$FINERANK_CACHE`` or ~/.cache/finerank."""
    return Path(os.environ.get("FINERANK_CACHE", Path.home() / ".cache" / "finerank"))


def _cache_dir(model_dir: Path) -> Path:
    key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return cache_root() / "onnx" / key


def export_onnx(model_dir: Path, head: str, target: Path) -> None:
    """Export a model's torch weights to ONNX with dynamic batch and sequence axes (atomic write).
    Attention is exported as plain products and a softmax, which onnxruntime and OpenVINO fuse
    (measured faster than the export of torch's fused attention: 36 vs 27 pairs/s in onnxruntime)."""
    if not _torch_available() or not importlib.util.find_spec("onnx"):
        raise MissingDependencyError("torch and onnx (to export the model to ONNX once)", "torch")
    import torch

    model = _load_torch_model(model_dir, head, attention="eager")
    inputs = model_inputs(model)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(inputs, args)))
            return out.logits if head == "classification" else out.last_hidden_state

    # token ids that are no model's padding id, segment 0 (a model with one token type has no segment 1)
    example = tuple(torch.full((2, 8), 5 if n == "input_ids" else 0 if n == "token_type_ids" else 1, dtype=torch.int64) for n in inputs)
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
    with replaced(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as constant (parity is tested)
        torch.onnx.export(
            Wrapper().eval(), example, tmp, input_names=inputs, output_names=["output"],
            dynamic_axes=axes | {"output": {0: "batch"} if head == "classification" else {0: "batch", 1: "sequence"}},
            opset_version=17, dynamo=False,
        )
