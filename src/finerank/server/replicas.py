"""The same HTTP service with its models in replicas on a Ray cluster (Ray Serve).

``Replica`` is a Serve deployment (N copies, or between N and ``max_replicas`` scaled on
ongoing requests). Each runs the whole app of :func:`~finerank.server.app.create_app` (routes,
auth, limits, metrics) with its own model and its own cross-request batcher.

Requests reach the replicas through the ASGI app that :func:`deploy` returns, served by uvicorn
in the process that deployed them (``finerank serve --ray``). It reads the body (413 past the
limit, counted as it streams in) and hands the whole request to a replica through a Serve
handle over gRPC: one hop, with no Serve proxy in between (what each path costs: docs/scale.md).

When the replica holding a request dies, a read (every rerank, score and search route, and
GET) is retried once on another replica. A write (adding or deleting documents) is not, and
neither is a read that fails twice: both are answered 503 with a message saying so. A request
that outlives ``request_timeout_s`` is cancelled and answered 408, never left hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..cluster import connect
from . import errors
from .app import WRITES, BodyLimit, create_app
from .backend import Limits

logger = logging.getLogger(__name__)

APP_NAME = "finerank"


class Replica:
    """One copy of the app, model loaded, answering whole HTTP requests handed over by the front."""

    async def __init__(self, load: Callable, app_options: dict):
        self.app = create_app(await asyncio.to_thread(load), **app_options)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # loads the model, starts the batcher

    async def answer(self, method: str, path: str, query: bytes, headers: list, body: bytes):
        """(status, headers, body) of one request, called on the app as an ASGI server would."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": None,
            "server": None,
        }
        delivered, response = False, {"headers": [], "body": []}

        async def receive():
            nonlocal delivered
            if delivered:  # the client stays connected until the answer is complete
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                response["status"], response["headers"] = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                response["body"].append(message.get("body", b""))

        await self.app(scope, receive, send)
        return response["status"], response["headers"], b"".join(response["body"])


class Front:
    """The ASGI app in front of the replicas: forwards each request, retries a read whose replica
    died, and answers 503 or 408 as the module's docstring says. Wrap it in :class:`BodyLimit`,
    which reads the whole body first (as :func:`deploy` does)."""

    def __init__(self, replicas, request_timeout_s: float):
        self.replicas, self.request_timeout_s = replicas, request_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":  # nothing to start: the replicas hold the state
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        if scope["type"] != "http":
            return
        from ray.exceptions import RayActorError

        method, path = scope["method"], scope["path"]
        call = (method, path, scope["query_string"], list(scope["headers"]), (await receive()).get("body", b""))
        write = method not in ("GET", "HEAD") and path in WRITES
        for attempt in range(1 if write else 2):
            response = self.replicas.answer.remote(*call)
            try:
                status, headers, content = await asyncio.wait_for(response, self.request_timeout_s)
            except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
                response.cancel()
                said = (
                    "it was cancelled, but a write may still land: read the index before retrying"
                    if write
                    else "the request was cancelled"
                )
                return await errors.error_response(408, f"no answer within {self.request_timeout_s:g} s; {said}")(
                    scope, receive, send
                )
            except RayActorError:
                logger.warning("a replica died answering %s %s (attempt %d)", method, path, attempt + 1)
                continue
            await send({"type": "http.response.start", "status": status, "headers": headers})
            return await send({"type": "http.response.body", "body": content})
        said = "the change may or may not have been saved; check before retrying" if write else "retry shortly"
        await errors.error_response(503, f"the replica answering this request stopped: {said}")(scope, receive, send)


def deploy(
    address: str,
    load: Callable,
    *,
    replicas: int = 1,
    max_replicas: int | None = None,
    cpus_per_replica: float = 1,
    request_timeout_s: float = 60.0,
    target_ongoing_requests: float = 4,
    quiet: bool = False,
    **app_options,
):
    """Start finerank's replicas on the Ray cluster at ``address``: ``replicas`` of them (up to
    ``max_replicas`` with autoscaling) of ``cpus_per_replica`` CPUs each. Each replica loads its
    reranker with ``load()`` (a function of no arguments); ``app_options`` go to
    :func:`create_app` (index, first_stage, api_key, limits, reports: paths every node can
    read). Returns, once every replica is up, the ASGI app that answers for them: serve it with
    uvicorn (as ``finerank serve --ray`` does), and call :func:`undeploy` when done."""
    connect(address, quiet=quiet)
    from ray import serve

    if quiet:  # Serve gives its driver-side logger a handler of its own, at INFO
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    scaling = (
        {
            "autoscaling_config": {
                "min_replicas": replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": target_ongoing_requests,
            }
        }
        if max_replicas and max_replicas > replicas
        else {"num_replicas": replicas}
    )
    serve.start(proxy_location="Disabled")  # requests come through the front, not Serve's HTTP proxy
    replica = serve.deployment(
        Replica,
        name=f"{APP_NAME}-replica",
        ray_actor_options={"num_cpus": cpus_per_replica},
        max_ongoing_requests=256,
        **scaling,
    )
    handle = serve.run(replica.bind(load, app_options), name=APP_NAME, route_prefix=None, blocking=False)
    try:
        handle = handle.options(
            _by_reference=False
        )  # gRPC straight to the replica: +2.9 ms a request here against +5.7
    except TypeError:  # a Ray without that option (before 2.5x) calls through the object store
        pass
    return BodyLimit(Front(handle, request_timeout_s), max_bytes=(app_options.get("limits") or Limits()).max_body_bytes)


def undeploy(address: str) -> None:
    """Remove finerank's application from the cluster (the cluster keeps running)."""
    connect(address, quiet=True)
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.delete(APP_NAME)
