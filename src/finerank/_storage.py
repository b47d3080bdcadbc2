"""Atomic index folders.

An index folder holds ``CURRENT`` (the name of the live generation) and one folder per
generation. A save writes a new generation completely, then replaces ``CURRENT`` in one
``os.replace``; only then are older generations removed. A crash at any point leaves the
previous index readable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .errors import IndexFormatError

POINTER = "CURRENT"


def live_generation(path: str | Path) -> Path:
    """The folder of the index's live generation; IndexFormatError if there is none."""
    path = Path(path)
    pointer = path / POINTER
    if not pointer.is_file():
        raise IndexFormatError(f"{path} is not a finerank index (no {POINTER} file)")
    generation = path / pointer.read_text(encoding="utf-8").strip()
    if not generation.is_dir():
        raise IndexFormatError(f"{path} is corrupt: {POINTER} names {generation.name}, which is missing")
    return generation


@contextlib.contextmanager
def new_generation(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder to write a generation into; publish it if the block succeeds."""
    path = Path(path)
    if path.exists() and not (path / POINTER).is_file() and any(path.iterdir()):
        raise IndexFormatError(f"refusing to write an index into {path}: it is a non-empty folder that is not a finerank index")
    path.mkdir(parents=True, exist_ok=True)
    generation = path / f"gen-{uuid.uuid4().hex[:12]}"
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
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    for old in path.glob("gen-*"):
        if old != generation:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
