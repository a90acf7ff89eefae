import json
import sys
import time
import types
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from unittest import mock

import pytest

from backtrack_gym.envs import BACKTRACK
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
from backtrack_gym.envs.math.latex_verify import LatexBudget, LatexVerifier, math_verify_installed
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
        ("1e5", 100000),
        ("9^{200}", 9**200),  # 191 digits: under the cap
        ("2.5E-3", Fraction(1, 400)),
        ("5 \\times 10^{6}", 5_000_000),
        ("2^{10}", 1024),
        ("10^{-2}", Fraction(1, 100)),
        ("\\sqrt{\\frac{9}{4}}", Fraction(3, 2)),
        ("-\\sqrt{16}", -4),
        ("1\u2009250\u2009000", 1_250_000),
        ("12\\text{ m}", 12),  # a letter written as text is a unit, not a variable
        ("$12 a week", 12),
        ("1.5 thousand dollars", 1500),
    ],
)
def test_parse_number_reads_the_usual_ways_of_writing_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    [
        *("", "abc", "1,2", "12,34", "5 x 3", "3 + 4", "1/0", "\\sqrt{2}", "(1, 2)", "-", "$", "%", "9" * 300),
        *("1e999", "10^{999}", "9^{300}", "0^{-1}", "\\sqrt{9/0}", "1 250,000", "1,250 000", "e5"),
    ],
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
        ("18", "\\sqrt{324}", True),  # an exact square root is a plain number
        ("18", "\\sqrt{18^2}", False),  # numeric gold answers are compared as plain numbers only
        ("(2, -1)", "(2,-1)", True),
        ("6\\sqrt{2}", "\\boxed{6\\sqrt{2}}", True),
        ("\\dfrac{\\pi}{2}", "\\frac{\\pi}{2}", True),
    ],
)
def test_answers_match_without_math_verify(gold, pred, same):
    assert answers_match(gold, pred, math_verify=False) is same


# The grader's decisions (issue #20, item 9): a different notation for the same value
# matches; a scale, a sign, a variable, an operation, a denial or a hedge does not.
GRADER_TABLE = [
    # the same value in another notation
    ("12", "12", True),
    ("12", "12.0", True),
    ("12", "12.00", True),
    ("12", "12/1", True),
    ("12", "\\frac{24}{2}", True),
    ("12", "$12", True),
    ("12", "\\$12.00", True),
    ("12", "12%", True),  # GSM8K writes percentages as bare numbers
    ("12", "12 percent", True),
    ("12", "+12", True),
    ("12", "x = 12", True),
    ("12", "\\boxed{12}", True),
    ("12", "\\sqrt{144}", True),
    ("3", "\\sqrt{9}", True),
    ("1250", "1,250", True),
    ("1250", "1 250", True),
    ("1250", "1\u2009250", True),  # thin space
    ("1250", "1\u202f250", True),  # narrow no-break space
    ("1250", "1\\,250", True),
    ("1000000", "1e6", True),
    ("1000000", "1E6", True),
    ("1000000", "10^6", True),
    ("1000000", "10^{6}", True),
    ("1000000", "1 \\times 10^{6}", True),
    ("1000000", "1 million", True),
    ("12000", "12 thousand", True),
    ("144", "12 dozen", True),
    ("144", "12^2", True),
    # unit words keep the value
    ("12", "12 apples", True),
    ("12", "12 km/h", True),
    ("12", "12 square feet", True),
    ("12", "12cm", True),
    ("12", "12th", True),
    ("12", "$12 an hour", True),
    ("12", "12\\text{ m}", True),
    # scale words change the value
    ("12", "12 million", False),
    ("12", "12 thousand", False),
    ("12", "12 dozen", False),
    ("12", "12 hundred", False),
    ("12", "12 millions", False),
    ("12", "12k", False),
    ("12", "12M", False),
    ("12", "12 m", False),  # metres or millions: unclear, so no match
    # variables, exponents, operations and constants
    ("12", "12x", False),
    ("12", "12 x", False),
    ("12", "12e", False),
    ("12", "12i", False),
    ("12", "12ab", False),
    ("12", "12 squared", False),
    ("12", "12^2", False),
    ("12", "12!", False),
    ("12", "12 pi", False),
    ("12", "12\\pi", False),
    ("12", "12 x 3", False),
    ("12", "1e6", False),
    ("12", "-12", False),
    ("12", "\u221212", False),
    # denials, alternatives and hedges
    ("12", "12 is wrong", False),
    ("12", "12 not", False),
    ("12", "12 nope", False),
    ("12", "12 or 13", False),
    ("12", "12 or thirteen", False),
    ("12", "12 apples or pears", False),
    ("12", "12 ish", False),
    ("12", "about 12", False),
    ("12", "12 apples left over today", False),  # more than three unit words: a sentence
    # what is not read as a number
    ("12", "twelve", False),
    ("12", "\\sqrt{2}", False),
    ("1.5", "1 1/2", False),
    ("1250", "1 25", False),
    ("1250", "1,25", False),
    ("1000000", "1e", False),
    ("1000000", "10^6^2", False),
]


