from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
from bad_inputs import (
    NAMED_BAD_INPUTS,
    assert_defined_outcome,
    assert_ended_episode_raises,
    forbid_code_execution,
    no_code_execution,  # noqa: F401  (fixture)
)
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.agents import OracleAgent, RandomAgent, play, summarize
from backtrack_gym.envs import BACKTRACK, Invalid, make_task
from backtrack_gym.envs.expr import evaluate
from backtrack_gym.envs.math import (
    TEMPLATES,
    Calc,
    FinalAnswer,
    MathConfig,
    MathEnv,
    MathProblem,
    MathState,
    MathTask,
    generate,
    parse_step,
)
from backtrack_gym.envs.math.grammar import apply, reference_steps
from backtrack_gym.envs.math.templates import LINE_LIMITS, Dice, Sizes

ENV_ID = "backtrack_gym/Math-v0"
PROBLEM = {
    "question": "Pens cost $3 each. Ana buys 4 pens and a $2 notebook. How much does she spend?",
    "answer": "14",
    "solution": ["The pens cost:", "3 * 4 = 12", "With the notebook:", "12 + 2 = 14", "Answer: 14"],
}
WAIT = "Wait, that's not right."


# --- grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("3 * 4 = 12", Calc("3 * 4", 12, 12)),
        ("3*4=13", Calc("3*4", 12, 13)),
        ("$1,200 * 15% = $180", Calc("1200 * 15%", 180, 180)),
        ("(7/2) * 2 = 7.", Calc("(7/2) * 2", 7, 7)),
        ("10 / 4 = 5/2", Calc("10 / 4", Fraction(5, 2), Fraction(5, 2))),
        ("-3 - 4 = -7", Calc("-3 - 4", -7, -7)),
        ("0.1 + 0.2 = 0.3", Calc("0.1 + 0.2", Fraction(3, 10), Fraction(3, 10))),
        ("Answer: 12", FinalAnswer("12")),
        ("answer:  \\boxed{\\frac{1}{2}}", FinalAnswer("\\boxed{\\frac{1}{2}}")),
        ("So she pays 3 * 4 = 12 dollars.", None),
        ("The pens cost twelve dollars", None),
        ("=====", None),
        ("x = 5", None),
    ],
)
def test_parse_step(line, expected):
    assert parse_step(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("= 5", "empty expression"),
        ("2**3 = 8", "unexpected '*'"),
        ("1 = 2 = 3", "one '='"),
        ("5 / 0 = 0", "division by zero"),
        ("3 + 4 = 3 + 4", "right side must be a number"),
        ("3 + (4 = 7", "ends too early"),
        ("Answer:", "answer is empty"),
    ],
)
def test_parse_step_rejects_unreadable_lines(line, reason):
    step = parse_step(line)
    assert isinstance(step, Invalid) and step.kind == "malformed" and reason in step.reason


def test_apply_checks_lines_exactly_and_freezes_the_answer():
    state = apply(MathState(), parse_step("3 * 4 = 12"))
    assert state == MathState(("3 * 4 = 12",))
    wrong = apply(state, parse_step("12 + 2.5 = 14"))
    assert wrong == Invalid("illegal", "12 + 2.5 is 14.5, not 14")
    answered = apply(state, parse_step("Answer: 14"))
    assert answered.answer == "14"
    assert "already given" in apply(answered, parse_step("1 + 1 = 2")).reason
    assert "already given" in apply(answered, parse_step("Answer: 15")).reason


def test_task_parse_format_round_trip_on_reference_steps():
    task = MathTask(MathConfig(min_reasoning_steps=1, max_reasoning_steps=8))
    for index in range(200):
        problem = task.generate(index)
        for step in reference_steps(problem.solution):
            assert task.parse_step(task.format_step(step)) == step


# --- generation ------------------------------------------------------------


def test_generation_is_deterministic_per_seed_split_and_index():
    config = MathConfig(seed=7)
    assert generate(config, 5) == generate(MathConfig(seed=7), 5)
    assert generate(config, 5) != generate(config, 6)
    assert generate(config, 5) != generate(MathConfig(seed=8), 5)
    train = {generate(config, i).question for i in range(300)}
    test = {generate(config, i, "test").question for i in range(300)}
    assert len(train) == 300 and len(test) == 300
    assert not train & test


