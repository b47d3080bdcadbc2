"""Past one machine, on Ray: joining a cluster and running work that needs a model over a
cluster's workers with Ray Data (:func:`map_on_cluster`: a run's shards in
:mod:`finerank.batch`, a teacher's scores in :mod:`finerank.train`, an evaluation's rerankings
in :mod:`finerank.evaluate`).

Ray is an optional extra (``finerank[ray]``), imported only here and by the Ray Serve
deployment (``server/replicas.py``). A worker gets a function that loads its model (each
worker loads it once, from a registry name, a hub id or a folder every node can read) and
whole items with their texts, so the workers need no shared disk; the results come back to
the caller. Workers are sized from the CPUs free now, not the cluster's total: while none is
free a warning says what the job waits for, and a cluster that has not started the workers
within :data:`WORKER_START_TIMEOUT_S` is a ClusterError, not a silent wait.
"""

from __future__ import annotations

import logging
import pickle
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import FinerankError, MissingDependencyError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 120.0


class ClusterError(FinerankError, ConnectionError):
    """The Ray cluster cannot be reached, or it failed the job."""


def connect(address: str, *, quiet: bool = False):
    """Join the Ray cluster at ``address`` (``host:port`` of its head node, or ``auto``) and
    return the ``ray`` module. An address nothing answers on is a ClusterError within
    :data:`CONNECT_TIMEOUT_S`, not Ray's minute of retries."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("Ray", "ray") from None
    if ray.is_initialized():
        return ray
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise ClusterError(
                f"not a Ray address: {address!r} (expected host:port of the head node, e.g. 127.0.0.1:6379)"
            )
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise ClusterError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None
    try:
        ray.init(
            address=address,
            logging_level=logging.ERROR if quiet else logging.WARNING,
            log_to_driver=not quiet,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError) as err:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
    return ray


class _Worker:
    """A Ray Data actor: makes its model once with ``load()``, at its first item (so the worker
    counts as started once it is placed, however long its model takes to load), then applies
    ``work(model, item)`` to each item it is given."""

    def __init__(self, load: Callable, work: Callable):
        self.load, self.work, self.model = load, work, None

    def __call__(self, batch: dict) -> dict:
        if self.load is not None:
            self.model, self.load = self.load(), None
        done = [
            pickle.dumps(self.work(self.model, pickle.loads(p)), protocol=pickle.HIGHEST_PROTOCOL)
            for p in batch["payload"]
        ]
        return {"key": batch["key"], "payload": done}


def map_on_cluster(
    address: str,
    load: Callable,
    work: Callable,
    items: Mapping[int, Any],
    *,
    workers: int | None = None,
    cpus_per_worker: float = 1,
    start_timeout_s: float | None = None,
    show_progress: bool = False,
) -> Iterator[tuple[int, Any]]:
    """``work(model, item)`` for every item of ``items`` (key -> item), on the cluster's workers
    with Ray Data; yields (key, result) as each finishes, in any order. ``workers`` actors (default:
    as many as the CPUs free now allow) each make the model once with ``load()``. A worker that
    dies is replaced and its items redone (Ray Data's actor restarts and task retries). Items and
    results travel pickled, so the workers need no shared disk; ``load`` and ``work`` must be
    picklable (module-level functions, or partials of them).

    While no CPU is free a warning says so; if the cluster has not started the workers within
    ``start_timeout_s`` (default :data:`WORKER_START_TIMEOUT_S`: no CPU freed, or no node with
    ``cpus_per_worker`` free), a ClusterError."""
    connect(address, quiet=not show_progress)
    import ray.data

    rows = [
        {"key": k, "payload": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)} for k, item in sorted(items.items())
    ]
    if not rows:
        return
    start_timeout_s = WORKER_START_TIMEOUT_S if start_timeout_s is None else start_timeout_s
    deadline = time.monotonic() + start_timeout_s
    free = _free_cpus(ray, address, cpus_per_worker, deadline, start_timeout_s)
    fits = max(1, int(free // cpus_per_worker))  # workers the free CPUs hold now; more start as CPUs free up
    size = min(workers or fits, len(rows))
    if not show_progress:  # -q: Ray Data's own progress lines too
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = show_progress
    context.verbose_stats_logs = False
    context.wait_for_min_actors_s = max(1.0, deadline - time.monotonic())  # placed, not loaded: see _Worker
    pool = ray.data.ActorPoolStrategy(min_size=min(size, fits), max_size=size)
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _Worker, fn_constructor_args=(load, work), batch_size=1, compute=pool, num_cpus=cpus_per_worker
    )
    quiet = _QuietStartTimeout()
    logging.getLogger("ray.data.exceptions").addFilter(quiet)
    try:
        for row in dataset.iter_rows():
            yield int(row["key"]), pickle.loads(row["payload"])
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(
            f"the Ray cluster at {address} did not start the workers within {start_timeout_s:g} s: "
            f"each needs {cpus_per_worker:g} CPU(s) on one node ({_cpus(ray)} free in all)"
        ) from None
    except ray.exceptions.RayError as err:
        raise ClusterError(f"the Ray job failed: {str(err).splitlines()[0]}") from None
    finally:
        logging.getLogger("ray.data.exceptions").removeFilter(quiet)


def _cpus(ray) -> str:
    return f"{ray.available_resources().get('CPU', 0):g} of {ray.cluster_resources().get('CPU', 0):g} CPUs"


def _free_cpus(ray, address: str, needed: float, deadline: float, timeout_s: float) -> float:
    """The CPUs free on the cluster, once at least ``needed`` are: until then a warning says what
    the job waits for (after a moment: the cluster's count lags a job that just ended), and past
    ``deadline`` a ClusterError."""
    warn_at, warned = time.monotonic() + 2, False
    while (free := ray.available_resources().get("CPU", 0)) < needed:
        now = time.monotonic()
        if now > deadline:
            raise ClusterError(
                f"no free CPU on the Ray cluster at {address} within {timeout_s:g} s: "
                f"{_cpus(ray)} free, a worker needs {needed:g}; other jobs hold them (`ray status` "
                "shows the demands)"
            )
        if now > warn_at and not warned:
            logger.warning(
                "waiting for a free CPU on the Ray cluster at %s: %s free, a worker needs %g (for up to %g s)",
                address,
                _cpus(ray),
                needed,
                timeout_s,
            )
            warned = True
        time.sleep(0.25)
    if warned:
        logger.info("%s free on the Ray cluster at %s: starting the workers", _cpus(ray), address)
    return free


class _QuietStartTimeout(logging.Filter):
    """Drops what Ray Data logs when its workers do not start in time (an internal error with a
    full trace, asking for a bug report): :func:`map_on_cluster` says it as a one-line ClusterError."""

    def filter(self, record: logging.LogRecord) -> bool:
        import ray

        return not isinstance(sys.exc_info()[1], ray.exceptions.GetTimeoutError)  # logged while Ray Data handles it
