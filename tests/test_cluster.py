"""Past one machine, on a real local Ray cluster: a head and two worker nodes, each its own
`ray start` process on 127.0.0.1, started and stopped here. Batch reranking equals the local
run even when a worker is killed mid-shard; an evaluation and a teacher's scores computed on the
cluster equal the local ones; Ray Serve replicas answer the Cohere SDK as the plain server
does, a request whose replica is killed is retried, and one is answered 503 when every try
dies and 408 when it outlives the front's timeout.

A worker or replica is killed while it provably holds the request: the model is wrapped in a
gate that writes the PID of the process scoring a chosen query and holds it until the test
opens the gate, so the kill never depends on timing."""

import functools
import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cohere
import httpx
import pytest
import support
from support import LiveServer, local_cluster, until

from finerank import load_reranker, read_corpus, read_run
from finerank.batch import rerank_run
from finerank.cli import main
from finerank.cluster import ClusterError, map_on_cluster
from finerank.evaluate import evaluate, load_dataset
from finerank.server import create_app, replicas
from finerank.train import Group, with_teacher

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the ray extra is not installed")
KEY = "cluster-key"
READING = {
    "backend": "torch",
    "precision": "fp32",
    "threads": 1,
}  # as a one-CPU worker reads: the same scores everywhere


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """host:port of a three-node cluster (one CPU a node); stopped after the module."""
    with local_cluster(3, log=tmp_path_factory.mktemp("ray") / "nodes.log") as address:
        for module in (sys.modules[__name__], support):  # the gate, and the `until` it waits with, go to the workers
            ray.cloudpickle.register_pickle_by_value(module)
        yield address


class Gate:
    """Holds any process scoring ``query`` until :meth:`open`; each held process's PID is
    written to ``held``, and each that scores it after the gate opened to ``passed``."""

    def __init__(self, folder: Path, query: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.query = folder, query

    def __call__(self, query: str) -> None:
        if query != self.query:
            return
        if not (self.folder / "open").exists():
            with open(self.folder / "held", "a") as f:
                f.write(f"{os.getpid()}\n")
            until(lambda: (self.folder / "open").exists(), 600, "the gate")
        with open(self.folder / "passed", "a") as f:
            f.write(f"{os.getpid()}\n")

    def pids(self, name: str) -> list[int]:
        path = self.folder / name
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def held(self, count: int = 1) -> int:
        """The PID of the ``count``-th process held (waits for it)."""
        return until(
            lambda: len(self.pids("held")) >= count and self.pids("held")[count - 1],
            240,
            f"a process held at {self.query!r}",
        )

    def open(self) -> None:
        (self.folder / "open").touch()


def gated(gate: Gate, model: str, **options):
    """The model, loaded as usual, with ``gate`` in front of its scoring (its raw_scores: the
    pipeline's path and the batcher's both end there)."""
    reranker = load_reranker(model, **options)
    scorer = reranker.scorer
    raw = scorer.raw_scores
    scorer.raw_scores = lambda requests: [gate(q) for q, _ in requests] and raw(requests)
    return reranker


def test_a_run_reranked_on_the_cluster_equals_the_local_run_though_a_worker_is_killed(
    cluster, dl19_slice, tiny_ce, tmp_path
):
    _, run, queries, documents = dl19_slice
    reranker = load_reranker(tiny_ce, **READING)
    local = rerank_run(run, queries, documents, reranker, tmp_path / "local.trec", depth=20, shard_size=1).read_text()
    gate = Gate(tmp_path / "gate", queries[sorted(run)[3]])
    load = functools.partial(gated, gate, str(tiny_ce), **READING)
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(
            rerank_run,
            run,
            queries,
            documents,
            reranker,
            tmp_path / "cluster.trec",
            depth=20,
            shard_size=1,
            ray_address=cluster,
            load=load,
        )
        killed = gate.held()  # the worker reranking the fourth shard, held mid-shard
        os.kill(killed, signal.SIGKILL)
        gate.open()
        out = job.result(timeout=300)
    assert out.read_text() == local and len(local.splitlines()) == 6 * 20
    assert (
        gate.pids("held") == [killed] and killed not in gate.pids("passed") and len(gate.pids("passed")) == 1
    )  # redone elsewhere


@ray.remote(num_cpus=1)
class Holder:
    """Holds one CPU of the cluster while it lives, as another job's worker would."""

    def ready(self) -> bool:
        return True


@pytest.fixture
def cpus_held(cluster):
    """Every CPU of the cluster held by a Holder (placed, and counted as taken); freed after the test."""
    holders = [Holder.remote() for _ in range(int(ray.cluster_resources()["CPU"]))]
    try:
        ray.get([h.ready.remote() for h in holders], timeout=120)
        until(lambda: ray.available_resources().get("CPU", 0) == 0, 60, "the cluster's CPUs counted as taken")
        yield len(holders)
    finally:
        for holder in holders:
            ray.kill(holder)
        until(lambda: ray.available_resources().get("CPU", 0) == len(holders), 60, "the cluster's CPUs freed")


def test_rerank_run_on_a_cluster_with_no_free_cpu_says_what_it_waits_for_then_fails_in_one_line(
    cluster, cpus_held, dl19_slice, tiny_ce, tmp_path, capsys, caplog
):
    folder, run, _, documents = dl19_slice
    run_file, corpus = tmp_path / "run.trec", tmp_path / "corpus.jsonl"
    run_file.write_text(
        "".join(f"{q} Q0 {d} {r} {s} bm25\n" for q in sorted(run)[:2] for r, (d, s) in enumerate(run[q].items(), 1))
    )
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents.values()))
    argv = [
        "rerank-run",
        "--start-timeout",
        "3",
        str(run_file),
        "--corpus",
        str(corpus),
        "--queries",
        str(folder / "queries.jsonl"),
        "--out",
        str(tmp_path / "out.trec"),
        "--depth",
        "5",
        "--ray",
        cluster,
        "--reranker",
        str(tiny_ce),
    ]
    answer: list[int] = []
    job = threading.Thread(target=lambda: answer.append(main(argv)), daemon=True)
    job.start()
    job.join(120)  # before the fix the job waited on for as long as the CPUs were held: a failure here, not a hang
    assert answer == [1], "rerank-run --ray still waits for a CPU after 120 s"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        f"finerank: error: no free CPU on the Ray cluster at {cluster} within 3 s: 0 of {cpus_held} CPUs free"
    )
    assert f"waiting for a free CPU on the Ray cluster at {cluster}: 0 of {cpus_held} CPUs free" in caplog.text
    assert not (tmp_path / "out.trec").exists()


