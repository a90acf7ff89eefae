import json
import sys
import time
import types
from fractions import Fraction
from pathlib import Path

import pytest

from backtrack_gym.envs.math import (
    MathEnv,
    MathTask,
    answers_match,
    extract_final_answer,
    format_number,
    latex_verify,
    load_gsm8k,
    load_math,
    parse_number,
)
from backtrack_gym.envs.math.latex_verify import LatexVerifier, math_verify_installed
from backtrack_gym.envs.math.loaders import gsm8k_problem
from backtrack_gym.rewards import math_answer_reward, trl_reward_functions

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K = FIXTURES / "gsm8k_sample.jsonl"
MATH = FIXTURES / "math_sample.jsonl"
needs_math_verify = pytest.mark.skipif(not math_verify_installed(), reason="math-verify is not installed")


# --- normalisation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("72", 72),
        ("-3", -3),
        ("\u22127", -7),
        ("+4", 4),
        ("1,250", 1250),
        ("1,234,567.5", Fraction(2469135, 2)),
        ("0.50", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        ("-6/4", Fraction(-3, 2)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("-\\dfrac{10}{4}", Fraction(-5, 2)),
        ("$4.50", Fraction(9, 2)),
        ("-$5", -5),
        ("\\$1{,}000", 1000),
        ("1,\\!000", 1000),
        ("12 apples", 12),
        ("5 km/h", 5),
        ("18 cm^2", 18),
        ("25%", 25),
        ("25\\%", 25),
        ("90^\\circ", 90),
        ("x = 5", 5),
        ("\\boxed{18}", 18),
        ("The answer is \\boxed{18\\text{ cm}}.", 18),
        ("$\\frac{7}{12}$", Fraction(7, 12)),
        ("\\(42\\)", 42),
        ("56.", 56),
    ],
)
def test_parse_number_reads_the_usual_ways_of_writing_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "abc", "1,2", "12,34", "5 x 3", "3 + 4", "1/0", "\\sqrt{2}", "(1, 2)", "-", "$", "%", "1e5", "9" * 300],
)
def test_parse_number_rejects_what_is_not_a_plain_number(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(12, "12"), (Fraction(17, 4), "4.25"), (Fraction(-1, 8), "-0.125"), (Fraction(7, 3), "7/3"), (Fraction(0), "0")],
)
def test_format_number_is_exact_and_reads_back(value, text):
    assert format_number(value) == text
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("gold", "pred", "same"),
    [
        ("18", "18.00", True),
        ("18", "$18", True),
        ("1250", "1,250 dollars", True),
        ("0.75", "\\frac{3}{4}", True),
        ("0.75", "3/4", True),
        ("18", "\\boxed{18}", True),
        ("18", "19", False),
        ("18", "eighteen", False),
        ("18", "\\sqrt{324}", False),  # numeric gold answers are compared as plain numbers only
        ("(2, -1)", "(2,-1)", True),
        ("6\\sqrt{2}", "\\boxed{6\\sqrt{2}}", True),
        ("\\dfrac{\\pi}{2}", "\\frac{\\pi}{2}", True),
    ],
)
def test_answers_match_without_math_verify(gold, pred, same):
    assert answers_match(gold, pred, math_verify=False) is same


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so it is \\boxed{5} or \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Natalia sold 72 clips.\n#### 72", "72"),
        ("3 * 4 = 12\nAnswer: 12 apples\n", "12 apples"),
        ("no answer here", None),
        ("Answer:", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract_final_answer(text, answer):
    assert extract_final_answer(text) == answer


# --- loaders -------------------------------------------------------------------


def test_loaders_read_both_fixture_formats():
    gsm8k = load_gsm8k(GSM8K)
    math = load_math(str(MATH))
    assert len(gsm8k) == 5 and len(math) == 5
    assert [p.answer for p in gsm8k] == ["216", "375", "21", "25.5", "50"]
    assert [p.answer for p in math] == ["\\frac{7}{12}", "(2, -1)", "6\\sqrt{2}", "\\frac{\\sqrt{3}}{2}", "50"]
    assert gsm8k[0].solution[:2] == ("On Tuesday the bakery sells 24*2 = 48 muffins.", "24*2 = 48")
    assert all(p.solution[-1] == f"Answer: {p.answer}" for p in gsm8k + math)
    assert load_gsm8k(GSM8K, limit=2) == gsm8k[:2]


@pytest.mark.parametrize("interaction", ["step", "completion"])
def test_env_scores_the_fixtures_reference_answers_as_correct(interaction):
    env = MathEnv(interaction=interaction)
    for problem in load_gsm8k(GSM8K) + load_math(MATH):
        env.reset(options={"problem": problem})
        _, reward, terminated, _, info = env.step(f"Answer: {problem.answer}")
        assert terminated and info["solved"] and reward == 1.0, problem
        env.reset(options={"problem": problem.to_dict()})
        text = env.task.reference_text(problem)
        lines = [text] if interaction == "completion" else text.split("\n")
        for line in lines:
            *_, info = env.step(line)
        assert info["solved"] and info["invalid_steps"] == 0, (problem, info)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q", "answer": "reasoning\\n#### 5"', "not valid JSON"),
        ('{"question": "q", "answer": "no final line"}', "no '#### N' final line"),
        ('{"question": "q"}', "missing or empty string field 'answer'"),
        ('["a", "list"]', "a row is a JSON object"),
        ('{"question": "q", "answer": "####  "}', "nothing follows"),
    ],
)
def test_malformed_jsonl_names_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "broken.jsonl"
    good = json.dumps({"question": "What is 2 + 3?", "answer": "2+3 = <<2+3=5>>5\n#### 5"})
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(ValueError, match=message) as err:
        load_gsm8k(path)
    assert str(err.value).startswith(f"{path}:3: ")


