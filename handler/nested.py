"""Nested settings tables as dotted paths: the one walk that configuration, its input guards and
redaction share (a module of its own, so none of them imports another for it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def walk(data: Mapping[str, Any], prefix: str = "", keep_empty: bool = False) -> Iterator[tuple[str, Any]]:
    """Leaf keys as dotted paths; dict values are descended into (an empty one is a leaf when
    `keep_empty`)."""
    for k, v in data.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping) and (v or not keep_empty):
            yield from walk(v, path + ".", keep_empty)
        else:
            yield path, v
