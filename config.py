"""Dataclass configs for the CLI: loaded from YAML, overridden by flags, documented in ``--help``.

A config class documents its fields in an ``Attributes:`` section of its docstring;
those lines become the flags' help. Precedence: field defaults < ``--config`` YAML
< command-line flags. Every value goes through :func:`convert`, which refuses what
is not of the field's type; a config may define ``validate()`` (ranges, names, how
fields fit together), which is called last. The ``check_*`` helpers below are the
checks the configs' ``validate()`` methods share; each error names the field and
what it allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from backtrack_gym.envs.core import Task

C = TypeVar("C")

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


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


def _optional(hint: Any) -> bool:
    """Whether a hint admits None (``int | None``)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


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


def convert(value: Any, hint: Any, name: str, *, text: bool = True) -> Any:
    """Convert a YAML or flag value to the field's type, or raise a ``ValueError`` naming the field.

    Conversion is strict: an int field takes an int (not ``2.7``, not ``true``), a float
    field an int or a finite float, a bool field a bool, and None only where the hint
    allows it. With ``text`` (flags and YAML) a string is also read as the field's type
    (``"3"``, ``"1e-3"``, ``"yes"``, ``"none"``, ``"a,b"`` for a tuple, YAML for a dict);
    without it a string is only a string (for a tuple field, a tuple of that one string).
    """
    kind = _kind(hint)
    if kind is Any:
        return value
    if value is None or (text and isinstance(value, str) and value.lower() in ("none", "null") and kind is not str):
        if _optional(hint):
            return None
        raise ValueError(f"{name}: cannot read {value!r} as {getattr(kind, '__name__', kind)}")
    if kind in (tuple, list):
        if isinstance(value, str):
            # A flag or YAML string is a comma-separated list; a Python string is one item.
            value = ([item.strip() for item in value.split(",")] if value.strip() else []) if text else [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: cannot read {value!r} as a list")
        item_hint = (typing.get_args(_unwrap_optional(hint)) or (Any,))[0]
        return kind(convert(item, item_hint, name, text=text) for item in value)
    if kind is dict:
        if text and isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ValueError(f"{name}: cannot read {value!r} as a mapping (YAML, e.g. '{{a: 1}}')") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name}: cannot read {value!r} as a mapping (YAML, e.g. '{{a: 1}}')")
        value_hint = (typing.get_args(_unwrap_optional(hint)) or (Any, Any))[1]
        return {key: convert(item, value_hint, f"{name}.{key}", text=text) for key, item in value.items()}
    converted = _scalar(value, kind, text)
    if converted is None:
        raise ValueError(f"{name}: cannot read {value!r} as {getattr(kind, '__name__', kind)}")
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return converted


def _scalar(value: Any, kind: Any, text: bool) -> Any:
    """``value`` as a ``kind`` scalar, or None when it is not one."""
    if text and isinstance(value, str) and kind is not str:
        word = value.strip()
        if kind is bool:
            return BOOL_WORDS.get(word.lower())
        try:
            return kind(word)
        except (TypeError, ValueError):
            return None
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None  # YAML's true is not a number
    if kind is int:
        return int(value) if isinstance(value, numbers.Integral) else None
    if kind is float:
        return float(value) if isinstance(value, numbers.Real) else None
    return value if isinstance(value, kind) else None


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
        message = " ".join(str(err).split())  # YAML errors span lines; the CLI shows one
        raise ValueError(f"cannot read config {path}: {message}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a mapping of field: value")
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config {path} has unknown fields {unknown}; known: {sorted(names)}")
    return data


# --- checks the configs' validate() share ---------------------------------------------
#
# Each takes the config and the names of the fields to check; a None value (an optional
# field left unset) passes, and a list or tuple value is checked item by item.


def _values(config: Any, name: str) -> list[Any]:
    value = getattr(config, name)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_at_least(config: Any, minimum: int, *names: str) -> None:
    """Each field of ``names`` is at least ``minimum``."""
    bound = "non-negative" if minimum == 0 else f"at least {minimum}"
    for name in names:
        if any(value < minimum for value in _values(config, name)):
            raise ValueError(f"{name} must be {bound}, got {getattr(config, name)!r}")


def check_positive(config: Any, *names: str) -> None:
    """Each field of ``names`` is above 0."""
    for name in names:
        if any(not value > 0 for value in _values(config, name)):
            raise ValueError(f"{name} must be positive, got {getattr(config, name)!r}")


def check_fraction(config: Any, *names: str, include_one: bool = False) -> None:
    """Each field of ``names`` is in [0, 1) (or [0, 1] with ``include_one``)."""
    for name in names:
        for value in _values(config, name):
            if not (0 <= value <= 1 if include_one else 0 <= value < 1):
                interval = "[0, 1]" if include_one else "[0, 1)"
                raise ValueError(f"{name} must be in {interval}, got {getattr(config, name)!r}")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """``value`` (or each item of a list or tuple ``value``) is one of ``choices``."""
    values = value if isinstance(value, (list, tuple)) else [value]
    unknown = [item for item in values if item not in choices]
    if unknown:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_task(task: str, task_config: Mapping[str, Any]) -> Task:
    """The task ``task`` built from ``task_config``; errors name ``task`` or ``task_config``.

    Building it checks the config's keys and values as the task itself does, so a bad
    value is refused before any work starts.
    """
    from backtrack_gym.envs import TASK_ENV_IDS, make_task

    check_choice("task", task, TASK_ENV_IDS)
    try:
        return make_task(task, **task_config)
    except ValueError as err:
        raise ValueError(f"task_config: {err}") from None


def check_style(name: str, style: str, task: Task) -> None:
    """``style`` is a trace style of ``task``."""
    from backtrack_gym.agents.traces import styles_for

    styles = styles_for(task)
    if style not in styles:
        raise ValueError(f"{name} must be one of {sorted(styles)} for {task.name}, got {style!r}")


def renamed(err: ValueError, names: Mapping[str, str]) -> ValueError:
    """``err`` with the field its message starts with renamed by ``names`` (a message about a
    config built from another's fields then names the field that was set)."""
    message = str(err)
    head, space, rest = message.partition(" ")
    field = re.match(r"[\w.]*", head).group(0)
    if field not in names:
        return err
    return ValueError(names[field] + head[len(field) :] + space + rest)
