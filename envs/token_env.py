"""``TokenEnv``: a backtrack-gym text env seen one token at a time, for classic RL libraries.

Actions are token ids (``Discrete(vocab_size)``); observations are a fixed-size window
of token ids plus its length. Tokens accumulate into a pending action that goes to
the inner text env when it is complete, so any policy that emits tokens (an SB3 PPO
MLP, an LM sampled one token per step) plays the same envs with the same rewards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from backtrack_gym.envs.core import BKSP, TextEnv
from backtrack_gym.envs.snapshot import TokenEnvSnapshot, check_same


class TokenEnv(gym.Wrapper):
    """A text env with token-id actions and observations.

    ## Description

    The game of the wrapped text env (same problems, rules and rewards), played one
    token at a time: tokens accumulate into a pending action that goes to the text
    env when it is complete.

    ## Action Space

    ``Discrete(vocab_size)``: one token id per step.

    - a token whose text contains a newline ends the line in step mode: the
      pending line goes to the inner env (in completion mode a newline is an
      ordinary token);
    - ``<bksp>`` deletes the last pending token (nothing when none is pending);
    - eos sends the pending text (the whole output in completion mode, the line if
      any in step mode) and ends the episode;
    - any other token is appended to the pending action; an action that reaches
      ``max_action_tokens`` is sent as it is (the env judges it, e.g. as invalid).

    ## Observation Space

    ``Dict(tokens=Box(max_length), length=Box(1))``: the token ids of the env's
    latest observation (formatted by ``observation_format``, default: the text and a
    newline) followed by the pending tokens, right-padded with the pad id to
    ``max_length``; when longer, the newest ``max_length`` tokens are kept. ``info``
    is the inner env's, plus ``"pending"`` (the pending text).

    ## Rewards

    A step that sends an action returns the inner env's reward; every other step 0.

    ## Starting State

    The inner env's reset (``seed`` and ``options``, e.g. a pinned problem, pass
    through); nothing is pending.

    ## Episode End

    Terminated or truncated when the inner env is, and terminated at eos.

    ## Arguments

    - ``env``: a backtrack-gym text env (e.g. ``gym.make("backtrack_gym/CountDown-v0")``).
    - ``tokenizer``: an HF tokenizer with ``<bksp>``, eos and pad (see
      :mod:`backtrack_gym.train.tokenizer`); only its Python API is used.
    - ``max_length``: the size of the observation window.
    - ``max_action_tokens``: the most tokens of one action (a line, or the whole
      output in completion mode).
    - ``observation_format``: the text shown for an env observation.

    ## Example

    >>> import gymnasium as gym
    >>> from backtrack_gym.train import build_tokenizer
    >>> text_env = gym.make("backtrack_gym/CountDown-v0", num_count=3)
    >>> tokenizer = build_tokenizer(text_env.unwrapped.task)
    >>> env = TokenEnv(text_env, tokenizer)
    >>> observation, info = env.reset(seed=0)
    >>> tokenizer.decode(observation["tokens"][: observation["length"][0]])
    'Target: 35 | Numbers: 75 14 96\\n'
    >>> for token in tokenizer("14 + 96 = 110\\n", add_special_tokens=False)["input_ids"]:
    ...     observation, reward, terminated, truncated, info = env.step(token)
    >>> reward, terminated, info["state"]
    (0.0, False, ['75', '110'])
    """

    def __init__(
        self,
        env: gym.Env,
        tokenizer: Any,
        *,
        max_length: int = 128,
        max_action_tokens: int = 32,
        observation_format: Callable[[str], str] | None = None,
    ):
        super().__init__(env)
        if not isinstance(env.unwrapped, TextEnv):
            raise TypeError(f"TokenEnv wraps a backtrack-gym TextEnv, got {type(env.unwrapped).__name__}")
        if max_length < 1 or max_action_tokens < 1:
            raise ValueError(
                f"max_length and max_action_tokens must be positive, got {max_length}, {max_action_tokens}"
            )
        vocab = tokenizer.get_vocab()
        if BKSP not in vocab or tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs <bksp>, eos and pad tokens (see backtrack_gym.train.tokenizer)")
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.bksp_id = vocab[BKSP]
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        texts = tokenizer.batch_decode([[i] for i in range(self.vocab_size)])
        self.newline_ids = frozenset(i for i, text in enumerate(texts) if "\n" in text)
        self.max_length = max_length
        self.max_action_tokens = max_action_tokens
        self.observation_format = observation_format or (lambda text: text + "\n")
        self.completion = env.unwrapped.interaction == "completion"
        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = spaces.Dict(
            {
                "tokens": spaces.Box(0, self.vocab_size - 1, shape=(max_length,), dtype=np.int64),
                "length": spaces.Box(0, max_length, shape=(1,), dtype=np.int64),
            }
        )
        self.context: list[int] = []
        self.pending: list[int] = []
        self.info: dict[str, Any] = {}
        self.done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the inner env (``options`` pass through, e.g. a pinned problem)."""
        text, info = self.env.reset(seed=seed, options=options)
        self._show(text, info)
        self.done = False
        return self._observation(), self._with_pending(info)

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.done:
            raise gym.error.ResetNeeded("call reset() before step(): the episode has ended or not begun")
        token = int(action)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"an action is a token id in [0, {self.vocab_size}), got {action!r}")
        if token == self.eos_id:
            if self.completion or self.pending:
                return self._send(stop=True)
            self.done = True
            return self._observation(), 0.0, True, False, self._with_pending(self.info)
        if token == self.bksp_id:
            if self.pending:
                self.pending.pop()
            return self._observation(), 0.0, False, False, self._with_pending(self.info)
        if token in self.newline_ids and not self.completion:
            return self._send(last=token)
        self.pending.append(token)
        if len(self.pending) >= self.max_action_tokens:
            return self._send()
        return self._observation(), 0.0, False, False, self._with_pending(self.info)

    def snapshot(self) -> TokenEnvSnapshot:
        """This env's state now: the text env's snapshot, and the tokens shown and pending
        (see :mod:`backtrack_gym.envs.snapshot`).

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset``.
        """
        return TokenEnvSnapshot(
            env=self.env.unwrapped.snapshot(),
            settings=self._token_settings(),
            context=self.context,
            pending=self.pending,
            done=self.done,
        )

    def restore(self, snapshot: TokenEnvSnapshot | Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Put this env (and its text env) at the point of ``snapshot`` or of its ``to_dict()``
        data; returns the observation and ``info`` it returned there. Wrappers between this
        env and the text env keep their own state (``gym.make``'s check only the order).

        Raises:
            ValueError: when the snapshot is of other token settings (vocabulary, special
                ids, window, action cap) or its text env's does not fit the text env (see
                :meth:`TextEnv.restore <backtrack_gym.envs.core.TextEnv.restore>`).
        """
        snapshot = TokenEnvSnapshot.from_dict(snapshot)
        check_same("token settings", snapshot.settings, self._token_settings())
        for name in ("context", "pending"):
            if any(token >= self.vocab_size for token in getattr(snapshot, name)):
                raise ValueError(f"snapshot field {name!r} holds a token id outside [0, {self.vocab_size})")
        _, info = self.env.unwrapped.restore(snapshot.env)
        self.context, self.pending, self.info = list(snapshot.context), list(snapshot.pending), info
        self.done = snapshot.done
        return self._observation(), self._with_pending(info)

    def fork(self) -> TokenEnv:
        """A new token env at this env's point, around a fork of the unwrapped text env
        (wrappers in between are left out); the tokenizer is shared.

        Raises:
            gymnasium.error.ResetNeeded: before the first ``reset``.
        """
        snapshot = self.snapshot()
        twin = copy.copy(self)
        twin.env = self.env.unwrapped.fork()
        twin.action_space = copy.deepcopy(self.action_space)
        twin.observation_space = copy.deepcopy(self.observation_space)
        twin.restore(snapshot)
        return twin

    def _token_settings(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "bksp_id": self.bksp_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "max_length": self.max_length,
            "max_action_tokens": self.max_action_tokens,
        }

    def _send(
        self, *, last: int | None = None, stop: bool = False
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        """Send the pending action to the inner env; ``last`` ends a line (its text before the newline counts)."""
        text = self.tokenizer.decode(self.pending, skip_special_tokens=True)
        if last is not None:
            text += self.tokenizer.decode([last], skip_special_tokens=True).split("\n", 1)[0]
        observation, reward, terminated, truncated, info = self.env.step(text)
        self.pending = []
        self._show(observation, info)
        terminated = terminated or stop
        self.done = terminated or truncated
        return self._observation(), float(reward), terminated, truncated, self._with_pending(info)

    def _show(self, text: str, info: dict[str, Any]) -> None:
        self.context = self.tokenizer(self.observation_format(text), add_special_tokens=False)["input_ids"]
        self.info = info

    def _observation(self) -> dict[str, np.ndarray]:
        window = (self.context + self.pending)[-self.max_length :]
        tokens = np.full(self.max_length, self.pad_id, dtype=np.int64)
        tokens[: len(window)] = window
        return {"tokens": tokens, "length": np.array([len(window)], dtype=np.int64)}

    def _with_pending(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "pending": self.tokenizer.decode(self.pending, skip_special_tokens=True)}
