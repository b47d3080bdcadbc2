"""Fine-tune a cross-encoder from a pretrained encoder, on a CPU (or a GPU when there is one).

Training data are *groups*: a query and candidate texts. For labelled and self-supervised data
the first text is the positive and the rest are mined negatives; for distillation every text
carries a teacher score. Losses: listwise softmax cross-entropy over a group (default), BCE on
single pairs, or KL divergence to the teacher's distribution over the group.

What makes this run on a CPU (measured on the project's 2-core machine; see docs/training.md):
bf16 autocast on CPUs with bf16 units, dropout off, word embeddings frozen, pre-tokenised pairs,
and batches of groups of similar length padded only to their own longest pair.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .corpus import read_qrels, read_queries
from .errors import CorpusError
from .evaluate import Dataset
from .fusion import ranks
from .index import Index
from .models.backends import cpu_has_bf16
from .models.files import export_name, export_onnx, model_inputs, resolve_model
from .models.tokenization import TextEncoder, pad
from .pipeline import Reranker, Reranking, second_stage
from .retrievers import BM25
from .types import Document, Hit

logger = logging.getLogger(__name__)

LOSSES = ("listwise", "bce", "kl")


@dataclass(frozen=True)
class Group:
    query: str
    texts: tuple[str, ...]  # the positive first (labelled / self-supervised data)
    first_scores: tuple[float, ...]  # the first stage's score of each text (a fused teacher reads them)
    targets: tuple[float, ...] | None = None  # teacher scores, for distillation


# --- training data --------------------------------------------------------------------------


def labelled_groups(
    folder: str | Path | Dataset,
    index: Index,
    *,
    split: str = "train",
    group_size: int = 8,
    candidates: int = 100,
    skip_unjudged: int = 3,
    max_positives: int = 2,
    max_queries: int | None = None,
    seed: int = 0,
) -> list[Group]:
    """Groups from judged queries: a relevant document the first stage found, and negatives
    mined from the same first-stage list. Guard against false negatives: a document judged
    relevant (or a copy of one) is never a negative, and the ``skip_unjudged`` highest-ranked unjudged documents
    (likely relevant but unjudged) are left out; documents judged irrelevant are always fair
    negatives. Positives come from the first stage's list, so the model learns to reorder what it
    will be given (on NFCorpus, positives from outside it taught nothing). ``folder`` may be a
    loaded :class:`~finerank.evaluate.Dataset` (e.g. a user's judgments) instead of a BEIR folder."""
    if isinstance(folder, Dataset):
        queries, qrels, folder = folder.queries, folder.qrels, folder.folder
    else:
        folder = Path(folder)
        queries, qrels = read_queries(folder / "queries.jsonl"), read_qrels(folder / "qrels" / f"{split}.tsv")
    rng = random.Random(seed)
    groups, found = [], 0  # found: queries whose relevant document the first stage recalled
    for qid in list(qrels)[:max_queries]:
        if qid not in queries:
            continue
        judged = qrels[qid]
        hits = BM25(index).search(queries[qid], candidates)
        relevant = sorted(
            (h for h in hits if judged.get(h.id, 0) > 0), key=lambda h: -judged[h.id]
        )  # highest grade first
        relevant_texts = {h.document.content for h in relevant}  # a duplicate of a relevant document is no negative
        unjudged = [h for h in hits if h.id not in judged][skip_unjudged:]
        judged_irrelevant = [h for h in hits if judged.get(h.id) == 0]
        negatives = [h for h in judged_irrelevant + unjudged if h.document.content not in relevant_texts]
        positives = relevant[:max_positives]
        found += bool(positives)
        for positive in positives:
            if len(negatives) >= group_size - 1:
                chosen = rng.sample(negatives, group_size - 1)
                hits_in_group = (positive, *chosen)
                groups.append(
                    Group(
                        queries[qid],
                        tuple(h.document.content for h in hits_in_group),
                        tuple(h.score for h in hits_in_group),
                    )
                )
    if not groups:
        raise CorpusError(
            f"no training groups: the first stage recalled a relevant document for {found} judged queries of {split}, "
            f"but with fewer than {group_size - 1} negatives beside it (lower --group-size, or use a larger corpus)"
            if found
            else f"no training groups: no judged query in {split} has a relevant document "
            f"among the first stage's {candidates}",
            folder,
        )
    return groups


def self_supervised_groups(
    index: Index, *, group_size: int = 8, max_documents: int | None = None, seed: int = 0
) -> list[Group]:
    """Groups from an unlabelled corpus: a document's title is the query and its text the
    positive (a document without a title: its first sentence, and the rest); the first stage's
    other hits for that query are the negatives."""
    rng, bm25 = random.Random(seed), BM25(index)
    groups = []
    for doc in index.documents:
        if max_documents is not None and len(groups) >= max_documents:
            break
        query, positive = doc.title.strip(), doc.text.strip()
        if not query:
            first, _, rest = positive.partition(". ")
            query, positive = first, rest.strip()
        if len(query) < 10 or not positive:
            continue
        hits = bm25.search(query, 4 * group_size)
        own = next((h.score for h in hits if h.id == doc.id), 0.0)
        negatives = [h for h in hits if h.id != doc.id and h.document.text.strip()]
        if len(negatives) >= group_size - 1:
            chosen = rng.sample(negatives, group_size - 1)
            groups.append(
                Group(query, (positive, *(h.document.text for h in chosen)), (own, *(h.score for h in chosen)))
            )
    if not groups:
        raise CorpusError(
            "no self-supervised groups: the corpus needs documents with a title, or with more than one sentence"
        )
    return groups


def groups_from(
    folders: Sequence[str | Path],
    kind: str = "labelled",
    *,
    split: str = "train",
    group_size: int = 8,
    max_queries: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
    candidates: int = 100,
) -> list[Group]:
    """Training groups from each dataset folder in turn: ``labelled`` from its judged queries of
    ``split`` and the first stage's top ``candidates`` (:func:`labelled_groups`), ``self`` from
    its documents alone (:func:`self_supervised_groups`, ``max_queries`` documents at most)."""
    from .corpus import read_corpus

    if kind not in ("labelled", "self"):
        raise ValueError(f"unknown kind of training data {kind!r}; choose labelled or self")
    groups = []
    for folder in folders:
        index = Index.build(read_corpus(folder), show_progress=show_progress)
        if kind == "self":
            groups += self_supervised_groups(index, group_size=group_size, max_documents=max_queries, seed=seed)
        else:
            groups += labelled_groups(
                folder,
                index,
                split=split,
                group_size=group_size,
                max_queries=max_queries,
                seed=seed,
                candidates=candidates,
            )
    return groups


def with_teacher(
    groups: Sequence[Group],
    teacher: Reranker,
    *,
    show_progress: bool = False,
    ray_address: str | None = None,
    load: Callable | None = None,
    chunk: int = 64,
) -> list[Group]:
    """The same groups with the teacher's raw scores as targets (for ``loss="kl"``). A fused
    teacher is given the first stage's scores and ranks, not the group order (which would tell
    it which text is the positive). With ``ray_address`` the groups are scored ``chunk`` at a
    time on that Ray cluster's workers, each loading the teacher with ``load()``: the same
    targets, in the same order."""
    from tqdm.auto import tqdm

    if ray_address is None:
        return [
            teach(teacher, g) for g in tqdm(groups, desc="teacher scores", unit=" groups", disable=not show_progress)
        ]
    if load is None or chunk < 1:
        raise ValueError(
            "with ray_address, pass load (a function that loads the teacher on each worker) "
            f"and a chunk of at least 1, got {chunk}"
        )
    from .cluster import map_on_cluster

    chunks = {n: list(groups[i : i + chunk]) for n, i in enumerate(range(0, len(groups), chunk))}
    taught = dict(map_on_cluster(ray_address, load, teach_all, chunks, show_progress=show_progress))
    return [g for n in range(len(chunks)) for g in taught[n]]


def teach(teacher: Reranker, group: Group) -> Group:
    """One group with the teacher's scores as its targets: its raw scores, or its fused scores
    when it fuses (with the first stage's ranks and scores); a per-language teacher through the
    route for the group's query."""
    stage = second_stage(teacher).route(group.query, required=True)
    hits = [
        Hit(Document(str(i), text), float(score), int(r), int(r))
        for i, (text, score, r) in enumerate(zip(group.texts, group.first_scores, ranks(np.array(group.first_scores))))
    ]
    ranking = Reranking(stage, top_k=len(hits)).rerank(group.query, hits)
    scores = (
        {h.id: h.score for h in ranking.hits} if stage.fusion else {d: s.raw for d, s in ranking.model_scores.items()}
    )
    return Group(group.query, group.texts, group.first_scores, tuple(float(scores[str(i)]) for i in range(len(hits))))


def teach_all(teacher: Reranker, groups: Sequence[Group]) -> list[Group]:
    """Groups with the teacher's scores as their targets (a cluster worker's share)."""
    return [teach(teacher, g) for g in groups]


# --- training ---------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    base: str  # a local Hugging Face directory or hub id (a registry name is resolved by the caller)
    output: str
    loss: str = "listwise"
    epochs: int = 1
    max_steps: int | None = None
    batch_groups: int = 4
    learning_rate: float = 4e-5
    warmup: float = 0.1
    max_length: int = 256
    temperature: float = 0.5  # of the teacher's distribution (kl), over per-group standardised scores
    seed: int = 0
    precision: str = "auto"  # bf16 autocast where the hardware has it
    freeze_embeddings: bool = True
    best_window: bool = False  # a text too long for a pair: its window richest in query terms, not its start
    dropout: float = 0.0
    checkpoint_every: int = 200
    threads: int | None = None


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    pairs_per_s: float = 0.0
    seconds: float = 0.0
    device: str = "cpu"


def train(
    groups: Sequence[Group], config: TrainConfig, *, resume: bool = False, show_progress: bool = False
) -> TrainResult:
    """Train and checkpoint into ``config.output/checkpoint``; returns the loss per step.

    Deterministic for a seed; ``resume=True`` continues from the checkpoint to the same state an
    uninterrupted run reaches; Ctrl-C saves a checkpoint before stopping."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification

    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.loss == "kl" and any(g.targets is None for g in groups):
        raise ValueError("loss 'kl' needs teacher scores on every group (see with_teacher)")
    if len({len(g.texts) for g in groups}) != 1:
        raise ValueError("every group must have the same number of texts")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = config.precision == "bf16" or (config.precision == "auto" and (device == "cuda" or cpu_has_bf16()))
    base = resolve_model(config.base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=1,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        ignore_mismatched_sizes=True,
    ).to(device)
    model.train()
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    encoder = TextEncoder(base, config.max_length)
    encoded = [
        encoder.pairs(g.query, best_windows(encoder, g.query, g.texts) if config.best_window else g.texts)
        for g in groups
    ]  # tokenised once
    batches_per_epoch = math.ceil(len(groups) / config.batch_groups)
    total = config.max_steps or batches_per_epoch * config.epochs
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    warmup = max(1, int(config.warmup * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    checkpoint = Path(config.output) / "checkpoint"
    result = TrainResult(steps=0, device=device)
    if resume:
        state = torch.load(latest_checkpoint(checkpoint) / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        result.steps, result.losses = state["step"], state["losses"]
    size = len(groups[0].texts)
    inputs = set(model_inputs(model))
    bar = tqdm(total=total, initial=result.steps, desc="training", unit=" steps", disable=not show_progress)
    start, pairs, epoch, order = time.perf_counter(), 0, -1, []
    try:
        while result.steps < total:
            if result.steps // batches_per_epoch != epoch:
                epoch = result.steps // batches_per_epoch
                order = _epoch_batches(encoded, config.batch_groups, config.seed + epoch)
            batch = order[result.steps % batches_per_epoch]
            feeds = pad([e for i in batch for e in encoded[i]], encoder.pad_id)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                logits = model(**{k: torch.from_numpy(v).to(device) for k, v in feeds.items() if k in inputs}).logits
            scores = logits.float().view(len(batch), size)
            loss = _loss(config, scores, [groups[i] for i in batch], torch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            result.losses.append(loss.item())
            pairs += len(batch) * size
            bar.update(1)
            bar.set_postfix(
                loss=f"{np.mean(result.losses[-20:]):.4f}", pairs_s=f"{pairs / (time.perf_counter() - start):.1f}"
            )
            if result.steps % config.checkpoint_every == 0 or result.steps == total:
                _save_checkpoint(checkpoint, model, optimizer, scheduler, result, torch)
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d: saving a checkpoint (continue with --resume)", result.steps)
        _save_checkpoint(checkpoint, model, optimizer, scheduler, result, torch)
        raise
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    result.pairs_per_s = pairs / result.seconds if result.seconds else 0.0
    return result


def best_windows(encoder: TextEncoder, query: str, texts: Sequence[str], overlap: int = 32) -> tuple[str, ...]:
    """Each text too long to pair with ``query`` cut to the window (cut as a reranker reading
    windows cuts it, ``overlap`` tokens shared) holding the most distinct query terms, the first
    of equals; a text that fits stays whole. Cut at its start instead, a positive whose answer
    lies further on teaches the model that answers are irrelevant, and a negative's best window
    is what a reranker taking each document's best window compares the answer with."""
    from .analysis import auto
    from .models import chunks

    terms = set(auto(query))
    every_window = 10**9
    cut = []
    for text, spans in zip(
        texts, chunks.split(encoder.tokenizer, texts, encoder.document_budget(query), every_window, overlap)
    ):
        a, b = max(spans, key=lambda span: len(terms.intersection(auto(text[span[0] : span[1]]))))
        cut.append(text[a:b])
    return tuple(cut)


def _epoch_batches(encoded: list, batch_groups: int, seed: int) -> list[list[int]]:
    """A seeded epoch order: shuffle, sort within windows of 32 batches by length (so a batch
    pads little), cut into batches, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = 32 * batch_groups
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: max(len(e.ids) for e in encoded[i]))
        batches += [chunk[j : j + batch_groups] for j in range(0, len(chunk), batch_groups)]
    rng.shuffle(batches)
    return batches


def _loss(config: TrainConfig, scores, groups: list[Group], torch):
    if config.loss == "listwise":
        return torch.nn.functional.cross_entropy(
            scores, torch.zeros(len(groups), dtype=torch.long, device=scores.device)
        )
    if config.loss == "bce":
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
    targets = torch.tensor([g.targets for g in groups], dtype=torch.float32, device=scores.device)
    # standardise each group's teacher scores, so the temperature means the same for any teacher's scale
    targets = (targets - targets.mean(-1, keepdim=True)) / (targets.std(-1, keepdim=True) + 1e-6) / config.temperature
    return torch.nn.functional.kl_div(
        torch.log_softmax(scores, -1), torch.log_softmax(targets, -1), log_target=True, reduction="batchmean"
    )


def _save_checkpoint(folder: Path, model, optimizer, scheduler, result: TrainResult, torch) -> None:
    """Write the checkpoint beside the old one (fsynced), then swap. While the swap runs the old
    one is ``checkpoint.old``, which :func:`latest_checkpoint` reads: a crash at any moment
    leaves a whole checkpoint to resume from."""
    from ._storage import _fsync_dir, _fsync_tree

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": result.steps,
            "losses": result.losses,
        },
        tmp / "state.pt",
    )
    model.save_pretrained(tmp / "model")
    _fsync_tree(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():  # else the old one may be the only whole checkpoint: keep it until the new one is in place
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(folder: Path) -> Path:
    """The checkpoint folder to read: ``folder``, or ``folder.old`` when a save was cut off mid-swap."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.pt").is_file():
            return candidate
    raise CorpusError(f"no checkpoint to resume from in {folder.parent}", folder.parent)


