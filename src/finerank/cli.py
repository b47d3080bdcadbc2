"""The finerank command: argument parsing and printing only; the work is done by the library."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import shlex
import sys
import time
import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from . import Fusion, Index, Pipeline, __version__, load_reranker, read_corpus, rerank
from .corpus import read_documents
from .errors import FinerankError, MissingDependencyError
from .models import LLMReranker, tuning
from .pipeline import ByLanguage
from .registry import (
    ANALYZERS,
    BACKENDS,
    DEFAULT_ENCODER,
    DEFAULT_RERANKER,
    FIRST_STAGES,
    MODELS,
    MULTILINGUAL_ENCODER,
    encoder_for,
    encoder_of,
    first_stage,
    load_encoder,
    pinned_loader,
)
from .retrievers import BM25
from .types import Hit, Ranking
from .vectors import ANN

logger = logging.getLogger("finerank")

DEMO_QUERIES = (
    "如何治疗感冒？",
    "How do I read a CSV file in Python?",
    "Как быстро выучить иностранный язык?",
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.command_line = shlex.join(["finerank", *argv])
    level = logging.ERROR if args.quiet else max(logging.DEBUG, logging.WARNING - 10 * args.verbose)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars of transformers
    if args.quiet:  # third parties too: transformers' load reports, every other library's tqdm bars
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TQDM_DISABLE", "1")
        if "transformers" in sys.modules:  # main() called from Python after transformers read its settings
            sys.modules["transformers"].logging.set_verbosity_error()
    try:
        code = args.run_command(args)
        tuning.finish()  # a model loaded here for the first time is measured in the background: finish, once
        return code
    except (FinerankError, KeyError, ValueError, OSError) as err:
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"finerank: error: {' '.join(message.split())}", file=sys.stderr)  # a wrapped library error spans lines
        return 1


def _share(text: str) -> float:
    """An argparse type: a number of CPUs above 0 (a fraction allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _count(minimum: int = 1):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _user(text: str) -> tuple[str, str]:
    """An argparse type: NAME=KEY, a user's name and API key (printable ASCII, no spaces)."""
    name, _, key = text.partition("=")
    if not name.strip() or not key or not all(33 <= ord(c) <= 126 for c in key):
        raise argparse.ArgumentTypeError(f"give NAME=KEY (the key printable ASCII without spaces), got {text!r}")
    return name.strip(), key


def _port(text: str) -> int:
    value = _count(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port lies in 0-65535, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finerank", description="Coarse recall, then fine ranking.")
    parser.add_argument("--version", action="version", version=f"finerank {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, errors only")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    parser.set_defaults(json=False)
    # -q, -v and --json after the command too (their defaults stay the top level's)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars, errors only"
    )
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    add_parser = functools.partial(sub.add_parser, parents=[common])

    p = add_parser(
        "index", help="build an index (BM25, and dense vectors with --dense), or update one (--add, --delete)"
    )
    p.add_argument("corpus", nargs="?", help="JSONL file, BEIR folder, CSV/TSV file or folder of .txt/.md files")
    p.add_argument("--out", required=True, help="index folder (written atomically)")
    p.add_argument("--analyzer", default="auto", choices=sorted(ANALYZERS))
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument(
        "--dense",
        nargs="?",
        const="auto",
        help=f"also store dense vectors from this encoder (default: {DEFAULT_ENCODER}, "
        f"or {MULTILINGUAL_ENCODER} when 5 %% of the documents are Chinese)",
    )
    p.add_argument(
        "--ann", default="auto", choices=ANN, help="dense search: exact, hnsw, or auto (hnsw from 100,000 documents)"
    )
    p.add_argument("--query-prefix", help="prepended to queries before encoding (e5-style models: 'query: ')")
    p.add_argument("--document-prefix", help="prepended to documents before encoding (e5-style models: 'passage: ')")
    p.add_argument(
        "--dense-window",
        type=int,
        metavar="TOKENS",
        help="store one vector per window of this many tokens, a document "
        "scoring as its best window (0: one vector a document; "
        f"default: the encoder's, 32 for {MULTILINGUAL_ENCODER}, 0 otherwise)",
    )
    p.add_argument("--add", help="update the index in --out: add (or replace, by id) the documents of this corpus")
    p.add_argument(
        "--delete", nargs="+", default=[], metavar="ID", help="update the index in --out: delete these document ids"
    )
    p.add_argument("--skip-invalid", action="store_true", help="skip bad records (reported) instead of stopping")
    p.set_defaults(run_command=_index)

    p = add_parser(
        "judge", help="grade search results in the terminal (0-3): the pool of both lists, stored by the index"
    )
    p.add_argument("index", help="an index folder")
    p.add_argument("--queries", metavar="FILE", help="queries to judge, a line each (default: typed at the prompt)")
    p.add_argument("--judgments", metavar="FILE", help="where grades go (default: judgments.jsonl in the index folder)")
    p.add_argument("--depth", type=_count(), default=10, help="top results of each list to grade (default 10)")
    p.add_argument("--user", default=os.environ.get("USER"), help="who judges (default $USER)")
    p.add_argument("--first-stage", default="bm25", choices=FIRST_STAGES)
    p.add_argument(
        "--export", metavar="DIR", help="write the grades as a BEIR folder (with the index's corpus) and stop"
    )
    p.add_argument("--import", dest="import_from", metavar="DIR", help="add the grades of a BEIR folder, then stop")
    p.add_argument("--import-split", default="test", help="the qrels split --import reads (default test)")
    _reranker_options(p, allow_none=False)
    p.set_defaults(run_command=_judge)

    p = add_parser("search", help="search an index: first-stage candidates, then rerank")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument(
        "--first-stage", default="bm25", choices=FIRST_STAGES, help="dense and hybrid need an index built with --dense"
    )
    p.add_argument(
        "--filter",
        type=json.loads,
        help='metadata filter as JSON, e.g. \'{"year": {"gte": 2015}, "lang": ["en", "zh"]}\'',
    )
    p.add_argument("--candidates", type=_count(), default=100, help="first-stage candidates to rerank (default 100)")
    p.add_argument("--top-k", type=_count(), default=3)
    p.add_argument(
        "--min-score", type=float, help="drop hits whose calibrated model score is below this (see finerank calibrate)"
    )
    _cascade_options(p)
    p.add_argument(
        "--budget-ms",
        type=float,
        help="the reranker reads only as many of the best candidates as fit this many "
        "milliseconds, at its pace measured on this CPU (see finerank doctor)",
    )
    _reranker_options(p, allow_none=True)
    p.set_defaults(run_command=_search)

    p = add_parser("rerank", help="rerank documents from a file or stdin against a query")
    p.add_argument("--query", required=True)
    p.add_argument(
        "--docs",
        required=True,
        help="JSONL/CSV/TSV corpus file, a text file with one document per line, or - for stdin",
    )
    p.add_argument("--top-k", type=_count(), default=None)
    _reranker_options(p, allow_none=False)
    p.set_defaults(run_command=_rerank)

    p = add_parser("eval", help="first stage vs reranked on a BEIR dataset: quality and cost")
    p.add_argument(
        "dataset",
        nargs="?",
        help="BEIR folder (with --all: a folder of them, default ../shared/datasets; with --judgments: an index)",
    )
    p.add_argument("--all", action="store_true", help="every dataset in the folder; writes --out")
    p.add_argument("--split", default=None, help="default test (with --judgments: all; test is the held-out share)")
    p.add_argument(
        "--judgments",
        nargs="?",
        const="",
        metavar="FILE",
        help="evaluate on your own grades: the index's judgments.jsonl, or FILE (DATASET is then the index)",
    )
    p.add_argument("--run", help="rerank this TREC run (path, or relative to the dataset) instead of BM25")
    p.add_argument("--index", help="an existing index of the dataset's corpus (default: build one in memory)")
    p.add_argument(
        "--first-stage",
        default="bm25",
        choices=FIRST_STAGES,
        help="bm25, dense (all-MiniLM-L6-v2 unless the index says otherwise) "
        "or hybrid (min-max fusion of both, equal weights)",
    )
    p.add_argument("--analyzer", default="auto", choices=sorted(ANALYZERS))
    p.add_argument(
        "--candidates",
        type=_count(),
        default=100,
        help="first-stage depth that is reranked and evaluated (default 100)",
    )
    p.add_argument("--max-queries", type=_count(), default=None, help="evaluate only the first N judged queries")
    p.add_argument("--report", help="write a Markdown report here")
    p.add_argument("--figure", help="write a PNG figure here (per-query nDCG@10 change, moves of relevant documents)")
    p.add_argument(
        "--out", default="docs/results.md", help="with --all: the results page to write (default docs/results.md)"
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="with --run: rerank the run on this Ray cluster's workers (host:port of its head)",
    )
    _cascade_options(p)
    _reranker_options(p, allow_none=True)
    p.set_defaults(run_command=_eval)

    p = add_parser(
        "calibrate", help="fit a model's score -> probability of relevance on a dev split; stored with the model"
    )
    p.add_argument("dataset", help="BEIR folder with judgements for --split")
    p.add_argument("--split", default="dev", help="the split to fit on (default dev; never the one you report)")
    p.add_argument("--check-split", help="also report precision and recall at --threshold on this split")
    p.add_argument("--method", default="platt", choices=("platt", "isotonic"))
    p.add_argument(
        "--candidates", type=_count(), default=20, help="BM25 candidates per query that are scored (default 20)"
    )
    p.add_argument("--max-queries", type=_count(), default=None)
    p.add_argument("--threshold", type=float, default=0.5)
    _reranker_options(p, allow_none=False)
    p.set_defaults(run_command=_calibrate)

    p = add_parser("serve", help="HTTP service: Cohere/Jina/TEI/Infinity rerank APIs and search")
    p.add_argument("--index", help="an index folder to search and administer over HTTP")
    p.add_argument("--first-stage", default="bm25", choices=FIRST_STAGES, help="first stage of /v1/search")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument(
        "--api-key",
        default=os.environ.get("FINERANK_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default $FINERANK_API_KEY)",
    )
    p.add_argument("--max-documents", type=_count(), default=1000, help="documents per rerank request")
    p.add_argument("--max-document-tokens", type=_count(), default=8192)
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits to share a batch (0: no cross-request batching)",
    )
    p.add_argument("--max-queue", type=_count(), default=64, help="requests waiting to be scored before 429")
    p.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="FILE",
        help="a saved `finerank eval --json` file for the evaluation page at /eval (repeatable)",
    )
    p.add_argument(
        "--judgments",
        metavar="FILE",
        help="where the page's grades go (default: judgments.jsonl in the --index folder)",
    )
    p.add_argument(
        "--queries", metavar="FILE", help="queries to judge, a line each (a query log): the page's next query"
    )
    p.add_argument(
        "--user",
        action="append",
        default=[],
        type=_user,
        metavar="NAME=KEY",
        help="an API key that names who judged (repeatable; with it every route needs a key)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="serve as replicas on this Ray cluster (host:port of its head node) with Ray Serve",
    )
    p.add_argument(
        "--replicas",
        type=_count(),
        default=1,
        help="with --ray: replicas, each with its own model and batcher (default 1)",
    )
    p.add_argument(
        "--max-replicas",
        type=_count(),
        help="with --ray: scale up to this many replicas on load (default: --replicas, fixed)",
    )
    p.add_argument(
        "--replica-cpus", type=_share, default=1, help="with --ray: CPUs per replica, a fraction allowed (default 1)"
    )
    p.add_argument(
        "--request-timeout",
        type=_share,
        default=60,
        metavar="SECONDS",
        help="cancel a request not answered in this time and answer 408 (default 60)",
    )
    _reranker_options(p, allow_none=False)
    p.set_defaults(run_command=_serve)

    p = add_parser("train", help="fine-tune a cross-encoder (labelled, self-supervised or distilled)")
    p.add_argument(
        "data",
        nargs="+",
        help="BEIR folders (labelled: with qrels/<split>.tsv) or any corpora (--data-kind self); "
        "groups from each are pooled",
    )
    p.add_argument(
        "--out", required=True, help="output model folder (Hugging Face + ONNX + model card; checkpoints inside)"
    )
    p.add_argument(
        "--base", default="all-minilm-l6-v2", help="pretrained encoder: registry name, local folder or hub id"
    )
    p.add_argument(
        "--data-kind",
        default="labelled",
        choices=("labelled", "self"),
        help="judged queries, or title -> text (first sentence -> rest) pairs",
    )
    p.add_argument("--split", default="train")
    p.add_argument(
        "--judgments",
        nargs="?",
        const="",
        metavar="FILE",
        help="train on your own grades (DATA is then one index): its judgments.jsonl, or FILE; the held-out "
        "share is never trained on, and the new model is compared with the default on it",
    )
    p.add_argument("--teacher", help="distil from this reranker's scores (loss kl), e.g. minilm-fused")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="with --teacher: score the groups on this Ray cluster's workers (host:port of its head)",
    )
    p.add_argument("--loss", choices=("listwise", "bce", "kl"), help="default: listwise (kl with --teacher)")
    p.add_argument("--group-size", type=_count(2), default=8, help="texts per group: 1 positive + negatives")
    p.add_argument(
        "--candidates",
        type=_count(),
        default=100,
        help="first-stage depth negatives are mined from (and, with --judgments, the held-out lists reranked)",
    )
    p.add_argument("--batch-groups", type=_count(), default=4)
    p.add_argument("--epochs", type=_count(), default=1)
    p.add_argument("--max-steps", type=_count())
    p.add_argument("--lr", type=float, default=4e-5)
    p.add_argument("--max-length", type=_count(8), default=256)
    p.add_argument(
        "--best-window",
        action="store_true",
        help="train on a long text's window richest in query terms, not its first --max-length tokens "
        "(for a model that reads long documents in windows, --max-chunks-per-doc)",
    )
    p.add_argument(
        "--max-queries", type=_count(), help="use only the first N queries (or documents, for self) of each folder"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=_count(), default=200)
    p.add_argument("--threads", type=_count(), help="CPU threads for training (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--eval", help="after training, evaluate on this BEIR folder and add the table to the model card")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--eval-queries", type=_count(), default=100, help="judged queries to evaluate (default 100)")
    p.set_defaults(run_command=_train)

    p = add_parser(
        "rerank-run", help="rerank a TREC run of any size and write a TREC run (resumable: finished shards are kept)"
    )
    p.add_argument("run", help="a TREC run: qid Q0 docid rank score tag")
    p.add_argument("--corpus", required=True, help="where the run's documents are (BEIR folder, JSONL/CSV/TSV)")
    p.add_argument("--queries", required=True, help="the run's queries (BEIR queries.jsonl or qid<TAB>text)")
    p.add_argument("--out", required=True, help="the reranked run to write (shards are kept in OUT.parts until it is)")
    p.add_argument("--depth", type=_count(), default=100, help="documents per query reranked (default 100)")
    p.add_argument("--shard-size", type=_count(), default=50, help="queries per shard (default 50)")
    p.add_argument("--tag", default="finerank", help="the run tag written in the last column")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="rerank the shards on this Ray cluster (host:port of its head node); same output",
    )
    p.add_argument(
        "--workers",
        type=_count(),
        help="with --ray: reranking workers, one CPU each (default: one per free CPU of the cluster)",
    )
    p.add_argument(
        "--start-timeout",
        type=_share,
        metavar="SECONDS",
        help="with --ray: give up when the cluster has not started the workers within this many seconds (default 120)",
    )
    _reranker_options(p, allow_none=False)
    p.set_defaults(run_command=_rerank_run)

    p = add_parser(
        "doctor", help="this CPU, the installed backends, and which backend/precision is fastest for a model here"
    )
    _reranker_options(p, allow_none=False)
    p.add_argument("--again", action="store_true", help="measure again instead of reading the cached measurement")
    p.add_argument("--threads", type=_count(), help="CPU threads to measure with (default: all)")
    p.add_argument(
        "--dataset",
        help="a BEIR folder: gate each engine on nDCG@10 over its --split (within "
        "0.005 of fp32) instead of on ranking agreement over a sample; this is how int8 earns its place",
    )
    p.add_argument("--split", default="dev")
    p.add_argument("--queries", type=_count(), default=50, help="judged queries of --split (default 50)")
    p.add_argument("--candidates", type=_count(), default=30, help="BM25 candidates per query (default 30)")
    p.set_defaults(run_command=_doctor)

    p = add_parser("demo", help="the idea in two examples: first-stage order beside reranked order")
    _reranker_options(p, allow_none=False)
    p.set_defaults(run_command=_demo)
    return parser


