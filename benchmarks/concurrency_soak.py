"""Concurrent writers on one index: N rounds of two `finerank index --add` processes at once
while a `finerank serve` process searches and upserts the same index over HTTP.

    python benchmarks/concurrency_soak.py [--rounds 50] [--port 8765]

Counts lost updates (a document added by a writer or the server that is not in the final
index), failed loads (the index could not be loaded after a round) and server errors (5xx).
Loopback only; bounded in rounds and time; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from finerank import Document, Index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="finerank-soak-"))
    index = root / "idx"
    Index.build([Document(f"d{i}", f"base document {i} about apples") for i in range(50)]).save(index)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "finerank.cli",
            "-q",
            "serve",
            "--index",
            str(index),
            "--port",
            str(args.port),
            "--reranker",
            "all-minilm-l6-v2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{args.port}"
    deadline = time.time() + 120
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start") from None
            time.sleep(0.5)
    expected, failed_loads, server_errors, start = set(), 0, 0, time.time()
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            for r in range(args.rounds):
                writers = []
                for w in range(2):
                    f = root / f"add-{r}-{w}.jsonl"
                    f.write_text(json.dumps({"_id": f"cli-{r}-{w}", "text": f"round {r} writer {w} bananas"}) + "\n")
                    writers.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "finerank.cli", "-q", "index", "--out", str(index), "--add", str(f)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            text=True,
                        )
                    )
                    expected.add(f"cli-{r}-{w}")
                while any(p.poll() is None for p in writers):  # the server works while the writers run
                    answer = client.post(
                        "/v1/documents",
                        json={"documents": [{"id": f"srv-{r}-{len(expected)}", "text": "server upsert"}]},
                    )
                    server_errors += answer.status_code >= 500
                    if answer.status_code == 200:
                        expected.add(f"srv-{r}-{len(expected)}")
                    found = client.post("/v1/search", json={"query": "bananas apples", "top_n": 3, "rerank": False})
                    server_errors += found.status_code >= 500
                for p in writers:
                    if p.wait() != 0:
                        print(f"round {r}: a writer failed: {p.stderr.read().strip()}")
                try:
                    Index.load(index)
                except Exception as err:  # noqa: BLE001 - counted and reported
                    failed_loads += 1
                    print(f"round {r}: the index does not load: {err}")
    finally:
        server.terminate()
        server.wait(30)
    final = {d.id for d in Index.load(index).documents}
    lost = sorted(expected - final)
    print("| rounds | writer processes | server upserts | lost updates | failed loads | server 5xx | seconds |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.rounds} | {2 * args.rounds} | {len([e for e in expected if e.startswith('srv-')])} | {len(lost)} | "
        f"{failed_loads} | {server_errors} | {time.time() - start:.0f} |"
    )
    if lost:
        print("lost:", ", ".join(lost[:20]))


if __name__ == "__main__":
    main()
