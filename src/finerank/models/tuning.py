"""``backend="auto"``: the fastest backend and precision on this CPU whose ranking agrees with
fp32, measured the first time a model is loaded here and remembered in the user cache (per
model, CPU and thread count). The first load does not wait for it: the model serves at once with
torch (:func:`starting_engine`) while :class:`Background` measures, then switches to the choice.

Which engine is fastest differs between CPUs (openvino's fused bf16 attention wins on one, torch
or onnxruntime int8 on another; docs/performance.md), so a fixed order is wrong somewhere. Each
installed backend x precision (bf16 only on CPUs with bf16 units) scores one sample request (a
query and 24 passages, most of 115 to 200 words, English and Chinese) after a warm-up; the fastest
whose Kendall tau with the fp32 reference (over the pairs the reference tells apart) is at least
:data:`MIN_TAU` wins; an engine a dev split has judged (``finerank doctor --dataset``, whose
verdicts are kept with the model: :func:`verdicts`) is admitted by its nDCG@10 instead.
``FINERANK_AUTOTUNE=0`` skips the measurement and takes the fixed rule of
:func:`~finerank.models.backends.choose_backend`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._storage import replaced
from .backends import BACKENDS, choose_backend, cpu_flags, cpu_has_bf16, int8_saturates
from .files import cache_dir, kept_with, torch_available, weights_mtime

logger = logging.getLogger(__name__)

MIN_TAU = 0.99
MAX_NDCG_LOSS = 0.005  # with a dev split (finerank doctor --dataset): the most nDCG@10 an engine may lose to fp32
TUNING_VERSION = 2  # 2: ties of the reference do not count against an engine
ENGINES = (
    ("openvino", "bf16"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("torch", "fp32"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
)

SAMPLE_QUERY = "how do vaccines train the immune system to fight infection"
_SENTENCES = [
    "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen.",
    "B cells then produce antibodies that recognise the antigen, and memory cells persist for years.",
    "When the real pathogen arrives, memory T and B cells respond faster and more strongly.",
    "Adjuvants added to some vaccines strengthen the innate response that primes adaptive immunity.",
    "The stock market closed higher on Friday after a week of volatile trading in technology shares.",
    "Sourdough bread rises slowly because wild yeast and lactic acid bacteria ferment the dough.",
    "The railway line was extended to the coast in 1898, bringing tourists to the fishing villages.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
]
_CHINESE = [
    "疫苗让免疫系统接触无害的病原体片段，从而产生抗体和记忆细胞。",
    "再次遇到真正的病原体时，记忆细胞会更快、更强地作出反应。",
    "今天股市收盘上涨，科技股在一周的波动之后反弹。",
    "面包发酵需要酵母，温度和时间都会影响口感。",
]


def sample_texts() -> list[str]:
    """24 passages shaped like a first stage's candidates (most of 115 to 200 words, a few
    short, two Chinese): relevant, partly relevant and unrelated."""
    s, zh = _SENTENCES, _CHINESE
    texts = [s[i] for i in range(0, 8, 2)]  # one sentence
    texts += [" ".join(s[(i + j) % len(s)] for j in range(4)) for i in range(6)]  # about 60 words
    texts += [" ".join(s[(i + j) % len(s)] for j in range(8 + i % 7)) for i in range(12)]  # 115 to 200 words
    texts += [zh[0] + zh[1] + zh[2], zh[3] + zh[0]]
    return texts


@dataclass(frozen=True)
class Trial:
    backend: str
    precision: str
    pairs_per_s: float = 0.0
    tau: float = float("nan")  # Kendall tau of its scores with the fp32 reference's
    error: str = ""
    ndcg: float = float("nan")  # nDCG@10 on a dev split, when measured with one
    ndcg_loss: float = float("nan")  # the fp32 reference's nDCG@10 minus this one's

    @property
    def agrees(self) -> bool:
        """On a dev split: nDCG@10 within MAX_NDCG_LOSS of fp32's; else the sample's tau."""
        if self.error:
            return False
        return self.ndcg_loss <= MAX_NDCG_LOSS if self.ndcg_loss == self.ndcg_loss else self.tau >= MIN_TAU


def cpu_key(threads: int | None) -> str:
    """The CPU model, the instruction-set flags that decide speed, and the thread count."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    name = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    flags = sorted(f for f in cpu_flags() if f.startswith(("amx", "avx512", "avx2", "avx_vnni")))
    return f"{name} | {' '.join(flags)} | threads={threads or os.cpu_count()}"


