"""How long a new user waits: commands run with an empty user cache, as just after install.

    python benchmarks/first_use.py

Each command runs in its own process with a fresh ``FINERANK_CACHE``; the table gives when its
first and last result lines were printed and when the process ended (after the results it
finishes measuring which engine is fastest here, once), then the same command again with the
cache it left (what every later run costs). Rows: ``finerank demo`` (English, Chinese and
Russian, both default models), an English and a Chinese ``finerank rerank`` of 100 documents,
and ``finerank demo`` with ``FINERANK_AUTOTUNE=0`` (no measurement, the fixed rule).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def timed(command: list[str], env: dict) -> tuple[float, float, float]:
    """Seconds to the first and the last non-empty line on stdout, and to the process's end."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env | {"PYTHONUNBUFFERED": "1"}
    )
    first = last = float("nan")
    for line in process.stdout:
        if line.strip():
            last = time.perf_counter() - start
            first = last if first != first else first
    if process.wait():
        raise SystemExit(f"{' '.join(command)} failed")
    return first, last, time.perf_counter() - start


def documents(folder: Path, out: Path, n: int = 100) -> Path:
    with open(folder / "corpus.jsonl", encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for _, line in zip(range(n), source):
            target.write(json.dumps(json.loads(line), ensure_ascii=False) + "\n")
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        english = documents(DATASETS / "scifact", tmp / "en.jsonl")
        chinese = documents(DATASETS / "cmrc2018-dev-retrieval", tmp / "zh.jsonl")
        rerank = ["finerank", "rerank", "--top-k", "3", "--docs"]
        runs = {
            "finerank demo": (["finerank", "demo"], {}),
            "rerank, English, 100 SciFact abstracts": ([*rerank, str(english), "--query", "statins and cancer"], {}),
            "rerank, Chinese, 100 CMRC 2018 paragraphs": (
                [*rerank, str(chinese), "--query", "范廷颂是什么时候被任为主教的？"],
                {},
            ),
            "finerank demo, FINERANK_AUTOTUNE=0": (["finerank", "demo"], {"FINERANK_AUTOTUNE": "0"}),
        }
        print("| command | first result (s) | last result (s) | process ends (s) | next run (s) |")
        print("|---|---|---|---|---|")
        for i, (label, (command, extra)) in enumerate(runs.items()):
            env = os.environ | {"FINERANK_CACHE": str(tmp / f"cache-{i}")} | extra
            first, last, end = timed(command, env)
            again = timed(command, env)[2]
            print(f"| {label} | {first:.1f} | {last:.1f} | {end:.1f} | {again:.1f} |", flush=True)
    print(f"\npython {sys.version.split()[0]}; cpu: {_cpu()}")


def _cpu() -> str:
    from finerank.models.tuning import cpu_key

    return cpu_key(None)


if __name__ == "__main__":
    main()
