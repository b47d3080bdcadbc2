"""Pairs per second of the rerankers people bring, on full-size stand-ins with random weights:
sentence-transformers' ``CrossEncoder`` beside finerank in the same run, on the same 100 real
candidates.

No pretrained reranker can be downloaded here, and speed does not depend on the weights, so
each model is built from a config of the published shape (layers, widths, heads, vocabulary)
with random weights:

- ms-marco-MiniLM-L-6-v2 (BERT, 6 x 384)
- bge-reranker-base (XLM-RoBERTa, 12 x 768)
- bge-reranker-large / bge-reranker-v2-m3 (XLM-RoBERTa, 24 x 1024; v2-m3's 8194 positions)
- gte-reranker-modernbert-base (ModernBERT, 22 x 768)
- Qwen3-Reranker-0.6B (Qwen3, 28 x 1024, 16 query / 8 key-value heads; an LLM reranker)

Tokenizers are real (MiniLM's WordPiece; multilingual-e5's XLM-R SentencePiece for XLM-R) and
the candidates are SciFact abstracts cut to their first 150 words (about 200 tokens), the BM25
top 100 of one test query. Each engine runs in its own process with 2 threads; the first call
(any export or compilation) is not timed.

    python benchmarks/architecture_speed.py [--candidates 100] [--models minilm-l6 qwen3-reranker-0.6b ...] [--json]

sentence-transformers runs as a user who wants speed would pick it: torch fp32, torch bf16 (weights
loaded in bfloat16) and its OpenVINO backend (``backend="openvino"``, which needs optimum-intel; OpenVINO
picks bf16 itself on CPUs with bf16 units). A row whose package is missing is skipped with a note. "x fastest
ST" is against the fastest of them in the same run; agreement is against sentence-transformers fp32.

For the LLM reranker, sentence-transformers reads the model as its card says (``CrossEncoder``
on the causal LM: logit("yes") - logit("no") at the last token of the template-formatted
pair). It loads the model in fp32 on a CPU even though the published config names bfloat16.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _support import first_missing

from finerank.models.tuning import kendall_tau

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
QWEN3_SPECIALS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")

# name -> (architecture, config of the published model's shape, tokenizer, dtype of its published config)
SHAPES = {
    "minilm-l6": (
        "bert",
        dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
        "wordpiece",
        "float32",
    ),
    "bge-reranker-base": (
        "xlm-roberta",
        dict(
            vocab_size=250002,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
        ),
        "xlmr",
        "float32",
    ),
    "bge-reranker-v2-m3": (
        "xlm-roberta",
        dict(
            vocab_size=250002,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            max_position_embeddings=8194,
        ),
        "xlmr",
        "float32",
    ),
    "gte-reranker-modernbert-base": (
        "modernbert",
        dict(
            vocab_size=50368,
            hidden_size=768,
            num_hidden_layers=22,
            num_attention_heads=12,
            intermediate_size=1152,
            global_attn_every_n_layers=3,
            local_attention=128,
            max_position_embeddings=8192,
        ),
        "wordpiece",
        "float32",
    ),
    "qwen3-reranker-0.6b": (
        "qwen3",
        dict(
            vocab_size=151669,
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
            max_position_embeddings=40960,
            rope_theta=1000000,
            tie_word_embeddings=True,
        ),
        "wordpiece",
        "bfloat16",
    ),
}


def tokenizer_files(kind: str, folder: Path) -> None:
    """A real tokenizer in ``folder``: tokenizer.json and a config AutoTokenizer reads."""
    from tokenizers import AddedToken, Tokenizer

    if kind == "xlmr":
        from finerank.models.e5 import source_files

        tok, pad = Tokenizer.from_file(str(source_files()[1])), "<pad>"
    else:
        from finerank.registry import MODELS

        tok, pad = Tokenizer.from_file(str(MODELS["all-minilm-l6-v2"].locate() / "tokenizer.json")), "[PAD]"
    tok.no_padding()
    tok.no_truncation()
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "model_max_length": 8192}
    if folder.name.startswith(
        "qwen3"
    ):  # a causal LM's tokenizer: the chat template's tokens, no [CLS]/[SEP] around pairs
        tok.add_special_tokens([AddedToken(t, normalized=False) for t in QWEN3_SPECIALS])
        tok.post_processor = None
        config["padding_side"] = "left"
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def build(name: str, root: Path) -> Path:
    import torch
    import transformers as T

    arch, shape, tokenizer, dtype = SHAPES[name]
    folder = root / name
    folder.mkdir(parents=True)
    tokenizer_files(tokenizer, folder)
    pad_id = 1 if tokenizer == "xlmr" else 0
    torch.manual_seed(0)
    if arch == "bert":
        model = T.BertForSequenceClassification(T.BertConfig(**shape, num_labels=1))
    elif arch == "xlm-roberta":
        model = T.XLMRobertaForSequenceClassification(
            T.XLMRobertaConfig(**shape, num_labels=1, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        )
    elif arch == "modernbert":
        model = T.ModernBertForSequenceClassification(T.ModernBertConfig(**shape, num_labels=1, pad_token_id=pad_id))
    else:
        model = T.Qwen3ForCausalLM(T.Qwen3Config(**shape, pad_token_id=pad_id, bos_token_id=None))
    model.config.dtype = dtype
    model.eval().save_pretrained(folder)
    return folder


def candidates(count: int) -> tuple[str, list[str]]:
    from finerank import BM25, Index, read_corpus
    from finerank.evaluate import load_dataset

    scifact = load_dataset(DATASETS / "scifact")
    query = next(iter(scifact.queries.values()))
    hits = BM25(Index.build(read_corpus(DATASETS / "scifact"))).search(query, count)
    return query, [" ".join(h.document.content.split()[:150]) for h in hits]


def engines(name: str) -> list[str]:
    peers = ["sentence-transformers fp32", "sentence-transformers bf16", "sentence-transformers openvino"]
    if SHAPES[name][0] == "qwen3":
        return peers + ["finerank bf16, head reused", "finerank bf16, head recomputed", "finerank fp32, head reused"]
    return peers + ["finerank default", "finerank openvino bf16", "finerank torch bf16"]


def missing_module(label: str) -> str | None:
    """The package a row needs and this environment lacks (the row is then skipped with a note)."""
    needs = ["sentence_transformers"] if label.startswith("sentence-transformers") else []
    return first_missing(needs + (["optimum.intel"] if label == "sentence-transformers openvino" else []))


def make_scorer(label: str, folder: Path):
    """(query, texts) -> raw scores."""
    import torch

    llm = folder.name.startswith("qwen3")
    if label.startswith("sentence-transformers"):
        from sentence_transformers import CrossEncoder

        kwargs = {
            "sentence-transformers fp32": {"model_kwargs": {"dtype": torch.float32}},
            "sentence-transformers bf16": {"model_kwargs": {"dtype": torch.bfloat16}},
            # OpenVINO picks bf16 itself on CPUs with bf16 units
            "sentence-transformers openvino": {
                "backend": "openvino",
                "model_kwargs": {"ov_config": {"INFERENCE_NUM_THREADS": "2"}},
            },
        }[label]
        st = CrossEncoder(str(folder), device="cpu", max_length=1024, **kwargs)
        if not llm:
            return lambda q, texts: st.predict(
                [(q, t) for t in texts], batch_size=32, activation_fn=torch.nn.Identity()
            )
        from finerank.models.llm import TEMPLATES

        t = TEMPLATES["qwen3-reranker"]
        head, body = t.head[0], t.body.replace("{instruction}", t.default_instruction)
        before, after = body.split("{document}")
        # the model card's text, as a (text, text_pair) that the tokenizer joins without special tokens
        return lambda q, texts: st.predict(
            [(head + before.format(query=q), d + after + t.tail[0]) for d in texts],
            batch_size=8,
            activation_fn=torch.nn.Identity(),
        )
    from finerank import load_scorer

    if llm:
        scorer = load_scorer(
            str(folder),
            template="qwen3-reranker",
            precision="bf16" if "bf16" in label else "fp32",
            reuse_prefix="reused" in label,
            threads=2,
        )
    elif label in ("finerank torch bf16", "finerank openvino bf16"):
        scorer = load_scorer(str(folder), backend=label.split()[1], precision="bf16", threads=2, max_length=512)
    else:
        scorer = load_scorer(str(folder), threads=2, max_length=512)
        if scorer.measuring is not None:  # auto: time the engine it chose, not the one it serves with meanwhile
            scorer.measuring.join()
        print(f"  {label} runs as {scorer.backend_name} {scorer.precision}", file=sys.stderr)
    return lambda q, texts: scorer.score(q, texts, raw=True)


def run_engine(label: str, folder: str, query: str, texts: list[str], repeats: int) -> dict:
    """In a child process: a warm-up call on 8 candidates, then ``repeats`` timed calls on all."""
    import torch

    torch.set_num_threads(2)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    score = make_scorer(label, Path(folder))
    start = time.perf_counter()
    score(query, texts[:8])
    warm = time.perf_counter() - start
    times, scores = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        scores = np.asarray(score(query, texts), dtype=np.float32)
        times.append(time.perf_counter() - t)
    return {"seconds": min(times), "scores": scores.tolist(), "warm_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument(
        "--llm-candidates", type=int, default=32, help="candidates for the LLM reranker (about 1 s a pair)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per engine (the fastest is kept)")
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    query, texts = candidates(args.candidates)
    root = Path(tempfile.mkdtemp(prefix="finerank-shapes-"))
    os.environ["FINERANK_CACHE"] = str(root / "cache")  # exports of throwaway models go with them
    rows = []
    context = multiprocessing.get_context("spawn")
    try:
        for name in args.models:
            folder = build(name, root)
            print(f"{name}: built in {folder}", file=sys.stderr)
            results = {}
            batch = texts[: args.llm_candidates] if SHAPES[name][0] == "qwen3" else texts
            for label in engines(name):
                if missing := missing_module(label):
                    print(f"  {label}: skipped ({missing} is not installed)", file=sys.stderr)
                    continue
                with context.Pool(1) as pool:
                    results[label] = pool.apply(run_engine, (label, str(folder), query, batch, args.repeats))
                print(f"  {label}: {len(batch) / results[label]['seconds']:.2f} pairs/s", file=sys.stderr)
            base = results["sentence-transformers fp32"]
            fastest_peer = min(
                r["seconds"] for label, r in results.items() if label.startswith("sentence-transformers")
            )
            reference = np.array(base["scores"])
            for label, r in results.items():
                s = np.array(r["scores"])
                rows.append(
                    {
                        "model": name,
                        "engine": label,
                        "candidates": len(batch),
                        "pairs_per_s": len(batch) / r["seconds"],
                        "ms_per_100": 100_000 * r["seconds"] / len(batch),
                        "x_st": base["seconds"] / r["seconds"],
                        "x_fastest_st": fastest_peer / r["seconds"],
                        "tau_vs_st": kendall_tau(s, reference),
                        "max_diff_vs_st": float(np.abs(s - reference).max()),
                        "spread": float(np.ptp(reference)),
                    }
                )
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    amx = "AMX" if "amx_bf16" in open("/proc/cpuinfo").read() else "no AMX"
    print(f"{cpu}, {amx}, 2 threads; scores compared with sentence-transformers' (ST) on the same candidates\n")
    print(
        "| model | engine | candidates | pairs/s | ms per 100 | x ST fp32 | x fastest ST | Kendall tau vs ST "
        "| max diff vs ST | ST spread |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['engine']} | {r['candidates']} | {r['pairs_per_s']:.2f} | {r['ms_per_100']:.0f} | "
            f"{r['x_st']:.2f} | {r['x_fastest_st']:.2f} | "
            f"{r['tau_vs_st']:.3f} | {r['max_diff_vs_st']:.1e} | {r['spread']:.2f} |"
        )


if __name__ == "__main__":
    main()
