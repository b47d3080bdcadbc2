"""The same HTTP service as replicas on a Ray cluster (Ray Serve).

Two deployments. ``Replica`` (N of them, or between N and ``max_replicas`` scaled on ongoing
requests) each runs the whole app of :func:`~finerank.server.app.create_app` (routes, auth,
limits, metrics) with its own model and its own cross-request batcher. ``Front`` takes the HTTP
request from Serve's proxy, refuses a body over the limit as it streams in, and hands the
request to a replica. When that replica dies mid-request, a read (every rerank, score and
search route, and GET) is retried once on another replica; a write (adding or deleting
documents) is not, and neither is a read that fails twice: they are answered 503 with a
message saying so. A request that outlives ``request_timeout_s`` is answered 408 by the proxy,
never left hanging.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .. import __version__
from ..cluster import connect
from . import errors
from .app import create_app

logger = logging.getLogger(__name__)

APP_NAME = "finerank"
WRITES = ("/v1/documents", "/v1/documents/delete")  # the routes that change the served index


class Replica:
    """One copy of the app, model loaded, answering whole HTTP requests handed over by Front."""

    async def __init__(self, load: Callable, app_options: dict):
        import httpx

        self.app = create_app(await asyncio.to_thread(load), **app_options)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # loads the model, starts the batcher
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://replica")

    async def answer(self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
        response = await self.client.request(method, path + ("?" + query.decode("latin-1") if query else ""), headers=headers, content=body)
        return response.status_code, response.headers.raw, response.content


class Front:
    """Serve's HTTP entry point: streams the body in (413 past the limit), forwards it, and
    answers 503 when the replica holding the request died (see the module's docstring)."""

    def __init__(self, replicas, max_body_bytes: int):
        self.replicas, self.max_body_bytes = replicas, max_body_bytes

    async def __call__(self, request):
        from ray.exceptions import RayActorError
        from starlette.responses import Response

        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return errors.error_response(413, f"body: more than {self.max_body_bytes} bytes", "body")
            chunks.append(chunk)
        call = (request.method, request.url.path, request.url.query.encode("latin-1"), request.headers.raw, b"".join(chunks))
        write = request.method not in ("GET", "HEAD") and request.url.path in WRITES
        for attempt in range(1 if write else 2):
            try:
                status, headers, content = await self.replicas.answer.remote(*call)
                drop = {b"content-length", b"transfer-encoding", b"content-encoding"}
                return Response(content, status_code=status, headers={k.decode("latin-1"): v.decode("latin-1")
                                                                      for k, v in headers if k.lower() not in drop})
            except RayActorError:
                logger.warning("a replica died answering %s %s (attempt %d)", request.method, request.url.path, attempt + 1)
        said = "the change may or may not have been saved; check before retrying" if write else "retry shortly"
        return errors.error_response(503, f"the replica answering this request stopped: {said}", None)


def deploy(address: str, load: Callable, *, replicas: int = 1, max_replicas: int | None = None, cpus_per_replica: float = 1,
           host: str = "127.0.0.1", port: int = 8000, request_timeout_s: float = 60.0, target_ongoing_requests: float = 4,
           quiet: bool = False, **app_options) -> str:
    """Serve finerank on the Ray cluster at ``address`` with ``replicas`` replicas (up to
    ``max_replicas`` with autoscaling) of ``cpus_per_replica`` CPUs each. Each replica loads its
    reranker with ``load()`` (a function of no arguments); ``app_options`` go to
    :func:`create_app` (index, first_stage, api_key, limits, reports: paths every node can
    read). Returns the URL once every replica answers."""
    connect(address, quiet=quiet)
    from ray import serve

    scaling = ({"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                       "target_ongoing_requests": target_ongoing_requests}}
               if max_replicas and max_replicas > replicas else {"num_replicas": replicas})
    limits = app_options.get("limits")
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s})
    replica = serve.deployment(Replica, name=f"{APP_NAME}-replica", ray_actor_options={"num_cpus": cpus_per_replica},
                               max_ongoing_requests=256, **scaling)
    front = serve.deployment(Front, name=f"{APP_NAME}-front", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
    serve.run(front.bind(replica.bind(load, app_options), limits.max_body_bytes if limits else 16 * 1024 * 1024),
              name=APP_NAME, route_prefix="/", blocking=False)
    shown = f"[{host}]" if ":" in host else host
    logger.info("finerank %s on Ray Serve at http://%s:%d", __version__, shown, port)
    return f"http://{shown}:{port}"


def undeploy(address: str) -> None:
    """Remove finerank's application from the cluster (the cluster keeps running)."""
    connect(address, quiet=True)
    from ray import serve

    serve.delete(APP_NAME)
