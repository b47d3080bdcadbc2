"""Cross-encoder training throughput on this machine, plain vs finerank's CPU settings.

    python benchmarks/train_speed.py [--steps 12]

MiniLM-L6 (all-MiniLM-L6-v2 + a new one-logit head), NFCorpus train groups of 8 (1 positive +
7 BM25 negatives), 4 groups per step, max_length 256, listwise loss. Pairs/s over all steps.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from finerank import Index, read_corpus
from finerank import train as training
from finerank.registry import MODELS

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

SETTINGS = {
    "plain: fp32, dropout 0.1, embeddings trained": dict(precision="fp32", dropout=0.1, freeze_embeddings=False),
    "bf16 autocast": dict(precision="bf16", dropout=0.1, freeze_embeddings=False),
    "bf16, dropout off": dict(precision="bf16", dropout=0.0, freeze_embeddings=False),
    "bf16, dropout off, embeddings frozen (default)": dict(precision="bf16", dropout=0.0, freeze_embeddings=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    index = Index.build(read_corpus(DATASETS / "nfcorpus"))
    groups = training.labelled_groups(DATASETS / "nfcorpus", index, group_size=8, max_queries=200)
    base = str(MODELS["all-minilm-l6-v2"].locate())
    rows = []
    for label, options in SETTINGS.items():
        with tempfile.TemporaryDirectory() as out:
            config = training.TrainConfig(
                base=base, output=out, max_steps=args.steps, checkpoint_every=10**9, **options
            )
            rows.append((label, training.train(groups, config).pairs_per_s))
    print(f"{'setting':<48} {'pairs/s':>8} {'x plain':>8}")
    for label, rate in rows:
        print(f"{label:<48} {rate:>8.1f} {rate / rows[0][1]:>8.2f}")


if __name__ == "__main__":
    main()
