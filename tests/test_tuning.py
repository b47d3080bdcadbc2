"""backend="auto" measures every installed backend x precision once per model and CPU, keeps the
fastest whose ranking agrees with fp32, and reads that choice back from the cache afterwards."""

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from finerank import CrossEncoder
from finerank.cli import main
from finerank.models import tuning
from finerank.models.backends import cpu_has_bf16

pytest.importorskip("torch")


@pytest.fixture
def autotune(tmp_path, monkeypatch):
    monkeypatch.setenv("FINERANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FINERANK_AUTOTUNE", "1")
    calls = []
    real = tuning.measure
    monkeypatch.setattr(tuning, "measure", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    return calls


def test_auto_measures_once_and_keeps_the_fastest_that_agrees(
    tiny_ce, datasets, tmp_path, autotune, monkeypatch, capsys
):
    model = shutil.copytree(tiny_ce, tmp_path / "model")
    ce = CrossEncoder(model, threads=2)
    ce.measuring.join()  # measured in the background while it served with the starting engine
    trials = tuning.last_trials(ce, 2)
    assert len(autotune) == 1 and {(t.backend, t.precision) for t in trials} == set(tuning.ENGINES)
    measured = [t for t in trials if not t.error]
    expected = {("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")} | (
        {("torch", "bf16")} if cpu_has_bf16() else set()
    )
    assert expected <= {(t.backend, t.precision) for t in measured}
    if not cpu_has_bf16():  # torch would emulate bf16 and openvino run it as fp32: not tried
        skipped = {(t.backend, t.precision) for t in trials if t.error == "this CPU has no bf16 units"}
        assert skipped == {engine for engine in tuning.ENGINES if engine[1] == "bf16"}
    assert all(t.pairs_per_s > 0 and -1 <= t.tau <= 1 for t in measured)
    agreeing = [t for t in measured if t.tau >= tuning.MIN_TAU]
    fastest = max(agreeing, key=lambda t: t.pairs_per_s)
    assert (ce.backend_name, ce.precision) == (fastest.backend, fastest.precision)
    assert isinstance(ce.backend, tuning.BACKENDS[fastest.backend])
    assert ce.measuring.choice == (fastest.backend, fastest.precision) and ce.pairs_per_second == fastest.pairs_per_s
    # loaded again: read from the cache, not measured
    again = CrossEncoder(model, threads=2)
    assert len(autotune) == 1 and (again.backend_name, again.precision) == (ce.backend_name, ce.precision)
    assert again.measuring is None and again.pairs_per_second == fastest.pairs_per_s
    # another CPU (or thread count), or newer weights: nothing cached for them
    with monkeypatch.context() as mp:
        mp.setattr(tuning, "cpu_key", lambda threads: "another CPU")
        assert tuning.cached(ce, 2) is None
    with monkeypatch.context() as mp:  # an environment without the chosen backend (the cache is shared): measure again
        mp.setattr(tuning, "installed", lambda backend: backend != ce.backend_name)
        assert tuning.cached(ce, 2) is None
    assert tuning.cached(ce, 2) == (ce.backend_name, ce.precision) and tuning.cached(ce, 1) is None
    future = time.time() + 60
    os.utime(model / "model.safetensors", (future, future))
    assert tuning.cached(ce, 2) is None
    # doctor measures again (the weights changed), gated on nDCG@10 over a dev split, and reports it
    args = ["--dataset", str(datasets / "nfcorpus"), "--split", "dev", "--queries", "5", "--candidates", "10"]
    assert main(["-q", "doctor", "--reranker", str(model), "--threads", "2", "--json", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    (entry,) = report["models"]
    assert entry["measured"] and len(entry["trials"]) == len(tuning.ENGINES) and report["backends"]["torch"]
    judged = [tuning.Trial(**t) for t in entry["trials"] if not t["error"]]
    assert all(0 <= t.ndcg <= 1 for t in judged) and judged[0].ndcg_loss == 0  # the fp32 reference
    fastest = max((t for t in judged if t.ndcg_loss <= tuning.MAX_NDCG_LOSS), key=lambda t: t.pairs_per_s)
    assert entry["choice"] == [fastest.backend, fastest.precision]
    assert [(t.backend, t.precision, t.ndcg) for t in tuning.last_trials(ce, 2) if not t.error] == [
        (t.backend, t.precision, t.ndcg) for t in judged
    ]
    # the verdicts travel with the model: measured elsewhere (another CPU, a new environment) with no dev split,
    # each engine takes its kept verdict instead of the sample's tau; newer weights void them
    past = time.time() - 60
    os.utime(model / "model.safetensors", (past, past))
    kept = tuning.verdicts(ce)
    assert entry["verdicts"] == str(tuning.verdicts_file(ce)) and tuning.verdicts_file(ce).parent == model
    assert kept["on"] == "nfcorpus dev (5 queries, BM25 top 10)" and set(kept["engines"]) == {
        tuning.engine_label(t.backend, t.precision) for t in judged
    }
    with monkeypatch.context() as mp:
        mp.setattr(tuning, "cpu_key", lambda threads: "another CPU")
        elsewhere = [t for t in tuning.measure(ce, 2) if not t.error]
    assert [(t.backend, t.precision, t.ndcg, t.ndcg_loss) for t in elsewhere] == [
        (t.backend, t.precision, t.ndcg, t.ndcg_loss) for t in judged
    ]
    admitted = max((t for t in elsewhere if t.ndcg_loss <= tuning.MAX_NDCG_LOSS), key=lambda t: t.pairs_per_s)
    assert tuning.pick(elsewhere) == (admitted.backend, admitted.precision)
    assert tuning.cached(ce, 2) == tuple(entry["choice"])
    good = tuning.verdicts_file(ce).read_text()
    for damaged in ("{not json", '{"engines": [1]}', '{"engines": {"onnx int8": {"ndcg": "high"}}}'):
        tuning.verdicts_file(ce).write_text(damaged)
        assert tuning.verdicts(ce) == {}  # no verdict, and measuring falls back on the tau gate
    tuning.verdicts_file(ce).write_text(good)
    os.utime(tuning.verdicts_file(ce), (past + 30, past + 30))
    assert tuning.verdicts(ce) == kept
    os.utime(tuning.verdicts_file(ce), (future, future))  # verdicts newer than a CPU's choice: it measures again
    assert tuning.cached(ce, 2) is None
    os.utime(model / "model.safetensors", (future + 60, future + 60))
    assert tuning.verdicts(ce) == {}


def test_the_first_load_serves_at_once_while_measuring(tiny_ce, tmp_path, autotune, monkeypatch):
    """The load returns before the measurement ends, and the model scores meanwhile with torch;
    a timed run that a serving batch overlapped does not count. Deterministic: the measurement is
    held at its start until the test has scored."""
    model = shutil.copytree(tiny_ce, tmp_path / "model")
    go, real = threading.Event(), tuning.choose
    monkeypatch.setattr(tuning, "choose", lambda *a, **k: go.wait() and real(*a, **k))
    ce = CrossEncoder(model, threads=2)
    texts = ["a dog sat on the mat", "the stock market fell", "dogs are loyal pets"]
    assert ce.measuring.is_alive() and (ce.backend_name, ce.precision) == tuning.starting_engine()
    reference = CrossEncoder(model, backend="torch", precision="fp32").score("dogs", texts, raw=True)
    mark = tuning.SERVING.wait_quiet(0)
    during = ce.score("dogs", texts, raw=True)
    assert np.allclose(during, reference, atol=0.05)  # the starting engine (bf16 where the CPU has it)
    assert not tuning.SERVING.undisturbed(mark)  # a timed run begun at mark would be run again
    go.set()
    ce.measuring.join()
    assert ce.measuring.choice == (ce.backend_name, ce.precision) == tuning.cached(ce, 2)
    assert isinstance(ce.backend, tuning.BACKENDS[ce.backend_name])  # no longer counted as serving
    mark = tuning.SERVING.wait_quiet(0)
    after = ce.score("dogs", texts, raw=True)
    assert tuning.SERVING.undisturbed(mark) and np.argsort(after).tolist() == np.argsort(reference).tolist()


def test_a_failed_measurement_leaves_the_starting_engine(tiny_ce, tmp_path, autotune, monkeypatch):
    model = shutil.copytree(tiny_ce, tmp_path / "model")
    monkeypatch.setattr(tuning, "choose", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    ce = CrossEncoder(model)
    ce.measuring.join()
    assert ce.measuring.choice is None and isinstance(ce.backend, tuning.BACKENDS["torch"])
    assert len(ce.score("dogs", ["a dog", "a cat"])) == 2 and tuning.cached(ce, None) is None


def test_explicit_or_switched_off_means_no_measurement(tiny_ce, autotune, monkeypatch, tmp_path):
    assert CrossEncoder(tiny_ce, backend="torch").backend_name == "torch"
    assert CrossEncoder(tiny_ce, precision="fp32").precision == "fp32"
    monkeypatch.setenv("FINERANK_AUTOTUNE", "0")
    CrossEncoder(tiny_ce)
    assert autotune == [] and not list((tmp_path / "cache").rglob("tuning-*.json"))


def test_pick_never_takes_a_disagreeing_or_failed_engine():
    trials = [
        tuning.Trial("torch", "fp32", 10.0, 1.0),
        tuning.Trial("onnx", "int8", 50.0, 0.9),
        tuning.Trial("openvino", "bf16", error="MissingDependencyError: openvino"),
        tuning.Trial("torch", "bf16", 20.0, 0.995),
    ]
    assert tuning.pick(trials) == ("torch", "bf16")
    assert tuning.pick(trials[1:3]) is None
    # on a dev split nDCG@10 decides: int8 that loses 0.004 is in, bf16 that loses 0.01 is out, whatever their tau
    judged = [
        tuning.Trial("torch", "fp32", 10.0, 1.0, ndcg=0.40, ndcg_loss=0.0),
        tuning.Trial("onnx", "int8", 50.0, 0.9, ndcg=0.396, ndcg_loss=0.004),
        tuning.Trial("openvino", "bf16", 60.0, 1.0, ndcg=0.39, ndcg_loss=0.01),
    ]
    assert tuning.pick(judged) == ("onnx", "int8")


def test_reordered_ties_are_no_disagreement():
    reference = np.array([0.90, 0.500, 0.501, 0.502, 0.10])  # three texts the model barely tells apart
    reordered_ties = np.array([0.91, 0.503, 0.500, 0.501, 0.11])
    assert tuning.kendall_tau(reordered_ties, reference) == 1.0
    swapped = np.array([0.10, 0.500, 0.501, 0.502, 0.90])  # the best and the worst change places
    assert tuning.kendall_tau(swapped, reference) < 0.0
    assert tuning.kendall_tau(np.array([1.0, 2.0]), np.array([0.5, 0.5])) == 1.0  # nothing told apart
