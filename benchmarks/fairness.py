"""One large rerank request beside a small one, and an oversized document, on `finerank serve`
over loopback (the defects of issue 35: a request within the limits held every other for
minutes; a huge document was tokenized in full before its 413).

    python benchmarks/fairness.py [--model all-minilm-l6-v2] [--json]

Rows: the largest request the default limits accept (long SciFact-like documents read in
windows, about ``max_request_tokens`` tokens) and, sent while it runs, a 2-document request: each
one's latency; the same large request with a work budget 4x higher (what any request could ask
before); and a 15.7 MB one-document request: time to its 413 and the server's RSS growth. Only
127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import httpx
from _support import served

from finerank import load_reranker
from finerank.server import Limits, create_app


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(client: httpx.Client, body: dict) -> tuple[float, int]:
    start = time.perf_counter()
    status = client.post("/v1/rerank", json=body).status_code
    return time.perf_counter() - start, status


def run(model, limits: Limits, large: dict, small: dict) -> dict:
    with (
        served(create_app(model, limits=limits)) as url,
        httpx.Client(base_url=url, timeout=600) as client,
    ):
        timed(client, small)  # warm
        out: dict = {}
        worker = threading.Thread(target=lambda: out.update(large=timed(client, large)))
        worker.start()
        time.sleep(1.0)  # the large request is being scored
        out["small"] = timed(client, small)
        worker.join()
        before = rss_mb()
        huge = {"query": "q", "documents": ["vitamin " * 2_000_000]}  # 15.7 MB, about 2M tokens
        out["huge"] = timed(client, huge)
        out["rss_growth_mb"] = rss_mb() - before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = load_reranker(args.model, precision="fp32")

    def document(n: int) -> str:  # ~2,900 tokens, each document its own (a bi-encoder reads a repeated text once)
        return " ".join(f"Sentence {i} of report {n} about vitamin D, bone density and fractures." for i in range(160))

    small = {"query": "vitamin D and fractures", "documents": ["Vitamin D lowers fracture risk.", "Stock prices fell."]}
    default = Limits()
    fits = max(1, default.max_request_tokens // (512 * 7))  # documents of about seven 512-token windows each
    large = {
        "query": "vitamin D and fractures",
        "documents": [document(n) for n in range(fits)],
        "max_chunks_per_doc": 32,
    }
    rows = {
        "default limits": run(model, default, large, small),
        "4x the work budget, whole requests (as before)": run(
            model,
            Limits(max_request_tokens=4 * default.max_request_tokens, request_part_pairs=default.max_batch_pairs),
            {**large, "documents": [document(n) for n in range(4 * fits)]},
            small,
        ),
    }
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"\n| limits | large request ({fits} or {4 * fits} docs) s, status | 2-doc request sent meanwhile s "
        "| 15.7 MB document: s to status | RSS growth MB |"
    )
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['large'][0]:.1f}, {r['large'][1]} | {r['small'][0]:.2f} "
            f"| {r['huge'][0]:.3f} to {r['huge'][1]} | {r['rss_growth_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
