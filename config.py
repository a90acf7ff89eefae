"""Dataclass configs for the CLI: loaded from YAML, overridden by flags, documented in ``--help``.

A config class documents its fields in an ``Attributes:`` section of its docstring;
those lines become the flags' help. Precedence: field defaults < ``--config`` YAML
< command-line flags. A config may define ``validate()``; it is called last.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` section of ``cls``'s docstring."""
    doc = cls.__doc__ or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    docs: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        match = re.match(r"\s{4,8}(\w+):\s*(.*)", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return docs


def _unwrap_optional(hint: Any) -> Any:
    """``int | None`` -> ``int``; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _kind(hint: Any) -> Any:
    """The runtime type a hint asks for: ``tuple[str, ...] | None`` -> ``tuple``."""
    hint = _unwrap_optional(hint)
    return typing.get_origin(hint) or hint


def convert(value: Any, hint: Any, name: str) -> Any:
    """Convert a YAML or flag value to the field's type, with a clear error."""
    kind = _kind(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and kind is not str):
        return None
    if kind in (tuple, list) and isinstance(value, (str, list, tuple)):
        items = value.split(",") if isinstance(value, str) else value
        item_hint = (typing.get_args(_unwrap_optional(hint)) or (str,))[0]
        return kind(convert(item.strip() if isinstance(item, str) else item, item_hint, name) for item in items)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return text in ("1", "true", "yes", "on")
            raise ValueError(value)
        if kind is dict and isinstance(value, str):
            value = yaml.safe_load(value)
        if kind is dict and not isinstance(value, dict):
            raise ValueError(value)
        return value if kind is dict else kind(value)
    except (TypeError, ValueError, yaml.YAMLError):
        raise ValueError(f"{name}: cannot read {value!r} as {getattr(kind, '__name__', kind)}") from None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config`` and one ``--field`` flag per field of the dataclass ``cls``."""
    parser.add_argument("--config", type=Path, help="YAML file of field values (flags override it)")
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = f"{docs.get(field.name, '')} (default: {default!r})".replace("%", "%%")
        metavar = getattr(_kind(hints[field.name]), "__name__", "VALUE").upper()
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", dest=field.name, default=None, metavar=metavar, help=help_text
        )


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Build ``cls`` from defaults, the ``--config`` YAML and the flags, then validate it."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(load_yaml(args.config, names))
    for name in names:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    config = cls(**{name: convert(value, hints[name], name) for name, value in values.items()})
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def load_yaml(path: Path, names: set[str]) -> dict[str, Any]:
    """Read a YAML mapping of config fields; unknown fields are an error."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a mapping of field: value")
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config {path} has unknown fields {unknown}; known: {sorted(names)}")
    return data