def test_chunks_do_not_repeat_items():
    # Per-item SeedSequence(seed, spawn_key=(split, index)): seed 1's items are not seed 0's shifted.
    seed0 = [generate(MathConfig(seed=0), i).question for i in range(1, 100)]
    seed1 = [generate(MathConfig(seed=1), i).question for i in range(99)]
    assert not set(seed0) & set(seed1)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_writes_each_step_count_with_a_right_solution(name):
    template = TEMPLATES[name]
    for steps in range(template.min_steps, template.max_steps + 1):
        for k in range(20):
            draft = template.write(Dice(np.random.default_rng([steps, k])), steps, Sizes(100, decimals=k % 2 == 0))
            checked = [line for line in draft.lines if isinstance(parse_step(line), Calc)]
            assert len(checked) == steps, (name, steps, draft.lines)
            state = MathState()
            for line in draft.lines:
                step = parse_step(line)
                assert not isinstance(step, Invalid | FinalAnswer), line
                if step is not None:
                    state = apply(state, step)
                    assert isinstance(state, MathState), (line, state)
            assert evaluate(checked[-1].split("=")[1], LINE_LIMITS) == draft.answer
            assert draft.question.endswith(("?", ".")) and len(draft.question) < 1000


def test_config_shapes_the_problems():
    config = MathConfig(templates=("totals",), min_reasoning_steps=5, max_reasoning_steps=5, decimals=False)
    for index in range(50):
        problem = generate(config, index)
        assert problem.source == "totals"
        steps = reference_steps(problem.solution)
        assert len(steps) == 6 and steps[-1] == FinalAnswer(problem.answer)
        assert all(isinstance(step.written, int) for step in steps[:-1])
    big = MathConfig(number_max=100_000)
    assert max(float(generate(big, i).answer) for i in range(100)) > 100_000


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"templates": ("riddles",)}, "unknown templates"),
        ({"min_reasoning_steps": 5, "max_reasoning_steps": 3}, "min_reasoning_steps"),
        ({"max_reasoning_steps": 9}, "max_reasoning_steps <= 8"),
        ({"templates": ("linear_equation",), "min_reasoning_steps": 1}, "writes 1-step problems"),
        ({"number_max": 5}, "number_max"),
        ({"max_question_chars": 10}, "max_question_chars"),
        ({"latex_timeout": 0}, "latex_timeout"),
    ],
)
def test_config_rejects_impossible_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        MathConfig(**fields).validate()


def test_problem_from_dict_checks_its_input():
    task = MathTask()
    assert task.coerce_problem({"question": "1 + 1?", "answer": 2}).answer == "2"
    for bad in ({"question": "q"}, {"question": "", "answer": "1"}, {"question": "q", "answer": "1\n2"}, [1, 2]):
        with pytest.raises(ValueError):
            task.coerce_problem(bad)
    with pytest.raises(ValueError, match="max_question_chars"):
        task.coerce_problem({"question": "x" * 5000, "answer": "1"})
    with pytest.raises(ValueError, match="not valid JSON"):
        task.coerce_problem("{")


# --- the env ---------------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("backtrack", [False, True])
def test_gymnasium_check_env(interaction, backtrack):
    check_env(gym.make(ENV_ID, interaction=interaction, backtrack=backtrack).unwrapped, skip_render_check=False)


def test_reference_solutions_of_1000_problems_replay_to_correct_in_both_modes():
    config = MathConfig(min_reasoning_steps=1, max_reasoning_steps=8)
    completion = MathEnv(config, interaction="completion")
    step = MathEnv(config, interaction="step")
    for index in range(1000):
        completion.reset(options={"index": index})
        _, reward, terminated, _, info = completion.step(completion.task.reference_text(completion.problem))
        assert terminated and info["solved"] and reward == 1.0 and info["invalid_steps"] == 0, info
        step.reset(options={"index": index})
        total = 0.0
        for line in step.problem.solution:
            obs, reward, terminated, truncated, info = step.step(line)
            total += reward
            assert step.observation_space.contains(obs)
        assert terminated and info["solved"] and total == 1.0 and info["invalid_steps"] == 0, info


def test_wrong_line_is_flagged_with_its_number_and_the_expected_value():
    env = MathEnv(interaction="completion")
    env.reset(options={"problem": PROBLEM})
    text = "Pens first.\n3 * 4 = 12\n\n12 + 2 = 15\nAnswer: 15"
    _, reward, terminated, _, info = env.step(text)
    assert terminated and not info["solved"] and reward < 0
    assert info["invalid_lines"] == [{"line": 4, "text": "12 + 2 = 15", "reason": "12 + 2 is 14, not 15"}]
    env = MathEnv()
    env.reset(options={"problem": PROBLEM})
    env.step("3 * 4 = 12")
    _, _, _, _, info = env.step("12 + 2 = 15")
    assert not info["last_valid"] and info["last_reason"] == "12 + 2 is 14, not 15"
    assert info["state"] == {"lines": ["3 * 4 = 12"], "answer": None}


