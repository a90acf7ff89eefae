"""GRPO through TRL's own environment interface (``environment_factory``) with a tiny model on the CPU.

The model (the ``tiny`` preset, built from its config: nothing is downloaded) learns the
chat and tool-call format of :func:`~backtrack_gym.train.trl_env.chat_tokenizer` from a
short supervised warm-up on oracle traces (``--style``) played as tool calls, then TRL's
``GRPOTrainer`` trains it against CountDown envs wrapped by
:class:`~backtrack_gym.train.trl_env.TRLEnv`: TRL resets one env per rollout on the
row's problem, runs the model's ``step``/``backtrack`` tool calls in it and takes the
env's return as the reward. Run::

    python examples/trl_env_grpo.py --grpo-steps 10

It prints each GRPO step's mean reward (the env's return), solve rate, backtracks and tool calls per rollout.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}


def warm_up(model: Any, tokenizer: Any, task: Any, steps: int, seed: int, style: str, batch_size: int = 8) -> float:
    """``steps`` supervised steps on ``style`` traces as tool calls (loss on the assistant's part); the last loss."""
    import numpy as np
    import torch

    from backtrack_gym.agents.traces import write_trace
    from backtrack_gym.train.trl_env import TRLEnv, chat_prompt_dataset, trace_conversation

    env = TRLEnv(task.name, **TASK_CONFIG)
    # Problems past the GRPO data set's (which starts at 0), so the warm-up never shows its solutions.
    rows = chat_prompt_dataset(task, 128, first_index=10_000)
    examples = []
    for k, row in enumerate(rows):
        trace = write_trace(task, task.coerce_problem(row["problem"]), style, rng=np.random.default_rng([seed, k]))
        messages = trace_conversation(env, row, trace.lines)
        encoded = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        labels = [t if m else -100 for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True)]
        examples.append((encoded["input_ids"], labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = [examples[i] for i in rng.choice(len(examples), size=batch_size, replace=False)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in batch])
        mask = (ids != tokenizer.pad_token_id).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Warm up, train with GRPO, print each step's reward and solve rate; returns TRL's log history."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup-steps", type=int, default=1500)
    parser.add_argument("--style", default="direct", help="the warm-up traces' style (dfs: with backtracks, slower)")
    parser.add_argument("--temperature", type=float, default=0.5, help="GRPO's sampling temperature")
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=64, help="GRPO data set size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="/tmp/trl_env_grpo")
    args = parser.parse_args(argv)

    import torch
    from trl import GRPOConfig, GRPOTrainer

    from backtrack_gym.envs import make_task
    from backtrack_gym.train.models import build_model
    from backtrack_gym.train.trl_env import (
        chat_prompt_dataset,
        chat_tokenizer,
        env_metric_functions,
        environment_factory,
    )

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.manual_seed(args.seed)
    task = make_task("countdown", **TASK_CONFIG)
    tokenizer = chat_tokenizer(task)
    model = build_model("tiny", tokenizer, seed=args.seed)
    start = time.perf_counter()
    if args.warmup_steps:
        loss = warm_up(model, tokenizer, task, args.warmup_steps, args.seed, args.style)
        print(f"warm-up: {args.warmup_steps} steps, last loss {loss:.3f}, {time.perf_counter() - start:.0f} s")
    metrics = env_metric_functions(task.name)
    config = GRPOConfig(
        output_dir=args.output_dir,
        use_cpu=True,
        bf16=False,
        max_steps=args.grpo_steps,
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=1024,
        learning_rate=1e-4,
        temperature=args.temperature,
        beta=0.0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        reward_weights=[0.0] * len(metrics),  # curves only: the env's return (get_reward) is the reward
        seed=args.seed,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=metrics,
        args=config,
        train_dataset=chat_prompt_dataset(task, args.prompts),
        processing_class=tokenizer,
        environment_factory=environment_factory(task.name, **TASK_CONFIG),
    )
    start = time.perf_counter()
    trainer.train()
    print(f"GRPO: {args.grpo_steps} steps, {time.perf_counter() - start:.0f} s")
    history = [entry for entry in trainer.state.log_history if "reward" in entry]
    for step, entry in enumerate(history, start=1):
        print(
            f"step {step}: reward {entry['reward']:.3f}, solved {entry['rewards/countdown_solved/mean']:.3f}, "
            f"backtracks {entry['rewards/countdown_backtracks/mean']:.2f}, "
            f"tool calls {entry['tools/call_frequency']:.2f}, tool errors {entry['tools/failure_frequency']:.2f}"
        )
    return history


if __name__ == "__main__":
    main()
