"""Tokenizing for the transformer models: (query, document) pairs with the query kept whole and
the document cut to fit, single texts, and length-bucketed padded batches."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputTooLongError, ModelError
from .files import INPUT_NAMES, read_json


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
            raise ModelError(
                f"{model_dir} has no tokenizer.json "
                "(a model without one needs transformers: pip install 'finerank[torch]')"
            )
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
                f"the query is {n} tokens; with room for a document it must be under "
                f"{self.max_length - self._pair_specials} (max_length {self.max_length})"
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


BATCH_OVERHEAD = 128  # what one more engine call costs, in padded tokens' work (docs/performance.md)


def batches(
    encodings: list, batch_size: int, max_tokens: int, pad_id: int = 0, multiple: int = 1, max_width: int | None = None
) -> list[Batch]:
    """Sort by length (longest first) and cut into batches of at most ``batch_size`` inputs and
    ``max_tokens`` padded tokens. Each batch is padded to a multiple of ``multiple`` tokens (never
    past ``max_width``, the model's usable length): what an engine's matrix units take whole
    (:func:`finerank.models.backends.width_multiple`). The cuts are the cheapest ones: fewest
    padded tokens plus :data:`BATCH_OVERHEAD` per batch, so a batch ends where lengths drop."""
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(-lengths, kind="stable")
    widths = np.array([padded_width(int(n), multiple, max_width) for n in lengths[order]])
    # cost[end]: the cheapest cut of the ``end`` longest inputs; start[end]: where its last batch starts
    cost, start = np.zeros(len(order) + 1), np.zeros(len(order) + 1, dtype=int)
    for end in range(1, len(order) + 1):
        first = np.arange(max(0, end - batch_size), end)
        padded = (end - first) * widths[first]
        total = np.where((padded <= max_tokens) | (first == end - 1), cost[first] + padded + BATCH_OVERHEAD, np.inf)
        start[end] = first[np.argmin(total)]
        cost[end] = total.min()
    cuts, end = [], len(order)
    while end:
        cuts.append((start[end], end))
        end = start[end]
    return [
        Batch(order[a:b], pad([encodings[i] for i in order[a:b]], pad_id, int(widths[a]))) for a, b in reversed(cuts)
    ]


def padded_width(longest: int, multiple: int, limit: int | None = None) -> int:
    """``longest`` tokens rounded up to a multiple of ``multiple``, but not past ``limit`` (the
    model's usable length) unless ``longest`` itself is."""
    width = -(-longest // multiple) * multiple
    return width if limit is None else max(longest, min(width, limit))


def pad(encodings: list, pad_id: int = 0, width: int | None = None) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / token_type_ids, padded (on the right, input ids with the
    model's padding id) to ``width`` tokens, by default the longest encoding's."""
    width = width or max(len(e.ids) for e in encodings)
    feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUT_NAMES}
    feeds["input_ids"][:] = pad_id
    for row, e in enumerate(encodings):
        feeds["input_ids"][row, : len(e.ids)] = e.ids
        feeds["attention_mask"][row, : len(e.ids)] = e.attention_mask
        feeds["token_type_ids"][row, : len(e.ids)] = e.type_ids
    return feeds


def run_batches(
    backend: Callable[[dict], np.ndarray],
    encodings: list,
    batch_size: int,
    max_tokens: int,
    reduce: Callable,
    pad_id: int = 0,
    max_width: int | None = None,
) -> np.ndarray:
    """Run every batch through the backend (padded to its ``width_multiple``), apply
    ``reduce(output, feeds)`` and restore input order."""
    out: np.ndarray | None = None
    for batch in batches(encodings, batch_size, max_tokens, pad_id, backend.width_multiple, max_width):
        rows = reduce(backend(batch.feeds), batch.feeds)
        if out is None:
            out = np.empty((len(encodings),) + rows.shape[1:], dtype=np.float32)
        out[batch.positions] = rows
    return out if out is not None else np.empty((0,), dtype=np.float32)
