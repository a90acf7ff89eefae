"""Env snapshots: the whole state of an env at one point, as immutable JSON-able data.

``env.snapshot()`` returns one, ``env.restore(snapshot)`` puts an env made with the
same task, config and settings back at that point (so that stepping it is step for
step what stepping the original would have been), and ``env.fork()`` is a new env
at the same point. :class:`~backtrack_gym.envs.core.TextEnv`,
:class:`~backtrack_gym.envs.token_env.TokenEnv` and
:class:`~backtrack_gym.envs.sudoku.structured.SudokuGridEnv` have all three; each
has its snapshot class here.

A snapshot is a frozen dataclass of frozen JSON data (:class:`FrozenDict`, tuples and
scalars), so it is hashable and cannot change after it is taken; ``to_dict()`` is
plain data for ``json.dumps`` and ``from_dict`` reads it back (with its ``version``).
Counters are copied field by field (every field of ``EpisodeStats``, every public
attribute of ``Episode``), so a new plain counter is captured with no change here;
a value that is no JSON data is refused with its name. An object that keeps state of
its own (an episode's record of its search, say) takes part through two methods:
``snapshot_data()``, its state as JSON data, and ``restore_data(data)``, which sets
that state on the object a fresh episode made. ``docs/snapshots.md`` has the design.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

SNAPSHOT_VERSION = 1


class FrozenDict(Mapping[str, Any]):
    """An immutable, hashable mapping of frozen JSON data (a JSON object in a snapshot).

    Its values are frozen when it is made (``where`` names it in errors), so a
    FrozenDict is frozen all the way down and :func:`freeze` takes it as it is.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None, where: str = "a FrozenDict"):
        self._items: dict[str, Any] = {}
        for key, value in (items or {}).items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}; a snapshot's JSON objects have string keys")
            self._items[key] = freeze(value, f"{where}.{key}")

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"


def freeze(value: Any, where: str) -> Any:
    """``value`` as frozen JSON data: objects as :class:`FrozenDict`, lists as tuples.

    Raises ``ValueError`` naming ``where`` (the path to the value) for anything that is
    no JSON data (a set, an object, a dict with a key that is no string).
    """
    if value is None or isinstance(value, (bool, int, float, str, FrozenDict)):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, Mapping):
        return FrozenDict(value, where)
    raise ValueError(f"{where} holds a {type(value).__name__}, which is no JSON data a snapshot can hold")


def thaw(value: Any) -> Any:
    """Frozen JSON data as plain data: :class:`FrozenDict` as dicts, tuples as lists (new objects)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def field_values(obj: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The values of ``obj``'s dataclass fields, or of its public attributes for another
    object, ``skip`` left out: how counters are copied without naming them. A value with a
    ``snapshot_data()`` method (an object keeping state of its own) gives what it returns."""
    return {name: _captured(getattr(obj, name)) for name in _field_names(obj, skip)}


def _field_names(obj: Any, skip: frozenset[str]) -> list[str]:
    if dataclasses.is_dataclass(obj):
        names = [field.name for field in dataclasses.fields(obj)]
    else:
        names = [name for name in vars(obj) if not name.startswith("_")]
    return [name for name in names if name not in skip]


def _captured(value: Any) -> Any:
    return value.snapshot_data() if callable(getattr(value, "snapshot_data", None)) else value


def set_fields(obj: Any, values: Mapping[str, Any], where: str, skip: frozenset[str] = frozenset()) -> None:
    """Set the fields :func:`field_values` reads from ``values`` (frozen data): the same
    names, each of the kind ``obj`` holds now (a list or tuple comes back as that container;
    an object with ``restore_data(data)`` is handed its plain data).

    Raises ``ValueError`` naming the snapshot field ``where`` when the names or a kind differ.
    """
    names = _field_names(obj, skip)
    if set(values) != set(names):
        missing, unknown = sorted(set(names) - set(values)), sorted(set(values) - set(names))
        raise ValueError(f"snapshot field {where!r} does not fit this env: missing {missing}, unknown {unknown}")
    for name, value in values.items():
        plain, current = thaw(value), getattr(obj, name)
        if callable(getattr(current, "restore_data", None)):
            try:
                current.restore_data(plain)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"snapshot field '{where}.{name}' does not fit this env: {err!r}") from None
            continue
        if current is not None and not _same_kind(plain, current):
            raise ValueError(f"snapshot field '{where}.{name}' must be like {current!r}, got {plain!r}")
        setattr(obj, name, tuple(plain) if isinstance(current, tuple) else plain)


