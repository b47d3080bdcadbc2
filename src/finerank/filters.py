"""Metadata filters: which documents a search may return.

A filter maps a field (``id``, ``title`` or a metadata key) to a condition:

- a scalar: equality, ``{"lang": "en"}``
- a list: membership, ``{"lang": ["en", "zh"]}``
- an object of ``gt`` / ``gte`` / ``lt`` / ``lte``: a range, ``{"year": {"gte": 2015}}``

All conditions must hold. A document without the field does not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .types import Document

RANGE_OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
_MISSING = object()


def validate(spec: Mapping[str, Any]) -> None:
    """ValueError naming the first malformed condition."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a filter is an object of field -> condition, got {type(spec).__name__}")
    for field, condition in spec.items():
        if isinstance(condition, Mapping):
            unknown = set(condition) - set(RANGE_OPS)
            if unknown or not condition:
                raise ValueError(
                    f"filter on {field!r}: a range uses {', '.join(RANGE_OPS)}, got {sorted(unknown) or 'nothing'}"
                )
            if not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in condition.values()):
                raise ValueError(f"filter on {field!r}: range bounds must be numbers or strings")


def matches(document: Document, spec: Mapping[str, Any]) -> bool:
    for field, condition in spec.items():
        value = (
            document.id
            if field == "id"
            else document.title
            if field == "title"
            else document.metadata.get(field, _MISSING)
        )
        if value is _MISSING:
            return False
        if isinstance(condition, Mapping):
            try:
                if not all(RANGE_OPS[op](value, bound) for op, bound in condition.items()):
                    return False
            except TypeError:  # a value of another type than the bound does not match
                return False
        elif isinstance(condition, list):
            if value not in condition:
                return False
        elif value != condition:
            return False
    return True
