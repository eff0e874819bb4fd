"""Attribute sanitising done by otel-ml itself, independent of the SDK version's own limits.

Only ``str``, ``bool``, ``int`` (clamped to int64), finite ``float`` and short homogeneous lists of those ever
reach the SDK; strings are truncated; numpy scalars are converted. Anything else is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from otel_ml import config

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
MAX_LIST_ITEMS = 32
MAX_ATTRIBUTES = 64


def text(value: object, limit: int | None = None) -> str:
    """A bounded string form of ``value`` (only called on values otel-ml owns: names, labels, types)."""
    limit = config.settings.attribute_value_max_length if limit is None else limit
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= limit else s[:limit]


def scalar(value: Any) -> str | bool | int | float | None:
    """A sanitised scalar, or ``None`` when the value cannot be an attribute."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return min(max(value, _INT64_MIN), _INT64_MAX)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return text(value)
    item = getattr(value, "item", None)  # numpy scalars
    if item is not None and getattr(value, "ndim", None) == 0:
        try:
            return scalar(item())
        except (TypeError, ValueError):
            return None
    return None


def value(raw: Any) -> AttributeValue | None:
    """A sanitised attribute value: a scalar or a homogeneous, bounded list of scalars."""
    if isinstance(raw, (list, tuple)):
        items = [scalar(v) for v in raw[:MAX_LIST_ITEMS]]
        kept = [v for v in items if v is not None]
        if not kept or len({type(v) for v in kept}) != 1:
            return None
        return kept
    return scalar(raw)


def mapping(raw: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Sanitise a user-supplied attribute mapping (keys bounded, values as in :func:`value`)."""
    out: dict[str, AttributeValue] = {}
    if not raw:
        return out
    for key, raw_value in list(raw.items())[:MAX_ATTRIBUTES]:
        clean = value(raw_value)
        if clean is not None:
            out[text(key, 128)] = clean
    return out


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its qualified class name (builtins without module)."""
    cls = type(exc)
    module = cls.__module__
    name = cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    return text(name, 128)
