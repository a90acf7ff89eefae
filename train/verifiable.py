"""Verifiable-backtracking data: wrong answers, verified wrong, then corrected by the policy.

With a trained policy, sample answers to training problems; each answer the env's
verifier finds wrong gets the backtrack line appended (``<backtrack>``, or a phrase
such as ``Wait, that's not right.``) and the policy continues from there. A trace is
kept only when the first answer was verified wrong and the whole trace is then
verified right. The kept traces are SFT rows (the columns of
:func:`backtrack_gym.train.data.dataset_features`) to mix into the SFT data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtrack_gym.config import Config, check_at_least
from backtrack_gym.envs.core import BACKTRACK
from backtrack_gym.settings import EpisodeConfig, SamplingConfig, TaskConfig

Generate = Callable[[Sequence[str]], list[str]]
MIX_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class VerifiableConfig(Config):
    """Build verifiable-backtracking SFT data with a trained policy (and optionally mix it in).

    Attributes:
        model: path of the policy (a ``final/`` directory with its tokenizer).
        task: the task and its config fields (as in training).
        n_problems: training problems to sample answers for.
        first_index: index of the first problem (start past the SFT data).
        samples: answers sampled per problem.
        backtrack_token: the line appended after a wrong answer.
        sampling: how answers and continuations are sampled.
        episode: only ``max_new_tokens`` is used: the most new tokens per answer and
            per continuation (answers are completions, sampled without an env).
        batch_size: sequences generated together.
        seed: seed of the problems and of sampling.
        mask_wrong: leave the wrong first answer out of the SFT loss.
        mix_with: an SFT JSONL or Parquet file to mix the new rows into (optional).
        out: output path stem (``<out>.jsonl`` and ``<out>.parquet``).
    """

    model: str = "runs/main/direct/grpo/final"
    task: TaskConfig = field(default_factory=TaskConfig)
    n_problems: int = 500
    first_index: int = 100_000
    samples: int = 4
    backtrack_token: str = BACKTRACK
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    episode: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(max_new_tokens=64))
    batch_size: int = 64
    seed: int = 0
    mask_wrong: bool = False
    mix_with: str = ""
    out: str = "data/verifiable_backtracking"

    def check(self) -> None:
        from backtrack_gym.train.models import check_model_source

        check_at_least(self, 1, "n_problems", "samples", "batch_size")
        check_at_least(self, 0, "first_index", "seed")
        if not self.backtrack_token.strip() or "\n" in self.backtrack_token:
            raise ValueError(f"backtrack_token must be one non-empty line, got {self.backtrack_token!r}")
        if self.mix_with and not (Path(self.mix_with).is_file() and self.mix_with.endswith(MIX_SUFFIXES)):
            raise ValueError(f"mix_with must be an existing {' or '.join(MIX_SUFFIXES)} file, got {self.mix_with!r}")
        if not self.out.strip():
            raise ValueError("out must be a path stem, got ''")
        check_model_source(self.model)


def verifiable_rows(task: Any, config: VerifiableConfig, generate: Generate) -> list[dict[str, Any]]:
    """Rows of traces that were verified wrong, then (after the backtrack line) verified right.

    ``generate(texts)`` returns the policy's continuation of each text.
    """
    from backtrack_gym.rewards import replay_stats
    from backtrack_gym.train.data import count_tokens

    def solved(problem: Any, text: str) -> Any:
        return replay_stats(task, problem, text, backtrack=True, backtrack_token=config.backtrack_token, max_steps=256)

    problems = [task.generate(i) for i in range(config.first_index, config.first_index + config.n_problems)]
    prompts = [task.prompt(p) + "\n" for p in problems for _ in range(config.samples)]
    owners = [p for p in problems for _ in range(config.samples)]
    answers = generate(prompts)
    wrong = [
        (prompt, problem, answer.rstrip("\n") + "\n" + config.backtrack_token + "\n")
        for prompt, problem, answer in zip(prompts, owners, answers, strict=True)
        if answer.strip() and not solved(problem, answer).solved
    ]
    continuations = generate([prompt + prefix for prompt, _, prefix in wrong]) if wrong else []
    rows = []
    for (prompt, problem, prefix), continuation in zip(wrong, continuations, strict=True):
        completion = prefix + continuation.rstrip("\n") + "\n"
        stats = solved(problem, completion)
        if not stats.solved:
            continue
        wrong_end = len(prefix) - len(config.backtrack_token) - 1
        rows.append(
            {
                "index": len(rows),
                "prompt": prompt,
                "completion": completion,
                "problem": json.dumps(task.problem_to_dict(problem), sort_keys=True),
                "style": "verified_backtrack",
                "num_lines": sum(1 for line in completion.splitlines() if line.strip()),
                "num_steps": stats.valid,
                "num_backtracks": stats.backtracks,
                "num_reflections": 0,
                "num_tokens": count_tokens(completion, (config.backtrack_token,)),
                "solved": True,
                "mask_spans": [[0, wrong_end]] if config.mask_wrong else [],
            }
        )
    return rows


def model_generator(model: Any, tokenizer: Any, config: VerifiableConfig) -> Generate:
    """``generate`` for :func:`verifiable_rows` by sampling from a HF causal LM.

    Each call samples its texts in batches of ``config.batch_size`` with
    :func:`~backtrack_gym.agents.decoding.sample_continuations`, a continuation ending
    at eos or at ``episode.max_new_tokens``. Batch ``k`` over the generator's calls
    draws from a ``torch.Generator`` seeded ``config.seed + k``. This sampler used
    ``model.generate`` under ``torch.manual_seed(config.seed + k)``, which makes the
    same draws: on CPU its samples were the same; on another device they may differ
    where the two compute logits that differ in the last bits.
    """
    import torch

    from backtrack_gym.agents.decoding import sample_continuations

    device = next(model.parameters()).device
    batches = [0]  # batches sampled so far, over every call

    def generate(texts: Sequence[str]) -> list[str]:
        outputs = []
        for start in range(0, len(texts), config.batch_size):
            batch = [
                tokenizer(text, add_special_tokens=False)["input_ids"]
                for text in texts[start : start + config.batch_size]
            ]
            generator = torch.Generator(device=device).manual_seed(config.seed + batches[0])
            batches[0] += 1
            rows = sample_continuations(
                model,
                batch,
                pad_id=tokenizer.pad_token_id,
                stop_ids=(tokenizer.eos_token_id,),
                max_new_tokens=config.episode.max_new_tokens,
                sampling=config.sampling,
                generator=generator,
            )
            outputs += tokenizer.batch_decode([row.token_ids for row in rows], skip_special_tokens=True)
        return outputs

    return generate


def run_verifiable(config: VerifiableConfig) -> tuple[int, list[Path]]:
    """Build the rows with the policy at ``config.model``, mix them in if asked, and write them."""
    import datasets

    from backtrack_gym.train.data import dataset_features, export
    from backtrack_gym.train.models import load_pretrained

    config.validate()
    task = config.task.build(seed=config.seed)
    tokenizer, model = load_pretrained(config.model)
    model.eval()
    rows = verifiable_rows(task, config, model_generator(model, tokenizer, config))
    features = dataset_features()
    dataset = datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
    if config.mix_with:
        kind = "parquet" if config.mix_with.endswith(".parquet") else "json"
        base = datasets.load_dataset(kind, data_files=config.mix_with, split="train", features=features)
        dataset = datasets.concatenate_datasets([base, dataset]).shuffle(seed=config.seed)
    return len(rows), export(dataset, config.out)
