"""finerank: coarse recall, then fine ranking.

A fast first stage (BM25, dense vectors, or both fused) recalls candidates, a reranker reads each (query, document) pair
and reorders them. Heavy frameworks (torch, openvino, onnxruntime, transformers) load only when a
model is built, never at import.
"""

from .corpus import read_corpus, read_qrels, read_queries, read_run
from .errors import CorpusError, FinerankError, IndexFormatError, InputTooLongError, MissingDependencyError, ModelError
from .fusion import Fusion
from .index import Index
from .models import BiEncoder, CrossEncoder, LLMReranker, Scorer
from .pipeline import Pipeline, Reranking, SecondStage, rerank
from .registry import DEFAULT_RERANKER, first_stage, load_encoder, load_reranker, load_scorer
from .retrievers import BM25, Dense, Hybrid, Retriever
from .types import Document, Hit, Ranking

__version__ = "0.1.0"

__all__ = [
    "BM25",
    "BiEncoder",
    "CorpusError",
    "CrossEncoder",
    "DEFAULT_RERANKER",
    "Dense",
    "Document",
    "FinerankError",
    "Fusion",
    "Hit",
    "Hybrid",
    "Index",
    "IndexFormatError",
    "InputTooLongError",
    "LLMReranker",
    "MissingDependencyError",
    "ModelError",
    "Pipeline",
    "Ranking",
    "Reranking",
    "Retriever",
    "Scorer",
    "SecondStage",
    "__version__",
    "first_stage",
    "load_encoder",
    "load_reranker",
    "load_scorer",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "rerank",
]
