"""Dataclass configs for the CLI: loaded from YAML, overridden by flags, documented in ``--help``.

A config is a dataclass derived from :class:`Config`. Its fields may be other configs
(sections, e.g. ``sampling``), which YAML nests and flags reach by dots
(``--sampling.temperature 0.7``). A config documents its fields in an ``Attributes:``
section of its docstring (or of the base class that declares them); those lines become
the flags' help. Precedence: field defaults < ``--config`` YAML < command-line flags;
a section given in YAML or flags is laid over the section's default, field by field.
Every value goes through :func:`convert`, which refuses what is not of the field's
type. :meth:`Config.validate` checks each section, then the config's own
:meth:`~Config.check` (ranges, names, how fields fit together); an error names the
field by its dotted path. The ``check_*`` helpers below are the checks the configs
share.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
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


class Config:
    """Base of every config: :meth:`validate` checks each section, then :meth:`check`."""

    def validate(self: C) -> C:
        """Check every section and then this config's own fields; returns ``self``.

        Raises a ``ValueError`` whose message starts with the bad field's dotted path.
        """
        for item in dataclasses.fields(self):
            section = getattr(self, item.name)
            if isinstance(section, Config):
                try:
                    section.validate()
                except ValueError as err:
                    raise prefixed(err, item.name) from None
        self.check()
        return self

    def check(self) -> None:
        """Check this config's own fields (its sections are already checked); none by default."""


def prefixed(err: ValueError, section: str) -> ValueError:
    """``err`` of a section's field, its message naming the field as ``section.field``."""
    return ValueError(f"{section}.{err}")


def field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` sections of ``cls``'s docstring and its bases'."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
        name = None
        for line in section.splitlines():
            match = re.match(r"\s{4}(\w+):\s*(.*)", line)
            if match:
                name = match.group(1)
                docs[name] = match.group(2)
            elif name and line.strip():
                docs[name] += " " + line.strip()
    return docs


def section_values(config: Any, section: type) -> dict[str, Any]:
    """The values of ``config``'s fields that ``section`` declares, by name: how a run config
    is built from an experiment's section of its own settings."""
    return {item.name: getattr(config, item.name) for item in dataclasses.fields(section)}


def section_class(hint: Any) -> type[Config] | None:
    """The config class a field's hint names (``SamplingConfig``, ``X | None``), or None for a plain value."""
    kind = _unwrap_optional(hint)
    return kind if isinstance(kind, type) and issubclass(kind, Config) else None


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


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config], base: Config | None = None) -> None:
    """Add ``--config`` and one flag per field of ``cls``, dotted for a section's fields.

    ``base`` (default: ``cls()``) gives the defaults the help shows.
    """
    parser.add_argument("--config", type=Path, help="YAML file of field values (flags override it)")
    _add_flags(parser, cls, base if base is not None else cls(), "")


def _add_flags(parser: Any, cls: type, defaults: Any, prefix: str) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    sections = []
    for item in dataclasses.fields(cls):
        default = getattr(defaults, item.name) if defaults is not None else None
        section = section_class(hints[item.name])
        if section is not None:
            sections.append((item.name, section, default))
            continue
        help_text = f"{docs.get(item.name, '')} (default: {default!r})".replace("%", "%%")
        metavar = getattr(_kind(hints[item.name]), "__name__", "VALUE").upper()
        path = prefix + item.name
        flag = "--" + prefix + item.name.replace("_", "-")
        parser.add_argument(flag, dest=path, default=None, metavar=metavar, help=help_text)
    for name, section, default in sections:
        group = parser.add_argument_group(f"{prefix}{name}", docs.get(name, "").replace("%", "%%") or None)
        _add_flags(group, section, default, f"{prefix}{name}.")


def config_from_args(cls: type[C], args: argparse.Namespace, base: C | None = None) -> C:
    """Build ``cls`` from ``base`` (default: its field defaults), the ``--config`` YAML and the flags,
    then validate it."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values = load_yaml(args.config)
    for path, flag in vars(args).items():
        if flag is not None and path not in ("config", "command"):
            *sections, name = path.split(".")
            target = values
            for section in sections:
                existing = target.get(section)
                target[section] = target = dict(existing) if isinstance(existing, Mapping) else {}
            target[name] = flag
    return build_config(cls, values, base=base).validate()


def build_config(cls: type[C], values: Mapping[str, Any], *, base: C | None = None, path: str = "") -> C:
    """``base`` (default: ``cls()``) with ``values`` laid over it; a section's values are laid over
    its own default, field by field. Unknown fields and values not of a field's type raise a
    ``ValueError`` naming the field. Nothing is validated (see :meth:`Config.validate`).
    """
    config = base if base is not None else cls()
    if not isinstance(values, Mapping):
        raise ValueError(f"{path or cls.__name__} must be a mapping of field: value, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        where = f"{path}: " if path else ""
        raise ValueError(f"{where}unknown fields {unknown}; known: {sorted(known)}")
    changes = {}
    for name, value in values.items():
        dotted = f"{path}.{name}" if path else name
        section = section_class(hints[name])
        if section is None:
            changes[name] = convert(value, hints[name], dotted)
        elif value is None and _optional(hints[name]):
            changes[name] = None
        else:
            if isinstance(value, str):
                value = _yaml_mapping(value, dotted)
            changes[name] = build_config(section, value, base=getattr(config, name), path=dotted)
    return dataclasses.replace(config, **changes)


def _yaml_mapping(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"{name}: cannot read {text!r} as a mapping (YAML, e.g. '{{a: 1}}')") from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping of config fields (checked against the config by :func:`build_config`)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        message = " ".join(str(err).split())  # YAML errors span lines; the CLI shows one
        raise ValueError(f"cannot read config {path}: {message}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a mapping of field: value")
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
    """The task ``task`` built from ``task_config``; errors name ``name`` or ``config``
    (the fields of :class:`~backtrack_gym.settings.TaskConfig`).

    Building it checks the config's keys and values as the task itself does, so a bad
    value is refused before any work starts.
    """
    from backtrack_gym.envs import TASK_ENV_IDS, make_task

    check_choice("name", task, TASK_ENV_IDS)
    try:
        return make_task(task, **task_config)
    except ValueError as err:
        raise ValueError(f"config: {err}") from None


def check_style(name: str, style: str, task: Task) -> None:
    """``style`` is a trace style of ``task``."""
    from backtrack_gym.agents.traces import styles_for

    styles = styles_for(task)
    if style not in styles:
        raise ValueError(f"{name} must be one of {sorted(styles)} for {task.name}, got {style!r}")
