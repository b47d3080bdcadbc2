"""Fit the calibrations finerank ships for its registered scorers, and check them on test splits.

    python benchmarks/shipped_calibration.py [--queries 300] [--write]

Each registered scorer's raw score is mapped to a probability of relevance by a Platt curve fitted
on the BM25 top 20 of train and dev splits only (English: NFCorpus dev and XQuAD-en dev;
multilingual-e5-small: the CMRC and DRCD train splits and the XQuAD dev questions of seven more
languages). ``--write`` stores them in src/finerank/data/calibration/, where every load of the
model with the same reading finds them (a calibration the user fits with ``finerank calibrate``
comes first). The table checks them on test splits never used to fit: of the candidates scored
at least 0.5, the share judged relevant (precision), the share of the relevant ones kept
(recall), and the mean probability beside the share relevant (a calibrated score has them close).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from finerank import BM25, Index, load_scorer, read_corpus
from finerank.evaluate import judged_scores, load_dataset, threshold_quality
from finerank.models import calibration

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "finerank" / "data" / "calibration"
FIT = {
    "all-minilm-l6-v2": [("nfcorpus", "dev"), ("xquad-en", "dev")],
    "multilingual-e5-small": [("cmrc2018-dev-retrieval", "train"), ("drcd-retrieval", "train")]
    + [(f"xquad-{lang}", "dev") for lang in ("es", "de", "ru", "ar", "hi", "th", "tr")],
}
CHECK = {
    "all-minilm-l6-v2": [("nfcorpus", "test"), ("scifact", "test"), ("trec-dl-2019-passage-pool", "test")],
    "multilingual-e5-small": [("cmrc2018-dev-retrieval", "test"), ("drcd-retrieval", "test")],
}


def scores(scorer, sets, queries: int) -> tuple[np.ndarray, np.ndarray]:
    raw, relevant = [], []
    for name, split in sets:
        dataset = load_dataset(DATASETS / name, split, queries)
        first = BM25(Index.build(read_corpus(DATASETS / name)))
        r, rel = judged_scores(dataset, first, scorer, candidates=20)
        raw.append(r)
        relevant.append(rel)
    return np.concatenate(raw), np.concatenate(relevant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300, help="judged queries per split")
    parser.add_argument("--write", action="store_true", help="store the fits in src/finerank/data/calibration/")
    args = parser.parse_args()
    print("| model | checked on | precision at >= 0.5 | recall at >= 0.5 | kept | mean probability | share relevant |")
    print("|---|---|---|---|---|---|---|")
    for model, sets in FIT.items():
        scorer = load_scorer(model)
        scorer.calibration = None  # fit from the raw scores, whatever is stored now
        raw, relevant = scores(scorer, sets, args.queries)
        fitted = calibration.fit(
            raw,
            relevant,
            "platt",
            fitted_on=", ".join(f"{n} {s}" for n, s in sets)
            + f": {len(raw)} pairs, BM25 top 20, up to {args.queries} queries each",
        )
        if args.write:
            SHIPPED.mkdir(parents=True, exist_ok=True)
            calibration.save(fitted, SHIPPED / calibration.shipped_name(scorer.calibration_key))
        for name, split in CHECK[model]:
            raw, relevant = scores(scorer, [(name, split)], args.queries)
            p = fitted(raw)
            q = threshold_quality(p, relevant)
            print(
                f"| {model} | {name} {split} | {q['precision']:.3f} | {q['recall']:.3f} | {q['kept']:.3f} "
                f"| {p.mean():.3f} | {relevant.mean():.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
