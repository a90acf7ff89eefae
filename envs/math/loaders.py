"""Loaders for user data sets: GSM8K and MATH formats, from JSONL files or the HF hub.

GSM8K rows are ``{"question": ..., "answer": "...reasoning...\\n#### 72"}``; MATH
rows are ``{"problem": ..., "solution": "... \\boxed{\\frac{1}{2}} ..."}``. Each
row becomes a :class:`MathProblem` whose reference solution is written in the step
grammar (GSM8K's ``<<48/2=24>>`` calculator notes become checked lines), so it
can be pinned with ``env.reset(options={"problem": p})``. A local path is read as
JSONL; a name that is no local path is loaded with the ``datasets`` library (only
then imported; it needs internet the first time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from backtrack_gym.envs.math.answers import format_number, last_boxed, parse_number
from backtrack_gym.envs.math.generator import MathProblem
from backtrack_gym.envs.math.grammar import clean_solution

_CALCULATOR = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def gsm8k_problem(row: Mapping[str, Any]) -> MathProblem:
    """One GSM8K row as a problem; raises ``ValueError`` naming what is wrong."""
    question, answer = _fields(row, "question", "answer")
    if "####" not in answer:
        raise ValueError("the 'answer' field has no '#### N' final line")
    reasoning, final = answer.rsplit("####", 1)
    final = final.strip()
    if not final:
        raise ValueError("nothing follows '####' in the 'answer' field")
    value = parse_number(final)
    final = format_number(value) if value is not None else final
    lines = []
    for line in reasoning.strip().split("\n"):
        notes = _CALCULATOR.findall(line)
        lines.append(_CALCULATOR.sub("", line).strip())
        lines += [f"{expression.strip()} = {result.strip()}" for expression, result in notes]
    return MathProblem(question, final, clean_solution("\n".join(lines), final), "gsm8k")


def math_problem(row: Mapping[str, Any]) -> MathProblem:
    """One MATH row as a problem (the answer is the last ``\\boxed{}`` of the solution)."""
    question, solution = _fields(row, "problem", "solution")
    answer = last_boxed(solution)
    if answer is None or not answer.strip():
        raise ValueError("the 'solution' field has no \\boxed{...} answer")
    answer = " ".join(answer.split())
    return MathProblem(question, answer, clean_solution(solution, answer), "math")


def _fields(row: Mapping[str, Any], *names: str) -> list[str]:
    if not isinstance(row, Mapping):
        raise ValueError(f"a row is a JSON object, got {type(row).__name__}")
    values = []
    for name in names:
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"missing or empty string field {name!r}")
        values.append(value)
    return values


def read_jsonl(path: str | Path, convert: Callable[[Mapping[str, Any]], MathProblem]) -> list[MathProblem]:
    """Convert each non-blank line of a JSONL file; errors name the file and line."""
    problems = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                problems.append(convert(json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            except ValueError as err:
                raise ValueError(f"{path}:{number}: {err}") from None
    return problems


def _rows(path_or_name: str | Path, split: str, config: str | None) -> Iterator[Mapping[str, Any]] | None:
    if Path(path_or_name).exists():
        return None
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(
            f"{path_or_name} is not a file, and the 'datasets' package needed to load it from the hub is missing"
        ) from None
    return iter(datasets.load_dataset(str(path_or_name), config, split=split))


def _load(
    path_or_name: str | Path,
    convert: Callable[[Mapping[str, Any]], MathProblem],
    split: str,
    config: str | None,
    limit: int | None,
) -> list[MathProblem]:
    rows = _rows(path_or_name, split, config)
    if rows is None:
        problems = read_jsonl(path_or_name, convert)
    else:
        problems = []
        for number, row in enumerate(rows):
            try:
                problems.append(convert(row))
            except ValueError as err:
                raise ValueError(f"{path_or_name} [{split}] row {number}: {err}") from None
            if limit is not None and len(problems) >= limit:
                break
    return problems if limit is None else problems[:limit]


def load_gsm8k(
    path_or_name: str | Path, split: str = "test", *, config: str | None = "main", limit: int | None = None
) -> list[MathProblem]:
    """GSM8K-format problems from a JSONL file, or from a hub data set such as
    ``openai/gsm8k`` (``config`` and ``split`` apply to the hub only)."""
    return _load(path_or_name, gsm8k_problem, split, config, limit)


def load_math(
    path_or_name: str | Path, split: str = "test", *, config: str | None = None, limit: int | None = None
) -> list[MathProblem]:
    """MATH-format problems from a JSONL file, or from a hub data set (``config`` and
    ``split`` apply to the hub only)."""
    return _load(path_or_name, math_problem, split, config, limit)
