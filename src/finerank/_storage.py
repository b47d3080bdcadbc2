"""Atomic index folders, safe across processes.

An index folder holds ``CURRENT`` (the name of the live generation), a ``LOCK`` file and one
folder per generation. A writer holds an exclusive lock on ``LOCK`` (``fcntl.flock``: released
by the kernel when the process dies, so a killed writer never leaves it held), writes a new
generation completely, fsyncs it, replaces ``CURRENT`` in one ``os.replace`` and fsyncs the
folder. Only then, still under the lock, are generations other than the live one and the one
before it removed (readers that just read the old name can still open it); orphans of killed
saves go the same way. A crash at any point leaves the previous index readable.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import IndexFormatError

POINTER = "CURRENT"
LOCK = "LOCK"
PREFIX = "gen-"

_guard = threading.Lock()
_thread_locks: dict[str, threading.RLock] = {}
_held: dict[str, list] = {}  # path -> [open lock file, depth], for the thread that holds the path's RLock


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the index's writer lock: exclusive across processes and threads, re-entrant within
    one thread (an update that loads, changes and saves holds it once, around all three)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _guard:
        rlock = _thread_locks.setdefault(key, threading.RLock())
    with rlock:
        state = _held.get(key)
        if state is None:
            handle = open(path / LOCK, "a+b")
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = _held[key] = [handle, 0]
        state[1] += 1
        try:
            yield
        finally:
            state[1] -= 1
            if state[1] == 0:
                del _held[key]
                fcntl.flock(state[0], fcntl.LOCK_UN)
                state[0].close()


def current(path: str | Path) -> str | None:
    """The live generation's name, or None when the folder is not (yet) an index."""
    try:
        return (Path(path) / POINTER).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def live_generation(path: str | Path) -> Path:
    """The folder of the index's live generation; IndexFormatError if there is none."""
    path = Path(path)
    name = current(path)
    if name is None:
        what = "does not exist" if not path.exists() else f"is not a finerank index (no {POINTER} file)"
        raise IndexFormatError(f"{path} {what}")
    generation = path / name
    if not generation.is_dir():
        raise IndexFormatError(f"{path} is corrupt: {POINTER} names {name}, which is missing")
    return generation


@contextlib.contextmanager
def new_generation(path: str | Path, expected: str | None = None, *, check: bool = False) -> Iterator[Path]:
    """Yield an empty folder to write a generation into; publish it if the block succeeds.

    With ``check``, the save is refused (IndexFormatError) unless the live generation is still
    ``expected``, the one the written index was loaded from: a writer never silently
    discards another's update."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IndexFormatError(f"refusing to write an index to {path}: it is a file")
    if path.is_dir() and current(path) is None and any(p.name != LOCK for p in path.iterdir()):
        raise IndexFormatError(
            f"refusing to write an index into {path}: it is a non-empty folder that is not a finerank index"
        )
    with locked(path):
        live = current(path)
        if check and live != expected:
            raise IndexFormatError(
                f"{path} changed since this index was loaded ({expected} -> {live}); "
                "load it again and repeat the update"
            )
        generation = path / f"{PREFIX}{uuid.uuid4().hex[:12]}"
        generation.mkdir()
        try:
            yield generation
            _fsync_tree(generation)
            tmp = path / f"{POINTER}.{generation.name}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(generation.name)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path / POINTER)
            _fsync_dir(path)
        except BaseException:
            shutil.rmtree(generation, ignore_errors=True)
            raise
        keep = {generation.name, live}
        for old in path.iterdir():
            if old.name not in keep and (old.name.startswith(PREFIX) or old.name.startswith(f"{POINTER}.")):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(sub)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_unfinished: set[str] = set()  # temporary files of writes in progress, removed at exit if a daemon thread still writes


@atexit.register
def _remove_unfinished() -> None:
    for tmp in list(_unfinished):  # e.g. an export of a background measurement the process ended before
        with contextlib.suppress(OSError):
            os.remove(tmp)


@contextlib.contextmanager
def replaced(target: Path) -> Iterator[str]:
    """A temporary file beside ``target`` that replaces it atomically when the block succeeds
    (and is removed when it fails, or when the process exits before it ends): a reader sees the
    old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    _unfinished.add(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache others may read gets normal permissions
        os.replace(tmp, target)
    finally:
        _unfinished.discard(tmp)
        if os.path.exists(tmp):
            os.remove(tmp)
