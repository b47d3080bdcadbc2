"""LLM rerankers: a causal language model asked whether a document answers a query, scored by
the logits of its answer tokens at the last position (Qwen3-Reranker, mxbai-rerank-v2,
bge-reranker-v2-gemma).

Each model family has a template (:data:`TEMPLATES`): the text before the document (system
prompt, instruction, query), the document, and the text after it (the question and the start of
the assistant's turn). The raw score is logit(yes) - logit(no) (logit(yes) for a template with no
"no" token); its sigmoid is the softmax probability of "yes" over the two. Only the two rows of
the output projection are multiplied, never the whole vocabulary. Inputs are padded on the left,
so every sequence ends at the last position. A document too long is cut; the template's head
and tail never are.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputTooLongError, ModelError
from . import calibration, chunks
from .base import Scorer
from .files import load_torch_model, read_json, resolve_model, torch_available
from .models import sigmoid
from .tokenization import TextEncoder, padded_width

logger = logging.getLogger(__name__)

MIN_SHARED_PREFIX = 8  # tokens; below this a request's shared head is not worth a cache


@dataclass(frozen=True)
class Template:
    """``head`` pieces (which may hold {instruction} and {query}) and ``tail`` pieces are
    tokenized one by one, as the model's reference code does; ``body`` (with {instruction},
    {query} and {document}) is tokenized as one piece and cut from its end when it does not fit;
    body text after {document} is tokenized apart and kept whole (the document is cut before it)."""

    head: tuple[str, ...]
    body: str
    tail: tuple[str, ...]
    yes: str
    no: str | None
    default_instruction: str = ""
    instruction_line: str = ""  # how an instruction enters {instruction} (empty: the template's own place)
    bos: bool = False
    names: tuple[str, ...] = ()  # model names this template is recognised by (lowercase fragments)


_QWEN3_SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
_MXBAI_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
_MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each query-document "
    "pair, carefully analyze the semantic relationship between them, then provide your binary relevance judgment "
    "(0 for not relevant, 1 for relevant).\nRelevance:"
)
_GEMMA_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing a "
    "prediction of either 'Yes' or 'No'."
)

TEMPLATES: dict[str, Template] = {
    "qwen3-reranker": Template(
        head=(_QWEN3_SYSTEM,),
        body="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
        tail=("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",),
        yes="yes",
        no="no",
        default_instruction="Given a web search query, retrieve relevant passages that answer the query",
        names=("qwen3-reranker",),
    ),
    "mxbai-rerank-v2": Template(
        head=(_MXBAI_SYSTEM,),
        body="{instruction}query: {query}\ndocument: {document}",
        tail=("\n" + _MXBAI_TASK + "<|im_end|>\n<|im_start|>assistant\n",),
        yes="1",
        no="0",
        instruction_line="instruction: {instruction}\n",
        names=("mxbai-rerank", "mxbai_rerank"),
    ),
    "bge-reranker-v2-gemma": Template(
        head=("A: {query}", "\n"),
        body="B: {document}",
        tail=("\n", _GEMMA_PROMPT),
        yes="Yes",
        no=None,
        bos=True,
        names=("bge-reranker-v2-gemma",),
    ),
}


def template_for(model_dir, name: str, template: str | None) -> str:
    """The template named, or the one whose model name matches ``name`` / the folder / its
    config's ``_name_or_path``; ModelError naming the choices otherwise."""
    if template is not None:
        if template not in TEMPLATES:
            raise ModelError(f"unknown LLM reranker template {template!r}; choose one of {', '.join(TEMPLATES)}")
        return template
    config = read_json(model_dir / "config.json")
    names = " ".join([name, str(model_dir), str(config.get("_name_or_path", ""))]).lower()
    found = [key for key, t in TEMPLATES.items() if any(n in names for n in t.names)]
    if not found:
        raise ModelError(
            f"{name} is a causal language model ({'/'.join(config.get('architectures') or ['?'])}) "
            f"without a known reranker template: pass template= (CLI --template) one of {', '.join(TEMPLATES)}"
        )
    return found[0]


