"""The grid of a hyper-parameter sweep: ``--grid`` / ``--set`` items, points, folder names.

Example:
    >>> grid_points(parse_grid(["batch_size=1,2", "learning_rate=1e-3"]))
    [{'batch_size': 1, 'learning_rate': 0.001}, {'batch_size': 2, 'learning_rate': 0.001}]
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

RESERVED_KEYS = ("output_dir", "ckpt_dir")  # set per point, under OUT/<point>/
_KEY = re.compile(r"^[A-Za-z_]\w*(#\w+)*$")


class GridSpecError(ValueError):
    """A ``--grid`` or ``--set`` item that cannot be parsed; the message quotes it."""


# ---- parsing the grid ------------------------------------------------------------------------
def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets and quotes: ``"[1,2],[3,4]"`` -> two items.

    Raises:
        GridSpecError: unbalanced brackets or an unclosed quote.
    """
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth < 0:
                raise GridSpecError(f"unbalanced {char!r} in {text!r}")
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise GridSpecError(f"unclosed {'quote' if quote else 'bracket'} in {text!r}")
    return [part.strip() for part in [*parts, text[start:]]]


def parse_value(text: str) -> Any:
    """A value as JSON, else as a Python literal (``{5: 1}``, ``True``), else the text.

    Raises:
        GridSpecError: an empty value, or one that starts like a list, dict or string
            but parses as neither JSON nor a Python literal.
    """
    text = text.strip()
    if not text:
        raise GridSpecError("empty value")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        if text[0] in "[{(\"'":
            raise GridSpecError(f"{text!r} is neither JSON nor a Python literal ({err})") from err
    return text  # a bare word such as segresnet


def _assignment(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or not value.strip():
        raise GridSpecError(f"expected KEY=VALUE, got {item!r}")
    if not _KEY.match(key):
        raise GridSpecError(f"{key!r} is not a config id (letters, digits, _, # for nesting)")
    if key in RESERVED_KEYS:
        raise GridSpecError(f"{key} is set per point by the sweep (OUT/<point>/...)")
    return key, value


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["batch_size=1,2", "roi_size=[32,32,32],[48,48,48]"]`` -> values per key.

    Raises:
        GridSpecError: bad syntax, an empty value, a key given twice, a repeated value.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, text = _assignment(item)
        if key in grid:
            raise GridSpecError(f"{key} appears twice in the grid")
        try:
            values = [parse_value(part) for part in split_top_level(text)]
        except GridSpecError as err:
            raise GridSpecError(f"{item!r}: {err}") from None
        if len({format_value(v) for v in values}) < len(values):
            raise GridSpecError(f"{item!r} repeats a value")
        grid[key] = values
    return grid


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["roi_size=[32,32,32]", "network_name=segresnet"]`` -> one value per key.

    Raises:
        GridSpecError: bad syntax or a key given twice.
    """
    settings: dict[str, Any] = {}
    for item in items:
        key, text = _assignment(item)
        if key in settings:
            raise GridSpecError(f"{key} is set twice")
        try:
            settings[key] = parse_value(text)
        except GridSpecError as err:
            raise GridSpecError(f"{item!r}: {err}") from None
    return settings


def format_value(value: Any) -> str:
    """A value as written in tables and folder names: strings bare, the rest compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def point_name(params: Mapping[str, Any]) -> str:
    """Folder name of a point, e.g. ``batch_size-1__learning_rate-0.001``."""

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"

    return "__".join(f"{slug(k)}-{slug(format_value(v))}" for k, v in params.items())


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last key varying fastest.

    Raises:
        GridSpecError: two points would share a folder name (values equal once slugged).
    """
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    names = [point_name(p) for p in points]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise GridSpecError(f"grid values give the same folder name: {clashes}")
    return points
