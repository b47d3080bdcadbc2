r"""Chinese (Simplified and Traditional) and English side by side: first stages and candidate
default second stages, chosen on train/dev splits, reported on test splits.

    python benchmarks/chinese.py [--max-queries N] [--cache /tmp/finerank-zh] [--json]
    python benchmarks/chinese.py --cross-encoder /tmp/ce/zh-bw --splits test --max-queries 1000 \
        --no-first-stages --max-chunks-per-doc 3
    python benchmarks/chinese.py ... --skip-queries 1000 --max-queries 500 --per-query b.json   # a later slice
    # slices of a split as one table, tested over all their queries:
    python benchmarks/chinese.py --combine a.json b.json
    # random slices:
    python benchmarks/chinese.py ... --shuffle 13 --skip-queries 250 --max-queries 250 --only-cascade \
        --per-query s1.json

Per dataset, one index (BM25 + multilingual-e5-small vectors, as ``finerank index --dense``
builds for a Chinese corpus: one vector per 32-token window) is built once under ``--cache``.
Rows: BM25, dense (e5), hybrid (RRF, and min-max at three weights), and BM25 top-100 reranked
by each candidate second stage through ``Pipeline`` (the bi-encoders read the stored vectors, so
only the query is encoded, once: the encoder caches
query embeddings across rows). The e5-fused weight is chosen on the train splits (CMRC trial
questions, DRCD dev questions); test splits are only reported. Latency: p50 ms per query of the
rerank stage (of the first stage for first-stage rows), the first row to encode a query pays
for it. ``--minilm`` adds the English default (it encodes 100 candidates per query: slow).
``--cross-encoder MODEL`` adds a cross-encoder (e.g. one ``finerank train`` made from
multilingual-e5-small on the Chinese train splits), read once per (question, paragraph) and
reused by its rows: alone and fused with BM25 over BM25's top ``--ce-candidates``, and as the
last stage of a cascade (``Pipeline(..., cheap=the default, keep=--ce-candidates)``: BM25 top
100 -> the default e5-fused -> its top ``--ce-candidates`` -> the cross-encoder fused with
e5-fused's scores). Its fusion weight is 0.5, fixed beforehand: the
train splits it could be chosen on are the ones it was trained on. Each cross-encoder row is
tested (paired randomization test on per-query nDCG@10) against the default, BM25 top 100 ->
e5-fused w=0.7, and against e5-fused w=0.5 over the same top ``--ce-candidates``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from finerank import (
    BM25,
    Dense,
    Fusion,
    Hybrid,
    Index,
    Pipeline,
    Scorer,
    SecondStage,
    load_encoder,
    load_reranker,
    read_corpus,
)
from finerank.evaluate import load_dataset
from finerank.metrics import per_query, randomization_test

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = {"cmrc2018-dev-retrieval": ("train", "test"), "drcd-retrieval": ("train", "test")}
WEIGHTS = (0.3, 0.5, 0.7, 0.9)


def index_of(key: str, name: str, cache: Path, encoder) -> Index:
    path = cache / key
    try:
        return Index.load(path)
    except Exception:
        index = Index.build(read_corpus(DATASETS / name), encoder=encoder, show_progress=True)
        index.save(path)
        return index


def run(search, dataset, latency=None) -> dict:
    """``search(text)`` (a Ranking) over the split's queries; ``latency(text, ranking)`` seconds
    (default: the rerank stage's, else the first stage's)."""
    ranked, seconds = {}, []
    for qid, text in dataset.queries.items():
        ranking = search(text)
        ranked[qid] = [h.id for h in ranking.hits]
        seconds.append(
            latency(text, ranking) if latency else ranking.timings.get("rerank", ranking.timings["first_stage"])
        )
    values = per_query(ranked, dataset.qrels)  # once: the means and the paired tests both read it
    means = {metric: float(np.mean(list(values[metric].values()))) for metric in ("ndcg@10", "hit@1", "hit@3")}
    return means | {"p50_ms": 1000 * float(np.median(seconds)), "per_query": values["ndcg@10"]}


def against(row: dict, **bases: dict) -> dict:
    """``row`` with the paired randomization test of its per-query nDCG@10 against each base's."""
    return row | {f"p vs {name}": paired(base["per_query"], row["per_query"]) for name, base in bases.items()}


def paired(base: dict, row: dict) -> float:
    """The randomization test of two rows' per-query nDCG@10 (query id -> value), paired by query."""
    return randomization_test([base[q] for q in row], list(row.values()))


