"""TRL's native environment interface: the TRLEnv adapter, its chat format, and two GRPO steps through it."""

import json
import os
import re

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from backtrack_gym.envs import make_task  # noqa: E402
from backtrack_gym.envs.core import TextEnv, play_completion  # noqa: E402
from backtrack_gym.train.trl_env import (  # noqa: E402
    ASSISTANT,
    CALL,
    END_CALL,
    USER,
    TRLEnv,
    chat_prompt_dataset,
    chat_tokenizer,
    env_metric_functions,
    environment_factory,
    trace_conversation,
)

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}


@pytest.fixture(scope="module")
def task():
    return make_task("countdown", **TASK_CONFIG)


@pytest.fixture(scope="module")
def tokenizer(task):
    return chat_tokenizer(task)


def oracle_lines(task, problem_json: str) -> list[str]:
    problem = task.coerce_problem(problem_json)
    return [task.format_step(step) for step in task.solve(problem, task.initial_state(problem))]


def call_text(name: str, arguments: dict) -> str:
    return CALL + json.dumps({"name": name, "arguments": arguments}) + END_CALL


def test_tools_step_the_env_and_the_reward_is_its_return(task):
    row = chat_prompt_dataset(task, 1, first_index=3)[0]
    env = TRLEnv("countdown", reward_weights={"correct": 1.0}, **TASK_CONFIG)
    first = env.reset(**row)
    assert first == task.prompt(task.coerce_problem(row["problem"]))
    solution = oracle_lines(task, row["problem"])
    env.step(solution[0])
    env.backtrack()
    env.step("1 + 1 = 3")  # illegal: counted and penalised by the env, not raised
    for line in solution:
        observation = env.step(line)
    assert env.info["solved"] and env.info["backtracks"] == 1 and env.info["illegal_steps"] == 1
    assert observation == env.text_env.task.render(env.text_env.problem, env.text_env.episode.state)
    # The same lines replayed through the one scoring path, in a fresh step-mode env.
    lines = [solution[0], "<backtrack>", "1 + 1 = 3", *solution]
    replay = TextEnv(task, interaction="step", backtrack=True, reward_weights={"correct": 1.0})
    expected = play_completion(replay, row["problem"], "\n".join(lines)).total
    assert env.get_reward() == pytest.approx(expected) == pytest.approx(1.0 - 0.1)
    with pytest.raises(ValueError, match="episode has ended"):
        env.step(solution[0])
    # reset puts the return back to zero for the pooled instance's next rollout.
    env.reset(**row)
    assert env.get_reward() == 0.0 and env.info["steps"] == 0


def test_bad_arguments_are_clear_errors(task):
    with pytest.raises(ValueError, match="interaction"):
        TRLEnv("countdown", interaction="completion")
    with pytest.raises(TypeError, match="no_such_field"):
        environment_factory("countdown", no_such_field=1)
    env = TRLEnv("countdown")
    with pytest.raises(ValueError, match="problem: the data set row has no problem"):
        env.reset(prompt=[])
    with pytest.raises(ValueError, match="reset"):
        env.step("1 + 2 = 3")


def test_backtrack_is_the_envs_illegal_step_when_it_is_off(task):
    env = TRLEnv("countdown", backtrack=False, **TASK_CONFIG)
    env.reset(**chat_prompt_dataset(task, 1)[0])
    env.backtrack()
    assert env.info["illegal_steps"] == 1 and env.info["backtracks"] == 0


def test_chat_format_passes_trls_checks_and_parses_back(tokenizer):
    from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

    assert supports_tool_calling(tokenizer) and is_chat_template_prefix_preserving(tokenizer)
    user = [{"role": "user", "content": "Target: 24 | Numbers: 3 4 8"}]
    calls = [
        {"type": "function", "function": {"name": "step", "arguments": {"line": "3 * 8 = 24"}}},
        {"type": "function", "function": {"name": "backtrack", "arguments": {}}},
    ]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": "", "tool_calls": calls}], tokenize=True, return_dict=False
    )
    assert full[: len(prompt)] == prompt and tokenizer.unk_token_id not in full
    assert full[-1] == tokenizer.eos_token_id  # TRL's generation stops there
    parsed = parse_response(tokenizer, full[len(prompt) :], prefix=prompt)
    assert parsed["tool_calls"] == calls and parsed["content"] == ""
    text = tokenizer("no tool call<eos>", add_special_tokens=False)["input_ids"]
    assert parse_response(tokenizer, text, prefix=prompt) == {"role": "assistant", "content": "no tool call"}


