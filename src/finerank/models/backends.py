"""The engines that run a model: openvino, torch and onnxruntime. Each takes padded numpy
batches and returns the model's output as float32 numpy: logits for a classification head, the
last hidden state for an encoder. Each has ``width_multiple`` (:func:`width_multiple`): the
batches it is given are padded to a multiple of that many tokens."""

from __future__ import annotations

import functools
import importlib.util
import platform
import threading
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError
from .files import load_torch_model, model_inputs, onnx_file, torch_available

HEADS = ("classification", "encoder")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not to be had)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(
        flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()
    )


def cpu_has_bf16() -> bool:
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def int8_saturates() -> bool:
    """Whether int8 products may overflow here: x86 CPUs without VNNI multiply unsigned by signed
    bytes with VPMADDUBSW, whose 16-bit sum of two products saturates when both weights are large.
    On such CPUs the int8 export keeps its weights to 7 bits (what that saves: docs/performance.md)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and not {"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()


def choose_backend(backend: str, precision: str) -> tuple[str, str]:
    """Resolve ``auto`` by a fixed rule: openvino when installed (its fused attention in bf16 ran
    fastest on the machines measured, docs/performance.md), else torch, else onnxruntime; bf16 on
    CPUs with bf16 units, else fp32. Scorers loaded with backend and precision both ``auto``
    measure instead (:mod:`finerank.models.tuning`); this rule is what they fall back on."""
    if backend == "auto":
        backend = "openvino" if importlib.util.find_spec("openvino") else "torch" if torch_available() else "onnx"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or auto")
    if precision == "auto":
        precision = "bf16" if "bf16" in BACKENDS[backend].precisions and cpu_has_bf16() else "fp32"
    if precision not in BACKENDS[backend].precisions:
        raise ValueError(f"backend {backend!r} runs {'/'.join(BACKENDS[backend].precisions)}, not {precision!r}")
    return backend, precision


def width_multiple(precision: str) -> int:
    """How many tokens a batch's width is padded to a multiple of: 16 in bf16, the rows of an AMX
    tile (1.05x with openvino and with torch on an AMX Xeon, the same speed on an AMD EPYC without
    AMX; docs/performance.md), else 1 (in fp32 the extra tokens only cost time)."""
    return 16 if precision == "bf16" else 1


class TorchBackend:
    precisions = ("fp32", "bf16")

    def __init__(self, model_dir: Path, head: str, precision: str = "fp32", threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = load_torch_model(model_dir, head)
        self.head, self.bf16 = head, precision == "bf16"
        self.width_multiple = width_multiple(precision)
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

        path = onnx_file(model_dir, head, precision, weight_bits=7 if precision == "int8" and int8_saturates() else 8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.width_multiple = width_multiple(precision)

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
        core = openvino.Core()
        model = core.read_model(str(onnx_file(model_dir, head)))
        fuse_key_transposes(model)
        compiled = core.compile_model(model, "CPU", config)
        self.inputs = [i.get_any_name() for i in compiled.inputs]
        self._output = compiled.outputs[0]
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self.width_multiple = width_multiple(precision)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            result = self._request.infer({n: feeds[n] for n in self.inputs})
            return np.array(result[self._output], dtype=np.float32)  # a copy: the request reuses its buffer


def fuse_key_transposes(model) -> int:
    """Rewrite attention's ``Q @ transpose(K, [0, 2, 3, 1])`` (how the export writes ``Q K^T``) as
    ``MatMul(Q, transpose(K, [0, 2, 1, 3]), transpose_b=True)``: the same product, in the layout
    OpenVINO folds into its fused attention kernel, so the key's transpose no longer runs as an
    operation of its own (docs/performance.md). Returns how many products were rewritten."""
    import openvino.opset13 as ops

    rewritten = 0
    for node in model.get_ordered_ops():
        perm = node.input_value(1).get_node() if node.get_type_name() == "Transpose" else None
        if perm is None or perm.get_type_name() != "Constant" or list(perm.get_data()) != [0, 2, 3, 1]:
            continue
        for target in list(node.output(0).get_target_inputs()):
            product = target.get_node()
            attributes = product.get_attributes() if product.get_type_name() == "MatMul" else {}
            if target.get_index() != 1 or attributes.get("transpose_a", True) or attributes.get("transpose_b", True):
                continue
            keys = ops.transpose(node.input_value(0), ops.constant(np.array([0, 2, 1, 3], dtype=np.int64)))
            fused = ops.matmul(product.input_value(0), keys, False, True)
            fused.set_friendly_name(product.get_friendly_name())
            product.output(0).replace(fused.output(0))
            rewritten += 1
    if rewritten:
        model.validate_nodes_and_infer_types()
    return rewritten


BACKENDS = {"openvino": OpenVinoBackend, "torch": TorchBackend, "onnx": OnnxBackend}
