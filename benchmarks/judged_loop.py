"""The judging loop on a shared dataset, as a user would run it on their own: grade the pooled
results of some queries, train on the train share, compare with the default on the held-out share.

    python benchmarks/judged_loop.py [--dataset nfcorpus] [--split train] [--queries 150] [--epochs 1]

The "user" grades each query's pool (the first stage's and the reranked top 10, as the search page
offers them) with the dataset's own qrels. ``finerank train INDEX --judgments`` then trains
all-MiniLM-L6-v2 on the train share and reports the held-out comparison (condensed lists). Last,
the same two models' held-out rankings are scored with the dataset's full qrels: what the user's
own grades said beside what complete judgments say.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from finerank import Index, Pipeline, first_stage, load_reranker, read_corpus
from finerank.cli import main as cli
from finerank.evaluate import load_dataset
from finerank.judgments import Judgments, held_out, pool
from finerank.metrics import bootstrap_interval, ndcg

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def run(args: argparse.Namespace) -> None:
    folder = DATASETS / args.dataset
    with tempfile.TemporaryDirectory() as tmp:
        index_dir, out = Path(tmp) / "idx", Path(tmp) / "model"
        Index.build(read_corpus(folder)).save(index_dir)
        dataset = load_dataset(folder, args.split, max_queries=args.queries)
        pipeline = Pipeline(first_stage(Index.load(index_dir)), load_reranker(), top_k=10)
        store = Judgments.of_index(index_dir)
        start = time.perf_counter()
        texts = list(dataset.queries.values())
        for (qid, text), ranking in zip(dataset.queries.items(), pipeline.search_many(texts)):
            for hit in pool(ranking, 10):
                store.add(text, hit.id, min(3, dataset.qrels[qid].get(hit.id, 0)), "qrels")
        graded = store.grades()
        print(
            f"judged {len(graded)} {args.dataset} {args.split} queries, {sum(map(len, graded.values()))} grades "
            f"(pooled top 10 of both lists) in {time.perf_counter() - start:.0f} s"
        )
        command = ["-q", "train", str(index_dir), "--judgments", "--out", str(out), "--json"]
        command += ["--epochs", str(args.epochs), "--base", "all-minilm-l6-v2"]
        start, said = time.perf_counter(), io.StringIO()
        with contextlib.redirect_stdout(said):
            cli(command)
        record = json.loads(said.getvalue())
        held = record["held_out"]
        print(f"trained {record['steps']} steps on {record['groups']} groups in {time.perf_counter() - start:.0f} s")
        print(held["verdict"])
        by_text = {t: q for q, t in dataset.queries.items() if held_out(t) and any(graded[t].values())}
        full = {
            name: [ndcg(held["rankings"][name][t][:10], dataset.qrels[q]) for t, q in by_text.items()]
            for name in ("default", "model")
        }
        low, high = bootstrap_interval(full["default"], full["model"])
        gain = float(np.mean(full["model"]) - np.mean(full["default"]))
        print(
            f"the full qrels on the same {len(by_text)} held-out queries: default {np.mean(full['default']):.4f}, "
            f"model {np.mean(full['model']):.4f}, gain {gain:+.4f} (95 % interval {low:+.4f} to {high:+.4f}); "
            f"the judged interval was {held['interval'][0]:+.4f} to {held['interval'][1]:+.4f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="nfcorpus")
    parser.add_argument("--split", default="train")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=1)
    run(parser.parse_args())
