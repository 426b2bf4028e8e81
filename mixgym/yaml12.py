"""YAML with the YAML 1.2 core schema's scalars, for command-line values and config files.

PyYAML implements YAML 1.1, where ``1e-3`` and ``1e4`` are strings (1.1 wants ``1.0e-3``),
``010`` is the octal number 8, ``yes``/``no``/``on``/``off`` are booleans and ``inf``/``nan``
are strings. mixgym reads ``--env``/``-o`` values and benchmark configs with the 1.2 core
schema instead (https://yaml.org/spec/1.2.2/#1032-tag-resolution), plus the spellings
Python's ``float`` accepts for infinity and NaN:

========================= =============================================================
text                      value
========================= =============================================================
``10``, ``010``, ``-3``    int, base 10 (``010`` is 10, never 8); ``0o17`` octal, ``0x1f`` hex
``1e-3``, ``1.5``, ``.5``  float
``inf``, ``-.inf``, ``nan`` float (also ``Infinity``, ``.NaN``, any case)
``true``, ``False``        bool (``yes``, ``on``, ... stay strings)
``null``, ``~``, empty     None
anything else             str; ``[1, 2]`` and ``{a: 1}`` are lists and mappings of the above
========================= =============================================================

>>> [load(text) for text in ("1e-3", "1e4", "010", "0x10", "inf", "-.inf", "yes", "true", "null", "[1, 2.5e1]")]
[0.001, 10000.0, 10, 16, inf, -inf, 'yes', True, None, [1, 25.0]]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.?(?:inf|infinity)|\.?nan)$",
    re.IGNORECASE,
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's scalar resolution (module docstring)."""


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
    ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
    ("tag:yaml.org,2002:float", _FLOAT, "-+.0123456789iInN"),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
):
    Yaml12Loader.add_implicit_resolver(_tag, _pattern, list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text[:2] in ("0o", "0x"):
        return int(text, 0)
    return int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node)
    bare = text.lstrip("+-")
    if bare.startswith(".") and bare[1:].lower() in ("inf", "infinity", "nan"):
        text = text.replace(".", "", 1)  # YAML's ".inf" is Python's "inf"
    return float(text)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load(text: str) -> Any:
    """`text` parsed as YAML with the 1.2 core schema's scalars."""
    return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 -- a SafeLoader subclass


def load_file(path: str | Path) -> Any:
    """A YAML file parsed with the 1.2 core schema's scalars."""
    return load(Path(path).read_text())