def test_backtrack_with_a_phrase_withdraws_the_answer_and_lines():
    env = gym.make(ENV_ID, backtrack=True, backtrack_token=WAIT).unwrapped
    env.reset(options={"problem": PROBLEM})
    for line in ("3 * 4 = 12", "12 + 3 = 15", "Answer: 15"):
        *_, info = env.step(line)
    assert info["state"] == {"lines": ["3 * 4 = 12", "12 + 3 = 15"], "answer": "15"} and not info["solved"]
    *_, info = env.step("1 + 1 = 2")
    assert "backtrack" in info["last_reason"]
    for _ in range(2):
        *_, info = env.step(WAIT)
    assert info["state"] == {"lines": ["3 * 4 = 12"], "answer": None} and info["backtracks"] == 2
    env.step("12 + 2 = 14")
    _, reward, terminated, _, info = env.step("Answer: $14")
    assert terminated and info["solved"] and reward == 1.0

    completion = MathEnv(interaction="completion", backtrack=True, backtrack_token=WAIT)
    completion.reset(options={"problem": PROBLEM})
    *_, info = completion.step(f"3 * 4 = 12\nAnswer: 12\n{WAIT}\n12 + 2 = 14\nAnswer: 14 dollars")
    assert info["solved"] and info["backtracks"] == 1 and info["invalid_steps"] == 0


def test_backtrack_off_and_bad_tokens():
    env = MathEnv(backtrack=False)
    env.reset(options={"problem": PROBLEM})
    *_, info = env.step(BACKTRACK)
    assert info["last_reason"] == "backtracking is off in this env"
    for token in ("", " padded ", "two\nlines", "1 + 1 = 2", "Answer: 3", "caf\u00e9"):
        with pytest.raises(ValueError, match="backtrack_token"):
            MathEnv(backtrack=True, backtrack_token=token)


def test_free_text_is_a_no_op_that_uses_a_turn_but_no_step():
    # As in completion mode, so both modes earn the same return; the turn limit ends endless free text.
    env = MathEnv(max_steps=2)
    env.reset(options={"problem": PROBLEM})
    _, reward, _, truncated, info = env.step("Let me think about the pens.")
    assert reward == 0.0 and info["last_valid"] and info["valid_steps"] == 0 and not truncated
    assert info["steps"] == 0 and info["turns"] == 1
    env.step("3 * 4 = 12")
    env.step("More thinking")
    _, _, terminated, truncated, info = env.step("1 + 1 = 2")
    assert truncated and not terminated and info["steps"] == 2 and info["turns"] == 4


def test_reset_seed_is_deterministic_and_pins_problems():
    env = gym.make(ENV_ID).unwrapped
    first, _ = env.reset(seed=11)
    again, _ = env.reset(seed=11)
    assert first == again and first.startswith("Question: ")
    obs, info = env.reset(options={"problem": PROBLEM})
    assert obs == f"Question: {PROBLEM['question']}" and info["problem"]["answer"] == "14"
    problem = MathProblem("What is 2 + 2?", "4")
    obs, info = env.reset(options={"problem": problem})
    assert info["problem"]["question"] == "What is 2 + 2?"
    _, info = env.reset(options={"index": 3})
    assert info["problem"] == generate(MathConfig(), 3).to_dict()


def test_make_passes_config_fields_and_make_task():
    env = gym.make(ENV_ID, templates=["linear_equation"], seed=3, max_reasoning_steps=4).unwrapped
    _, info = env.reset(seed=0)
    assert info["problem"]["source"] == "linear_equation"
    assert env.task.config.templates == ("linear_equation",)
    task = make_task("math", templates="fractions", min_reasoning_steps=1)
    assert task.generate(0).source == "fractions"


def test_observations_stay_in_the_space():
    env = MathEnv(max_steps=200)
    question = "Na\u00efve caf\u00e9 \u2014 \u201cquotes\u201d, \u00bd, \u6570\u5b57, tab\there? " * 40
    obs, _ = env.reset(options={"problem": {"question": question[:4096], "answer": "1"}})
    assert env.observation_space.contains(obs)
    for k in range(40):
        obs, *_ = env.step(f"{k} + 0.123456789 = {k}.123456789")
        assert env.observation_space.contains(obs)
    assert "(24 earlier lines)" in obs
    obs, *_ = env.step("Answer: \u00bd")
    assert env.observation_space.contains(obs) and obs.endswith("Answer: ?")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_runs(mode):
    envs = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode=mode, vector_kwargs={}, backtrack=True)
    try:
        obs, info = envs.reset(seed=3)
        assert len(obs) == 4 and all(o.startswith("Question: ") for o in obs)
        obs, reward, terminated, truncated, info = envs.step(["1 + 1 = 2", "Answer: 0", BACKTRACK, "hello"])
        assert list(info["valid_steps"]) == [1, 1, 0, 0] and list(info["illegal_steps"]) == [0, 0, 1, 0]
    finally:
        envs.close()


