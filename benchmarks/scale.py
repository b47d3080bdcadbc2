"""Past one machine, measured on one: a real local Ray cluster (a head with no CPUs for work
and two one-CPU worker nodes, each its own raylet: `_support.ray_cluster`) against the plain
single-process server and the local batch run, in the same run.

    python benchmarks/scale.py [--seconds 15] [--clients 8] [--docs 20] [--queries 20] [--json]

1. Overhead per request: p50/p95 of GET /health and of a two-document POST /v1/rerank,
   sequential, keep-alive, on `finerank serve` (one thread, as a replica reads) and on Ray
   Serve (finerank's front, then a replica over a gRPC handle).
2. Throughput against replicas: --clients concurrent clients for --seconds, each request
   --docs SciFact BM25 candidates (first 600 characters) for a SciFact query, on the plain
   server (2 threads), Ray Serve with 1 replica and 2 replicas (1 CPU each), with and without
   cross-request batching inside the replicas.
3. Overhead per batch item: `rerank-run` of --queries TREC DL 2019 queries x 50 BM25 candidates,
   locally (one process, one thread) and on the cluster (two workers), same output checked.

The model is a MiniLM-L6 cross-encoder stand-in (random head on all-minilm-l6-v2: the shape,
not the quality, sets the speed). Only this machine is contacted (127.0.0.1, and its own IP for
the Ray nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import time
from pathlib import Path

import httpx
from _support import ray_cluster, served
from rerank_speed import default_model  # the MiniLM-L6 cross-encoder stand-in

from finerank import BM25, Index, load_reranker, read_corpus, read_queries, read_run
from finerank.batch import rerank_run
from finerank.server import Limits, create_app, replicas

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + (
                " (AMX)" if "amx_bf16" in Path("/proc/cpuinfo").read_text() else " (no AMX)"
            )
    return platform.processor()


def sequential(url: str, count: int = 300) -> dict:
    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, call in (
            ("health", lambda: client.get("/health")),
            ("rerank", lambda: client.post("/v1/rerank", json={"query": "cold", "documents": ["rest", "stocks"]})),
        ):
            call()
            times = []
            for _ in range(count):
                start = time.perf_counter()
                assert call().status_code == 200
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            out[name] = {"p50": times[len(times) // 2], "p95": times[int(len(times) * 0.95)]}
    return out


def load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    latencies, failures = [], []

    async def client_loop(offset: int, stop_at: float) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            i = offset
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                response = await client.post("/v1/rerank", json=bodies[i % len(bodies)])
                (latencies if response.status_code == 200 else failures).append(time.perf_counter() - start)
                i += 1

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(client_loop(c, stop_at) for c in range(clients)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    latencies.sort()
    pairs = len(latencies) * len(bodies[0]["documents"])
    return {
        "requests": len(latencies),
        "failed": len(failures),
        "pairs_per_s": pairs / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
    }


def bodies_of(docs: int) -> list[dict]:
    folder = DATASETS / "scifact"
    documents = list(read_corpus(folder))
    bm25 = BM25(Index.build(documents))
    queries = list(read_queries(folder / "queries.jsonl").values())[:32]
    return [{"query": q, "documents": [h.document.text[:600] for h in bm25.search(q, docs)]} for q in queries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault(
        "FINERANK_AUTOTUNE", "0"
    )  # every engine reads as the fixed rule says: the same model everywhere
    model = str(default_model())
    reading = {"backend": "torch", "precision": "fp32", "threads": 1}
    result: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "settings": vars(args)}
    bodies = bodies_of(args.docs)

    with ray_cluster(2, cpus_per_node=1) as address:
        # 1 and 2: the plain server (one thread as one replica reads, for the overhead; two for throughput),
        # then Ray Serve with 1 and 2 replicas behind finerank's front
        with served(create_app(load_reranker(model, **reading))) as plain:
            result["plain"] = {"sequential": sequential(plain)}
        with served(create_app(load_reranker(model, **{**reading, "threads": 2}))) as plain:
            result["plain"]["load"] = load(plain, bodies, args.clients, args.seconds)
        for count, wait_ms in ((1, 5.0), (2, 5.0), (2, 0.0)):
            front = replicas.deploy(
                address,
                functools.partial(load_reranker, model, **reading),
                replicas=count,
                quiet=True,
                limits=Limits(batch_wait_ms=wait_ms, max_queue=4 * args.clients),
            )
            with served(front) as server:
                entry = {"load": load(server, bodies, args.clients, args.seconds)}
                if count == 2 and wait_ms:
                    entry["sequential"] = sequential(server)
            result[f"serve-{count}-replicas-batch-{wait_ms:g}ms"] = entry
            replicas.undeploy(address)
        # 3: a run reranked locally and on the cluster
        folder = DATASETS / "trec-dl-2019-passage-pool"
        full = read_run(folder / "runs" / "BM25.top100.trec")
        run = {q: full[q] for q in sorted(full)[: args.queries]}
        wanted = {d for scored in run.values() for d in scored}
        documents = {d.id: d for d in read_corpus(folder) if d.id in wanted}
        queries = read_queries(folder / "queries.jsonl")
        reranker = load_reranker(model, **reading)
        out = Path(model).parent
        timings = {}
        on_cluster = {"ray_address": address, "load": functools.partial(load_reranker, model, **reading), "workers": 2}
        for name, extra in (("local", {}), ("cluster", on_cluster)):
            start = time.perf_counter()
            rerank_run(run, queries, documents, reranker, out / f"{name}.trec", depth=50, shard_size=2, **extra)
            timings[name] = time.perf_counter() - start
        same = (out / "local.trec").read_text() == (out / "cluster.trec").read_text()
        pairs = args.queries * 50
        result["batch"] = {
            "pairs": pairs,
            "shards": -(-args.queries // 2),
            "local_s": timings["local"],
            "cluster_s": timings["cluster"],
            "same_output": same,
            "overhead_per_shard_s": (timings["cluster"] - timings["local"] / 2) / -(-args.queries // 2),
        }

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"CPU: {result['cpu']}, {result['cores']} cores; model: MiniLM-L6 cross-encoder stand-in, torch fp32")
    plain_seq, serve_seq = result["plain"]["sequential"], result["serve-2-replicas-batch-5ms"]["sequential"]
    print("\n| route | plain p50 / p95 ms | Ray Serve p50 / p95 ms | overhead at p50 |\n|---|---|---|---|")
    for route in ("health", "rerank"):
        a, b = plain_seq[route], serve_seq[route]
        print(
            f"| {route} | {a['p50']:.1f} / {a['p95']:.1f} | {b['p50']:.1f} / {b['p95']:.1f} | "
            f"{b['p50'] - a['p50']:+.1f} ms |"
        )
    base = result["plain"]["load"]["pairs_per_s"]
    print(
        f"\n| server ({args.clients} clients, {args.docs} docs a request) | pairs/s | vs plain | p50 ms | failed |\n"
        "|---|---|---|---|---|"
    )
    for key, entry in result.items():
        if isinstance(entry, dict) and "load" in entry:
            row = entry["load"]
            print(
                f"| {key} | {row['pairs_per_s']:.1f} | {row['pairs_per_s'] / base:.2f}x | {row['p50_ms']:.0f} | "
                f"{row['failed']} |"
            )
    b = result["batch"]
    print(
        f"\nrerank-run, {b['pairs']} pairs in {b['shards']} shards: local {b['local_s']:.1f} s (1 thread), "
        f"cluster {b['cluster_s']:.1f} s "
        f"(2 workers), same output: {b['same_output']}; overhead per shard {b['overhead_per_shard_s'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