def _same_kind(value: Any, like: Any) -> bool:
    """Whether JSON ``value`` can stand where ``like`` is (an int for a float, a list for a tuple)."""
    kinds: tuple[type, ...]
    if isinstance(like, (bool, np.bool_)):
        kinds = (bool,)
    elif isinstance(like, (int, np.integer)):
        kinds = (int,)
    elif isinstance(like, (float, np.floating)):
        kinds = (int, float)
    elif isinstance(like, (list, tuple)):
        kinds = (list,)
    elif isinstance(like, Mapping):
        kinds = (dict,)
    else:
        kinds = (type(like),)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def rng_state(generator: np.random.Generator | None, seed: int | None) -> dict[str, Any] | None:
    """A JSON-able state of an env's ``np_random`` (None when it has none yet)."""
    if generator is None:
        return None
    return {"bit_generator": generator.bit_generator.state, "seed": seed}


def rng_from_state(state: Mapping[str, Any] | None) -> tuple[np.random.Generator | None, int | None]:
    """The generator and seed of :func:`rng_state`'s data; ``ValueError`` when it is none."""
    if state is None:
        return None, None
    try:
        bit_state = thaw(state["bit_generator"])
        bit_generator = getattr(np.random, bit_state["bit_generator"])
        if not (isinstance(bit_generator, type) and issubclass(bit_generator, np.random.BitGenerator)):
            raise ValueError(f"{bit_state['bit_generator']!r} is no numpy bit generator")
        generator = bit_generator()
        generator.state = bit_state
        seed = state["seed"]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"snapshot field 'rng' is no generator state: {err}") from None
    return np.random.Generator(generator), seed


def check_same(what: str, snapshot: Mapping[str, Any], env: Mapping[str, Any]) -> None:
    """``ValueError`` listing each key on which a snapshot's ``what`` (frozen) and the env's differ."""
    env = freeze(env, what)
    unequal = [
        f"{name}: {snapshot.get(name)!r} != {env.get(name)!r}"
        for name in sorted(set(snapshot) | set(env))
        if snapshot.get(name) != env.get(name)
    ]
    if unequal:
        raise ValueError(f"the snapshot's {what} is not this env's (snapshot != env): {'; '.join(unequal)}")


def check_version(version: Any) -> None:
    if type(version) is not int or version != SNAPSHOT_VERSION:
        raise ValueError(f"snapshot version {version!r} is not {SNAPSHOT_VERSION}, the one this code reads")


class Snapshot:
    """What the snapshot classes share: frozen fields, ``to_dict`` and ``from_dict``.

    A subclass is a frozen dataclass; its ``kind`` names it in the dict form, and
    ``nested`` maps each field that holds another snapshot to that snapshot's class.
    Every other field is frozen JSON data.
    """

    kind: ClassVar[str]
    nested: ClassVar[Mapping[str, type[Snapshot]]] = {}
    version: int

    def __post_init__(self) -> None:
        check_version(self.version)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in self.nested:
                if not isinstance(value, self.nested[field.name]):
                    raise ValueError(f"snapshot field {field.name!r} must be a {self.nested[field.name].__name__}")
            elif field.name != "version":
                object.__setattr__(self, field.name, freeze(value, f"snapshot field {field.name!r}"))
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming a field whose value cannot be this snapshot's."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (new objects): ``version``, ``kind`` and every field."""
        data: dict[str, Any] = {"version": self.version, "kind": self.kind}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "version":
                data[field.name] = value.to_dict() if isinstance(value, Snapshot) else thaw(value)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """The snapshot of :meth:`to_dict`'s data (as read back by ``json.loads``).

        Raises ``ValueError`` naming what is wrong: not a mapping, another ``kind`` or
        ``version``, missing or unknown fields, or a field of the wrong type.
        """
        if isinstance(data, cls):
            return data
        if isinstance(data, Snapshot):
            raise ValueError(f"a {cls.__name__} (kind {cls.kind!r}) is wanted, got a {type(data).__name__}")
        if not isinstance(data, Mapping):
            raise ValueError(f"a {cls.__name__} is read from a dict, got {type(data).__name__}")
        if data.get("kind") != cls.kind:
            raise ValueError(f"a {cls.__name__} has kind {cls.kind!r}, got {data.get('kind')!r}")
        check_version(data.get("version"))  # before the fields, which another version may change
        names = {field.name for field in dataclasses.fields(cls)}
        given = set(data) - {"kind"}
        if given != names:
            missing, unknown = sorted(names - given), sorted(given - names)
            raise ValueError(f"a {cls.__name__} has the fields {sorted(names)}: missing {missing}, unknown {unknown}")
        values = {name: data[name] for name in names}
        for name, snapshot_class in cls.nested.items():
            values[name] = snapshot_class.from_dict(values[name])
        return cls(**values)


