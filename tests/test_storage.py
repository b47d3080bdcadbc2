"""Index writes across processes: the writer lock, lost-update refusal, readers during saves,
and crashes at every step of a save. Deterministic: the test holds the lock itself (so
concurrent writers are queued, not raced) or kills a save at a named step."""

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import pytest

from finerank import BM25, Document, Index, IndexFormatError
from finerank._storage import current, locked

BASE = [Document(f"d{i}", f"document number {i} about apples and pears") for i in range(20)]


@pytest.fixture
def index_dir(tmp_path):
    path = tmp_path / "idx"
    Index.build(BASE).save(path)
    return path


def run(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "finerank.cli", "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_concurrent_cli_writers_queue_and_lose_nothing(index_dir, tmp_path):
    rounds = 6
    for r in range(rounds):
        files = []
        for w in range(2):
            f = tmp_path / f"add-{r}-{w}.jsonl"
            f.write_text(json.dumps({"_id": f"r{r}w{w}", "text": f"writer {w} round {r} bananas"}) + "\n")
            files.append(f)
        with locked(index_dir):  # both writers start while the lock is held: they must queue
            writers = [run("index", "--out", str(index_dir), "--add", str(f)) for f in files]
            writers.append(run("index", "--out", str(index_dir), "--delete", f"d{r}"))
        for p in writers:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    index = Index.load(index_dir)
    ids = {d.id for d in index.documents}
    assert {f"r{r}w{w}" for r in range(rounds) for w in range(2)} <= ids
    assert not {f"d{r}" for r in range(rounds)} & ids and len(index) == 20 - rounds + 2 * rounds
    assert [p.name for p in index_dir.iterdir() if p.name.startswith("gen-")].__len__() <= 2  # old generations retired


def test_a_stale_index_is_not_saved_over_a_newer_one(index_dir):
    first, second = Index.load(index_dir), Index.load(index_dir)
    first.update(add=[Document("a", "added by the first writer")]).save(index_dir)
    with pytest.raises(IndexFormatError, match="changed since this index was loaded"):
        second.update(add=[Document("b", "added by the second writer")]).save(index_dir)
    assert "a" in Index.load(index_dir).documents  # the first writer's update survives
    Index.edit(index_dir, add=[Document("c", "a third writer")])  # the generation `second` came from is retired now
    with pytest.raises(IndexFormatError, match="changed since this index was loaded"):
        second.update(add=[Document("b", "added by the second writer")]).save(index_dir)
    _, merged = Index.edit(index_dir, add=[Document("b", "added by the second writer")])  # edit reloads under the lock
    assert {"a", "b"} <= {d.id for d in merged.documents}


def test_readers_load_while_writers_save(index_dir):
    """A reader process loads the index in a loop while this process saves 30 generations:
    every load succeeds (retired generations are kept one save longer, and loads retry)."""
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys
        from finerank import Index
        path, loads = {str(index_dir)!r}, 0
        for line in sys.stdin:
            if line.strip() == "stop":
                break
            for _ in range(3):
                assert len(Index.load(path)) >= 20
                loads += 1
            print(loads, flush=True)
        print("done", loads, flush=True)
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for i in range(30):
        Index.edit(index_dir, add=[Document(f"n{i}", f"new document {i}")])
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == str(3 * (i + 1)), reader.stderr.read()
    out, err = reader.communicate("stop\n", timeout=60)
    assert reader.returncode == 0 and out.strip() == "done 90", err


CRASH = textwrap.dedent("""
    import os, shutil, sys
    from finerank import Document, Index, _storage
    path, step = sys.argv[1], sys.argv[2]
    real = {"fsync": _storage._fsync_tree, "replace": os.replace, "rmtree": shutil.rmtree, "dir": _storage._fsync_dir}
    def die(name):
        def hook(*args, **kwargs):
            if name == step:
                os._exit(9)  # as kill -9: no cleanup runs
            return real[name](*args, **kwargs)
        return hook
    _storage._fsync_tree, os.replace = die("fsync"), die("replace")
    shutil.rmtree, _storage._fsync_dir = die("rmtree"), die("dir")
    Index.edit(path, add=[Document("crash", "written by a save that is killed")])
""")


@pytest.mark.parametrize("step", ["fsync", "replace", "dir", "rmtree"])
def test_a_save_killed_at_any_step_leaves_a_loadable_index(index_dir, step):
    Index.edit(index_dir, add=[Document("x", "a second generation")])  # so a save has an old one to retire
    before = current(index_dir)
    crashed = subprocess.run([sys.executable, "-c", CRASH, str(index_dir), step], capture_output=True, text=True)
    assert crashed.returncode == 9, crashed.stderr
    index = Index.load(index_dir)
    published = current(index_dir) != before
    assert ("crash" in index.documents) == published  # before the rename: the old index; after it: the new one
    assert step in ("dir", "rmtree") or not published
    # the next save works (the lock died with the process) and clears the orphan generation
    Index.edit(index_dir, add=[Document("after", "the next save")])
    assert len([p for p in index_dir.iterdir() if p.name.startswith("gen-")]) <= 2
    assert BM25(Index.load(index_dir)).search("next save", 1)[0].id == "after"


@pytest.mark.slow
def test_random_kills_during_saves_never_corrupt(index_dir):
    """20 writer processes, each saving in a loop, killed with SIGKILL at a random moment once
    it has finished a first save; after each, the index loads and keeps every save that finished."""
    writer = textwrap.dedent(f"""
        import itertools, os, sys
        from finerank import Document, Index
        for i in itertools.count():
            Index.edit({str(index_dir)!r}, add=[Document(f"k{{os.getpid()}}-{{i}}", "x " * 2000)])
            if i == 0:
                print("ready", flush=True)  # saving: the kill below lands somewhere in the next saves
    """)
    rng = random.Random(0)
    saved = 0
    for _ in range(20):
        p = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        p.kill()
        p.wait()
        index = Index.load(index_dir)
        assert len(index) >= 20 + saved
        saved = len(index) - 20
    assert saved > 10  # the writers did get saves done between kills


def test_orphans_and_bad_paths(tmp_path, index_dir):
    (index_dir / "gen-orphan000000").mkdir()  # a save killed before publishing
    Index.edit(index_dir, delete=["d1"])
    assert not (index_dir / "gen-orphan000000").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFormatError, match="it is a file"):
        Index.build(BASE).save(tmp_path / "file")
    with pytest.raises(IndexFormatError, match="does not exist"):
        Index.load(tmp_path / "missing")
    assert os.stat(index_dir / current(index_dir)).st_mode & 0o777 != 0


def test_a_write_a_daemon_thread_leaves_unfinished_at_exit_leaves_no_file(tmp_path):
    """A background measurement's export that the process outlives by ending first: its temporary
    file (hundreds of MB for a large model) is removed at exit, not left in the cache."""
    script = textwrap.dedent(
        f"""
        import threading
        from pathlib import Path
        from finerank._storage import replaced

        started = threading.Event()

        def export():
            with replaced(Path({str(tmp_path)!r}) / "model.onnx") as tmp:
                Path(tmp).write_bytes(b"part of an export")
                started.set()
                threading.Event().wait()  # still writing when the process ends

        threading.Thread(target=export, daemon=True).start()
        started.wait()
        print(len(list(Path({str(tmp_path)!r}).iterdir())))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr  # the temporary file, while it ran
    assert list(tmp_path.iterdir()) == []