def test_math_rows_need_a_boxed_answer(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "The answer is 4."}) + "\n")
    with pytest.raises(ValueError, match=r"math.jsonl:1: the 'solution' field has no \\boxed"):
        load_math(path)


def test_wrong_calculator_notes_are_dropped_from_the_reference():
    problem = gsm8k_problem({"question": "q", "answer": "a <<2+2=5>>5 b <<3*3=9>>9 c <<x=1>>1\n#### 9"})
    assert problem.solution == ("a 5 b 9 c 1", "3*3 = 9", "x = 1", "Answer: 9")  # wrong: dropped; text: kept


def test_a_name_that_is_not_a_path_goes_to_the_datasets_library(monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": f"What is {k} + 1?", "answer": f"#### {k + 1}"} for k in range(5)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_gsm8k("someone/gsm8k-like", split="train", limit=3)
    assert calls == [("someone/gsm8k-like", "main", "train")]
    assert [p.answer for p in problems] == ["1", "2", "3"]
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(FileNotFoundError, match="'datasets' package"):
        load_math("no/such/file.jsonl")


# --- math-verify, out of process ---------------------------------------------------


@needs_math_verify
def test_math_verify_runs_only_in_a_child_process():
    env = MathEnv(interaction="completion")
    env.reset(options={"problem": {"question": "sin 60 degrees?", "answer": "\\frac{\\sqrt{3}}{2}"}})
    *_, info = env.step("Answer: \\frac{\\sqrt 3}{2}")  # differs as a string: needs math-verify
    assert info["solved"]
    env.reset(options={"problem": {"question": "sin 60 degrees?", "answer": "\\frac{\\sqrt{3}}{2}"}})
    *_, info = env.step("Answer: \\frac{\\sqrt{2}}{2}")
    assert not info["solved"]
    assert "math_verify" not in sys.modules and "latex2sympy2_extended" not in sys.modules


@needs_math_verify
def test_pathological_latex_is_incorrect_within_the_timeout():
    verifier = LatexVerifier()
    try:
        assert verifier.verify("x^2 + 1", "1 + x^{2}")  # warm: the worker has started
        start = time.perf_counter()
        assert not verifier.verify("5x", "9^{9^{9^{9}}}", timeout=1.0)
        assert time.perf_counter() - start < 1.5
        start = time.perf_counter()
        assert not verifier.verify("5x", "\\frac{" * 10_000, timeout=1.0)  # over the size cap: not even sent
        assert time.perf_counter() - start < 0.01
        assert verifier.verify("(1, 2)", "(1,2)")  # a killed worker is replaced
        assert not verifier.verify("x", "__import__('os').system('touch /tmp/backtrack_gym_code_ran')")
        assert not Path("/tmp/backtrack_gym_code_ran").exists()
    finally:
        verifier.close()
    assert "math_verify" not in sys.modules


def test_without_math_verify_only_the_exact_normaliser_answers(monkeypatch):
    monkeypatch.setattr(latex_verify, "math_verify_installed", lambda: False)
    verifier = LatexVerifier()
    assert verifier.unusable == "math-verify is not installed"
    assert not verifier.verify("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt 3}{2}")
    task = MathTask()
    problem = task.coerce_problem({"question": "q", "answer": "\\frac{\\sqrt{3}}{2}"})
    state = task.apply(problem, task.initial_state(problem), task.parse_step("Answer: \\dfrac{\\sqrt{3}}{2}"))
    assert task.is_solved(problem, state)


# --- rewards -------------------------------------------------------------------


def test_math_answer_reward_scores_free_form_completions():
    reward = math_answer_reward()
    completions = [
        "... so she spends \\boxed{216} dollars.",
        [{"role": "assistant", "content": "She spends $1,000.\n#### 1,000"}],
        "I am not sure.",
        "Answer: 3/4",
    ]
    answers = ["216", "Reasoning.\n#### 1000", "5", "0.75"]
    assert reward(prompts=["p"] * 4, completions=completions, answer=answers) == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(KeyError, match="'answer' column"):
        reward(prompts=["p"], completions=["x"])


def test_trl_reward_functions_replay_completions_like_the_env():
    task = MathTask()
    correct, validity = trl_reward_functions(task, {"correct": 1.0, "validity": 0.5})
    problems = [json.dumps(task.generate(0).to_dict())] * 2
    good = task.reference_text(task.generate(0))
    bad = "1 + 1 = 3\nAnswer: 0"
    assert correct(prompts=["p", "p"], completions=[good, bad], problem=problems) == [1.0, 0.0]
    assert validity(prompts=["p", "p"], completions=[good, bad], problem=problems) == [0.0, -0.5]
    assert correct.__name__ == "math_correct"
