"""Strict JSON text for the files the library writes (reports, checkpoint configs).

``json.dumps`` writes a float NaN as the bare token ``NaN``, which Python reads back but JSON does not allow: ``jq``,
JavaScript, the Hugging Face hub's config viewer and most other readers reject the file. A correlation of a
constant column, an AUROC of one class, a metric of an empty split are NaN by definition, so every file the
library writes goes through :func:`json_text`, which writes non-finite numbers as ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every float that is NaN or ±inf (nested in dicts, lists, tuples) replaced by None;
    numpy and torch scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):
        obj = obj.item()  # a numpy or torch scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any, **kwargs) -> str:
    """``json.dumps(obj, **kwargs)`` with NaN and ±inf written as ``null`` (valid JSON, not Python's ``NaN``)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


__all__ = ["finite_or_none", "json_text"]