class LLMReranker(Scorer):
    """A causal LM scored as a yes/no reranker (torch backend; fp32 or bf16)."""

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        template: str | None = None,
        instruction: str | None = None,
        backend: str = "auto",
        precision: str = "auto",
        max_length: int = 1024,
        batch_size: int = 8,
        max_batch_tokens: int = 8192,
        threads: int | None = None,
        name: str | None = None,
        reuse_prefix: bool = True,
        max_chunks_per_doc: int = 1,
        chunk_overlap: int = 32,
        chunk_pool: str = "max",
        **unused,
    ):
        if backend not in ("auto", "torch"):
            raise ValueError(f"LLM rerankers run on the torch backend, not {backend!r}")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"LLM rerankers run fp32 or bf16, not {precision!r}")
        if max_chunks_per_doc < 1 or chunk_overlap < 0:
            raise ValueError(
                "max_chunks_per_doc must be at least 1 and chunk_overlap at least 0, "
                f"got {max_chunks_per_doc} and {chunk_overlap}"
            )
        chunks.check_pool(chunk_pool)
        if not torch_available():
            from ..errors import MissingDependencyError

            raise MissingDependencyError("torch (with transformers)", "torch")
        import torch

        from .backends import cpu_has_bf16, width_multiple

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model_dir = resolve_model(model)
        self.name = name or str(model)
        self.template_name = template_for(self.model_dir, self.name, template)
        self.template = TEMPLATES[self.template_name]
        self.instruction = instruction if instruction is not None else self.template.default_instruction
        self.precision = ("bf16" if cpu_has_bf16() else "fp32") if precision == "auto" else precision
        self.width_multiple = width_multiple(self.precision)
        self.backend_name, self.batch_size, self.max_batch_tokens = "torch", batch_size, max_batch_tokens
        self.reuse_prefix = reuse_prefix
        self.encoder = TextEncoder(self.model_dir, max_length)
        self.config = read_json(self.model_dir / "config.json")
        tok = self.encoder.tokenizer
        self.answer_ids = [self._single_token(t) for t in (self.template.no, self.template.yes) if t is not None]
        model = load_torch_model(self.model_dir, "causal-lm")
        self.decoder = model.base_model  # the transformer without its output projection
        parameters = inspect.signature(self.decoder.forward).parameters
        self._cache_arg = next((n for n in ("cache", "past_key_values") if n in parameters), None)  # transformers 5 / 4
        self.reuse_prefix = self.reuse_prefix and self._cache_arg is not None
        head = model.get_output_embeddings()
        rows = head.weight[self.answer_ids].detach().clone()  # only the answer tokens' rows: (no, yes) or (yes,)
        self.rows = rows.to(torch.bfloat16) if self.precision == "bf16" else rows.float()
        self.softcap = self.config.get("final_logit_softcapping")
        self.pad_id = int(self.config.get("pad_token_id") or 0)
        self.bos_id = self.config.get("bos_token_id")
        if self.precision == "bf16":  # the weights only: buffers such as RoPE's inverse frequencies keep fp32
            for parameter in self.decoder.parameters():
                parameter.data = parameter.data.to(torch.bfloat16)
        self._tail_ids = [i for piece in self.template.tail for i in tok.encode(piece, add_special_tokens=False).ids]
        self.max_chunks_per_doc, self.chunk_overlap, self.chunk_pool = max_chunks_per_doc, chunk_overlap, chunk_pool
        self.calibration = calibration.load(self.model_dir, self.calibration_key)
        logger.info("loaded %s (LLM reranker, template %s, torch %s)", self.name, self.template_name, self.precision)

    def _single_token(self, text: str) -> int:
        ids = self.encoder.tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ModelError(
                f"{self.name}: the answer {text!r} of template {self.template_name} is {len(ids)} tokens in this "
                "model's vocabulary, not one: is this the model the template is for?"
            )
        return ids[0]

    def _head_and_body(self, query: str, instruction: str | None) -> tuple[list[int], tuple[str, str], int]:
        """The head's tokens, the body's text before and after the document, and how many tokens the
        template takes around a document; InputTooLongError when no document token would fit."""
        tok = self.encoder.tokenizer
        instruction = self.instruction if instruction is None else instruction
        if self.template.instruction_line:
            instruction = self.template.instruction_line.format(instruction=instruction) if instruction else ""
        head = [self.bos_id] if self.template.bos and self.bos_id is not None else []
        for piece in self.template.head:
            head += tok.encode(piece.format(instruction=instruction, query=query), add_special_tokens=False).ids
        before, after = (
            part.format(instruction=instruction, query=query) for part in self.template.body.split("{document}")
        )
        taken = len(head) + len(self._tail_ids) + len(tok.encode(before + after, add_special_tokens=False).ids)
        if taken >= self.max_length:
            raise InputTooLongError(f"the query and template take {taken} tokens; max_length is {self.max_length}")
        return head, (before, after), taken

    def inputs(self, query: str, texts: Sequence[str], instruction: str | None = None) -> list[list[int]]:
        """Token ids per text: head, body (the document cut to fit), tail."""
        head, (before, after), _ = self._head_and_body(query, instruction)
        tok = self.encoder.tokenizer
        if (
            not after
        ):  # the document ends the body (every shipped template): the body is one piece, as the model's code has it
            bodies = tok.encode_batch([before + t for t in texts], add_special_tokens=False)
            return [head + b.ids[: self.max_length - len(head) - len(self._tail_ids)] + self._tail_ids for b in bodies]
        # text after the document is kept whole: the document is cut before it, never the template
        after_ids = tok.encode(after, add_special_tokens=False).ids
        cut = self.max_length - len(head) - len(after_ids) - len(self._tail_ids)
        bodies = tok.encode_batch([before + t for t in texts], add_special_tokens=False)
        return [head + b.ids[:cut] + after_ids + self._tail_ids for b in bodies]

    def windows(
        self, query: str, texts: Sequence[str], max_chunks_per_doc: int | None = None
    ) -> list[list[tuple[int, int]]]:
        """Per text, the character spans of the windows the model reads (the whole text when it
        fits or when chunking is off); see :mod:`finerank.models.chunks`."""
        n = max_chunks_per_doc or self.max_chunks_per_doc
        budget = self.max_length - self._head_and_body(query, self.instruction)[2] if n > 1 else 0
        return chunks.split(self.encoder.tokenizer, texts, budget, n, self.chunk_overlap)

    def raw_scores(self, requests: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray:
        """Each request in batches of its own: its shared head is read once, then its documents."""
        scores = [self._run(self.inputs(query, texts, self.instruction)) for query, texts in requests if len(texts)]
        return np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)

    def instructed(self, instruction: str) -> LLMReranker:
        """This reranker with another instruction (Qwen3-Reranker's <Instruct>), sharing its model."""
        other = copy.copy(self)
        other.instruction = instruction
        return other

    @property
    def reading(self) -> dict:
        return super().reading | {
            "model": str(self.model_dir),
            "template": self.template_name,
            "instruction": self.instruction,
            "chunk_overlap": self.chunk_overlap,
        }

    def _run(self, sequences: list[list[int]]) -> np.ndarray:
        """Scores for one query's sequences. Their common head (system prompt, instruction, query:
        the longest shared run of tokens) goes through the model once; its keys and values are
        reused by every batch of the rest, which is padded on the right (to ``width_multiple``)."""
        torch = self._torch
        shared = _common_prefix(sequences) if len(sequences) > 1 and self.reuse_prefix else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        cache = None
        if shared:
            from transformers import DynamicCache

            try:
                cache = DynamicCache(config=self.decoder.config)
            except TypeError:  # older transformers: no config argument
                cache = DynamicCache()
            with torch.inference_mode():
                self.decoder(
                    input_ids=torch.tensor([sequences[0][:shared]]), use_cache=True, **{self._cache_arg: cache}
                )
        rests = [s[shared:] for s in sequences]
        scores = np.empty(len(rests), dtype=np.float32)
        order = sorted(range(len(rests)), key=lambda i: -len(rests[i]))
        start = 0
        while start < len(order):
            width = padded_width(len(rests[order[start]]), self.width_multiple, self.max_length - shared)
            size = max(1, min(self.batch_size, self.max_batch_tokens // max(1, width + shared)))
            batch = order[start : start + size]
            lengths = torch.tensor([len(rests[i]) for i in batch])
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(
                batch
            ):  # without a cache, padded on the left: every sequence ends at the last position
                first = width - len(rests[i]) if cache is None else 0
                ids[row, first : first + len(rests[i])] = torch.tensor(rests[i])
                mask[row, first : first + len(rests[i])] = 1
            with torch.inference_mode():
                if cache is None:
                    positions = (mask.cumsum(1) - 1).clamp(min=0)
                    hidden = self.decoder(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state[
                        :, -1
                    ]
                else:
                    past = copy.deepcopy(cache)
                    past.batch_repeat_interleave(len(batch))
                    mask = torch.cat([torch.ones((len(batch), shared), dtype=torch.long), mask], dim=1)
                    positions = (shared + torch.arange(width)).expand(len(batch), width)
                    states = self.decoder(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=positions,
                        use_cache=True,
                        **{self._cache_arg: past},
                    ).last_hidden_state
                    hidden = states[torch.arange(len(batch)), lengths - 1]
                logits = (hidden.to(self.rows.dtype) @ self.rows.T).float()
                if self.softcap:
                    logits = torch.tanh(logits / self.softcap) * self.softcap
            raw = logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits[:, 0]
            scores[batch] = raw.numpy()
            start += size
        return scores

    @staticmethod
    def squash(raw: np.ndarray) -> np.ndarray:
        """The probability of "yes": the sigmoid of the logit difference."""
        return sigmoid(raw)

    def __repr__(self) -> str:
        return f"LLMReranker({self.name!r}, template={self.template_name!r}, precision={self.precision!r})"


def _common_prefix(sequences: list[list[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one of its own."""
    first, n = sequences[0], min(len(s) for s in sequences) - 1
    for s in sequences[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def is_causal_lm(model_dir) -> bool:
    architectures = read_json(model_dir / "config.json").get("architectures") or []
    return any(re.search(r"For(Causal|Conditional)LM$", a) for a in architectures)
