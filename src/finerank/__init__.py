"""finerank: coarse recall, then fine ranking.

A fast first stage (BM25, dense vectors, or both fused) recalls candidates, a reranker reads each (query, document) pair
and reorders them. Heavy frameworks (torch, openvino, onnxruntime, transformers) load only when a
reranker is built, never at import.
"""

from .corpus import read_corpus, read_qrels, read_queries, read_run
from .errors import CorpusError, FinerankError, IndexFormatError, InputTooLongError, MissingDependencyError, ModelError
from .dense import DenseRetriever
from .hybrid import HybridRetriever
from .index import Index
from .pipeline import Pipeline, Retriever
from .registry import DEFAULT_RERANKER, load_encoder, load_reranker
from .rerank import BiEncoder, CrossEncoder, FusedReranker, Reranker, rerank
from .types import Document, Hit, Ranking

__version__ = "0.1.0"

__all__ = [
    "BiEncoder",
    "CorpusError",
    "CrossEncoder",
    "DEFAULT_RERANKER",
    "DenseRetriever",
    "Document",
    "FinerankError",
    "FusedReranker",
    "Hit",
    "HybridRetriever",
    "Index",
    "IndexFormatError",
    "InputTooLongError",
    "MissingDependencyError",
    "ModelError",
    "Pipeline",
    "Ranking",
    "Reranker",
    "Retriever",
    "__version__",
    "load_encoder",
    "load_reranker",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "rerank",
]
