"""Calibrated scores: a map from a model's raw score to the probability that the document is
relevant, fitted on judged (query, candidate) pairs of a dev split (``finerank calibrate``), so
that a threshold such as 0.5 means the same across queries and models.

- ``platt``: a logistic curve, p = sigmoid(a * raw + b), fitted by Newton's method.
- ``isotonic``: the best non-decreasing step function (pool adjacent violators), interpolated.

A fitted calibration is stored as JSON with the model, one file per way of reading it (the
scorer's ``calibration_key``): in the model's folder when it can be written there, else in the
user cache (never in site-packages). finerank ships calibrations of its registered scorers,
fitted on train and dev splits (``benchmarks/shipped_calibration.py``); one fitted here comes first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .files import kept_with

METHODS = ("platt", "isotonic")
FILE = "finerank-calibration.json"


@dataclass(frozen=True)
class Calibration:
    method: str
    a: float = 1.0  # platt
    b: float = 0.0
    xs: tuple[float, ...] = ()  # isotonic: raw scores, ascending
    ys: tuple[float, ...] = ()  # isotonic: probabilities there
    fitted_on: str = ""  # what it was fitted on, for people

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "platt":
            return (1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))).astype(np.float32)
        return np.interp(raw, self.xs, self.ys).astype(np.float32)


def fit(raw: np.ndarray, relevant: np.ndarray, method: str = "platt", fitted_on: str = "") -> Calibration:
    """Fit a calibration of raw scores to 0/1 relevance labels."""
    raw, labels = np.asarray(raw, dtype=np.float64), np.asarray(relevant, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if len(raw) != len(labels) or len(raw) < 2 or labels.min() == labels.max():
        raise ValueError("calibration needs scores of both relevant and irrelevant documents")
    if method == "platt":
        a, b = _platt(raw, labels)
        return Calibration("platt", a=a, b=b, fitted_on=fitted_on)
    xs, ys = _isotonic(raw, labels)
    return Calibration("isotonic", xs=tuple(xs), ys=tuple(ys), fitted_on=fitted_on)


def _platt(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic regression of y on x (Platt's smoothed targets, so a perfect split stays finite)."""
    positives, negatives = y.sum(), len(y) - y.sum()
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    scale = x.std() or 1.0
    z = (x - x.mean()) / scale
    w = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(w[0] * z + w[1])))
        gradient = np.array([((p - target) * z).sum(), (p - target).sum()])
        h = p * (1 - p) + 1e-12
        hessian = np.array([[(h * z * z).sum(), (h * z).sum()], [(h * z).sum(), h.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    a = w[0] / scale
    return float(a), float(w[1] - a * x.mean())


def _isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    values, weights, ends = [], [], []
    for i, v in enumerate(y):  # pool adjacent violators
        values.append(v)
        weights.append(1.0)
        ends.append(i)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            weights[-2] = w
            ends[-2] = ends[-1]
            del values[-1], weights[-1], ends[-1]
    starts = [0] + [e + 1 for e in ends[:-1]]
    xs = np.array([(x[s] + x[e]) / 2 for s, e in zip(starts, ends)])
    return xs, np.array(values)


def location(model_dir: Path, key: str) -> Path:
    """Where a model's calibration for ``key`` (the scorer's ``calibration_key``: how it reads)
    is kept (:func:`~finerank.models.files.kept_with`): fits at two token limits do not overwrite
    each other."""
    return kept_with(model_dir, "calibration", key)


def save(calibration: Calibration, path: Path) -> Path:
    """Write atomically (a reader sees the old file or the new one)."""
    from .._storage import replaced

    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as tmp:
        Path(tmp).write_text(json.dumps(asdict(calibration), indent=2), encoding="utf-8")
    return path


def shipped_name(key: str) -> str:
    """The file name of the calibration finerank ships for a registered model read as ``key``."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def load(model_dir: Path, key: str) -> Calibration | None:
    """The model's calibration for ``key``: the one fitted here (``finerank calibrate``), else one
    finerank ships for a registered model read this way (benchmarks/shipped_calibration.py), if
    either exists (a ``finerank-calibration.json`` from before keys were kept counts for every key,
    as it did then)."""
    from importlib import resources

    shipped = resources.files("finerank") / "data" / "calibration" / shipped_name(key)
    for path in (location(model_dir, key), model_dir / FILE, shipped):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                return Calibration(**{**data, "xs": tuple(data.get("xs", ())), "ys": tuple(data.get("ys", ()))})
            except (ValueError, TypeError) as err:
                raise ModelError(
                    f"{path} is not a finerank calibration ({err}); delete it or run finerank calibrate again"
                ) from None
    return None
