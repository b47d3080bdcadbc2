"""Every language side by side: BM25 as version 2 analysed it (every language as English),
BM25 with each language's own analysis, multilingual-e5-small dense and hybrid first stages, and
the default second stage (``auto``: routed per query language) over BM25's top 30, with Hit@1
and latency. Settings are chosen on these dev splits; other XQuAD articles and languages are
held out.

    python benchmarks/languages.py [--sets xquad-ru xquad-th ...] [--weights 0.3 0.5 0.7] [--window 32 --whole] [--json]
    python benchmarks/languages.py --build-cost scifact --before /tmp/old/src   # indexing English, now and before
    python benchmarks/languages.py --cross zh ar hi de   # these languages' questions -> English paragraphs

Per set: one index (BM25 + e5 vectors) built once under ``--cache``. Rows: ``BM25 v2`` (the
analysis before version 3), ``BM25``, ``dense (e5)``, ``hybrid`` (BM25 + e5, min-max, equal
weights), ``default`` (BM25 top ``--candidates`` -> auto, naming the route each query took),
and with ``--weights`` BM25 -> e5-fused at each weight. ``--cross`` instead searches the English
paragraphs with each language's questions (XQuAD's ids align) by dense search only, reading
paragraphs in 32-token windows, whole, and both (the default: half the best window, half the
whole text). The ``p vs BM25`` column is the paired
randomization test of per-query nDCG@10 against BM25. Latency: p50 ms of the whole search
(first stage + second stage; the bi-encoders read the stored vectors where the index has the
route's model's vectors, else they encode the candidates).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from finerank import BM25, Dense, Fusion, Hybrid, Index, Pipeline, SecondStage, load_encoder, load_reranker, read_corpus
from finerank.evaluate import load_dataset

sys.path.insert(0, str(Path(__file__).parent))
from chinese import DATASETS, paired, run  # noqa: E402 - the same harness as the Chinese benchmark

SETS = [f"xquad-{lang}" for lang in ("en", "zh", "de", "es", "ru", "ar", "hi", "th", "tr")] + ["xquad-de2en"]


def index_of(name: str, cache: Path, encoder, analyzer: str) -> Index:
    path = cache / f"{name}-{analyzer}-{encoder.name if encoder else 'bm25'}-w{getattr(encoder, 'document_window', 0)}"
    try:
        return Index.load(path)
    except Exception:
        index = Index.build(read_corpus(DATASETS / name), analyzer=analyzer, encoder=encoder)
        index.save(path)
        return index


BUILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from finerank import Index, read_corpus
docs = list(read_corpus(sys.argv[2]))
start = time.perf_counter()
index = Index.build(docs)
print(time.perf_counter() - start, index._tokens.nbytes, len(index.bm25.vocab_dict))
"""