# --- export -----------------------------------------------------------------------------------


def export(config: TrainConfig, result: TrainResult, data: str) -> Path:
    """Write ``config.output`` as a Hugging Face model folder (weights, config, tokenizer), its
    ONNX export in ``onnx/`` (read from there by finerank.models.files.onnx_file, so the folder
    runs on openvino and onnxruntime wherever it is copied) and a model card (README.md)."""
    base = resolve_model(config.base)
    out = Path(config.output)
    model_dir = latest_checkpoint(out / "checkpoint") / "model"
    for file in model_dir.iterdir():
        shutil.copy(file, out / file.name)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
        "sentencepiece.bpe.model",
    ):
        if (base / name).is_file():
            shutil.copy(base / name, out / name)
    (out / "onnx").mkdir(exist_ok=True)
    export_onnx(out, "classification", out / "onnx" / export_name("classification"))
    card = [
        f"# Cross-encoder fine-tuned by finerank from {config.base}",
        "",
        f"- data: {data}",
        f"- steps: {result.steps} ({result.seconds / 60:.1f} min on {result.device}, {result.pairs_per_s:.1f} pairs/s)",
        f"- loss: {config.loss}; final mean loss (last 20 steps) {np.mean(result.losses[-20:]):.4f}",
        "- head: one logit (relevance = sigmoid(logit))",
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(asdict(config), indent=2),
        "```",
    ]
    (out / "README.md").write_text("\n".join(card) + "\n", encoding="utf-8")
    return out
