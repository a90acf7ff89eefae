"""A TRL reward for free-form math completions (``\\boxed{}``, ``####`` or ``Answer:``).

For completions written in the Math step grammar use
``trl_reward_functions(MathTask(), {"correct": 1.0, "validity": 0.1})``: it replays
every line like the env does. This reward is for models that write free-form
solutions: only the final answer is scored, with the same comparison as the env
(exact for numbers, math-verify in a child process for LaTeX).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backtrack_gym.envs.math.answers import answers_match, extract_final_answer
from backtrack_gym.rewards.adapters import RewardFunc, completion_text


def math_answer_reward(
    *, answer_column: str = "answer", math_verify: bool = True, timeout: float = 5.0, max_chars: int = 1000
) -> RewardFunc:
    """A TRL reward function: 1.0 when a completion's final answer matches its row's answer.

    The final answer is the last ``\\boxed{}``, else the text after the last
    ``####``, else after the last ``Answer:``; a completion with none scores 0. The
    ``answer_column`` may hold the bare answer or a GSM8K answer ending in ``#### N``.
    Only that answer is compared, so ``timeout`` bounds a completion's math-verify time.
    """

    def math_answer(
        prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
    ) -> list[float]:
        if answer_column not in columns:
            raise KeyError(f"the data set needs a {answer_column!r} column; columns given: {sorted(columns)}")
        answers = columns[answer_column]
        if len(answers) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        scores = []
        for gold, completion in zip(answers, completions, strict=True):
            gold = str(gold)
            gold = extract_final_answer(gold) or gold
            pred = extract_final_answer(completion_text(completion))
            match = pred is not None and answers_match(
                gold, pred, math_verify=math_verify, timeout=timeout, max_chars=max_chars
            )
            scores.append(1.0 if match else 0.0)
        return scores

    return math_answer