def combine(files: list[Path]) -> None:
    """One table per set from ``--per-query`` files of several slices of its split: each row's
    mean nDCG@10 over all their queries and its paired test against the default's."""
    merged: dict = {}
    for file in files:
        for title, rows in json.loads(file.read_text()).items():
            for method, values in rows.items():
                merged.setdefault(title, {}).setdefault(method, {}).update(values)
    for title, rows in merged.items():
        default = next((v for m, v in rows.items() if m.endswith("(the default)")), None)
        print(
            f"\n### {title}, {len(next(iter(rows.values())))} queries from {len(files)} file(s)\n\n"
            "| method | nDCG@10 | p vs default |\n|---|---|---|"
        )
        for method, values in rows.items():
            p = f"{paired(default, values):.4f}" if default is not None and values is not default else ""
            print(f"| {method} | {np.mean(list(values.values())):.4f} | {p} |")


class ReadOnce(Scorer):
    """A cross-encoder whose raw score of each (query, window) is computed once and reused, so
    its rows cost one pass (a pass is 30 min per 1,000 DRCD questions on 2 cores). Windows,
    pooling and calibration are the model's. ``seconds[query]``: the time its model took on the
    query's first read (``--ce-candidates`` texts), which every row of it reports."""

    def __init__(self, scorer: Scorer):
        self.scorer, self.name, self.calibration, self.memo, self.seconds = (
            scorer,
            scorer.name,
            scorer.calibration,
            {},
            {},
        )

    def windows(self, query: str, texts, max_chunks_per_doc=None):
        return self.scorer.windows(query, texts, max_chunks_per_doc)

    def pool(self, window_scores, counts):
        return self.scorer.pool(window_scores, counts)

    def squash(self, raw):
        return self.scorer.squash(raw)

    def raw_scores(self, requests) -> np.ndarray:
        for query, pieces in requests:
            new = [p for p in dict.fromkeys(pieces) if (query, p) not in self.memo]
            if new:
                start = time.perf_counter()
                scores = self.scorer.raw_scores([(query, new)])
                self.seconds.setdefault(query, time.perf_counter() - start)
                self.memo.update({(query, p): s for p, s in zip(new, scores)})
        return np.array([self.memo[query, p] for query, pieces in requests for p in pieces], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--skip-queries", type=int, default=0, help="leave out the split's first N judged queries")
    parser.add_argument(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="take the split's questions in this seed's random order before"
        " --skip/--max-queries, so every slice (and any first K slices) is a random sample of the split",
    )
    parser.add_argument(
        "--only-cascade",
        action="store_true",
        help="of the cross-encoder's rows, only the cascade (it reads half the pairs)",
    )
    parser.add_argument(
        "--per-query", type=Path, help="also write each row's per-query nDCG@10 here (JSON), for --combine"
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        help="only combine these --per-query files of slices of a split into one table",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/finerank-zh"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--minilm", action="store_true", help="also BM25 -> minilm-fused (encodes every candidate)")
    parser.add_argument(
        "--cross-encoder",
        help="also this cross-encoder over BM25's top --ce-candidates (alone, fused) and after the default",
    )
    parser.add_argument("--ce-candidates", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=256, help="the cross-encoder's tokens per pair")
    parser.add_argument(
        "--max-chunks-per-doc", type=int, default=1, help="the cross-encoder reads a longer text as up to N windows"
    )
    parser.add_argument("--splits", choices=("both", "train", "test"), default="both")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument(
        "--window",
        type=int,
        help="e5 reads documents in windows of this many tokens (default: the model's, 32; 0: whole)",
    )
    parser.add_argument("--no-first-stages", action="store_true", help="skip the first-stage and e5 weight rows")
    args = parser.parse_args()
    if args.combine:
        return combine(args.combine)
    window = {} if args.window is None else {"document_window": args.window}
    e5 = load_encoder("multilingual-e5-small", cache_size=100_000, **window)  # also the scorer: one embedding per query
    minilm = load_reranker("minilm-fused") if args.minilm else None
    ce = (
        ReadOnce(
            load_reranker(
                args.cross_encoder, max_length=args.max_length, max_chunks_per_doc=args.max_chunks_per_doc
            ).scorer
        )
        if args.cross_encoder
        else None
    )
    results, per_set = {}, {}
    for name in args.sets:
        choose, report = SETS[name]
        index = index_of(f"{name}-w{e5.document_window}", name, args.cache, e5)
        bm25 = BM25(index)
        for split in {"both": (choose, report), "train": (choose,), "test": (report,)}[args.splits]:
            dataset = load_dataset(DATASETS / name, split)
            kept = list(dataset.queries)
            if args.shuffle is not None:  # questions come grouped by article: a file-order slice is no sample
                kept = [kept[i] for i in np.random.default_rng(args.shuffle).permutation(len(kept))]
            kept = kept[args.skip_queries :][: args.max_queries]  # the slice this run measures
            dataset = dataclasses.replace(
                dataset, queries={q: dataset.queries[q] for q in kept}, qrels={q: dataset.qrels[q] for q in kept}
            )
            rows = {"BM25": run(Pipeline(bm25, None, top_k=10).search, dataset)}
            if ce is not None:
                n, half = args.ce_candidates, Fusion("minmax", 0.5)
                e5_default = SecondStage(e5, Fusion("minmax", 0.7))
                default = rows["BM25 top 100 -> e5-fused w=0.7 (the default)"] = run(
                    Pipeline(bm25, e5_default, top_k=10).search, dataset
                )
                base = rows[f"BM25 top {n} -> e5-fused w=0.5"] = run(
                    Pipeline(bm25, SecondStage(e5, half), candidates=n, top_k=10).search, dataset
                )
                model_time = lambda text, ranking: ce.seconds.get(text, 0.0)  # noqa: E731 (the model's time, whichever row paid it)
                alone = (
                    ()
                    if args.only_cascade
                    else (
                        (f"BM25 top {n} -> cross-encoder alone", ce),
                        (f"BM25 top {n} -> cross-encoder fused w=0.5", SecondStage(ce, half)),
                    )
                )
                for title, stage in alone:
                    rows[title] = against(
                        run(Pipeline(bm25, stage, candidates=n, top_k=10).search, dataset, model_time),
                        default=default,
                        **{"e5-fused w=0.5": base},
                    )
                cascade = Pipeline(bm25, SecondStage(ce, half), top_k=10, cheap=e5_default, keep=n)
                rows[f"BM25 top 100 -> default -> top {n} -> cross-encoder fused w=0.5 with it"] = against(
                    run(cascade.search, dataset, model_time), default=default, **{"e5-fused w=0.5": base}
                )
            if not args.no_first_stages:
                rows |= {
                    "BM25 -> e5 alone": run(Pipeline(bm25, e5, top_k=10).search, dataset),
                    "dense (e5)": run(Pipeline(Dense(index, e5), None, top_k=10).search, dataset),
                    "hybrid (BM25 + e5, RRF)": run(
                        Pipeline(Hybrid(bm25, Dense(index, e5), method="rrf"), None, top_k=10).search, dataset
                    ),
                }
                for weight in WEIGHTS[:3]:
                    hybrid = Hybrid(bm25, Dense(index, e5), method="minmax", weight=weight)
                    rows[f"hybrid (BM25 + e5, min-max w={weight})"] = run(
                        Pipeline(hybrid, None, top_k=10).search, dataset
                    )
                if minilm is not None:
                    rows["BM25 -> minilm-fused"] = run(Pipeline(bm25, minilm, top_k=10).search, dataset)
                for weight in WEIGHTS:
                    rows[f"BM25 -> e5-fused w={weight}"] = run(
                        Pipeline(bm25, SecondStage(e5, Fusion("minmax", weight)), top_k=10).search, dataset
                    )
            order = f" in seed {args.shuffle}'s order" if args.shuffle is not None else ""
            part = (
                f", queries {args.skip_queries + 1}-{args.skip_queries + len(dataset.queries)}{order}"
                if args.skip_queries or order
                else ""
            )
            results[f"{name} ({split}{part})"] = rows
            per_set[f"{name} ({split})"] = {method: r["per_query"] for method, r in rows.items()}
            print(f"{name} ({split}, {len(dataset.queries)} queries) done", flush=True)
    if args.per_query:
        args.per_query.write_text(json.dumps(per_set))
    for rows in results.values():
        for r in rows.values():
            del r["per_query"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for title, rows in results.items():
        print(
            f"\n### {title}\n\n| method | nDCG@10 | Hit@1 | Hit@3 | p50 ms | p vs default | p vs e5-fused w=0.5 |\n"
            "|---|---|---|---|---|---|---|"
        )
        for method, r in rows.items():
            p = " | ".join(f"{r[k]:.4f}" if k in r else "" for k in ("p vs default", "p vs e5-fused w=0.5"))
            print(f"| {method} | {r['ndcg@10']:.4f} | {r['hit@1']:.4f} | {r['hit@3']:.4f} | {r['p50_ms']:.1f} | {p} |")
    if ce is not None:
        print(
            "\np: paired randomization test (10,000 sign flips) on per-query nDCG@10 against that row; "
            "the cross-encoder rows' p50 ms is the model's time per query (read once, shared by its rows)"
        )


if __name__ == "__main__":
    main()