def build_cost(name: str, before: Path | None) -> None:
    """Seconds to build BM25 over a corpus (the median of three builds, each in a fresh process),
    with this checkout and, given ``before`` (the ``src`` folder of another checkout, e.g.
    ``git worktree add /tmp/old ca860e4``), with that one, alternating."""
    import subprocess

    sources = {"now": Path(__file__).resolve().parents[1] / "src", **({f"before ({before})": before} if before else {})}
    runs: dict = {label: [] for label in sources}
    for _ in range(3):
        for label, src in sources.items():
            out = subprocess.run(
                [sys.executable, "-c", BUILD, str(src), str(DATASETS / name)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[label].append([float(x) for x in out.stdout.split()])
    for label, found in runs.items():
        print(
            f"{name}, {label}: {np.median([r[0] for r in found]):.2f} s, "
            f"{found[0][1] / 1e6:.2f} MB of tokens, {int(found[0][2])} terms"
        )


def cross_lingual(langs: list[str], split: str, max_queries: int | None) -> None:
    """Dense search of the English paragraphs with each language's questions, per way of reading a paragraph."""
    readings = {
        "windows (32 tokens)": {"whole_document": 0.0},
        "whole paragraph": {"document_window": 0},
        "both: 0.5 x best window + 0.5 x whole (default)": {},
    }
    docs = list(read_corpus(DATASETS / "xquad-en"))
    rows: dict = {}
    for title, options in readings.items():
        encoder = load_encoder("multilingual-e5-small", **options)
        dense = Dense(Index.build(docs, encoder=encoder), encoder)
        for lang in langs:
            dataset = load_dataset(DATASETS / f"xquad-{lang}", split, max_queries)
            rows.setdefault(f"{lang} -> en", {})[title] = run(Pipeline(dense, None, top_k=10).search, dataset)
    print(f"\n### Questions -> English paragraphs, dense (multilingual-e5-small, XQuAD {split})\n")
    print("| questions | " + " | ".join(readings) + " |\n|---|" + "---|" * len(readings))
    for pair, by in rows.items():
        print(f"| {pair} | " + " | ".join(f"{r['ndcg@10']:.4f} / {r['hit@1']:.3f}" for r in by.values()) + " |")
    print("\nnDCG@10 / Hit@1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=SETS)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--weights", type=float, nargs="*", default=[], help="also BM25 -> e5-fused at these weights")
    parser.add_argument(
        "--window", type=int, help="e5 reads documents in windows of this many tokens (default: the model's)"
    )
    parser.add_argument("--max-queries", type=int)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/finerank-languages"))
    parser.add_argument(
        "--build-cost", metavar="SET", help="only time indexing this set (BM25), here and with --before"
    )
    parser.add_argument("--before", type=Path, help="with --build-cost: the src folder of another checkout to time too")
    parser.add_argument(
        "--cross",
        nargs="+",
        metavar="LANG",
        help="only dense search of the English paragraphs with these languages' questions",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.build_cost:
        return build_cost(args.build_cost, args.before)
    if args.cross:
        return cross_lingual(args.cross, args.split, args.max_queries)
    e5 = load_encoder(
        "multilingual-e5-small", cache_size=100_000, **({} if args.window is None else {"document_window": args.window})
    )
    default = load_reranker()
    results = {}
    for name in args.sets:
        dataset = load_dataset(DATASETS / name, args.split, args.max_queries)
        old, index = index_of(name, args.cache, None, "auto-v2"), index_of(name, args.cache, e5, "auto")
        bm25 = BM25(index)
        whole = lambda text, ranking: sum(ranking.timings.values())  # noqa: E731
        rows = {
            "BM25 v2 (every language as English)": run(Pipeline(BM25(old), None, top_k=10).search, dataset),
            "BM25": run(Pipeline(bm25, None, top_k=10).search, dataset),
        }
        rows["dense (e5)"] = run(Pipeline(Dense(index, e5), None, top_k=10).search, dataset)
        rows["hybrid (BM25 + e5, min-max 0.5)"] = run(
            Pipeline(Hybrid(bm25, Dense(index, e5)), None, top_k=10).search, dataset
        )
        routes: Counter = Counter()
        pipeline = Pipeline(bm25, default, candidates=args.candidates, top_k=10)

        def routed(text: str, pipeline=pipeline, routes=routes):
            ranking = pipeline.search(text)
            routes[ranking.reranker or "none (first stage order)"] += 1
            return ranking

        rows[f"default (BM25 top {args.candidates} -> auto)"] = run(routed, dataset, whole) | {"routes": dict(routes)}
        for weight in args.weights:
            stage = SecondStage(e5, Fusion("minmax", weight))
            rows[f"BM25 top {args.candidates} -> e5-fused w={weight}"] = run(
                Pipeline(bm25, stage, candidates=args.candidates, top_k=10).search, dataset, whole
            )
        base = rows["BM25"]["per_query"]
        for row in rows.values():
            row["p vs BM25"] = paired(base, row["per_query"]) if row["per_query"] is not base else None
        results[f"{name} ({args.split}, {len(dataset.queries)} queries)"] = rows
        print(f"{name} done", file=sys.stderr, flush=True)
    for rows in results.values():
        for row in rows.values():
            del row["per_query"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for title, rows in results.items():
        print(f"\n### {title}\n\n| method | nDCG@10 | Hit@1 | p50 ms | p vs BM25 |\n|---|---|---|---|---|")
        for method, r in rows.items():
            p = "" if r["p vs BM25"] is None else f"{r['p vs BM25']:.4f}"
            extra = f" ({', '.join(f'{k}: {v}' for k, v in r['routes'].items())})" if "routes" in r else ""
            print(f"| {method}{extra} | {r['ndcg@10']:.4f} | {r['hit@1']:.3f} | {r['p50_ms']:.1f} | {p} |")


if __name__ == "__main__":
    main()
