"""A model's files: finding its folder (a local directory or a Hugging Face hub id), loading
its torch weights, and its ONNX exports, made once and kept in the user cache (never beside the
model, which may lie in site-packages)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import warnings
from pathlib import Path

from .._storage import replaced
from ..errors import MissingDependencyError, ModelError

logger = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
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
            reason = " ".join(str(err).split())
            raise ModelError(
                f"cannot load model {str(name_or_path)!r}: it is not a local directory and fetching it from "
                f"the Hugging Face hub failed "
                f"({type(err).__name__}: {reason[:100]}{'...' if len(reason) > 100 else ''})"
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


def torch_available() -> bool:
    return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"))


def load_torch_model(model_dir: Path, head: str, attention: str | None = None):
    """``attention``: transformers' attn_implementation (None: its own choice, torch's fused kernel where it can)."""
    if not torch_available():
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


# 2: attention written as plain products and a softmax (which openvino and onnxruntime fuse);
# exports of an older version are made again, not reused.
EXPORT_VERSION = 2


def export_name(head: str, precision: str = "fp32", weight_bits: int = 8) -> str:
    tag = "" if precision == "fp32" else f"-{precision}" + ("" if weight_bits == 8 else f"-w{weight_bits}")
    return f"finerank-{head}-v{EXPORT_VERSION}{tag}.onnx"


def onnx_file(model_dir: Path, head: str, precision: str = "fp32", weight_bits: int = 8) -> Path:
    """The ONNX export of a model, made from its torch weights once and cached in the user cache
    (``$FINERANK_CACHE``, default ~/.cache/finerank; never beside the model, which may lie in
    site-packages). A model folder that ships its own export in ``onnx/`` is read from there.
    ``int8``: the export with dynamic int8 quantization of its matrix products (per-channel), its
    weights in ``weight_bits`` bits (7 where 8 would overflow: :func:`~.backends.int8_saturates`)."""
    name = export_name(head, precision, weight_bits)
    for candidate in (model_dir / "onnx" / name, cache_dir(model_dir) / name):
        if candidate.is_file() and candidate.stat().st_mtime >= weights_mtime(model_dir):
            return candidate
    target = cache_dir(model_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX %s (once): %s", model_dir, precision, target)
    if precision == "fp32":
        export_onnx(model_dir, head, target)
    else:
        quantize_onnx(onnx_file(model_dir, head), target, weight_bits)
    return target


def quantize_onnx(source: Path, target: Path, weight_bits: int = 8) -> None:
    """Dynamic int8 quantization (per-channel weights in ``weight_bits`` bits: 8 or 7) after
    onnxruntime's pre-processing."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with replaced(target) as tmp:
        quant_pre_process(source, tmp, skip_symbolic_shape=True)
        quantize_dynamic(tmp, tmp, weight_type=QuantType.QInt8, per_channel=True, reduce_range=weight_bits == 7)


def weights_mtime(model_dir: Path) -> float:
    return max((model_dir / f).stat().st_mtime for f in WEIGHT_FILES if (model_dir / f).is_file())


def cache_root() -> Path:
    """The user cache folder for exports and converted models: ``$FINERANK_CACHE`` or ~/.cache/finerank."""
    return Path(os.environ.get("FINERANK_CACHE", Path.home() / ".cache" / "finerank"))


def kept_with(model_dir: Path, kind: str, key: str) -> Path:
    """Where a finding about a model (``kind``: a calibration, the nDCG verdicts of its engines)
    for ``key`` (how it reads) is kept: its folder when writable (and not an installed package),
    so it travels with the model, else the user cache; one file per key."""
    if os.access(model_dir, os.W_OK) and "site-packages" not in model_dir.resolve().parts:
        return model_dir / f"finerank-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    return cache_root() / kind / f"{hashlib.sha256(f'{model_dir.resolve()}|{key}'.encode()).hexdigest()[:16]}.json"


def cache_dir(model_dir: Path) -> Path:
    key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return cache_root() / "onnx" / key


def export_onnx(model_dir: Path, head: str, target: Path) -> None:
    """Export a model's torch weights to ONNX with dynamic batch and sequence axes (atomic write).
    Attention is exported as plain products and a softmax, which onnxruntime and OpenVINO fuse
    (faster than the export of torch's fused attention: docs/performance.md)."""
    if not torch_available() or not importlib.util.find_spec("onnx"):
        raise MissingDependencyError("torch and onnx (to export the model to ONNX once)", "torch")
    import torch

    model = load_torch_model(model_dir, head, attention="eager")
    inputs = model_inputs(model)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(inputs, args)))
            return out.logits if head == "classification" else out.last_hidden_state

    # token ids that are no model's padding id, segment 0 (a model with one token type has no segment 1)
    example = tuple(
        torch.full((2, 8), 5 if n == "input_ids" else 0 if n == "token_type_ids" else 1, dtype=torch.int64)
        for n in inputs
    )
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
    with replaced(target) as tmp, warnings.catch_warnings(), traceable_masks():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as constant (parity is tested)
        torch.onnx.export(
            Wrapper().eval(),
            example,
            tmp,
            input_names=inputs,
            output_names=["output"],
            dynamic_axes=axes | {"output": {0: "batch"} if head == "classification" else {0: "batch", 1: "sequence"}},
            opset_version=17,
            dynamo=False,
        )


@contextlib.contextmanager
def traceable_masks():
    """transformers 5.4 to 5.8 take a tensor ``q_length`` for the deprecated ``cache_position`` (the queries'
    positions), and the tracer's sizes are 0-d tensors: the attention mask fails (IndexError in sdpa_mask).
    While exporting, the eager mask is given those positions instead, which build the same mask."""
    import torch
    import transformers
    from packaging.version import Version

    if not (5, 4) <= Version(transformers.__version__).release[:2] < (5, 9):
        yield
        return
    from transformers import masking_utils

    masks = masking_utils.ALL_MASK_ATTENTION_FUNCTIONS
    before = masks["eager"]

    def eager_mask(*, q_length, q_offset=0, **kwargs):
        if isinstance(q_length, torch.Tensor) and q_length.dim() == 0:
            q_length = torch.arange(q_length, device=kwargs.get("device", "cpu")) + q_offset
        return before(q_length=q_length, q_offset=q_offset, **kwargs)

    level = masking_utils.logger.level
    masks["eager"] = eager_mask  # the mask interface's own way to replace a mask function (undone below)
    masking_utils.logger.setLevel(logging.ERROR)  # not its note that cache_position is deprecated: it is ours
    try:
        yield
    finally:
        masks["eager"] = before
        masking_utils.logger.setLevel(level)
