"""Backtrack-gym envs behind TRL's native environment interface, ``GRPOTrainer(environment_factory=...)``.

How TRL 1.16 drives such an environment (``trl/trainer/grpo_trainer.py``):

- **Reset per example.** ``environment_factory`` is called once per concurrent rollout
  (instances are pooled and reused across batches). Before each generation TRL calls
  ``reset(**row)`` with the whole data set row; a returned string is appended to the
  prompt's last user message. Prompts must be conversational (lists of messages).
- **Actions.** Every public method of the instance other than ``reset`` and
  ``get_reward`` is a *tool*: its signature and Google-style docstring become a tool
  schema for the chat template, and the model acts by writing tool calls, which the
  tokenizer's ``response_template`` parses out of the generated text. TRL calls the
  method, appends its return value as a ``tool`` message (tokens that carry no loss)
  and lets the model go on; the rollout ends at a turn with no tool call, at
  ``max_completion_length`` tokens or after ``max_tool_calling_iterations`` rounds. An
  exception a tool raises becomes an ``{"error": ...}`` tool message.
- **Rewards.** ``get_reward()`` is called once per finished rollout and added to the
  reward functions with weight 1; reward functions also receive the instances as
  ``environments=``.

:class:`TRLEnv` wraps any registered env (built with ``gym.make`` in step mode) for
this: ``reset`` pins the problem of the row's ``problem`` column, the tools ``step``
and ``backtrack`` send lines of the task's step grammar to the env (``backtrack`` is
its ``<backtrack>`` line), and ``get_reward`` is the env's return, the sum of the
rewards its steps gave: no second scoring path. :func:`chat_tokenizer` gives the
character tokenizer of the presets a chat and tool-call format TRL can render and
parse, so a model trained from scratch can play too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from backtrack_gym.envs import TASK_ENV_IDS
from backtrack_gym.envs.core import BACKTRACK
from backtrack_gym.rewards import episode_reward_functions
from backtrack_gym.train.grpo_rollout import prompt_dataset

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from backtrack_gym.envs.core import Task, TextEnv

# The chat format of chat_tokenizer: one added token per role and per tool-call delimiter.
SYSTEM, USER, ASSISTANT, TOOL = "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"
CALL, END_CALL = "<|call|>", "<|/call|>"
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, TOOL, CALL, END_CALL)
# What a JSON tool call needs beyond a task's charset (its letters, digits and space).
TOOL_CALL_CHARS = '{}":,\\_'

# A turn ends in the tokenizer's eos, which TRL's generation stops at. Tool calls are the
# JSON {"name": ..., "arguments": {...}} between CALL and END_CALL, as Qwen3 writes them
# between <tool_call> tags. The tool schemas are not rendered: a model trained on this
# format knows its two tools. Earlier turns render the same whatever follows them
# (TRL needs the template to be prefix-preserving), and the assistant's part is inside
# generation markers, for SFT's assistant-only loss.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message.role == 'system' -%}" + SYSTEM + "{{ message.content }}<eos>"
    "{%- elif message.role == 'user' -%}" + USER + "{{ message.content }}<eos>"
    "{%- elif message.role == 'assistant' -%}" + ASSISTANT + "{% generation %}{{ message.content or '' }}"
    "{%- for call in message.tool_calls or [] -%}"
    + CALL
    + "{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}"
    + END_CALL
    + "{%- endfor -%}<eos>{% endgeneration %}"
    "{%- elif message.role == 'tool' -%}" + TOOL + "{{ message.content }}<eos>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + "{%- endif -%}"
)

# transformers' response template (>= 5.13) for CHAT_TEMPLATE's assistant turns.
RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": ASSISTANT,
    "fields": {
        "tool_calls": {
            "open": CALL,
            "close": END_CALL,
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close": "<eos>", "content": "text"},
    },
}


def chat_tokenizer(task: Task) -> PreTrainedTokenizerFast:
    """The character tokenizer of ``task`` (:func:`~backtrack_gym.train.tokenizer.build_tokenizer`)
    with the characters of JSON tool calls, the role and tool-call tokens, and the chat and
    response templates TRL's tool loop renders and parses (:data:`CHAT_TEMPLATE`)."""
    from tokenizers import AddedToken

    from backtrack_gym.train.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(task.charset + TOOL_CALL_CHARS)
    chat_tokens = [AddedToken(token, special=True, normalized=False) for token in CHAT_TOKENS]
    tokenizer.add_tokens(chat_tokens, special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE
    return tokenizer


class TRLEnv:
    """A backtrack-gym env as a TRL ``environment_factory`` environment.

    ## Description

    One instance plays one rollout at a time in a step-mode env made by ``gym.make``.
    :meth:`reset` pins the problem of the data set row and returns the env's first
    observation (appended to the prompt); the model acts through the tools
    :meth:`step` (one line of the task's step grammar) and :meth:`backtrack` (the
    ``<backtrack>`` line), each answered with the env's next observation. An invalid
    line is what the env makes of it (counted, penalised or ending the episode, by its
    ``invalid_policy``); a tool call after the episode ended is a ``ValueError``, which
    TRL hands back to the model as a tool error.

    ## Action Space

    Tool calls: ``step(line: str)`` and ``backtrack()``.

    ## Observation Space

    Each tool returns the env's observation, the rendered state (as in the env's step mode).

    ## Rewards

    :meth:`get_reward` is the env's return: the sum of the rewards its steps gave,
    under the env's ``reward_weights`` and invalid policy. The last ``info`` is
    :attr:`info`, for metrics (:func:`env_metric_functions`).

    ## Arguments

    - ``env``: a task name (``"countdown"``) or a Gymnasium id (``"backtrack_gym/CountDown-v0"``).
    - ``problem_column``: the data set column holding each row's problem (its dict or JSON).
    - ``env_kwargs``: ``gym.make`` keywords: task config fields and :class:`~backtrack_gym.envs.core.TextEnv`
      settings (``interaction`` is always ``"step"``). ``backtrack`` defaults to True.
    """

    def __init__(self, env: str, *, problem_column: str = "problem", **env_kwargs: Any):
        if "interaction" in env_kwargs:
            raise ValueError("interaction: a TRLEnv plays in step mode (one tool call is one line); pass none")
        env_id = TASK_ENV_IDS.get(env, env)
        self.env = gym.make(env_id, interaction="step", **{"backtrack": True, **env_kwargs})
        self.problem_column = problem_column
        self.info: dict[str, Any] | None = None
        self.episode_return = 0.0

    @property
    def text_env(self) -> TextEnv:
        """The env under ``gym.make``'s wrappers."""
        return self.env.unwrapped

    def reset(self, **row: Any) -> str:
        """Start an episode on the problem in ``row[problem_column]``; returns the first observation."""
        problem = row.get(self.problem_column)
        if problem is None:
            raise ValueError(f"{self.problem_column}: the data set row has no problem; columns: {sorted(row)}")
        observation, self.info = self.env.reset(options={"problem": problem})
        self.episode_return = 0.0
        return observation

    def step(self, line: str) -> str:
        """Take one step of the puzzle.

        Args:
            line: One line of the puzzle's step grammar, such as "93-91=2" in CountDown.

        Returns:
            The puzzle's state after the step.
        """
        if self.info is None:
            raise ValueError("call reset() before a tool: there is no episode yet")
        if self.text_env.done:
            raise ValueError("the episode has ended: no more steps")
        observation, reward, _, _, self.info = self.env.step(line)
        self.episode_return += float(reward)
        return observation

    def backtrack(self) -> str:
        """Undo the last step that was applied.

        Returns:
            The puzzle's state after undoing it.
        """
        return self.step(self.text_env.backtrack_token)

    def get_reward(self) -> float:
        """The env's return for the episode so far (TRL calls this once the rollout ended)."""
        return self.episode_return


def environment_factory(env: str, **kwargs: Any) -> Callable[[], TRLEnv]:
    """What ``GRPOTrainer(environment_factory=...)`` takes: a callable making a
    :class:`TRLEnv` ``(env, **kwargs)``. The first one is made here, so a bad
    argument fails now, not inside the trainer."""
    TRLEnv(env, **kwargs).env.close()
    return functools.partial(TRLEnv, env, **kwargs)


def chat_prompt_dataset(task: Task, n: int, split: str = "train", first_index: int = 0, instructions: str = "") -> Any:
    """The GRPO prompt rows of :func:`~backtrack_gym.train.grpo_rollout.prompt_dataset` in TRL's
    conversational form: ``prompt`` is one user message of ``instructions`` (the env's first
    observation follows them, from :meth:`TRLEnv.reset`), ``problem`` the problem's JSON."""
    lead = instructions if not instructions or instructions.endswith("\n") else instructions + "\n"
    rows = prompt_dataset(task, n, split, first_index)
    return rows.map(lambda _: {"prompt": [{"role": "user", "content": lead}]})


def tool_call(line: str, backtrack_token: str = BACKTRACK) -> dict[str, Any]:
    """The tool call that plays ``line``: ``backtrack()`` for the backtrack line, else ``step(line)``."""
    if line == backtrack_token:
        return {"type": "function", "function": {"name": "backtrack", "arguments": {}}}
    return {"type": "function", "function": {"name": "step", "arguments": {"line": line}}}


def trace_conversation(env: TRLEnv, row: Mapping[str, Any], lines: list[str]) -> list[dict[str, Any]]:
    """The conversation of a rollout of ``row`` that plays ``lines`` (a trace's, say) one tool call
    each, with the env's answers, then ends with a turn of no tool call: an SFT example of the
    chat format, as TRL would render the rollout (the first observation closes the user message)."""
    prompt = [dict(message) for message in row["prompt"]]
    prompt[-1]["content"] += env.reset(**row)
    messages = list(prompt)
    for line in lines:
        if env.text_env.done:
            break
        call = tool_call(line, env.text_env.backtrack_token)
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        answer = env.backtrack() if call["function"]["name"] == "backtrack" else env.step(line)
        messages.append({"role": "tool", "name": call["function"]["name"], "content": answer})
    messages.append({"role": "assistant", "content": ""})
    return messages


def env_metric_functions(task_name: str) -> list[Callable[..., list[float]]]:
    """The episode curves of :data:`backtrack_gym.rewards.METRICS` (solved, backtracks, ...) as
    TRL reward functions read from each rollout's :class:`TRLEnv` (give them weight 0)."""
    # Terms weighted 0: episode_reward_functions puts them first; only its metric functions are kept.
    scored = episode_reward_functions(task_name, {"correct": 0.0}, info_column="episode_info", metrics=True)[1:]
    return [_from_environments(func) for func in scored]


def _from_environments(func: Callable[..., list[float]]) -> Callable[..., list[float]]:
    def metric(prompts: Any = None, completions: Any = (), environments: Any = (), **columns: Any) -> list[float]:
        infos = [environment.info for environment in environments]
        return func(prompts=prompts, completions=completions, episode_info=infos)

    metric.__name__ = func.__name__
    return metric