def test_a_trace_played_as_tool_calls_renders_and_parses_back(task, tokenizer):
    import numpy as np
    from trl.chat_template_utils import parse_response

    from backtrack_gym.agents.traces import write_trace

    row = chat_prompt_dataset(task, 1, first_index=2)[0]
    trace = write_trace(task, task.coerce_problem(row["problem"]), "dfs", rng=np.random.default_rng(0))
    assert "<backtrack>" in trace.lines  # this problem's DFS backtracks, so both tools are played
    env = TRLEnv("countdown", **TASK_CONFIG)
    messages = trace_conversation(env, row, trace.lines)
    replay = TextEnv(task, interaction="step", backtrack=True)
    assert env.get_reward() == pytest.approx(play_completion(replay, row["problem"], trace.completion).total)
    assert env.info["solved"] and env.info["backtracks"] == trace.backtracks
    # Each assistant turn, rendered, parses back to the tool call it was, as TRL's loop reads it.
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True, return_dict=False)
        full = tokenizer.apply_chat_template(messages[: k + 1], return_dict=False)
        assert full[: len(prompt)] == prompt
        parsed = parse_response(tokenizer, full[len(prompt) :], prefix=prompt)
        assert parsed.get("tool_calls") == message.get("tool_calls")
    assert [m["tool_calls"][0]["function"]["name"] for m in messages if m.get("tool_calls")].count(
        "backtrack"
    ) == trace.lines.count("<backtrack>")


def scripted_turn(history: str, variant: int, solutions: dict[str, list[str]]) -> str:
    """A fixed policy: variant 0 solves with one backtrack on the way, variant 1 plays one illegal line."""
    observation = history.split(ASSISTANT, 1)[0].removeprefix(USER).removesuffix("<eos>")
    done = history.count(ASSISTANT) - 1  # assistant turns already written
    solution = solutions[observation]
    if variant == 1 or '"1 + 1 = 3"' in history:
        return call_text("step", {"line": "1 + 1 = 3"}) + "<eos>" if done == 0 else "stop<eos>"
    script = [call_text("step", {"line": solution[0]}), call_text("backtrack", {})]
    script += [call_text("step", {"line": line}) for line in solution] + ["solved"]
    return script[done] + "<eos>"


def test_two_grpo_steps_through_the_env_interface(task, tokenizer, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from backtrack_gym.train.models import build_model

    torch.set_num_threads(1)
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    dataset = chat_prompt_dataset(task, 4)
    solutions = {task.prompt(task.coerce_problem(p)): oracle_lines(task, p) for p in dataset["problem"]}
    played: list[tuple[dict, float]] = []  # (last info, return) of each rollout, when TRL scores it

    class ScriptedTrainer(GRPOTrainer):
        """TRL's whole loop (tool parsing, env calls, rewards, loss) with the tokens of a fixed policy."""

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
            texts = []
            for i, ids in enumerate(prompt_ids):
                history = self._tokenizer.decode(ids)
                variant = i % 2 if history.count(ASSISTANT) == 1 else int('"1 + 1 = 3"' in history)
                texts.append(scripted_turn(history, variant, solutions))
            return [self._tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            # TRL pools the instances and resets them for the next batch: keep what they held now.
            played.extend((dict(env.info), env.get_reward()) for env in self.environments)
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    model = build_model("tiny", tokenizer, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = env_metric_functions("countdown")
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=1024,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        reward_weights=[0.0] * len(metrics),
        seed=0,
    )
    trainer = ScriptedTrainer(
        model=model,
        reward_funcs=metrics,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        environment_factory=environment_factory("countdown", reward_weights={"correct": 1.0}, **TASK_CONFIG),
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(played) == 8  # two steps of 4 rollouts
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    for step_log, rollouts in zip(logged, (played[:4], played[4:]), strict=True):
        # Half the rollouts solve with one backtrack (return 1), half play one illegal step (-0.1).
        returns = sorted(ret for _, ret in rollouts)
        assert returns == pytest.approx([-0.1, -0.1, 1.0, 1.0])
        assert step_log["reward"] == pytest.approx(sum(returns) / 4)
        assert step_log["rewards/TRLEnv/mean"] == pytest.approx(sum(returns) / 4)
        assert step_log["rewards/countdown_solved/mean"] == pytest.approx(0.5)
        assert step_log["rewards/countdown_backtracks/mean"] == pytest.approx(0.5)
        assert step_log["tools/call_frequency"] > 1
    problems = [json.loads(p) for p in dataset["problem"]]
    assert sorted(json.dumps(info["problem"]) for info, _ in played) == sorted(map(json.dumps, problems * 2))
    for info, _ in played:
        if info["solved"]:
            lines = solutions[task.prompt(task.coerce_problem(info["problem"]))]
            assert info["valid_steps"] == len(lines) + 1 and info["backtracks"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert re.search(r"TRLEnv", " ".join(trainer.reward_func_names))
