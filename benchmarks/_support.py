"""What the benchmarks run beside finerank: an ASGI app served on loopback (:func:`served`), a
Ray cluster on this machine (:func:`ray_cluster`), which peer packages are missing
(:func:`first_missing`), and rows timed side by side (:func:`interleaved`). The tests keep their
own helpers in tests/support.py; neither folder imports the other."""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator


@contextlib.contextmanager
def served(app, *, timeout_s: float = 60) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free 127.0.0.1 port; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the benchmark's server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def ray_cluster(worker_nodes: int = 2, *, cpus_per_node: float = 1) -> Iterator[str]:
    """A Ray cluster on this machine from Ray's own ``ray.cluster_utils.Cluster``: a head with no
    CPUs for work and ``worker_nodes`` nodes of ``cpus_per_node`` CPUs, each node its own raylet
    and worker processes. Yields the head's address (this machine's own IP: a driver given
    127.0.0.1 dials that IP, where a node on 127.0.0.1 does not listen); every node is stopped on exit."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(worker_nodes):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def first_missing(modules: Iterable[str]) -> str | None:
    """The first of ``modules`` this environment cannot import (a benchmark row needing it is skipped)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:  # a submodule of a missing package
            return name
    return None


def interleaved(calls: dict[str, Callable], inputs: list, passes: int) -> tuple[dict, dict]:
    """Every input through every call, ``passes`` times, the calls in an order rotated at each input,
    so the machine's drift (10-40 % within a run) falls on each alike. Returns the seconds of each
    pass and the outputs of the last pass, both by label."""
    labels = list(calls)
    seconds = {label: [0.0] * passes for label in labels}
    outputs = {label: [None] * len(inputs) for label in labels}
    for p in range(passes):
        for i, item in enumerate(inputs):
            turn = (p * len(inputs) + i) % len(labels)
            for label in labels[turn:] + labels[:turn]:
                start = time.perf_counter()
                outputs[label][i] = calls[label](item)
                seconds[label][p] += time.perf_counter() - start
    return seconds, outputs


def speedup(seconds: list[float], base: list[float]) -> float:
    """How many times faster than ``base``: the median of the per-pass ratios."""
    return statistics.median(b / s for s, b in zip(seconds, base))
