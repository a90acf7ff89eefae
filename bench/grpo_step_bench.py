"""Benchmark a GRPO step at the main job's settings with each speed option of GRPOSettings, side by side.

    python bench/grpo_step_bench.py                  # a fresh 1M model, 2 warm-up + 6 timed steps each
    python bench/grpo_step_bench.py --model runs/main/direct/sft/final --steps 4
    python bench/grpo_step_bench.py --help

Variants: ``baseline`` (every option off), each option on its own (``share_prefill``,
``torch_compile``, ``reference_bf16``) and ``all`` of them. Every variant is its own GRPO
trainer on the same model, problems and seeds (``configs/main.yaml``'s GRPO: CountDown in
step mode, 8 prompts x 8 generations, 64 new tokens, 2 env steps, beta 0.04). The
trainers run in threads that take turns, one step each in a fixed order, so a load that
comes and goes on the machine falls on every variant alike; the ratios are the result,
the seconds are of this machine at that moment.

Reported per variant: seconds per step (median of the timed steps), the ratio of the
baseline's to it, the rollout's share of the step, the rollout's sampled tokens per
second, and those of a bare KV-cache loop (:func:`~backtrack_gym.agents.decoding.sample_continuations`,
no env, no stop) sampling as many tokens per row on the same batch of prompts, timed
right after each baseline step. The warm-up steps' seconds are shown apart: they hold
``torch_compile``'s compiling. At the first step every variant starts from the same
weights and plays the same problems with the same seeds, so the episodes match and
their log-probabilities are compared: the rollout's and the training forward's
(max |Δ logprob| against the baseline) and, for ``reference_bf16``, the reference's; the
KL that TRL logs is shown at step 1 (policy and reference still the same weights, so it
is the rounding's alone) and over all steps.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.config import build_config, load_yaml
from backtrack_gym.train.grpo_config import GRPORunConfig

MAIN_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "main.yaml"
OPTIONS = ("share_prefill", "torch_compile", "reference_bf16")
VARIANTS = {
    "baseline": {},
    **{option: {option: True} for option in OPTIONS},
    "all": dict.fromkeys(OPTIONS, True),
}


def main_job_config(model: str, output_dir: str, steps: int, **options: bool) -> GRPORunConfig:
    """The main job's GRPO run config for ``steps`` steps of ``model``, the options all off but ``options``."""
    main = load_yaml(MAIN_CONFIG)
    grpo = dict(main["grpo"])
    grpo["trainer"] = {**grpo["trainer"], "optimizer_steps": steps, "save_steps": 10**6, "logging_steps": 10**6}
    grpo["trainer"]["resume"] = False
    values = {
        **grpo,
        **dict.fromkeys(OPTIONS, False),
        **options,
        "task": main["task"],
        "episode": main["episode"],
        "model": model,
        "output_dir": output_dir,
        "seed": main["seed"],
    }
    return build_config(GRPORunConfig, values).validate()


def fresh_model(preset: str, directory: Path, seed: int) -> str:
    """Save an untrained ``preset`` model with the main task's tokenizer to ``directory``; its path."""
    from backtrack_gym.settings import TaskConfig
    from backtrack_gym.train import build_model, build_tokenizer
    from backtrack_gym.train.tokenizer import save_tokenizer

    task = build_config(TaskConfig, load_yaml(MAIN_CONFIG)["task"]).build()
    tokenizer = build_tokenizer(task)
    build_model(preset, tokenizer, seed=seed).save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    return str(directory)


class Turns:
    """Threads that step in a fixed order, one step at a time."""

    def __init__(self, names: list[str]):
        self.order = list(names)
        self.current = 0
        self.condition = threading.Condition()

    def wait(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.order[self.current] == name)

    def done(self, name: str, finished: bool = False) -> None:
        """``name`` ended its step (and, when ``finished``, its run): the next one's turn."""
        with self.condition:
            index = self.order.index(name)
            if finished:
                self.order.pop(index)
                if index < self.current:
                    self.current -= 1
            elif index == self.current:
                self.current += 1
            if self.order:
                self.current %= len(self.order)
            self.condition.notify_all()