TIE = 0.01  # reference scores closer than this share of their range are a tie: reordering them is no disagreement


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau of scores ``a`` against the reference ``b`` over the pairs the reference tells apart
    (by more than :data:`TIE` of its range): an engine that reorders near-ties, as bf16 does on a head
    whose scores barely differ, still agrees. 1.0 when the reference separates no pair."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), 1)
    apart = np.abs(b[i] - b[j]) > TIE * np.ptp(b) if len(b) else np.zeros(0, bool)
    s = np.sign(a[i] - a[j])[apart] * np.sign(b[i] - b[j])[apart]
    return float(s.sum() / len(s)) if len(s) else 1.0


def _file(scorer, threads: int | None) -> Path:
    # what changes the measured rates: the CPU, how the model reads (head, max_length, windows, ...: its reading),
    # the batch settings and the installed engines' versions
    versions = {name: _version(name) for name in ("openvino", "onnxruntime", "torch", "transformers")}
    key = hashlib.sha256(
        repr(
            (
                cpu_key(threads),
                scorer.head,
                scorer.reading_key,
                scorer.batch_size,
                scorer.max_batch_tokens,
                sorted(versions.items()),
                TUNING_VERSION,
            )
        ).encode()
    ).hexdigest()[:12]
    return cache_dir(scorer.model_dir) / f"tuning-{key}.json"


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cached(scorer, threads: int | None) -> tuple[str, str] | None:
    """The choice stored for this CPU, unless the weights or the kept verdicts are newer."""
    path = _file(scorer, threads)
    verdicts_path = verdicts_file(scorer)
    try:
        newest = max(weights_mtime(scorer.model_dir), verdicts_path.stat().st_mtime if verdicts_path.exists() else 0)
        if path.stat().st_mtime >= newest:
            choice = json.loads(path.read_text(encoding="utf-8"))["choice"]
            if choice[0] in BACKENDS and installed(choice[0]):  # a cache shared by environments may name one not here
                return choice[0], choice[1]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    return None