@pytest.mark.parametrize(("gold", "pred", "same"), GRADER_TABLE)
def test_answers_match_decides_like_a_careful_grader(gold, pred, same):
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
        assert time.perf_counter() - start < 10  # a hang guard: the tower itself never finishes
        with mock.patch.object(verifier, "_worker", side_effect=AssertionError("sent to the worker")):
            assert not verifier.verify("5x", "\\frac{" * 10_000, timeout=1.0)  # over the size cap: not even sent
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


# A stand-in for the math-verify worker (same protocol, no sympy): it logs each answer it is
# sent, takes SLOW_S seconds for one starting with "slow", never replies to "hang", and finds
# only "right" equal. A restarted one (FAKE_WORKER_STARTS counts the starts) takes START_S to start.
FAKE_WORKER = """
import json, os, sys, time
folder = os.environ["FAKE_WORKER_DIR"]
starts = os.path.join(folder, "starts")
with open(starts, "a") as log:
    log.write("start\\n")
if len(open(starts).read().split()) > 1:
    time.sleep(float(os.environ.get("FAKE_WORKER_START_S", "0")))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    pred = json.loads(line)["pred"]
    with open(os.path.join(folder, "requests"), "a") as log:
        log.write(pred + "\\n")
    if pred == "hang":
        time.sleep(3600)
    if pred.startswith("slow"):
        time.sleep(float(os.environ["FAKE_WORKER_SLOW_S"]))
    print(json.dumps({"equal": pred == "right"}), flush=True)
"""


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    """The process-wide verifier, on a fresh cache, talking to :data:`FAKE_WORKER`; yields a
    function that lists the answers the worker was sent."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    monkeypatch.setenv("FAKE_WORKER_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_WORKER_SLOW_S", "0.3")
    monkeypatch.setattr(latex_verify, "WORKER", script)
    monkeypatch.setattr(latex_verify, "math_verify_installed", lambda: True)
    monkeypatch.setattr(latex_verify, "_CACHE", OrderedDict(), raising=False)
    verifier = LatexVerifier()
    monkeypatch.setattr(latex_verify, "_VERIFIER", verifier)
    requests = tmp_path / "requests"
    yield lambda: requests.read_text().split() if requests.exists() else []
    verifier.close()


def test_one_episode_spends_one_latex_budget_however_many_answers_it_writes(fake_worker):
    env = MathEnv(interaction="completion", backtrack=True, latex_timeout=1.0)
    problem = {"question": "q", "answer": "\\frac{\\pi}{3}"}  # not a number: math-verify decides
    env.reset(options={"problem": problem})
    answers = [f"slow{k}" for k in range(20)]
    completion = "\n".join(line for answer in answers for line in (f"Answer: {answer}", BACKTRACK))
    start = time.perf_counter()
    *_, info = env.step(f"{completion}\nAnswer: right")
    assert time.perf_counter() - start < 30  # only a hang guard
    # Each answer takes 0.3 s of the episode's 1 s: the fourth is cut short and the rest are not sent.
    assert 1 <= len(fake_worker()) <= 4
    assert info["backtracks"] == 20 and info["state"]["answer"] == "right" and not info["solved"]
    budget = env.episode.state.latex_budget
    assert budget.left == 0 and budget.spent < budget.seconds + 1.0
    env.reset(options={"problem": problem})  # a new episode has its own budget
    *_, info = env.step("Answer: right")
    assert info["solved"] and fake_worker()[-1] == "right"


def test_a_spent_budget_answers_at_once_and_its_answers_are_not_cached(fake_worker):
    budget = LatexBudget(0.5)
    assert latex_verify.verifier().compare("g", "hang", budget=budget) is None  # cut short at 0.5 s
    assert budget.left == 0 and budget.spent >= 0.5
    assert not latex_verify.verify_latex("g", "right", budget=budget)  # nothing left: not even sent
    assert fake_worker() == ["hang"]
    assert latex_verify.verify_latex("g", "right", budget=LatexBudget(5.0))  # so "no" was not cached
    full = LatexBudget(5.0)
    assert latex_verify.verifier().compare("g", "hang", timeout=0.3, budget=full) is False  # a decision
    assert 0.3 <= full.spent < 5.0
    with pytest.raises(ValueError, match="positive number of seconds"):
        LatexBudget(0)


def test_a_restarted_worker_is_waited_for_within_the_budget(fake_worker, monkeypatch):
    monkeypatch.setenv("FAKE_WORKER_START_S", "1.0")
    verifier = latex_verify.verifier()
    assert verifier.compare("g", "right") is True  # the first start is free
    assert verifier.compare("g", "hang", timeout=0.2) is False  # killed; a replacement starts
    budget = LatexBudget(0.2)
    assert verifier.compare("g", "right", budget=budget) is None  # the wait for it is charged
    assert budget.left == 0 and verifier.unusable is None
    assert verifier.compare("g", "right") is True  # it went on starting


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
    correct, validity = trl_reward_functions(task, {"correct": 1.0, "validity": 0.5}, invalid_policy="ignore")
    problems = [json.dumps(task.generate(0).to_dict())] * 2
    good = task.reference_text(task.generate(0))
    bad = "1 + 1 = 3\nAnswer: 0"
    assert correct(prompts=["p", "p"], completions=[good, bad], problem=problems) == [1.0, 0.0]
    assert validity(prompts=["p", "p"], completions=[good, bad], problem=problems) == [0.0, -0.5]
    assert correct.__name__ == "math_correct"
