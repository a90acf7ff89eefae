"""Research reproductions: train one model per trace style ("arm"), then compare them at equal compute.

Each arm is SFT on its style's traces (optionally followed by GRPO), evaluated with
the methods it names (:mod:`.evaluate`). Every stage writes its result to its own
directory and is reused when found, so a killed experiment resumes where it stopped
and experiments sharing an ``output_dir`` share their models (the GRPO experiment
reuses the SFT models of the comparison). The results go to ``<name>.json``,
``<name>.md`` (tables) and ``<name>.png`` (solve rate against compute, one line per
arm and method).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backtrack_gym.config import check_at_least, check_choice, convert, renamed
from backtrack_gym.train.data import atomic_write
from backtrack_gym.train.evaluate import EvalConfig, evaluate, plot_curves

# What an arm may set, and its type.
ARM_FIELDS = {
    "style": str,
    "trace_options": dict[str, Any],
    "methods": list[str],
    "n_train": int,
    "sft_epochs": float,
    "grpo": bool,
}
PLOT_CURVES = ("greedy", "sampled", "best_of_n", "maj_of_n", "search")
# The fields of each stage's config that are set from an experiment field of another name,
# so that an error a stage config raises names the field that was set.
SFT_SOURCES = {"epochs": "sft_epochs", "batch_size": "sft_batch_size", "learning_rate": "sft_learning_rate"}
GRPO_SOURCES = {
    "first_index": "n_train",
    "max_steps": "grpo_steps",
    "learning_rate": "grpo_learning_rate",
    "temperature": "grpo_temperature",
    "warmup_ratio": "grpo_warmup_ratio",
    "beta": "grpo_beta",
    "reward_weights": "grpo_reward_weights",
    "max_completion_length": "max_tokens",
}
EVAL_SOURCES = {"n": "n_eval", "batch_size": "eval_batch_size"}


@dataclass
class ExperimentConfig:
    """Train one model per trace style and compare their solve rates at equal test-time compute.

    Attributes:
        name: experiment name (names the result files).
        task: task name (``countdown``, ``sudoku``, ``math``).
        task_config: task config fields, shared by training and evaluation.
        arms: arm name -> ``{style, trace_options, methods, n_train, sft_epochs, grpo}``;
            ``style`` is required, ``n_train`` and ``sft_epochs`` default to the fields of
            that name, ``methods`` to ``[greedy, sample]``, ``grpo`` (bool) to ``grpo_steps > 0``.
        interaction: how the models act in the env, in SFT data, GRPO and evaluation:
            ``completion`` (one output replayed at the end) or ``step`` (one line per
            turn, the env's observation after each).
        model: preset size trained from scratch (or a pretrained model path).
        output_dir: run directory; one sub-directory per arm and stage.
        seed: seed of data, weights and sampling.
        n_train: SFT traces per arm.
        sft_epochs: passes over the SFT data.
        sft_learning_rate: SFT peak learning rate.
        sft_batch_size: SFT sequences per step.
        max_length: longest SFT trace in tokens (longer ones are dropped).
        grpo_steps: GRPO steps after SFT (0: no GRPO).
        grpo_learning_rate: GRPO learning rate.
        grpo_temperature: sampling temperature of the GRPO rollouts.
        grpo_warmup_ratio: share of the GRPO steps spent warming the learning rate up.
        grpo_beta: GRPO's KL coefficient against the SFT model (0: no reference model).
        grpo_reward_weights: weights of GRPO's reward terms (``correct``, ``progress``,
            ``format``, ``validity``, ``length``, ``backtrack``; see :mod:`backtrack_gym.rewards.terms`).
        num_generations: GRPO group size.
        prompts_per_step: GRPO problems per step.
        n_eval: held-out problems.
        samples: sampled episodes per problem (pass@k, best-of-n).
        temperature: sampling temperature at evaluation.
        max_tokens: most model tokens per episode (GRPO and evaluation).
        max_env_steps: step budget of an episode in the env (GRPO and evaluation); in
            step mode an episode that goes wrong may retry until it is spent. 0 means
            ``max_tokens // 2`` (a line takes at least two tokens), so that only the token
            budget ends an episode.
        budgets: token budgets of the sequential curves (empty: powers of two).
        search_expansions: N of the self-backtracking search, one point each.
        search_rounds: b of the self-backtracking search (rounds after its first expansion).
        search_temperature: sampling temperature of the search (the paper's 0.7).
        search_frontier: the search's frontier rule (``expansion_order``, the paper's, or ``round_best``).
        search_vote: the search's selection rule (``sum_logprob``, the paper's, or ``exp_mean_logprob``).
        plot: curve names drawn in ``<name>.png`` (``greedy``, ``sampled``, ``best_of_n``,
            ``maj_of_n``, ``search``).
        workers: processes writing the SFT traces.
        eval_batch_size: episodes decoded together at evaluation.
        bf16: train in bfloat16 on a GPU (ignored on the CPU).
    """

    name: str = "countdown_backtracking"
    task: str = "countdown"
    task_config: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, Any] = field(default_factory=lambda: {"direct": {"style": "direct"}, "dfs": {"style": "dfs"}})
    interaction: str = "completion"
    model: str = "1M"
    output_dir: str = "runs/experiments/countdown"
    seed: int = 0
    n_train: int = 12000
    sft_epochs: float = 1.0
    sft_learning_rate: float = 2e-3
    sft_batch_size: int = 32
    max_length: int = 512
    grpo_steps: int = 0
    grpo_learning_rate: float = 1e-4
    grpo_temperature: float = 1.0
    grpo_warmup_ratio: float = 0.0
    grpo_beta: float = 0.0
    grpo_reward_weights: dict[str, float] = field(default_factory=lambda: {"correct": 1.0})
    num_generations: int = 8
    prompts_per_step: int = 8
    n_eval: int = 200
    samples: int = 16
    temperature: float = 1.0
    max_tokens: int = 256
    max_env_steps: int = 0
    budgets: list[int] = field(default_factory=list)
    search_expansions: list[int] = field(default_factory=lambda: [4, 16])
    search_rounds: int = 2
    search_temperature: float = 0.7
    search_frontier: str = "expansion_order"
    search_vote: str = "sum_logprob"
    plot: list[str] = field(default_factory=lambda: ["greedy", "best_of_n", "search"])
    workers: int = 2
    eval_batch_size: int = 100
    bf16: bool = False

    def validate(self) -> ExperimentConfig:
        """Check this config's own fields, then each arm's stage configs as they will be built."""
        if not self.name or not re.fullmatch(r"[\w.-]+", self.name):
            raise ValueError(f"name must be a file name of letters, digits, '_', '-' and '.', got {self.name!r}")
        if not self.arms:
            raise ValueError("arms: an experiment needs at least one arm")
        check_at_least(self, 0, "grpo_steps", "max_env_steps")
        check_choice("plot", self.plot, PLOT_CURVES)
        for arm, spec in self.arms.items():
            if not isinstance(spec, dict) or "style" not in spec:
                raise ValueError(f"arms.{arm} needs a mapping with a 'style'")
            unknown = set(spec) - set(ARM_FIELDS)
            if unknown:
                raise ValueError(f"arms.{arm}: unknown fields {sorted(unknown)}; known: {sorted(ARM_FIELDS)}")
            stages = [(self.sft_config, (arm,), SFT_SOURCES), (self.eval_config, (arm, "model", "eval"), EVAL_SOURCES)]
            if self.arm_has_grpo(arm):
                stages.append((self.grpo_config, (arm, "model"), GRPO_SOURCES))
            set_by_arm = {key: f"arms.{arm}.{key}" for key in spec}
            for build, args, sources in stages:
                try:
                    build(*args).validate()
                except ValueError as err:
                    raise renamed(renamed(err, sources), set_by_arm) from None
        return self

    def arm_setting(self, arm: str, key: str, default: Any) -> Any:
        """The arm's ``key`` (read as :data:`ARM_FIELDS` types it), or ``default`` when the arm sets none."""
        spec = self.arms[arm]
        return convert(spec[key], ARM_FIELDS[key], f"arms.{arm}.{key}") if key in spec else default

    def env_steps(self) -> int:
        return self.max_env_steps or max(1, self.max_tokens // 2)

    def arm_has_grpo(self, arm: str) -> bool:
        return self.arm_setting(arm, "grpo", True) and self.grpo_steps > 0

    def sft_config(self, arm: str) -> Any:
        from backtrack_gym.train.sft import SFTRunConfig

        return SFTRunConfig(
            task=self.task,
            style=self.arm_setting(arm, "style", None),
            trace_options=self.arm_setting(arm, "trace_options", {}),
            interaction=self.interaction,
            n_train=self.arm_setting(arm, "n_train", self.n_train),
            seed=self.seed,
            task_config=self.task_config,
            model=self.model,
            output_dir=str(Path(self.output_dir) / arm / "sft"),
            epochs=self.arm_setting(arm, "sft_epochs", self.sft_epochs),
            batch_size=self.sft_batch_size,
            learning_rate=self.sft_learning_rate,
            max_length=self.max_length,
            logging_steps=25,
            save_steps=250,
            resume=True,
            workers=self.workers,
            bf16=self.bf16,
        )

    def grpo_config(self, arm: str, model: str) -> Any:
        from backtrack_gym.train.grpo import GRPORunConfig

        return GRPORunConfig(
            task=self.task,
            task_config=self.task_config,
            model=model,
            output_dir=str(Path(self.output_dir) / arm / "grpo"),
            interaction=self.interaction,
            seed=self.seed,
            first_index=self.arm_setting(arm, "n_train", self.n_train),  # problems the SFT data did not use
            max_steps=self.grpo_steps,
            learning_rate=self.grpo_learning_rate,
            temperature=self.grpo_temperature,
            warmup_ratio=self.grpo_warmup_ratio,
            beta=self.grpo_beta,
            reward_weights=dict(self.grpo_reward_weights),
            num_generations=self.num_generations,
            prompts_per_step=self.prompts_per_step,
            max_completion_length=self.max_tokens,
            max_env_steps=self.env_steps(),
            save_steps=50,
            resume=True,
            bf16=self.bf16,
        )

    def eval_config(self, arm: str, model: str, stage: str) -> EvalConfig:
        methods = self.arm_setting(arm, "methods", ["greedy", "sample"])
        return EvalConfig(
            model=model,
            task=self.task,
            task_config=self.task_config,
            n=self.n_eval,
            interaction=self.interaction,
            methods=methods,
            temperature=self.temperature,
            samples=self.samples,
            max_tokens=self.max_tokens,
            max_env_steps=self.env_steps(),
            budgets=list(self.budgets),
            search_expansions=list(self.search_expansions),
            search_rounds=self.search_rounds,
            search_temperature=self.search_temperature,
            search_frontier=self.search_frontier,
            search_vote=self.search_vote,
            seed=self.seed,
            batch_size=self.eval_batch_size,
            # experiments that evaluate a shared model with the same methods share the evaluation
            output_dir=str(Path(self.output_dir) / arm / f"{stage}-{'-'.join(methods)}"),
            label=arm if stage == "sft_eval" else f"{arm}+GRPO",
        )


def run_experiment(config: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train and evaluate every arm (reusing finished stages); write and return the results.

    ``progress`` shows the evaluations' progress bars on stderr (the trainers show theirs anyway).
    """
    config.validate()
    results: dict[str, Any] = {"config": asdict(config), "arms": {}}
    for arm in config.arms:
        results["arms"][arm] = arm_results = {}
        model = _stage(
            Path(config.output_dir) / arm / "sft", config.sft_config(arm), lambda arm=arm: _train_sft(config, arm)
        )
        sft_eval = config.eval_config(arm, str(model["path"]), "sft_eval")
        arm_results["sft"] = _evaluate_stage(sft_eval, model, progress)
        if config.arm_has_grpo(arm):
            tuned = _stage(
                Path(config.output_dir) / arm / "grpo",
                config.grpo_config(arm, str(model["path"])),
                lambda arm=arm, path=model["path"]: _train_grpo(config, arm, str(path)),
            )
            grpo_eval = config.eval_config(arm, str(tuned["path"]), "grpo_eval")
            arm_results["grpo"] = _evaluate_stage(grpo_eval, tuned, progress)
    output = Path(config.output_dir)
    text = json.dumps(results, indent=1, default=str)
    atomic_write(output / f"{config.name}.json", lambda path: path.write_text(text))
    plot_experiment(results, output / f"{config.name}.png")
    markdown = results_markdown(results)
    atomic_write(output / f"{config.name}.md", lambda path: path.write_text(markdown))
    return results


def plot_experiment(results: dict[str, Any], path: Path) -> None:
    """One PNG of the curves the experiment's ``plot`` names, for every arm and stage."""
    config = results["config"]
    curves = {
        f"{arm}{'' if stage == 'sft' else '+GRPO'} {name}": points
        for arm, stages in results["arms"].items()
        for stage, result in stages.items()
        for name, points in result["curves"].items()
        if name in config["plot"]
    }
    plot_curves(curves, path, title=config["name"])


def _stage(directory: Path, config: Any, train: Any) -> dict[str, Any]:
    """A trained model's path and training time, read from ``stage.json`` when the stage already ran.

    A stage trained under another config is an error, never silently reused or overwritten.
    """
    record = directory / "stage.json"
    settings = json.loads(json.dumps(asdict(config)))
    if record.exists():
        stage = json.loads(record.read_text())
        if stage.get("config") != settings:
            raise ValueError(f"{directory} holds a model trained with other settings; remove it or change output_dir")
        return stage
    start = time.perf_counter()
    path = train()
    stage = {"path": str(path), "train_seconds": time.perf_counter() - start, "config": settings}
    atomic_write(record, lambda tmp: tmp.write_text(json.dumps(stage)))
    return stage


def _train_sft(config: ExperimentConfig, arm: str) -> Path:
    from backtrack_gym.train.sft import run_sft

    return run_sft(config.sft_config(arm))


def _train_grpo(config: ExperimentConfig, arm: str, model: str) -> Path:
    from backtrack_gym.train.grpo import run_grpo

    return run_grpo(config.grpo_config(arm, model))


def _evaluate_stage(eval_config: EvalConfig, stage: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The stage's evaluation summary and curves; an ``eval.json`` of the same config is reused."""
    saved = Path(eval_config.output_dir) / "eval.json"
    if saved.exists():
        report = json.loads(saved.read_text())
        if report.get("config") == json.loads(json.dumps(asdict(eval_config))):
            return _stage_result(report, stage)
    return _stage_result(evaluate(eval_config, progress=progress), stage)


def _stage_result(report: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    return {"summary": report["summary"], "curves": report["curves"], "train_seconds": stage["train_seconds"]}


def widest_pass_at(sample_summary: dict[str, Any]) -> str | None:
    """The key of the largest k among a sampled summary's ``pass@k`` entries (None: there are none)."""
    keys = [key for key in sample_summary if key.startswith("pass@")]
    return max(keys, key=lambda key: int(key[5:]), default=None)


def accuracy_within(points: list[dict[str, float]], flops: float) -> float | None:
    """The best solve rate a curve reaches spending at most ``flops`` per problem (None: none that cheap)."""
    affordable = [p["accuracy"] for p in points if p["flops"] <= flops * (1 + 1e-9)]
    return max(affordable) if affordable else None


def results_markdown(results: dict[str, Any]) -> str:
    """Two Markdown tables: each arm's summary, and every curve's solve rate at shared FLOP budgets."""
    rows = [
        "| arm | greedy solve rate | mean tokens | backtrack rate | pass@1 | best pass@k | train min |",
        "|" + "---|" * 7,
    ]
    curves: dict[str, list[dict[str, float]]] = {}
    for arm, stages in results["arms"].items():
        for stage, result in stages.items():
            name = arm if stage == "sft" else f"{arm}+GRPO"
            summary = result["summary"]
            greedy = summary.get("greedy", {})
            sample = summary.get("sample", {})
            best = widest_pass_at(sample)
            rows.append(
                f"| {name} | {_fmt(greedy.get('solve_rate'))} | {_fmt(greedy.get('mean_tokens'), 1)} "
                f"| {_fmt(greedy.get('backtrack_rate'))} | {_fmt(sample.get('pass@1'))} "
                f"| {_fmt(sample.get(best)) + f' ({best})' if best else '–'} | {result['train_seconds'] / 60:.1f} |"
            )
            curves.update({f"{name} {curve}": points for curve, points in result["curves"].items()})
    lows = [min(p["flops"] for p in points) for points in curves.values()]
    highs = [max(p["flops"] for p in points) for points in curves.values()]
    budgets = _geometric(min(lows), max(highs), 5) if curves else []
    table = ["| curve | " + " | ".join(f"≤{b:.2g} FLOPs" for b in budgets) + " |", "|" + "---|" * (len(budgets) + 1)]
    for name, points in curves.items():
        table.append(f"| {name} | " + " | ".join(_fmt(accuracy_within(points, b)) for b in budgets) + " |")
    return "\n".join(rows) + "\n\nSolve rate within a compute budget (per problem):\n\n" + "\n".join(table) + "\n"


def _geometric(low: float, high: float, count: int) -> list[float]:
    if high <= low:
        return [low]
    ratio = (high / low) ** (1 / (count - 1))
    return [low * ratio**i for i in range(count)]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