def check_type(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    """``ValueError`` naming the snapshot field ``name`` unless ``value`` is a ``kind`` (never a bool for int)."""
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ValueError(f"snapshot field {name!r} must be {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ValueError(f"snapshot field {name!r} must be {what}, got {value!r}")


def check_count(name: str, value: Any) -> None:
    check_type(name, value, int, "a non-negative integer")
    if value < 0:
        raise ValueError(f"snapshot field {name!r} must be a non-negative integer, got {value!r}")


def check_token_ids(name: str, value: Any) -> None:
    check_type(name, value, tuple, "a list of token ids")
    for token in value:
        check_count(f"{name}[]", token)


@dataclasses.dataclass(frozen=True)
class TextEnvSnapshot(Snapshot):
    """A :class:`~backtrack_gym.envs.core.TextEnv` at one point of an episode.

    Attributes:
        task: the task's name.
        config: the task's config fields (a restoring env's must be equal).
        settings: the env's settings that decide what a step does (equal too).
        problem: the problem, as the task's ``problem_to_dict``.
        stack: the state stack, start first, as the task's ``stack_info``.
        stats: every field of the episode's ``EpisodeStats``.
        episode: every other public attribute of the ``Episode`` (counters it keeps).
        turns: actions taken.
        done: whether the episode has ended.
        last: the last step's ``StepResult`` fields (None before the first).
        invalid_lines: the last action's reported invalid lines.
        reward_terms: the weighted reward terms now.
        rng: the state of the env's ``np_random`` (None before it has one), so that a
            restored env's next ``reset()`` draws what the original's would.
        version: :data:`SNAPSHOT_VERSION`.
    """

    kind: ClassVar[str] = "text"

    task: str
    config: Mapping[str, Any]
    settings: Mapping[str, Any]
    problem: Any
    stack: Mapping[str, Any]
    stats: Mapping[str, Any]
    episode: Mapping[str, Any]
    turns: int
    done: bool
    last: Mapping[str, Any] | None
    invalid_lines: tuple[Mapping[str, Any], ...]
    reward_terms: Mapping[str, float]
    rng: Mapping[str, Any] | None
    version: int = SNAPSHOT_VERSION

    def check(self) -> None:
        check_type("task", self.task, str, "a task name")
        for name in ("config", "settings", "stack", "stats", "episode", "reward_terms"):
            check_type(name, getattr(self, name), Mapping, "a JSON object")
        for name in ("last", "rng"):
            check_type(name, getattr(self, name), (Mapping, type(None)), "a JSON object or null")
        check_count("turns", self.turns)
        check_type("done", self.done, bool, "true or false")
        check_type("invalid_lines", self.invalid_lines, tuple, "a list")
        for term, value in self.reward_terms.items():
            check_type(f"reward_terms.{term}", value, (int, float), "a number")


@dataclasses.dataclass(frozen=True)
class TokenEnvSnapshot(Snapshot):
    """A :class:`~backtrack_gym.envs.token_env.TokenEnv` at one point: its text env's
    snapshot, and its own token state.

    Attributes:
        env: the wrapped text env's snapshot.
        settings: the token settings (vocabulary size, special ids, window and action caps).
        context: the token ids of the last observation shown.
        pending: the tokens of the action being written.
        done: whether the episode has ended.
        version: :data:`SNAPSHOT_VERSION`.
    """

    kind: ClassVar[str] = "token"
    nested: ClassVar[Mapping[str, type[Snapshot]]] = {"env": TextEnvSnapshot}

    env: TextEnvSnapshot
    settings: Mapping[str, Any]
    context: tuple[int, ...]
    pending: tuple[int, ...]
    done: bool
    version: int = SNAPSHOT_VERSION

    def check(self) -> None:
        check_type("settings", self.settings, Mapping, "a JSON object")
        check_token_ids("context", self.context)
        check_token_ids("pending", self.pending)
        check_type("done", self.done, bool, "true or false")


@dataclasses.dataclass(frozen=True)
class SudokuGridSnapshot(Snapshot):
    """A :class:`~backtrack_gym.envs.sudoku.structured.SudokuGridEnv` at one point.

    Attributes:
        env: the Sudoku text env's snapshot (the game the grid env plays).
        done: whether the episode has ended (also at a dead end with no legal action).
        rng: the state of the grid env's own ``np_random`` (the text env's is in ``env``).
        version: :data:`SNAPSHOT_VERSION`.
    """

    kind: ClassVar[str] = "sudoku_grid"
    nested: ClassVar[Mapping[str, type[Snapshot]]] = {"env": TextEnvSnapshot}

    env: TextEnvSnapshot
    done: bool
    rng: Mapping[str, Any] | None
    version: int = SNAPSHOT_VERSION

    def check(self) -> None:
        check_type("done", self.done, bool, "true or false")
        check_type("rng", self.rng, (Mapping, type(None)), "a JSON object or null")
