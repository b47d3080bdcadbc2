"""Load on `finerank serve` over loopback: requests/s and latency with and without
cross-request batching. Bounded: N concurrent clients for S seconds per configuration.

    python benchmarks/serve_load.py [--clients 32] [--seconds 30] [--docs 10] [--json]

Each request reranks --docs real SciFact passages (first 300 characters) for a SciFact query
through POST /v1/rerank with the default model. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
from _support import served

from finerank import load_reranker, read_corpus, read_queries
from finerank.server import Limits, create_app

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


async def client_loop(
    url: str, bodies: list[dict], stop_at: float, latencies: list[float], errors: list[int], offset: int
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        i = offset
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            response = await client.post("/v1/rerank", json=bodies[i % len(bodies)])
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(response.status_code)
            i += 1


def run(
    config: str, wait_ms: float, max_pairs: int, reranker, bodies: list[dict], clients: int, seconds: float
) -> dict:
    app = create_app(reranker, limits=Limits(batch_wait_ms=wait_ms, max_batch_pairs=max_pairs, max_queue=4 * clients))
    with served(app) as url:
        latencies: list[float] = []
        errors: list[int] = []

        async def main() -> None:
            stop_at = time.perf_counter() + seconds
            await asyncio.gather(*(client_loop(url, bodies, stop_at, latencies, errors, c) for c in range(clients)))

        start = time.perf_counter()
        asyncio.run(main())
        elapsed = time.perf_counter() - start
        metrics = httpx.get(f"{url}/metrics").text
    batches = int(
        next(line for line in metrics.splitlines() if line.startswith("finerank_batches_total")).rsplit(" ", 1)[1]
    )
    latencies.sort()
    return {
        "config": config,
        "batch_wait_ms": wait_ms,
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_s": len(latencies) / elapsed,
        "pairs_per_s": len(latencies) * len(bodies[0]["documents"]) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "requests_per_batch": len(latencies) / max(batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    passages = [d.content[:300] for _, d in zip(range(400), read_corpus(DATASETS / "scifact"))]
    queries = list(read_queries(DATASETS / "scifact" / "queries.jsonl").values())[:40]
    bodies = [{"query": q, "documents": passages[i * args.docs % 390 :][: args.docs]} for i, q in enumerate(queries)]
    reranker = load_reranker()
    rows = [
        run("one request per batch", 0.0, 1, reranker, bodies, args.clients, args.seconds),
        run("cross-request batching", 5.0, 256, reranker, bodies, args.clients, args.seconds),
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.clients} clients x {args.seconds:.0f} s, {args.docs} passages per request, {reranker!r}")
    print(f"{'config':<24} {'req/s':>7} {'pairs/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'req/batch':>9} {'errors':>6}")
    for r in rows:
        print(
            f"{r['config']:<24} {r['requests_per_s']:>7.1f} {r['pairs_per_s']:>8.0f} {r['p50_ms']:>7.0f} "
            f"{r['p95_ms']:>7.0f} {r['requests_per_batch']:>9.1f} {r['errors']:>6}"
        )
    print(f"cross-request / single: {rows[1]['requests_per_s'] / rows[0]['requests_per_s']:.2f}x requests/s")


if __name__ == "__main__":
    main()