def test_workers_no_node_can_hold_are_a_clear_error_within_the_timeout(cluster):
    # three one-CPU nodes: 3 CPUs free, but no node has the 2 a worker asks for, so Ray places none
    with pytest.raises(ClusterError, match=r"did not start the workers within 3 s: each needs 2 CPU\(s\) on one node"):
        list(map_on_cluster(cluster, dict, _identity, {0: "item"}, cpus_per_worker=2, start_timeout_s=3))


def _identity(model, item):
    return item


def test_eval_and_teacher_scores_on_the_cluster_equal_the_local_ones(cluster, datasets, tiny_ce):
    folder = datasets / "trec-dl-2019-passage-pool"
    dataset, run = load_dataset(folder, "test", max_queries=5), read_run(folder / "runs" / "BM25.top100.trec")
    documents = {d.id: d for d in read_corpus(folder) if any(d.id in run[q] for q in dataset.queries)}
    reranker, load = load_reranker(tiny_ce, **READING), functools.partial(load_reranker, str(tiny_ce), **READING)
    local = evaluate(dataset, run, reranker, documents=documents, candidates=20)
    remote = evaluate(dataset, run, reranker, documents=documents, candidates=20, ray_address=cluster, load=load)
    assert remote.per_query == local.per_query and remote.tops == local.tops and remote.scores == local.scores
    groups = [
        Group(text, tuple(documents[d].content for d in list(run[q])[:8]), tuple(list(run[q].values())[:8]))
        for q, text in dataset.queries.items()
    ]
    taught = with_teacher(groups, reranker, ray_address=cluster, load=load, chunk=2)
    assert taught == with_teacher(groups, reranker) and all(len(g.targets) == 8 for g in taught)


def test_serve_answers_as_the_plain_server_retries_a_killed_replica_and_says_503_when_all_die(
    cluster, tiny_ce, tmp_path
):
    query, documents = (
        "how do vaccines train the immune system",
        [
            "Vaccines expose the immune system to a harmless piece of a pathogen so it learns to recognise it.",
            "The stock market fell sharply on Tuesday.",
            "Memory B cells remember antigens after vaccination.",
        ],
    )
    gate = Gate(tmp_path / "gate", "GATED " + query)
    body = {"query": gate.query, "documents": documents}
    with LiveServer(create_app(load_reranker(tiny_ce, **READING), api_key=KEY)) as plain:
        expected = (
            cohere.ClientV2(api_key=KEY, base_url=plain.url)
            .rerank(model="default", query=query, documents=documents)
            .results
        )
        gated_answer = httpx.post(
            f"{plain.url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ).json()["results"]
    front = replicas.deploy(
        cluster, functools.partial(gated, gate, str(tiny_ce), **READING), replicas=2, quiet=True, api_key=KEY
    )
    try:
        with LiveServer(front) as server:
            url = server.url
            got = (
                cohere.ClientV2(api_key=KEY, base_url=url)
                .rerank(model="default", query=query, documents=documents)
                .results
            )
            assert [(r.index, r.relevance_score) for r in got] == [(r.index, r.relevance_score) for r in expected]
            with (
                ThreadPoolExecutor(1) as pool,
                httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client,
            ):
                # the replica scoring the request is killed: the request is answered by the other one
                answer = pool.submit(client.post, f"{url}/v1/rerank", json=body)
                os.kill(gate.held(1), signal.SIGKILL)
                gate.held(2)  # the retry, held on the other replica
                gate.open()
                retried = answer.result(timeout=300)
                assert retried.status_code == 200, retried.text
                assert retried.json()["results"] == gated_answer
                # both tries killed: a clear 503, not a hang or a bare 500
                (gate.folder / "open").unlink()
                answer = pool.submit(client.post, f"{url}/v1/rerank", json=body)
                os.kill(gate.held(3), signal.SIGKILL)
                os.kill(gate.held(4), signal.SIGKILL)
                refused = answer.result(timeout=300)
                gate.open()
                assert refused.status_code == 503 and "stopped: retry shortly" in refused.json()["message"]
                # a body over the limit is refused by the front as it streams in, before any replica reads it
                big = client.post(f"{url}/v1/rerank", content=(b"x" * 1024 for _ in range(17 * 1024)))
                assert big.status_code == 413 and big.json()["field"] == "body"
            # a request held past the front's timeout: cancelled and answered 408, not left hanging
            (gate.folder / "open").unlink()
            from ray import serve

            with LiveServer(replicas.Front(serve.get_app_handle(replicas.APP_NAME), request_timeout_s=1)) as impatient:
                late = httpx.post(
                    f"{impatient.url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
                )
            gate.open()
            assert late.status_code == 408 and "no answer within 1 s" in late.json()["message"]
    finally:
        replicas.undeploy(cluster)
