"""A ``gymnasium.spaces.Text`` that works with ``AsyncVectorEnv``'s shared memory.

Gymnasium reads a ``Text`` observation buffer back once, into a tuple of strings, so
an async vector env with ``shared_memory=True`` (the default) would return the same
stale strings at every step. :class:`TextSpace` reads the buffer through a live view
instead; writing and every other space operation are plain ``Text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import read_from_shared_memory


class TextSpace(spaces.Text):
    """``gymnasium.spaces.Text`` with a live shared-memory view for async vector envs."""


class SharedTextView(Sequence[str]):
    """The strings in an async vector env's observation buffer, decoded on access."""

    def __init__(self, space: TextSpace, buffer: SynchronizedArray, n: int):
        self.space = space
        self.codes = np.frombuffer(buffer.get_obj(), dtype=np.int32).reshape(n, space.max_length)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        chars = self.space.character_list
        return "".join(chars[code] for code in self.codes[index] if code < len(chars))

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        # AsyncVectorEnv(copy=True) returns a deep copy: give plain strings.
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return repr(tuple(self))


@read_from_shared_memory.register(TextSpace)
def _read_text_view(space: TextSpace, shared_memory: SynchronizedArray, n: int = 1) -> SharedTextView:
    return SharedTextView(space, shared_memory, n)