@pytest.mark.parametrize("interaction", ["step", "completion"])
def test_oracle_solves_and_random_agent_plays_legal_steps(interaction):
    env = MathEnv(interaction=interaction, backtrack=True)
    assert summarize(play(env, OracleAgent.for_env(env), 30))["solve_rate"] == 1.0
    random = summarize(play(env, RandomAgent.for_env(env, seed=0), 30))
    assert random["invalid"] == 0


def test_oracle_backtracks_out_of_a_wrong_answer():
    env = MathEnv(backtrack=True)
    obs, info = env.reset(options={"problem": PROBLEM})
    obs, _, _, _, info = env.step("Answer: 13")
    agent = OracleAgent.for_env(env)
    assert agent.act(obs, info) == BACKTRACK
    while not info["solved"]:
        obs, _, _, _, info = env.step(agent.act(obs, info))
    assert info["backtracks"] == 1


def test_legal_steps_apply_and_solve_continues_from_any_state():
    task = MathTask()
    problem = task.coerce_problem(PROBLEM)
    state = apply(MathState(), parse_step("4 + 3 = 7"))
    legal = task.legal_steps(problem, state)
    assert legal[0] == parse_step("3 * 4 = 12") and legal[-1] == FinalAnswer("7")
    assert all(isinstance(task.apply(problem, state, step), MathState) for step in legal)
    plan = task.solve(problem, state)
    for step in plan:
        state = task.apply(problem, state, step)
    assert task.is_solved(problem, state)
    assert task.solve(problem, apply(MathState(), FinalAnswer("1"))) is None


def test_invalid_policy_terminate():
    env = MathEnv(invalid_policy="terminate", interaction="completion")
    env.reset(options={"problem": PROBLEM})
    *_, info = env.step("3 * 4 = 13\n12 + 2 = 14\nAnswer: 14")
    assert not info["solved"] and info["valid_steps"] == 0 and len(info["invalid_lines"]) == 1


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize("interaction", ["step", "completion"])
@pytest.mark.parametrize("name", sorted(NAMED_BAD_INPUTS))
def test_named_bad_inputs(name, interaction, no_code_execution):  # noqa: F811
    env = MathEnv(interaction=interaction, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    info = assert_defined_outcome(env, NAMED_BAD_INPUTS[name])
    assert not info["solved"]
    if interaction == "completion":
        assert_ended_episode_raises(env, NAMED_BAD_INPUTS[name])


@pytest.mark.parametrize(
    "answer", ["Answer: " + "\\frac{" * 30, "Answer: 9**9**9", "Answer: " + "9" * 240, "Answer: \\boxed{" * 10]
)
def test_bad_answers_are_wrong_answers(answer, no_code_execution):  # noqa: F811
    env = MathEnv()
    env.reset(options={"problem": PROBLEM})
    info = assert_defined_outcome(env, answer)
    assert not info["solved"] and info["state"]["answer"] is not None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400), interaction=st.sampled_from(["step", "completion"]))
def test_any_text_is_a_defined_outcome(text, interaction):
    env = MathEnv(interaction=interaction, backtrack=True)
    env.reset(options={"problem": PROBLEM})
    with forbid_code_execution():
        assert_defined_outcome(env, text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["3 * 4 = 12", "12 + 2 = 15", "Answer: 13", "Answer: 14", BACKTRACK, "hmm", "", "1 = 1"]),
        max_size=20,
    )
)
def test_step_sequences_keep_the_state_consistent(lines):
    env = MathEnv(backtrack=True, max_steps=100)
    env.reset(options={"problem": PROBLEM})
    for line in lines:
        obs, _, terminated, truncated, info = env.step(line)
        assert env.observation_space.contains(obs)
        assert info["steps"] == info["valid_steps"] + info["invalid_steps"] + info["backtracks"]  # "hmm" is no step
        applied = len(info["state"]["lines"]) + (info["state"]["answer"] is not None)
        assert applied == info["valid_steps"] - info["backtracks"]
        if terminated or truncated:
            break