def last_trials(scorer, threads: int | None) -> list[Trial]:
    """The trials stored with the cached choice (empty when nothing is cached)."""
    try:
        return [Trial(**t) for t in json.loads(_file(scorer, threads).read_text(encoding="utf-8"))["trials"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def rate(scorer, threads: int | None, backend: str, precision: str) -> float | None:
    """The measured pairs per second of one engine (None when it was not measured)."""
    found = [
        t.pairs_per_s
        for t in last_trials(scorer, threads)
        if (t.backend, t.precision) == (backend, precision) and not t.error
    ]
    return found[0] if found else None


def engine_label(backend: str, precision: str) -> str:
    """An engine as its nDCG verdict names it: onnx int8 with 7-bit weights (where 8 saturate,
    :func:`~finerank.models.backends.int8_saturates`) rounds otherwise than with 8, so it is
    another engine."""
    return f"{backend} {precision}" + (" w7" if (backend, precision) == ("onnx", "int8") and int8_saturates() else "")


def verdicts_file(scorer) -> Path:
    """Where the nDCG verdicts of a model's engines are kept (with the model where it can be)."""
    return kept_with(scorer.model_dir, "engines", scorer.calibration_key)


def verdicts(scorer) -> dict:
    """The nDCG@10 verdicts a dev split gave this model's engines (``finerank doctor --dataset``),
    kept with the model, as ``{"on": what they were measured on, "engines": {label: {"ndcg",
    "loss"}}}``; empty when there are none or the weights are newer. Integer products give the
    same sums on every CPU, so a verdict holds wherever the model is taken."""
    path = verdicts_file(scorer)
    try:
        if path.stat().st_mtime >= weights_mtime(scorer.model_dir):
            found = json.loads(path.read_text(encoding="utf-8"))
            engines = {  # a damaged entry is no verdict
                label: {"ndcg": float(v["ndcg"]), "loss": float(v["loss"])}
                for label, v in found["engines"].items()
                if isinstance(v, dict) and all(isinstance(v.get(f), (int, float)) for f in ("ndcg", "loss"))
            }
            return {"on": str(found.get("on", "a dev split")), "engines": engines} if engines else {}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    return {}


def _keep_verdicts(scorer, trials: list[Trial], on: str) -> None:
    engines = {
        engine_label(t.backend, t.precision): {"ndcg": t.ndcg, "loss": t.ndcg_loss}
        for t in trials
        if not t.error and t.ndcg == t.ndcg
    }
    path = verdicts_file(scorer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as tmp:
        Path(tmp).write_text(json.dumps({"on": on, "engines": engines}, indent=1), encoding="utf-8")


def measure(scorer, threads: int | None, repeats: int = 2, quality=None) -> list[Trial]:
    """Every installed backend x precision on the sample request, with ``scorer``'s own reading
    (its tokenization, head and pooling), on a copy of it: the scorer keeps serving with its own
    engine meanwhile. Each step waits until the scorers being measured have served no batch for
    a second (:data:`SERVING`), and a timed run that a batch overlapped is run again, so serving
    is not slowed by measuring, nor the numbers by serving. ``quality``: a function of a scorer
    giving its nDCG@10 on a dev split, measured per engine; without it, an engine takes the
    verdict kept with the model (:func:`verdicts`) where there is one."""
    from tqdm.auto import tqdm

    texts, trials, reference, reference_quality = sample_texts(), [], None, None
    kept = {} if quality is not None else verdicts(scorer).get("engines", {})
    probe = copy.copy(scorer)
    if getattr(probe, "cache_size", 0):  # a bi-encoder that remembers embeddings would answer from memory
        probe.cache_size, probe._cache = 0, {}
    engines = sorted(ENGINES, key=lambda e: e[1] != "fp32")  # fp32 first: the reference
    # a bar that follows logging: shown unless finerank's logger is set above warnings (the CLI's -q)
    bar = tqdm(
        engines,
        desc=f"measuring backends for {scorer.name} on this CPU (once)",
        unit=" engine",
        disable=not logger.isEnabledFor(logging.WARNING),
    )
    for backend, precision in bar:
        if precision == "bf16" and not cpu_has_bf16():  # torch would emulate it (6x slower), openvino run fp32
            trials.append(Trial(backend, precision, error="this CPU has no bf16 units"))
            continue
        try:
            SERVING.wait_quiet()  # exports and compilation too: a query being answered comes first
            probe.backend = BACKENDS[backend](scorer.model_dir, scorer.head, precision, threads)
            probe.score(SAMPLE_QUERY, texts[:4], raw=True)  # warm-up: compilation, allocation
            best, runs = float("inf"), 0
            while runs < repeats:
                with TIMED:  # one measurement's timed run at a time
                    mark = SERVING.wait_quiet()
                    start = time.perf_counter()
                    scores = probe.score(SAMPLE_QUERY, texts, raw=True)
                    seconds = time.perf_counter() - start
                if SERVING.undisturbed(mark):  # a serving batch ran meanwhile: run it again
                    best, runs = min(best, seconds), runs + 1
            ndcg = quality(probe) if quality is not None else float("nan")
        except Exception as err:  # not installed, cannot export, no bf16 units: this engine is out
            trials.append(
                Trial(backend, precision, error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            )
            continue
        finally:
            probe.backend = None
        if reference is None:
            reference, reference_quality = scores, ndcg
        loss = reference_quality - ndcg
        verdict = kept.get(engine_label(backend, precision))
        if verdict:
            ndcg, loss = verdict["ndcg"], verdict["loss"]
        trials.append(
            Trial(backend, precision, len(texts) / best, kendall_tau(scores, reference), ndcg=ndcg, ndcg_loss=loss)
        )
    return trials


def pick(trials: list[Trial]) -> tuple[str, str] | None:
    agreeing = [t for t in trials if t.agrees]
    if not agreeing:
        return None
    best = max(agreeing, key=lambda t: t.pairs_per_s)
    return best.backend, best.precision


def choose(scorer, threads: int | None, *, again: bool = False, quality=None) -> tuple[tuple[str, str], list[Trial]]:
    """(backend, precision) for ``scorer`` on this CPU, and the trials behind it (empty when
    read from the cache). Measures when nothing is cached (or ``again``, or a ``quality``
    gate is given; see :func:`measure`) and stores the result."""
    if not again and quality is None:
        found = cached(scorer, threads)
        if found:
            return found, []
    logger.info("measuring backends for %s on this CPU (once; FINERANK_AUTOTUNE=0 skips this)", scorer.name)
    trials = measure(scorer, threads, quality=quality)
    choice = pick(trials) or choose_backend("auto", "auto")
    path = _file(scorer, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    if quality:
        on = getattr(quality, "source", "a dev split")
        _keep_verdicts(scorer, trials, on)
        gate = f"nDCG@10 on {on} within {MAX_NDCG_LOSS} of fp32"
    else:
        kept = verdicts(scorer)
        gate = f"Kendall tau >= {MIN_TAU} with fp32 on the sample" + (
            f", or nDCG@10 on {kept['on']} within {MAX_NDCG_LOSS} of fp32 where kept with the model" if kept else ""
        )
    record = {
        "model": str(scorer.model_dir),
        "cpu": cpu_key(threads),
        "gate": gate,
        "choice": list(choice),
        "trials": [asdict(t) for t in trials],
    }
    with replaced(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1), encoding="utf-8")
    logger.info("%s: %s %s is the fastest that agrees with fp32 here", scorer.name, *choice)
    return choice, trials


def installed(backend: str) -> bool:
    """Whether a backend's package is importable here."""
    import importlib.util

    return importlib.util.find_spec({"onnx": "onnxruntime"}.get(backend, backend)) is not None


def enabled() -> bool:
    return os.environ.get("FINERANK_AUTOTUNE", "1") != "0"


TIMED = threading.Lock()  # held by a measurement's timed run: two models measured at once take turns
QUIET_SECONDS = 1.0


class _Serving:
    """The batches of scorers whose engines are being measured: how many run now, how many ran,
    and when the last ended. A measurement waits for a quiet second before each step."""

    def __init__(self):
        self._cond = threading.Condition()
        self.running, self.batches, self.last = 0, 0, 0.0

    def run(self, engine, feeds):
        with self._cond:
            self.running, self.batches = self.running + 1, self.batches + 1
        try:
            return engine(feeds)
        finally:
            with self._cond:
                self.running, self.last = self.running - 1, time.monotonic()
                self._cond.notify_all()

    def touch(self) -> None:
        """Count now as the end of a batch: a scorer just loaded is about to serve."""
        with self._cond:
            self.last = time.monotonic()

    def wait_quiet(self, seconds: float = QUIET_SECONDS) -> int:
        """Block until no batch runs and none ended in the last ``seconds``; the batches served so far."""
        with self._cond:
            while True:
                left = self.last + seconds - time.monotonic()
                if not self.running and left <= 0:
                    return self.batches
                self._cond.wait(None if self.running else left)

    def undisturbed(self, mark: int) -> bool:
        """No batch ran since :meth:`wait_quiet` gave ``mark``."""
        with self._cond:
            return self.batches == mark and not self.running


SERVING = _Serving()


def starting_engine() -> tuple[str, str]:
    """What a model serves with while :class:`Background` measures: torch, which needs no export
    (bf16 on CPUs with bf16 units, else fp32); without torch, the fixed rule."""
    return choose_backend("torch" if torch_available() else "auto", "auto")


class _Served:
    """A scorer's engine while its engines are measured: each batch is counted in :data:`SERVING`."""

    def __init__(self, engine):
        self.engine, self.width_multiple = engine, engine.width_multiple

    def __call__(self, feeds):
        return SERVING.run(self.engine, feeds)


class Background(threading.Thread):
    """Measures a scorer's engines (:func:`choose`) while it serves with its starting engine,
    then switches it to the choice and stores the choice, so later loads start with it.
    A daemon: a process that ends sooner measures again at its next load (the exports are kept);
    the CLI waits for it after printing its results (:func:`finish`)."""

    def __init__(self, scorer, threads: int | None):
        super().__init__(name=f"finerank-measure-{scorer.name}", daemon=True)
        self.scorer, self.threads, self.choice = scorer, threads, None
        scorer.backend = _Served(scorer.backend)
        SERVING.touch()

    def run(self) -> None:
        scorer = self.scorer
        try:
            choice, _ = choose(scorer, self.threads, again=True)
            engine = BACKENDS[choice[0]](scorer.model_dir, scorer.head, choice[1], self.threads)
        except Exception as err:  # the starting engine serves on; the next load measures again
            logger.warning(
                "measuring backends for %s failed (%s); it stays on %s", scorer.name, err, scorer.backend_name
            )
            scorer.backend = scorer.backend.engine
            return
        scorer.backend_name, scorer.precision, scorer.backend = *choice, engine
        scorer.pairs_per_second = rate(scorer, self.threads, *choice)
        self.choice = choice
        logger.info("%s now runs on %s %s", scorer.name, *choice)


def finish() -> None:
    """Wait for the measurements still running in the background (a one-shot command, after its results)."""
    running = [t for t in threading.enumerate() if isinstance(t, Background)]
    if running:
        logger.warning(
            "finishing the measurement of backends for %s on this CPU (once; the results are complete)",
            ", ".join(t.scorer.name for t in running),
        )
    for thread in running:
        thread.join()