def _cascade_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cheap",
        help="a cascade: this cheaper second stage (e.g. minilm-fused over an index with stored vectors) "
        "reads every candidate and keeps --keep of them for the reranker (a fused reranker fuses with its scores)",
    )
    p.add_argument("--keep", type=_count(), default=30, help="candidates the --cheap stage passes on (default 30)")


def _reranker_options(p: argparse.ArgumentParser, allow_none: bool) -> None:
    p.add_argument(
        "--reranker",
        default=None,
        help=f"model name ({', '.join(MODELS)}), local model folder or hub id (default {DEFAULT_RERANKER})",
    )
    p.add_argument(
        "--kind",
        default="cross-encoder",
        choices=("cross-encoder", "bi-encoder", "llm"),
        help="what a model folder holds (a causal LM folder is read as an LLM reranker)",
    )
    p.add_argument(
        "--template",
        help="an LLM reranker's prompt template (default: recognised from the model's name): "
        "qwen3-reranker, mxbai-rerank-v2, bge-reranker-v2-gemma",
    )
    p.add_argument("--instruction", help="an LLM reranker's instruction (Qwen3-Reranker's <Instruct>)")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS))
    p.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16", "int8"), help="int8: onnx backend only"
    )
    p.add_argument(
        "--max-length",
        type=_count(8),
        help="tokens per (query, document) pair (default: the model's own limit, at most 512)",
    )
    p.add_argument(
        "--max-chunks-per-doc",
        type=_count(),
        default=1,
        help="read a document longer than --max-length as up to N overlapping windows, "
        "scored by its best (default 1: cut it)",
    )
    if allow_none:  # a command with a first stage: its ranking can be kept, or fused with
        p.add_argument("--no-rerank", action="store_true", help="first stage only")
        p.add_argument(
            "--fuse",
            type=float,
            metavar="WEIGHT",
            help="fuse the model's scores min-max with the ranking before it "
            "(the first stage's, or --cheap's), WEIGHT being the model's share, e.g. 0.5 "
            "(replaces a fused model's own fusion)",
        )


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_folder
    from .report import figure, markdown, table, write_results

    for path in (args.report, args.figure, args.out if args.all else None):
        _check_writable(path)
    if args.ray and (args.all or not args.run or args.no_rerank):
        raise ValueError("--ray reranks a run on the cluster: give one dataset, its --run and a reranker")
    args.split = args.split or ("all" if args.judgments is not None else "test")
    reranker = None if args.no_rerank else _load(args)
    options = dict(
        split=args.split,
        run=args.run,
        index=args.index,
        analyzer=args.analyzer,
        candidates=args.candidates,
        max_queries=args.max_queries,
        first_stage=args.first_stage,
        show_progress=not args.quiet,
        cheap=_cheap(args, reranker),
        keep=args.keep,
    )
    if args.all:
        root = Path(args.dataset or "../shared/datasets")
        folders = sorted(f for f in root.iterdir() if (f / "qrels" / f"{args.split}.tsv").is_file())
        if not folders:
            raise ValueError(f"no datasets with a {args.split} split in {root}")
        evaluations = [
            evaluate_folder(f, reranker, official_run=args.first_stage == "bm25", **options) for f in folders
        ]
        write_results(evaluations, Path(args.out), args.command_line)
        print(
            json.dumps([ev.to_json() for ev in evaluations], indent=2)
            if args.json
            else "\n\n".join(map(table, evaluations))
        )
        return 0
    if not args.dataset:
        raise ValueError("name a dataset folder, or use --all")
    if args.ray:
        options.update(ray_address=args.ray, load=_loader(args, reranker))
    if args.judgments is not None:  # an index and the grades given on its results
        from .evaluate import evaluate

        if args.run or args.index or args.ray:
            raise ValueError("with --judgments, DATASET is the index: no --run, --index or --ray")
        index, dataset = _judged(args.dataset, args.judgments, args.split)
        ev = evaluate(
            dataset,
            first_stage(index, args.first_stage),
            reranker,
            candidates=args.candidates,
            show_progress=not args.quiet,
            cheap=options["cheap"],
            keep=args.keep,
        )
    else:
        ev = evaluate_folder(Path(args.dataset), reranker, **options)
    figure_path = figure(ev, args.figure) if args.figure else None
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(markdown(ev, str(figure_path) if figure_path else None), encoding="utf-8")
    print(json.dumps(ev.to_json(), indent=2) if args.json else table(ev))
    return 0


