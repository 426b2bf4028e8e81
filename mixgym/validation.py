"""Checks of user-given values that name the value, say what is allowed, and coerce nothing.

Python's ``True`` is an ``int`` and numpy happily turns ``"3"`` into an array of strings, so
a bad value passed on, unchecked, surfaces as a traceback from inside numpy or torch, far from
its cause. Configs call these checks where they are made:

- `integer` and `number`: the type (a bool is not a number here; numpy scalars are) and the
  range, as `TypeError` and `ValueError` messages naming the option.
- `check_field_types`: every field of a dataclass against its type annotation (``int``,
  ``float``, ``bool``, ``str``, ``tuple[X, ...]``, ``dict``, unions with None, ``Any``), for
  configs whose options arrive from the command line or YAML.

>>> integer("batch_size", 32, minimum=1)
32
>>> integer("batch_size", True, minimum=1)
Traceback (most recent call last):
...
TypeError: batch_size must be an integer, got True (bool)
>>> number("odm_smoothing", 2.0, minimum=0.0, below=1.0)
Traceback (most recent call last):
...
ValueError: odm_smoothing must be in [0.0, 1.0), got 2.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any

import numpy as np


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` if it is an integer (not a bool) in [minimum, maximum]; else an error naming `name`."""
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def number(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    finite: bool = True,
) -> float:
    """`value` if it is a real number (not a bool) within the bounds; else an error naming `name`.

    `minimum`/`maximum` are inclusive bounds, `above`/`below` exclusive ones; NaN is refused,
    and so are infinities when `finite`.
    """
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    outside = (
        math.isnan(value)
        or (finite and math.isinf(value))
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    )
    if outside:
        low = minimum if minimum is not None else above
        high = maximum if maximum is not None else below
        if low is not None and high is not None:
            what = f"in {'[' if minimum is not None else '('}{low}, {high}{']' if maximum is not None else ')'}"
        elif low is not None:
            what = f"{'>=' if minimum is not None else '>'} {low}"
        elif high is not None:
            what = f"{'<=' if maximum is not None else '<'} {high}"
        else:
            what = "a finite number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type (see the module docstring for the types known)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return _is_integer(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is list or hint is list:
        return isinstance(value, list)
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    """An annotation in words: "an integer or None", "a tuple of numbers", ..."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        return f"a tuple of {_describe(args[0]).split(' ', 1)[-1]}s" if len(args) == 2 and args[1] is Ellipsis else f"a tuple {hint}"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "None", dict: "a mapping"}
    return names.get(origin or hint, str(hint).replace("typing.", ""))


def check_field_types(config: Any) -> None:
    """`TypeError` naming the first field of dataclass `config` whose value is not of its type."""
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not _fits(value, hints[field.name]):
            raise TypeError(f"{field.name} must be {_describe(hints[field.name])}, got {value!r} ({type(value).__name__})")
