"""Math problems: the problem record, the configuration and per-index generation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from backtrack_gym.envs.math.answers import MAX_ANSWER_CHARS, format_number
from backtrack_gym.envs.math.templates import MAX_REASONING_STEPS, TEMPLATES, Dice, Sizes
from backtrack_gym.envs.seeding import item_rng

MAX_SOLUTION_LINES = 256


@dataclass(frozen=True)
class MathProblem:
    """A question, its exact final answer and (optionally) a reference solution.

    Attributes:
        question: the problem text.
        answer: the final answer as text (``"18"``, ``"4.5"``, ``"\\frac{1}{2}"``).
        solution: reference solution lines in the step grammar, ending with the
            ``Answer:`` line; empty when unknown.
        source: the template name, or the data set it was loaded from.
    """

    question: str
    answer: str
    solution: tuple[str, ...] = ()
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "solution": list(self.solution),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MathProblem:
        """Build a problem from its dict; an int answer is accepted as its text."""
        try:
            question, answer = data["question"], data["answer"]
        except (KeyError, TypeError):
            raise ValueError("a Math problem is {'question': str, 'answer': str, 'solution': [str, ...]}") from None
        if isinstance(answer, int) and not isinstance(answer, bool):
            answer = str(answer)
        solution = data.get("solution", ())
        source = data.get("source", "")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("a Math problem needs a non-empty 'question' string")
        if not isinstance(answer, str) or not answer.strip() or "\n" in answer or len(answer) > MAX_ANSWER_CHARS:
            raise ValueError(f"'answer' must be one line of 1 to {MAX_ANSWER_CHARS} characters, got {answer!r:.80}")
        if isinstance(solution, str) or not all(isinstance(line, str) for line in solution):
            raise ValueError("'solution' must be a list of lines (strings)")
        if len(solution) > MAX_SOLUTION_LINES:
            raise ValueError(f"'solution' has {len(solution)} lines; at most {MAX_SOLUTION_LINES}")
        if not isinstance(source, str):
            raise ValueError("'source' must be a string")
        return cls(question, answer.strip(), tuple(solution), source)


@dataclass(frozen=True)
class MathConfig:
    """Settings of the Math task.

    Attributes:
        seed: seed of the problem stream; item ``i`` depends only on (seed, split, i),
            and the test split is a different stream of the same seed.
        templates: names of the templates to draw from (see
            :data:`~backtrack_gym.envs.math.templates.TEMPLATES`); empty means all.
        min_reasoning_steps: fewest checked lines in a reference solution.
        max_reasoning_steps: most checked lines in a reference solution (at most 8).
        number_max: how large the given quantities get (10..10**6).
        decimals: prices and times may have decimals (quarters, half hours);
            otherwise every value in a generated problem is a whole number.
        max_question_chars: longest question accepted (pinned or loaded problems).
        math_verify: compare non-numeric (LaTeX) answers with math-verify in a
            child process; numeric answers are always compared exactly in-process.
        latex_timeout: seconds of math-verify one episode may use, all its answers together.
        latex_max_chars: longest answer sent to math-verify (longer is "incorrect").
    """

    seed: int = 0
    templates: tuple[str, ...] = ()
    min_reasoning_steps: int = 2
    max_reasoning_steps: int = 6
    number_max: int = 100
    decimals: bool = True
    max_question_chars: int = 4096
    math_verify: bool = True
    latex_timeout: float = 5.0
    latex_max_chars: int = 1000

    def __post_init__(self) -> None:
        # Accept a list or a single name (e.g. from YAML or gym.make kwargs); keep it hashable.
        names = (self.templates,) if isinstance(self.templates, str) else tuple(self.templates)
        object.__setattr__(self, "templates", names)

    def validate(self) -> MathConfig:
        """Raise ``ValueError`` with a clear message for settings that cannot work."""
        unknown = sorted(set(self.templates) - set(TEMPLATES))
        if unknown:
            raise ValueError(f"unknown templates {unknown}; known: {sorted(TEMPLATES)}")
        if not 1 <= self.min_reasoning_steps <= self.max_reasoning_steps <= MAX_REASONING_STEPS:
            raise ValueError(
                f"need 1 <= min_reasoning_steps <= max_reasoning_steps <= {MAX_REASONING_STEPS}, "
                f"got {self.min_reasoning_steps}..{self.max_reasoning_steps}"
            )
        for n in range(self.min_reasoning_steps, self.max_reasoning_steps + 1):
            if not templates_for(self, n):
                raise ValueError(f"none of the templates {self.template_names} writes {n}-step problems")
        if not 10 <= self.number_max <= 10**6:
            raise ValueError(f"number_max must be in 10..10**6, got {self.number_max}")
        if not 64 <= self.max_question_chars <= 65536:
            raise ValueError(f"max_question_chars must be in 64..65536, got {self.max_question_chars}")
        if not 0 < self.latex_timeout <= 600:
            raise ValueError(f"latex_timeout must be in (0, 600] seconds, got {self.latex_timeout}")
        if self.latex_max_chars < 1:
            raise ValueError(f"latex_max_chars must be positive, got {self.latex_max_chars}")
        return self

    @property
    def template_names(self) -> tuple[str, ...]:
        return self.templates or tuple(TEMPLATES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def templates_for(config: MathConfig, steps: int) -> list[str]:
    """The configured templates that can write a ``steps``-step problem."""
    return [name for name in config.template_names if TEMPLATES[name].min_steps <= steps <= TEMPLATES[name].max_steps]


def generate(config: MathConfig, index: int, split: str = "train") -> MathProblem:
    """The problem at ``index`` of ``split``: a number of steps drawn uniformly from the
    configured range, then a template that writes that many, with its reference solution."""
    dice = Dice(item_rng(config.seed, split, index))
    steps = dice.int(config.min_reasoning_steps, config.max_reasoning_steps)
    name = dice.pick(templates_for(config, steps))
    draft = TEMPLATES[name].write(dice, steps, Sizes(config.number_max, config.decimals))
    answer = format_number(draft.answer)
    return MathProblem(draft.question, answer, (*draft.lines, f"Answer: {answer}"), name)