class Variant:
    """One trainer of the bench: its step and rollout times, tokens and first-step log-probabilities."""

    def __init__(self, name: str, config: GRPORunConfig, turns: Turns, after_step: Any = None):
        from transformers import TrainerCallback

        from backtrack_gym.train.grpo import grpo_trainer

        self.name = name
        self.step_seconds: list[float] = []
        self.rollout_seconds: list[float] = []
        self.sampled_tokens: list[int] = []
        self.kl: list[float] = []  # TRL's logged mean KL to the reference, per step
        self.first: dict[str, Any] = {}  # rollout, policy and reference log-probs of step 1
        self.last_rollout: dict[str, Any] = {}
        self.trainer, _ = grpo_trainer(config)
        self._wrap_rollout()
        self._wrap_logprobs()
        variant = self

        class TakeTurns(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                turns.wait(name)
                variant._started = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                variant.step_seconds.append(time.perf_counter() - variant._started)
                variant.kl.append(variant.trainer._metrics["train"]["kl"][-1])
                if after_step is not None:
                    after_step(variant)
                turns.done(name, finished=state.global_step >= args.max_steps)

        self.trainer.add_callback(TakeTurns())

    def _wrap_rollout(self) -> None:
        rollout = self.trainer.rollout_func

        def timed(prompts: list[str], trainer: Any) -> dict[str, Any]:
            start = time.perf_counter()
            out = rollout(prompts, trainer)
            self.rollout_seconds.append(time.perf_counter() - start)
            self.sampled_tokens.append(sum(sum(mask) for mask in out["env_mask"]))
            self.last_rollout = out
            self.first.setdefault("rollout", out)
            return out

        self.trainer.rollout_func = timed

    def _wrap_logprobs(self) -> None:
        trainer = self.trainer
        compute = trainer._get_per_token_logps_and_entropies

        def recorded(model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, **kwargs: Any) -> Any:
            out = compute(model, input_ids, attention_mask, logits_to_keep, **kwargs)
            role = "reference" if model is trainer.ref_model else "policy"
            # TRL shuffles the batch between the reference's forward and the loss's: sort the rows.
            order = sorted(range(len(input_ids)), key=lambda row: input_ids[row].tolist())
            mask = attention_mask[order, -logits_to_keep:]
            self.first.setdefault(role, (out[0].detach().float()[order], mask))
            return out

        trainer._get_per_token_logps_and_entropies = recorded


def bare_loop(model: Any, tokenizer: Any, rollout: dict[str, Any], sampling: Any, seed: int) -> tuple[float, int]:
    """Seconds and tokens of a bare KV-cache loop sampling the rollout's tokens per row on its prompts."""
    import torch

    from backtrack_gym.agents.decoding import sample_continuations

    rows = len(rollout["prompt_ids"])
    per_row = math.ceil(sum(sum(mask) for mask in rollout["env_mask"]) / rows)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    sample_continuations(
        model,
        rollout["prompt_ids"],
        pad_id=tokenizer.pad_token_id,
        stop_ids=(),
        max_new_tokens=per_row,
        sampling=sampling,
        generator=torch.Generator().manual_seed(seed),
    )
    seconds = time.perf_counter() - start
    model.train(was_training)
    return seconds, rows * per_row


def max_difference(a: Any, b: Any) -> float:
    """Max |a - b| over the completion tokens both score (shapes match when the episodes do)."""
    (values_a, mask), (values_b, _) = a, b
    if values_a.shape != values_b.shape:
        return math.nan
    return float(((values_a - values_b).abs() * mask).max())


def rollout_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Max |Δ logprob| of two rollouts' episodes; inf when their tokens differ."""
    if a["completion_ids"] != b["completion_ids"]:
        return math.inf
    pairs = zip(a["logprobs"], b["logprobs"], strict=True)
    return max(abs(x - y) for row_a, row_b in pairs for x, y in zip(row_a, row_b, strict=True))


def report(variants: dict[str, Variant], bare: list[tuple[float, int]], warmup: int) -> None:
    base = variants["baseline"]
    median = {name: statistics.median(v.step_seconds[warmup:]) for name, v in variants.items()}
    bare_rate = statistics.median(tokens / seconds for seconds, tokens in bare[warmup:])
    print(f"\nbare KV-cache loop on the same batch: {bare_rate:.0f} sampled tokens/s\n")
    header = f"{'option':>15} {'s/step':>7} {'x base':>7} {'warm-up s':>10} {'rollout':>8} {'tok/s':>6} {'x bare':>7}"
    print(header + f" {'max|Δlogp| rollout':>19} {'policy':>8} {'reference':>10} {'KL step 1':>9} {'KL mean':>9}")
    for name, v in variants.items():
        timed = slice(warmup, None)
        rate = statistics.median(t / s for t, s in zip(v.sampled_tokens[timed], v.rollout_seconds[timed], strict=True))
        share = statistics.median(r / s for r, s in zip(v.rollout_seconds[timed], v.step_seconds[timed], strict=True))
        warm = " ".join(f"{s:.1f}" for s in v.step_seconds[:warmup])
        print(
            f"{name:>15} {median[name]:7.2f} {median['baseline'] / median[name]:7.2f} {warm:>10} {share:8.0%}"
            f" {rate:6.0f} {rate / bare_rate:7.2f}"
            f" {rollout_difference(v.first['rollout'], base.first['rollout']):19.1e}"
            f" {max_difference(v.first['policy'], base.first['policy']):8.1e}"
            f" {max_difference(v.first['reference'], base.first['reference']):10.1e}"
            f" {v.kl[0]:9.1e} {statistics.mean(v.kl):9.1e}"
        )
    print("\nrollout: the rollout's share of a step; KL: TRL's mean per-token KL to the reference (step 1, all steps)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GRPO step time with each speed option, side by side")
    parser.add_argument("--model", default="1M", help="a model preset (built untrained) or a saved model directory")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is faster on a busy machine)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    import torch
    from transformers.utils import logging

    from backtrack_gym.train.models import PRESETS

    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    names = ["baseline"] + [name for name in args.variants if name != "baseline"]
    with tempfile.TemporaryDirectory() as tmp:
        model = fresh_model(args.model, Path(tmp) / "model", seed=0) if args.model in PRESETS else args.model
        steps = args.warmup + args.steps
        turns = Turns(names)
        bare: list[tuple[float, int]] = []

        def after_baseline(variant: Variant) -> None:
            bare.append(bare_loop(variant.trainer.model, tokenizer, variant.last_rollout, sampling, seed=len(bare)))

        variants: dict[str, Variant] = {}
        for name in names:
            config = main_job_config(model, str(Path(tmp) / name), steps, **VARIANTS[name])
            variants[name] = Variant(name, config, turns, after_baseline if name == "baseline" else None)
        tokenizer = variants["baseline"].trainer.processing_class
        sampling = main_job_config(model, tmp, steps).sampling
        print(
            f"model {args.model}, {args.threads} torch thread(s), {args.warmup} warm-up + {args.steps} timed steps, "
            f"variants in turn: {', '.join(names)}"
        )
        errors: list[BaseException] = []

        def train(variant: Variant) -> None:
            try:
                variant.trainer.train()
            except BaseException as err:  # the others must not wait for its turns
                errors.append(err)
                turns.done(variant.name, finished=True)

        threads = [threading.Thread(target=train, args=(v,), name=name) for name, v in variants.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        report(variants, bare, args.warmup)


if __name__ == "__main__":
    main()
