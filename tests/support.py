"""What the tests run beside finerank, and not part of it: a loopback server for an ASGI app
(:class:`LiveServer`) and a real Ray cluster on this machine (:func:`local_cluster`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from finerank.errors import MissingDependencyError

T = TypeVar("T")


def until(check: Callable[[], T], timeout_s: float, what: str) -> T:
    """The first true value of ``check()``, polled every 0.1 s; a TimeoutError naming ``what`` past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)
    return found


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port, in a thread, for the test's duration."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def local_cluster(
    nodes: int = 3,
    *,
    cpus_per_node: float = 1,
    head_cpus: float | None = None,
    timeout_s: float = 90,
    log: str | os.PathLike = os.devnull,
) -> Iterator[str]:
    """A real Ray cluster on this machine, on 127.0.0.1: a head (``head_cpus`` CPUs, default
    ``cpus_per_node``) and ``nodes - 1`` worker nodes, each its own ``ray start`` process, as on
    separate machines. Yields the head's address and stops every node on exit."""
    from finerank.cluster import connect

    ray_command = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_command is None:
        raise MissingDependencyError("Ray", "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    command = [ray_command, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started: list[subprocess.Popen] = []
    with open(log, "a") as out:

        def start(*extra: str) -> None:  # a session of its own: the node's processes are stopped together
            node = subprocess.Popen([*command, *extra], env=env, stdout=out, stderr=out, start_new_session=True)
            started.append(node)

        try:
            head = cpus_per_node if head_cpus is None else head_cpus
            start("--head", f"--port={port}", "--include-dashboard=false", f"--num-cpus={head:g}")
            until(lambda: _listening("127.0.0.1", port), timeout_s, "the local Ray cluster's head node")
            ray = connect(address, quiet=True)
            for count in range(2, nodes + 1):  # one at a time: two nodes registering at once on one machine can collide
                start(f"--address={address}", f"--num-cpus={cpus_per_node:g}")
                until(
                    lambda count=count: sum(n["Alive"] for n in ray.nodes()) == count,
                    timeout_s,
                    f"the local Ray cluster's node {count}",
                )
            yield address
        finally:
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()
            for node in reversed(started):
                node.terminate()
            deadline = time.monotonic() + 5
            for node in started:
                try:
                    node.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:  # a head can take half a minute to stop: its processes are killed
                    os.killpg(node.pid, signal.SIGKILL)
                    node.wait()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0
