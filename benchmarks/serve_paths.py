"""Ray Serve's cost per request along each path a request could take to a replica, in one run
on a real local Ray cluster (a head with no CPUs for work and two one-CPU worker nodes), against
the plain single-process server reading with the same one thread:

    python benchmarks/serve_paths.py [--requests 300] [--json]

1. Serve's HTTP proxy -> a front deployment -> a replica (finerank's design until 2026-12-06)
2. Serve's HTTP proxy -> the replica as an `@serve.ingress` app (one hop; a bare 500 when the
   replica dies mid-request, so no retry and no 503)
3. finerank's front (uvicorn, this process) -> a replica over a Serve handle (object store)
4. finerank's front -> a replica over a Serve handle with gRPC: `replicas.deploy`, today's path

p50/p95 of GET /health and of a two-document POST /v1/rerank, sequential, keep-alive, two
replicas. The model is the MiniLM-L6 cross-encoder stand-in of rerank_speed.py, torch fp32.
Only this machine is contacted (127.0.0.1, and its own IP for the Ray nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import time

import httpx
from _support import ray_cluster, served
from rerank_speed import default_model
from scale import cpu_name, sequential

from finerank import load_reranker
from finerank.server import create_app, replicas
from finerank.server.app import BodyLimit


class ProxiedFront:
    """Path 1: a deployment behind Serve's proxy that forwards the request to a replica."""

    def __init__(self, handle):
        self.handle = handle

    async def __call__(self, request):
        from starlette.responses import Response

        status, headers, content = await self.handle.answer.remote(
            request.method,
            request.url.path,
            request.url.query.encode("latin-1"),
            request.headers.raw,
            await request.body(),
        )
        return Response(
            content,
            status_code=status,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k.lower() != b"content-length"},
        )


class IngressReplica:
    """Path 2: the app itself behind Serve's proxy."""

    async def __init__(self, load):
        self.reranker = await asyncio.to_thread(load)

    def __serve_build_asgi_app__(self):
        return create_app(self.reranker)


def until_up(url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("FINERANK_AUTOTUNE", "0")
    model = str(default_model())
    reading = {"backend": "torch", "precision": "fp32", "threads": 1}
    load = functools.partial(load_reranker, model, **reading)
    result: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "requests": args.requests}
    with ray_cluster(2, cpus_per_node=1) as address:
        from ray import serve

        with served(create_app(load())) as plain:
            result["plain server"] = sequential(plain, args.requests)
        port, options = 8477, {"ray_actor_options": {"num_cpus": 1}, "num_replicas": 2, "max_ongoing_requests": 256}
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        replica = serve.deployment(replicas.Replica, name="replica", **options).bind(load, {})
        serve.run(
            serve.deployment(ProxiedFront, ray_actor_options={"num_cpus": 0}).bind(replica),
            name="paths",
            route_prefix="/",
        )
        until_up(url)
        result["proxy -> front deployment -> replica"] = sequential(url, args.requests)
        serve.delete("paths")
        serve.run(
            serve.deployment(serve.ingress()(IngressReplica), name="ingress", **options).bind(load),
            name="paths",
            route_prefix="/",
        )
        until_up(url)
        result["proxy -> replica (@serve.ingress)"] = sequential(url, args.requests)
        serve.shutdown()  # finerank's deploy starts Serve with no proxy
        front = replicas.deploy(address, load, replicas=2, quiet=True)
        by_reference = BodyLimit(replicas.Front(serve.get_app_handle(replicas.APP_NAME), 60.0), max_bytes=16 << 20)
        with served(by_reference) as server:
            result["front -> replica (handle, object store)"] = sequential(server, args.requests)
        with served(front) as server:
            result["front -> replica (handle, gRPC): finerank's"] = sequential(server, args.requests)
        replicas.undeploy(address)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    base = result["plain server"]
    print(f"CPU: {result['cpu']}, {result['cores']} cores; {args.requests} sequential requests a route; two replicas\n")
    print(
        "| path | GET /health p50 / p95 ms | overhead | POST /v1/rerank p50 / p95 ms | overhead |\n"
        "|---|---|---|---|---|"
    )
    for name, row in result.items():
        if isinstance(row, dict):
            h, r = row["health"], row["rerank"]
            print(
                f"| {name} | {h['p50']:.1f} / {h['p95']:.1f} | {h['p50'] - base['health']['p50']:+.1f} ms "
                f"| {r['p50']:.1f} / {r['p95']:.1f} | {r['p50'] - base['rerank']['p50']:+.1f} ms |"
            )


if __name__ == "__main__":
    main()
