"""The settings every command shares, one dataclass per concept, each declared and checked once.

The run configs of :mod:`backtrack_gym.train` compose these (``task``, ``episode``,
``sampling``) instead of restating their fields; YAML nests the same way and flags
are dotted (``--sampling.temperature 0.7``). See :mod:`backtrack_gym.config` for how a
config is read and checked.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backtrack_gym.config import Config, check_at_least

if TYPE_CHECKING:
    from backtrack_gym.envs.core import Task


@dataclass
class TaskConfig(Config):
    """The task and its generator's settings.

    Attributes:
        name: a registered task name (``countdown``, ``sudoku``, ``math``, or one a package registered).
        config: the task's config fields, e.g. ``{num_count: 3, target_max: 50}``.
    """

    name: str = "countdown"
    config: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        from backtrack_gym.config import check_task

        check_task(self.name, self.config)

    def build(self, **overrides: Any) -> Task:
        """The task, its config fields updated by ``overrides`` (e.g. ``seed``)."""
        from backtrack_gym.envs import make_task

        return make_task(self.name, **{**self.config, **overrides})


@dataclass
class EpisodeConfig(Config):
    """How a model plays an episode: the interaction, the backtrack action and the budgets.

    Attributes:
        interaction: ``completion`` (one output, replayed against the env at the end) or
            ``step`` (one line per turn, the env's observation after each).
        backtrack: whether ``<backtrack>`` lines undo steps in the env.
        env_steps: the env's step budget; in step mode a wrong line costs a step and the
            model may try again until it is spent. 0 means ``max_new_tokens // 2`` (a line
            takes at least two tokens), so that only the token budget ends an episode.
        max_new_tokens: most model tokens an episode may take.
    """

    interaction: str = "completion"
    backtrack: bool = True
    env_steps: int = 0
    max_new_tokens: int = 256

    def check(self) -> None:
        from backtrack_gym.envs.core import check_interaction

        check_interaction(self.interaction)
        check_at_least(self, 0, "env_steps")
        check_at_least(self, 1, "max_new_tokens")

    @property
    def step_budget(self) -> int:
        """``env_steps``, or ``max_new_tokens // 2`` (at least 1) when it is 0."""
        return self.env_steps or max(1, self.max_new_tokens // 2)

    def env_settings(self) -> dict[str, Any]:
        """The text env's keyword arguments every interaction shares (the backtrack action and the
        step budget); an episode and the completion-mode replay of a cut one both take them."""
        return {"backtrack": self.backtrack, "max_steps": self.step_budget}


@dataclass
class SamplingConfig(Config):
    """How tokens are sampled.

    Attributes:
        temperature: logits are divided by it before sampling; positive.
        top_k: sample among the ``top_k`` most likely tokens; 0 means all.
        top_p: sample from the smallest set of tokens whose probability reaches ``top_p``
            (nucleus sampling); 1.0 means all.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def check(self) -> None:
        from backtrack_gym.config import check_positive

        check_positive(self, "temperature", "top_p")
        check_at_least(self, 0, "top_k")
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be finite, got {self.temperature!r}")
        if self.top_p > 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")


def unset_fields(config_class: type) -> type:
    """A dataclass with ``config_class``'s fields, each optional and unset (None) by default.

    A config that fills its settings in from elsewhere (an evaluation, from how the
    model was trained) takes this form: ``over(base)`` lays the fields that were set
    over a complete ``config_class``, which is then checked as a whole.
    """
    base_fields = dataclasses.fields(config_class)

    def over(self: Any, base: Any) -> Any:
        given = {item.name: getattr(self, item.name) for item in base_fields if getattr(self, item.name) is not None}
        return dataclasses.replace(base, **given)

    unset = dataclasses.make_dataclass(
        f"Unset{config_class.__name__}",
        [(item.name, f"{_hint(item)} | None", field(default=None)) for item in base_fields],
        bases=(Config,),
        namespace={"over": over, "__module__": config_class.__module__},
    )
    unset.__doc__ = (
        f"{config_class.__doc__.split(chr(10))[0]} Each field unset (None) is filled in elsewhere.\n\n"
        + config_class.__doc__.split("\n\n", 1)[1]
    )
    return unset


def _hint(item: dataclasses.Field) -> str:
    return item.type if isinstance(item.type, str) else getattr(item.type, "__name__", str(item.type))


UnsetTaskConfig = unset_fields(TaskConfig)
UnsetEpisodeConfig = unset_fields(EpisodeConfig)
