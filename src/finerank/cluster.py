"""Past one machine, on Ray: joining a cluster and running work that needs a model over a
cluster's workers with Ray Data (:func:`map_on_cluster`: a run's shards in
:mod:`finerank.batch`, a teacher's scores in :mod:`finerank.train`, an evaluation's rerankings
in :mod:`finerank.evaluate`).

Ray is an optional extra (``finerank[ray]``), imported only here and by the Ray Serve
deployment (``server/replicas.py``). A worker gets a function that loads its model (each
worker loads it once, from a registry name, a hub id or a folder every node can read) and
whole items with their texts, so the workers need no shared disk; the results come back to
the caller.
"""

from __future__ import annotations

import logging
import pickle
import socket
from typing import Any, Callable, Iterator, Mapping

from .errors import FinerankError, MissingDependencyError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


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
            raise ClusterError(f"not a Ray address: {address!r} (expected host:port of the head node, e.g. 127.0.0.1:6379)")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise ClusterError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None
    try:
        ray.init(address=address, logging_level=logging.ERROR if quiet else logging.WARNING, log_to_driver=not quiet,
                 configure_logging=False)
    except (ConnectionError, RuntimeError) as err:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
    return ray


class _Worker:
    """A Ray Data actor: makes its model once with ``load()``, then applies ``work(model, item)``
    to each item it is given."""

    def __init__(self, load: Callable, work: Callable):
        self.model, self.work = load(), work

    def __call__(self, batch: dict) -> dict:
        done = [pickle.dumps(self.work(self.model, pickle.loads(p)), protocol=pickle.HIGHEST_PROTOCOL) for p in batch["payload"]]
        return {"key": batch["key"], "payload": done}


def map_on_cluster(address: str, load: Callable, work: Callable, items: Mapping[int, Any], *, workers: int | None = None,
                   cpus_per_worker: float = 1, show_progress: bool = False) -> Iterator[tuple[int, Any]]:
    """``work(model, item)`` for every item of ``items`` (key -> item), on the cluster's workers
    with Ray Data; yields (key, result) as each finishes, in any order. ``workers`` actors (default:
    as many as the cluster's CPUs allow) each make the model once with ``load()``. A worker that
    dies is replaced and its items redone (Ray Data's actor restarts and task retries). Items and
    results travel pickled, so the workers need no shared disk; ``load`` and ``work`` must be
    picklable (module-level functions, or partials of them)."""
    connect(address, quiet=not show_progress)
    import ray.data

    if not show_progress:  # -q: Ray Data's own progress lines too
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = show_progress
    context.verbose_stats_logs = False
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    rows = [{"key": k, "payload": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)} for k, item in sorted(items.items())]
    if not rows:
        return
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _Worker, fn_constructor_args=(load, work), batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))), num_cpus=cpus_per_worker)
    try:
        for row in dataset.iter_rows():
            yield int(row["key"]), pickle.loads(row["payload"])
    except ray.exceptions.RayError as err:
        raise ClusterError(f"the Ray job failed: {str(err).splitlines()[0]}") from None