def _check_writable(path: str | None) -> None:
    """Fail before long work, not after it, when an output file cannot be written."""
    if path is None:
        return
    target = Path(path).resolve()
    folder = next(p for p in target.parents if p.exists())  # folders that do not exist yet are made
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"cannot write {path}: permission denied or not a folder ({folder})")


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .server import Limits, create_app
    except ImportError as err:
        raise MissingDependencyError(f"the server dependencies ({err.name})", "server") from None
    _check_port(args.host, args.port)
    if args.index:  # a missing index or a first stage it cannot serve: one line now, not a traceback at start-up
        index = Index.load(args.index)
        first_stage(index, args.first_stage)
    limits = Limits(
        max_documents=args.max_documents,
        max_document_tokens=args.max_document_tokens,
        batch_wait_ms=args.batch_wait_ms,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
    )
    if args.ray:
        if args.judgments or args.queries or args.user:
            raise ValueError("--judgments, --queries and --user serve one machine's page: not with --ray")
        return _serve_on_ray(args, limits)
    app = create_app(
        _load(args),
        index=args.index,
        first_stage=args.first_stage,
        api_key=args.api_key,
        limits=limits,
        reports=args.report,
        users=dict(args.user),
        judgments=args.judgments,
        queries=args.queries,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    if args.json:
        print(json.dumps({"search_page": url, "eval_page": url + "eval" if args.report else None}), flush=True)
    else:
        print(
            f"finerank: search page at {url}" + (f" · evaluation page at {url}eval" if args.report else ""),
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def _check_port(host: str, port: int) -> None:
    """Fail before loading anything, and before printing a link, when the port is taken."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(
                f"cannot serve on {host}:{port}: {err.strerror or err} (is another server running there?)"
            ) from None


def _serve_on_ray(args: argparse.Namespace, limits) -> int:
    """The same app with its models in replicas on a Ray cluster, answered here until interrupted;
    then the replicas are removed."""
    import uvicorn

    from .server import replicas

    if args.max_replicas is not None and args.max_replicas < args.replicas:
        raise ValueError(f"--max-replicas ({args.max_replicas}) must be at least --replicas ({args.replicas})")
    reranker = _load(args)  # here first: a model that cannot load is one line now, not a failing replica
    load = _loader(args, reranker)
    del reranker
    app_options = dict(
        index=str(Path(args.index).resolve()) if args.index else None,
        first_stage=args.first_stage,
        api_key=args.api_key,
        limits=limits,
        reports=[str(Path(r).resolve()) for r in args.report],
    )
    front = replicas.deploy(
        args.ray,
        load,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        cpus_per_replica=args.replica_cpus,
        request_timeout_s=args.request_timeout,
        quiet=args.quiet,
        **app_options,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"finerank: {args.replicas} replica(s) on the Ray cluster at {args.ray}; "
        f"search page at http://{host}:{args.port}/ (Ctrl-C removes them)",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(front, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    finally:
        replicas.undeploy(args.ray)
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import train
    from .registry import ConvertedModel, PackagedModel

    if args.ray and not args.teacher:
        raise ValueError("--ray scores a teacher's targets on the cluster: give --teacher")
    spec = MODELS.get(args.base)
    base = str(spec.locate()) if isinstance(spec, (PackagedModel, ConvertedModel)) else args.base
    judged = None
    if args.judgments is not None:  # one index and its grades: train on the train share, hold out the rest
        if len(args.data) != 1 or args.data_kind != "labelled":
            raise ValueError("with --judgments, DATA is one index (labelled by your grades)")
        judged, dataset = _judged(args.data[0], args.judgments, "train")
        args.split = "train"
        groups = train.labelled_groups(
            dataset,
            judged,
            group_size=args.group_size,
            max_queries=args.max_queries,
            seed=args.seed,
            candidates=args.candidates,
        )
    else:
        groups = train.groups_from(
            args.data,
            args.data_kind,
            split=args.split,
            group_size=args.group_size,
            max_queries=args.max_queries,
            seed=args.seed,
            show_progress=not args.quiet,
            candidates=args.candidates,
        )
    if args.teacher:
        teacher = load_reranker(args.teacher)
        groups = train.with_teacher(
            groups,
            teacher,
            show_progress=not args.quiet,
            ray_address=args.ray,
            load=pinned_loader(args.teacher, teacher),
        )
    config = train.TrainConfig(
        base=base,
        output=args.out,
        loss=args.loss or ("kl" if args.teacher else "listwise"),
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_groups=args.batch_groups,
        learning_rate=args.lr,
        max_length=args.max_length,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
        best_window=args.best_window,
    )
    data = " + ".join(args.data)
    if not args.json:
        distilled = f", distilled from {args.teacher}" if args.teacher else ""
        print(f"training on {len(groups)} groups of {args.group_size} from {data} ({args.data_kind}{distilled})")
    try:
        result = train.train(groups, config, resume=args.resume, show_progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"interrupted: the checkpoint in {args.out}/checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
    out = train.export(config, result, f"{data} ({args.data_kind}, split {args.split}, {len(groups)} groups)")
    ev = None
    if args.eval:
        from .evaluate import evaluate_folder
        from .report import markdown, table

        ev = evaluate_folder(
            args.eval,
            load_reranker(out, max_length=args.max_length),
            split=args.eval_split,
            max_queries=args.eval_queries,
            show_progress=not args.quiet,
        )
        with open(out / "README.md", "a", encoding="utf-8") as card:
            card.write("\n## Evaluation\n\n" + markdown(ev).replace("# ", "### ", 1))
        if not args.json:
            print(table(ev))
    held = _held_out(args, judged, out) if judged is not None else None
    last = sum(result.losses[-20:]) / len(result.losses[-20:])
    record = {
        "model": str(out),
        "groups": len(groups),
        "steps": result.steps,
        "seconds": result.seconds,
        "pairs_per_s": result.pairs_per_s,
        "device": result.device,
        "loss": [result.losses[0], last],
        "evaluation": ev.to_json() if ev else None,
        "held_out": held,
    }
    _say(
        args,
        record,
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.pairs_per_s:.1f} pairs/s on "
        f"{result.device}); loss {result.losses[0]:.4f} -> {last:.4f}; model in {out}",
    )
    return 0


def _judged(index_folder: str, file: str, split: str):
    """The index and the grades given on its results (``file``, default the index's judgments.jsonl)
    as an evaluation dataset of ``split`` (all, train or test, the held-out share)."""
    from .judgments import Judgments

    store = Judgments(file) if file else Judgments.of_index(index_folder)
    if not store.read():
        raise ValueError(
            f"no judgments in {store.path}: grade results on the page of `finerank serve --index {index_folder}`, "
            f"or with `finerank judge {index_folder}`"
        )
    index = Index.load(index_folder)
    dataset = store.dataset(split, name=f"judgments-{Path(index_folder).resolve().name}")
    if not dataset.queries:
        raise ValueError(
            f"no query of split {split} in {store.path} has a grade above 0: grade the relevant results 1-3"
        )
    known = {d.id for d in index.documents}
    gone = sum(1 for grades in dataset.qrels.values() for d, g in grades.items() if g > 0 and d not in known)
    if gone:
        logger.warning(
            "%d relevant grades name documents %s no longer holds: nothing can find them", gone, index_folder
        )
    return index, dataset


def _held_out(args: argparse.Namespace, index: Index, model: Path) -> dict | None:
    """The trained model against the default second stage on the held-out judged queries (never
    trained on): each reranks the first stage's top ``--candidates``, and nDCG@10 is read on the
    condensed lists (unjudged documents left out, Sakai 2007), so a model that did not help build
    the judged pool is not counted wrong for the documents nobody graded. The paired test, the
    bootstrap interval and what they mean."""
    from .metrics import bootstrap_interval, ndcg, randomization_test, verdict

    try:
        _, dataset = _judged(args.data[0], args.judgments, "test")
    except ValueError:
        logger.warning("no held-out judged query yet: judge more queries to compare the model with the default")
        return None
    retriever = first_stage(index, "bm25")
    texts = list(dataset.queries.values())
    values, rankings = {}, {}
    for name, reranker in (
        ("default", load_reranker(DEFAULT_RERANKER)),
        ("model", load_reranker(model, max_length=args.max_length)),
    ):
        found = Pipeline(retriever, reranker).search_many(texts, candidates=args.candidates, top_k=args.candidates)
        rankings[name] = {r.query: [h.id for h in r.hits] for r in found}
        values[name] = [
            ndcg([d for d in rankings[name][text] if d in dataset.qrels[q]], dataset.qrels[q])
            for q, text in dataset.queries.items()
        ]
    a, b = values["default"], values["model"]
    gain = (sum(b) - sum(a)) / len(a)
    p_value, interval = randomization_test(a, b), bootstrap_interval(a, b)
    beats = gain > 0 and p_value < 0.05
    sentence = verdict(len(a), gain, interval, p_value, "the new model")
    said = (
        f"held out ({len(a)} judged queries it never trained on): nDCG@10 {sum(b) / len(b):.4f} against the "
        f"default {DEFAULT_RERANKER}'s {sum(a) / len(a):.4f}. {sentence}. "
        + (
            f"It beats the default (p < 0.05): use it with --reranker {model}."
            if beats
            else "It does not beat the default at p < 0.05: keep the default."
        )
    )
    if not args.json:
        print(said)
    return {
        "queries": len(a),
        "default": sum(a) / len(a),
        "model": sum(b) / len(b),
        "gain": gain,
        "p_value": p_value,
        "interval": list(interval),
        "beats_default": beats,
        "verdict": said,
        "rankings": rankings,  # per model, each held-out query's reranked candidates, best first
    }


def _load(args: argparse.Namespace):
    return load_reranker(args.reranker or DEFAULT_RERANKER, kind=args.kind, **_reranker_settings(args))


def _cheap(args: argparse.Namespace, reranker):
    """The --cheap stage of a cascade, when there is a reranker after it."""
    return load_reranker(args.cheap) if args.cheap and reranker is not None else None


def _reranker_settings(args: argparse.Namespace) -> dict:
    options = {"backend": args.backend, "precision": args.precision, "max_chunks_per_doc": args.max_chunks_per_doc}
    if getattr(args, "fuse", None) is not None:
        options["fusion"] = Fusion("minmax", args.fuse)
    if args.max_length:
        options["max_length"] = args.max_length
    return options | {k: v for k in ("template", "instruction") if (v := getattr(args, k)) is not None}


def _loader(args: argparse.Namespace, reranker) -> functools.partial:
    """A function that loads ``reranker`` again elsewhere (a Ray worker or replica)."""
    return pinned_loader(args.reranker or DEFAULT_RERANKER, reranker, kind=args.kind, **_reranker_settings(args))


def _calibrate(args: argparse.Namespace) -> int:
    from .evaluate import calibrate

    reranker = _load(args)
    if isinstance(reranker, ByLanguage):
        raise ValueError(
            f"{reranker.name} routes queries to several models: calibrate one model at a time (name it with --reranker)"
        )
    path, fitted_on, checks = calibrate(
        args.dataset,
        reranker.scorer,
        split=args.split,
        method=args.method,
        candidates=args.candidates,
        max_queries=args.max_queries,
        check_split=args.check_split,
        threshold=args.threshold,
        show_progress=not args.quiet,
    )
    lines = [f"calibrated {reranker.scorer.name} ({args.method}) on {fitted_on}; stored in {path}"]
    lines += [
        f"{split}: probability >= {args.threshold} keeps {q['kept']:.1%} of candidates, "
        f"precision {q['precision']:.3f}, recall {q['recall']:.3f}"
        for split, q in checks
    ]
    record = {
        "model": reranker.scorer.name,
        "method": args.method,
        "fitted_on": fitted_on,
        "stored": str(path),
        "threshold": args.threshold,
        "checks": dict(checks),
    }
    _say(args, record, "\n".join(lines))
    return 0


def _index(args: argparse.Namespace) -> int:
    if args.add or args.delete:
        if args.corpus:
            raise ValueError("give a corpus to build an index, or --add/--delete to update the one in --out, not both")
        added = list(read_corpus(args.add, skip_invalid=args.skip_invalid)) if args.add else []
        deleted = list(dict.fromkeys(args.delete))
        index = Index.load(args.out)
        encoder = encoder_of(index) if added and index.vectors is not None else None
        # load, change and save under the index's writer lock: concurrent updates queue, none is lost
        old, new = Index.edit(args.out, add=added, delete=deleted, encoder=encoder, show_progress=not args.quiet)
        _say(
            args,
            {"index": args.out, "before": len(old), "after": len(new), "added": len(added), "deleted": len(deleted)},
            f"updated {args.out}: {len(old)} -> {len(new)} documents "
            f"({len(added)} added or replaced, {len(deleted)} deleted)",
        )
        return 0
    if not args.corpus:
        raise ValueError("name a corpus to index (or use --add/--delete to update an index)")
    documents = list(read_corpus(args.corpus, skip_invalid=args.skip_invalid))
    encoder = None
    if args.dense:
        name = encoder_for(d.content for d in documents) if args.dense == "auto" else args.dense
        window = {} if args.dense_window is None else {"document_window": args.dense_window}
        encoder = load_encoder(name, query_prefix=args.query_prefix, document_prefix=args.document_prefix, **window)
    index = Index.build(
        documents,
        analyzer=args.analyzer,
        k1=args.k1,
        b=args.b,
        encoder=encoder,
        ann=args.ann,
        show_progress=not args.quiet,
    )
    index.save(args.out)
    windows = ""
    if encoder and encoder.document_window:
        whole = " and the whole text of each longer document" if encoder.whole_document else ""
        windows = f", {len(index.vectors.vectors)} rows: windows of {encoder.document_window} tokens{whole}"
    dense = (
        f" + {index.vectors.ann} {index.vectors.dimension}-d vectors from {encoder.name}{windows}" if encoder else ""
    )
    record = {
        "index": args.out,
        "documents": len(index),
        "first_stage": BM25(index).name,
        "dense": None
        if not encoder
        else {
            "model": encoder.name,
            "rows": len(index.vectors.vectors),
            "window": encoder.document_window,
            "ann": index.vectors.ann,
        },
    }
    _say(args, record, f"indexed {len(index)} documents into {args.out} ({BM25(index).name}{dense})")
    return 0


def _judge(args: argparse.Namespace) -> int:
    """Grades in the terminal: per query the pooled results of the first stage and the reranked
    list, one at a time (a digit 0-3; Enter skips; q stops), into the same store as the page's."""
    from .judgments import GRADES, Judgments, disagreement, next_query, pool, read_query_log

    index = Index.load(args.index)
    store = Judgments(args.judgments) if args.judgments else Judgments.of_index(args.index)
    if args.export or args.import_from:
        if args.import_from:
            known = {d.id for d in index.documents}
            added = store.import_beir(args.import_from, args.import_split, args.user or "import", known)
            _say(args, {"imported": added, "judgments": str(store.path)}, f"{added} grades added to {store.path}")
        if args.export:
            folder = store.export(args.export, index.documents)
            _say(args, {"exported": str(folder)}, f"{len(store.read())} grades written as a BEIR folder: {folder}")
        return 0
    pipeline = Pipeline(first_stage(index, args.first_stage), _load(args), candidates=100, top_k=args.depth)
    queries, rankings, graded, seen = read_query_log(args.queries) if args.queries else [], {}, 0, set()

    def ranking(query: str):
        if query not in rankings:
            rankings[query] = pipeline.search(query)
        return rankings[query]

    scale = ", ".join(f"{g} {word}" for g, word in GRADES.items())
    try:
        while True:
            if queries:
                query = next_query(queries, seen | set(store.grades()), lambda q: disagreement(ranking(q)))
                if query is None:
                    print("every query of the file is judged")
                    break
            else:
                query = input("query (Enter to stop): ").strip()
                if not query:
                    break
            seen.add(query)
            done = store.grades().get(query, {})
            todo = [h for h in pool(ranking(query), args.depth) if h.id not in done]
            print(f"\n{query}: {len(todo)} results to grade ({scale}; Enter skips, q stops)")
            for i, hit in enumerate(todo, 1):
                text = " ".join(f"{hit.document.title} {hit.document.text}".split())
                print(f"\n[{i}/{len(todo)}] {hit.id}: {text[:400]}")
                answer = None
                while answer not in ("0", "1", "2", "3", "", "q"):
                    answer = input("grade> ").strip().lower()
                if answer == "q":
                    raise EOFError
                if answer:
                    store.add(query, hit.id, int(answer), args.user)
                    graded += 1
    except (EOFError, KeyboardInterrupt):
        print()
    print(f"{graded} grades stored in {store.path}; compare the stages with: finerank eval {args.index} --judgments")
    return 0


def _search(args: argparse.Namespace) -> int:
    index = Index.load(args.index)
    retriever = first_stage(index, args.first_stage)
    reranker, start = None, time.perf_counter()
    if not args.no_rerank:
        try:
            reranker = _load(args)
        except MissingDependencyError as err:
            if args.reranker is not None:
                raise
            logger.warning("no reranker: %s (showing the first stage only; --no-rerank hides this)", err)
    pipeline = Pipeline(
        retriever, reranker, candidates=args.candidates, top_k=args.top_k, cheap=_cheap(args, reranker), keep=args.keep
    )
    if isinstance(reranker, ByLanguage):
        reranker.route(args.query)  # a per-language reranker loads the query's route at its first use: count it here
    loading = time.perf_counter() - start  # the models' load (and, once per model and CPU, the backends' measurement)
    ranking = pipeline.search(args.query, filter=args.filter, min_score=args.min_score, budget_ms=args.budget_ms)
    timings = {"load": loading, **ranking.timings}
    if args.json:
        print(
            json.dumps(
                _ranking_json(ranking) | {"timings_ms": {k: v * 1000 for k, v in timings.items()}},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
        print(f"first stage: {ranking.first_stage}; reranker: {ranking.reranker or 'none'} ({stages})")
        _print_hits(ranking.hits)
        if not ranking.hits:
            print(f"no results: {ranking.note or 'the first stage found no candidates'}")
    return 0


def _rerank(args: argparse.Namespace) -> int:
    documents = read_documents(args.docs)
    reranker = _load(args)
    hits = rerank(reranker, args.query, documents, args.top_k)
    if args.json:
        print(
            json.dumps(
                {"query": args.query, "reranker": reranker.name, "hits": [_hit_json(h) for h in hits]},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        print(f"reranker: {reranker.route(args.query, required=True).scorer!r}")
        _print_hits(hits)
    return 0


def _rerank_run(args: argparse.Namespace) -> int:
    from .batch import rerank_run
    from .corpus import read_queries, read_run

    _check_writable(args.out)
    run, queries = read_run(args.run), read_queries(args.queries)
    documents = {d.id: d for d in read_corpus(args.corpus)}
    reranker = _load(args)
    out = rerank_run(
        run,
        queries,
        documents,
        reranker,
        args.out,
        depth=args.depth,
        shard_size=args.shard_size,
        tag=args.tag,
        show_progress=not args.quiet,
        ray_address=args.ray,
        load=_loader(args, reranker),
        workers=args.workers,
        start_timeout_s=args.start_timeout,
    )
    _say(
        args,
        {"out": str(out), "queries": len(run), "depth": args.depth},
        f"wrote {out}: {len(run)} queries, top {args.depth} reranked",
    )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .evaluate import dev_quality

    cpu = tuning.cpu_key(args.threads)
    installed = {name: tuning.installed(name) for name in BACKENDS}
    # loaded in fp32 (not measured on loading); the measurement, or its cached result, follows
    options = {k: v for k, v in (("threads", args.threads), ("max_length", args.max_length)) if v}
    reranker = load_reranker(
        args.reranker or DEFAULT_RERANKER,
        kind=args.kind,
        backend="torch" if args.kind == "llm" else "auto",
        precision="fp32",
        **options,
    )
    stages = reranker.stages().values() if isinstance(reranker, ByLanguage) else [reranker]
    scorers = [stage.scorer for stage in stages if stage is not None]
    record = {"cpu": cpu, "backends": installed, "models": []}
    quality = dev_quality(args.dataset, args.split, args.queries, args.candidates) if args.dataset else None
    for scorer in scorers:
        if isinstance(scorer, LLMReranker):  # torch only
            record["models"].append(
                {"model": scorer.name, "choice": [scorer.backend_name, scorer.precision], "trials": []}
            )
            continue
        choice, trials = tuning.choose(scorer, args.threads, again=args.again, quality=quality)
        record["models"].append(
            {
                "model": scorer.name,
                "choice": list(choice),
                "measured": bool(trials),
                "trials": [dataclasses.asdict(t) for t in trials or tuning.last_trials(scorer, args.threads)],
                "verdicts": str(tuning.verdicts_file(scorer)) if quality else None,
            }
        )
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"CPU: {cpu}")
    print("backends: " + ", ".join(f"{n} {'installed' if ok else 'not installed'}" for n, ok in installed.items()))
    for model in record["models"]:
        print(
            f"\n{model['model']}: {' '.join(model['choice'])}"
            + (
                ""
                if not model["trials"]
                else " (the fastest "
                + (
                    f"within {tuning.MAX_NDCG_LOSS} nDCG@10 of fp32 on {args.dataset} {args.split}"
                    if args.dataset
                    else f"with Kendall tau >= {tuning.MIN_TAU} against fp32 on a sample request"
                )
                + ")"
            )
        )
        for t in model["trials"]:
            verdict = f"error: {t['error']}" if t["error"] else f"{t['pairs_per_s']:7.1f} pairs/s  tau {t['tau']:.3f}"
            if not t["error"] and t["ndcg"] == t["ndcg"]:
                verdict += f"  nDCG@10 {t['ndcg']:.4f} ({-t['ndcg_loss']:+.4f})"
            print(f"  {t['backend']:9} {t['precision']:5} {verdict}")
        if model.get("verdicts"):
            print(f"the nDCG@10 verdicts, kept for `auto` on any CPU the model goes to: {model['verdicts']}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    corpus = resources.files("finerank") / "data" / "demo.jsonl"
    with resources.as_file(corpus) as path:
        index = Index.build(read_corpus(path))
    reranker = _load(args)
    pipeline = Pipeline(BM25(index), reranker, candidates=10, top_k=5)
    results = [pipeline.search(query) for query in DEMO_QUERIES]
    if args.json:
        out = [
            {
                "query": r.query,
                "reranker": r.reranker,
                "first_stage": [_hit_json(h) for h in r.candidates[:5]],
                "reranked": [_hit_json(h) for h in r.hits],
            }
            for r in results
        ]
        print(json.dumps({"reranker": reranker.name, "examples": out}, ensure_ascii=False, indent=2))
        return 0
    print(
        f"finerank demo: BM25 recalls 10 candidates from {len(index)} shipped documents, "
        f"then {reranker.name} reorders them."
    )
    if args.reranker is None:
        print(
            f"(default second stage: {MODELS[DEFAULT_RERANKER].description}; "
            "pass --reranker MODEL_DIR for a cross-encoder)"
        )
    for ranking in results:
        query, first, reranked = ranking.query, ranking.candidates[:5], ranking.hits
        print(f"\nquery: {query}    (reranked by {ranking.reranker or 'nothing: first-stage order kept'})")
        print(f"  {_pad('BM25 (first stage)', 48)}  reranked")
        for a, b in zip(first, reranked):
            left = f"{a.rank}. {_snippet(a.document.text, 42)}"
            right = f"{b.rank}. {_snippet(b.document.text, 42)}  ({_was(b)}, score {b.score:.3f})"
            print(f"  {_pad(left, 48)}  {right}")
    return 0


def _say(args: argparse.Namespace, record: dict, text: str) -> None:
    """A command's result: ``record`` as JSON with --json, else ``text``."""
    print(json.dumps(record, ensure_ascii=False, indent=2) if args.json else text)


def _was(hit: Hit) -> str:
    return "same" if hit.rank == hit.original_rank else f"was {hit.original_rank}"


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _snippet(text: str, width: int) -> str:
    """The text on one line, cut to ``width`` columns (CJK characters take two); linear time."""
    text = " ".join(text[: 4 * width].split())  # a long document: only its start can show
    if _width(text) <= width:
        return text
    used = 0
    for end, c in enumerate(text):
        used += 2 if unicodedata.east_asian_width(c) in "WF" else 1
        if used > width - 1:
            return text[:end] + "…"
    return text


def _print_hits(hits: Sequence[Hit]) -> None:
    print(f"{'rank':<12} {'score':>8}  {'id':<14} snippet")
    for h in hits:
        rank = f"{h.rank} ({'same' if h.rank == h.original_rank else f'was {h.original_rank}'})"
        print(f"{rank:<12} {h.score:>8.4f}  {_snippet(h.id, 14):<14} {_snippet(h.document.content, 70)}")


def _hit_json(h: Hit) -> dict:
    d = h.document
    return {
        "id": d.id,
        "rank": h.rank,
        "original_rank": h.original_rank,
        "score": h.score,
        "title": d.title,
        "text": d.text,
        "metadata": dict(d.metadata),
    }


def _ranking_json(r: Ranking) -> dict:
    return {
        "query": r.query,
        "first_stage": r.first_stage,
        "reranker": r.reranker,
        "timings_ms": {k: v * 1000 for k, v in r.timings.items()},
        "hits": [_hit_json(h) for h in r.hits],
        "note": r.note,
    }


if __name__ == "__main__":
    sys.exit(main())
