"""Held-out evaluation of a trained model at equal test-time compute.

Methods (``EvalConfig.methods``), each costed in tokens and FLOPs (:mod:`.compute`):

- ``greedy``: one greedy episode per problem; its sequential curve is the solve rate
  under each token budget.
- ``sample``: ``samples`` sampled episodes per problem. Gives pass@k (unbiased) and
  maj@k, the ``best_of_n`` curve (solved when one of ``n`` samples is: the env is an
  exact verifier) and ``maj_of_n`` (majority vote over the answers), both costed at
  ``n`` times a sample's mean cost, and the ``sampled`` sequential curve. An answer is
  the episode's final state, or its text when the env rejected one of its lines: a
  rejected line leaves the state as it was, so broken answers would pool their votes
  on a state they never reached (the search keys them so too).
- ``search``: self-backtracking search (:mod:`backtrack_gym.agents.search`), one point
  per number of expansions; by default with the paper's temperature, frontier and vote.

A sequential curve needs no extra decoding: an episode cut at ``T`` tokens is the
same episode's first ``T`` tokens (the sampler's draws do not depend on the budget),
so its outcome at ``T`` is the replay of its complete lines among them.
"""

from __future__ import annotations

import copy
import json
import statistics
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from backtrack_gym.config import check_at_least, check_choice, check_positive, check_task
from backtrack_gym.envs import TASK_ENV_IDS
from backtrack_gym.envs.core import Task, TextEnv, play_completion
from backtrack_gym.train.compute import DecoderShape
from backtrack_gym.train.estimators import maj_at_k, pass_at_k

METHODS = ("greedy", "sample", "search")
# The fields a model is played with as it was trained, and their values when its final/ does not say.
AS_TRAINED = {
    "task": "countdown",
    "task_config": {},
    "interaction": "completion",
    "backtrack": True,
    "max_tokens": 256,
    "max_env_steps": 64,
}


@dataclass
class EvalConfig:
    """Evaluate a model on held-out problems: solve rate, pass@k, maj@k and accuracy-vs-compute curves.

    The task, its config, the interaction, ``backtrack`` and the budgets ``max_tokens`` and
    ``max_env_steps`` default to what the model was trained with, read from the run config
    its trainer saved in ``final/`` (:func:`trained_settings`); setting one to another value
    warns. A model that carries none is played with the values of :data:`AS_TRAINED`.

    Attributes:
        model: path of the model directory (with its tokenizer), e.g. the main job's GRPO model.
        task: task name (``countdown``, ``sudoku``, ``math``); unset: the model's.
        task_config: task config fields; unset: the model's.
        n: problems (items ``0..n-1`` of the split).
        split: ``test`` (held out) or ``train``.
        interaction: ``completion`` or ``step``; unset: the model's.
        backtrack: whether ``<backtrack>`` lines undo steps; unset: the model's.
        methods: any of ``greedy``, ``sample`` and ``search`` (see the module docs).
        temperature: sampling temperature of ``sample``.
        samples: sampled episodes per problem (``sample``); pass@k and maj@k for k
            in the powers of two up to it.
        max_tokens: most model tokens per episode (and per search continuation); unset:
            the model's GRPO completion budget.
        budgets: token budgets of the sequential curves; empty means powers of two
            from 8 up to ``max_tokens``.
        search_expansions: continuations per frontier state (N), one curve point each.
        search_rounds: backtrack rounds (b) of the search, after its first expansion.
        search_temperature: sampling temperature of the search (the paper's 0.7).
        search_frontier: how the search picks its next frontier (``expansion_order``,
            the paper's, or ``round_best``; see :class:`~backtrack_gym.agents.search.SearchConfig`).
        search_vote: how the search selects an answer (``sum_logprob``, the paper's, or
            ``exp_mean_logprob``).
        max_env_steps: step budget of an episode in the env; unset: the model's.
        batch_size: episodes decoded together.
        seed: seed of the sampler.
        output_dir: when set, ``eval.json`` (summaries, curves, per-problem records),
            ``curves.png`` and TensorBoard scalars go there.
        label: the model's name in curves and tables (default: the model directory).
    """

    model: str = "runs/main/direct/grpo/final"
    task: str | None = None
    task_config: dict[str, Any] | None = None
    n: int = 500
    split: str = "test"
    interaction: str | None = None
    backtrack: bool | None = None
    methods: list[str] = field(default_factory=lambda: ["greedy"])
    temperature: float = 1.0
    samples: int = 16
    max_tokens: int | None = None
    budgets: list[int] = field(default_factory=list)
    search_expansions: list[int] = field(default_factory=lambda: [4, 16])
    search_rounds: int = 2
    search_temperature: float = 0.7
    search_frontier: str = "expansion_order"
    search_vote: str = "sum_logprob"
    max_env_steps: int | None = None
    batch_size: int = 100
    seed: int = 0
    output_dir: str = ""
    label: str = ""

    def validate(self) -> EvalConfig:
        """Check the fields (those left unset as the model fills them in); the model itself is
        checked when it is loaded, as :func:`evaluate` may be handed one in memory."""
        from backtrack_gym.agents.search import FRONTIERS, VOTES
        from backtrack_gym.envs.core import SPLITS, check_interaction

        if not self.methods:
            raise ValueError(f"methods must be among {list(METHODS)}, got none")
        check_choice("methods", self.methods, METHODS)
        check_choice("split", self.split, SPLITS)
        check_at_least(self, 1, "n", "samples", "batch_size", "budgets", "search_expansions")
        check_at_least(self, 0, "search_rounds", "seed")
        check_positive(self, "temperature", "search_temperature")
        check_choice("search_frontier", self.search_frontier, FRONTIERS)
        check_choice("search_vote", self.search_vote, VOTES)
        played = self.as_trained(warn=False)
        check_interaction(played.interaction)
        check_task(played.task, played.task_config)
        check_at_least(played, 1, "max_tokens", "max_env_steps")
        return self

    def as_trained(self, *, warn: bool = True) -> EvalConfig:
        """This config with each unset field of :data:`AS_TRAINED` set to what the model was
        trained with (or the default there); with ``warn``, a field set to another value warns."""
        trained = trained_settings(self.model)
        filled = {}
        for name, default in AS_TRAINED.items():
            value = getattr(self, name)
            if value is None:
                filled[name] = copy.deepcopy(trained.get(name, default))
            elif warn and name in trained and _plain(value) != _plain(trained[name]):
                warnings.warn(
                    f"evaluating {self.model} with {name}={value!r}, but it was trained with {trained[name]!r}",
                    stacklevel=2,
                )
        return replace(self, **filled)

    def token_budgets(self) -> list[int]:
        if self.budgets:
            return sorted(set(self.budgets))
        return [b for b in _powers_of_two(self.max_tokens) if b >= 8] or [self.max_tokens]


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]


def trained_settings(model: str) -> dict[str, Any]:
    """The :data:`AS_TRAINED` fields a model was trained with, from the run config its trainer
    saved in its directory (empty for a model without one, e.g. from the hub).

    A GRPO model carries all of them (its completion budget is ``max_tokens``); an SFT model
    its task, task config and interaction (SFT plays no episodes, so it has no budgets).
    """
    from backtrack_gym.train.grpo import GRPORunConfig
    from backtrack_gym.train.sft import SFTRunConfig

    # A GRPO run played episodes: its config also names their settings (max_tokens as its completion budget).
    episode_fields = {"backtrack": "backtrack", "max_tokens": "max_completion_length", "max_env_steps": "max_env_steps"}
    for config_class, extra in ((GRPORunConfig, episode_fields), (SFTRunConfig, {})):
        path = Path(model) / f"{config_class.__name__}.json"
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"model: cannot read {path}: {err}") from None
        fields = {"task": "task", "task_config": "task_config", "interaction": "interaction", **extra}
        return {name: saved[source] for name, source in fields.items() if source in saved}
    return {}


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), to compare with a saved setting."""
    return json.loads(json.dumps(value))


def evaluate(config: EvalConfig, model: Any = None, tokenizer: Any = None, *, progress: bool = False) -> dict[str, Any]:
    """Run every method of ``config``; returns ``{"summary", "curves", "problems", "config", "settings"}``
    (and writes them).

    ``summary[method]`` holds solve rate, mean tokens and FLOPs, backtracks and invalid
    steps per episode (plus pass@k and maj@k for ``sample``); ``curves[name]`` lists
    points ``{tokens, flops, accuracy}`` per compute budget. ``config`` is ``config`` as
    given, ``settings`` the :data:`AS_TRAINED` fields it was played with (see
    :meth:`EvalConfig.as_trained`). ``progress`` shows a progress bar per method on stderr.
    """
    from backtrack_gym.envs import make_task
    from backtrack_gym.train.models import load_pretrained

    config.validate()
    played = config.as_trained()
    if model is None or tokenizer is None:
        loaded_tokenizer, loaded_model = load_pretrained(config.model)
        tokenizer = loaded_tokenizer if tokenizer is None else tokenizer
        model = loaded_model if model is None else model
    model.eval()
    task = make_task(played.task, **played.task_config)
    evaluator = _Evaluator(played, model, tokenizer, task, progress=progress)
    report: dict[str, Any] = {"summary": {}, "curves": {}, "problems": evaluator.problem_records()}
    for method in config.methods:
        summary, curves = getattr(evaluator, method)()
        report["summary"][method] = summary
        report["curves"].update(curves)
    report["config"] = asdict(config)
    report["settings"] = {name: getattr(played, name) for name in AS_TRAINED}
    if config.output_dir:
        write_report(report, Path(config.output_dir), config.label or Path(config.model).name)
    return report


class _Evaluator:
    def __init__(self, config: EvalConfig, model: Any, tokenizer: Any, task: Task, *, progress: bool = False):
        self.config = config
        self.progress = progress
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.shape = DecoderShape.from_config(model.config)
        self.problems = [task.generate(index, config.split) for index in range(config.n)]
        self.records: list[dict[str, Any]] = [{} for _ in self.problems]
        # The settings of every episode played, and of the replays of cut ones.
        self.env_settings = {"backtrack": config.backtrack, "max_steps": config.max_env_steps}
        self.replay_env = TextEnv(task, interaction="completion", **self.env_settings)

    def problem_records(self) -> list[dict[str, Any]]:
        """Per problem: its index and data, then one entry per method (filled as methods run)."""
        for index, (problem, record) in enumerate(zip(self.problems, self.records, strict=True)):
            record.update(index=index, problem=self.task.problem_to_dict(problem))
        return self.records

    # --- methods -------------------------------------------------------------------

    def greedy(self) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
        episodes = self._play(samples=1, greedy=True)
        records = [self._episode_record(episode, text=True) for (episode,) in episodes]
        for record, episode_record in zip(self.records, records, strict=True):
            record["greedy"] = episode_record
        return _summary(records), {"greedy": self._sequential_curve(episodes)}

    def sample(self) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
        episodes = self._play(samples=self.config.samples, greedy=False)
        per_problem = [[self._episode_record(e) for e in group] for group in episodes]
        for record, samples in zip(self.records, per_problem, strict=True):
            record["sample"] = samples
        summary = _summary([s for samples in per_problem for s in samples])
        ks = _powers_of_two(self.config.samples)
        pass_k = {k: statistics.fmean(_pass_at(samples, k) for samples in per_problem) for k in ks}
        maj_k = {k: statistics.fmean(_maj_at(samples, k) for samples in per_problem) for k in ks}
        summary.update({f"pass@{k}": value for k, value in pass_k.items()})
        summary.update({f"maj@{k}": value for k, value in maj_k.items()})
        cost = {
            key: statistics.fmean(s[key] for samples in per_problem for s in samples) for key in ("tokens", "flops")
        }
        curves = {
            name: [{"n": k, "tokens": k * cost["tokens"], "flops": k * cost["flops"], "accuracy": acc[k]} for k in ks]
            for name, acc in (("best_of_n", pass_k), ("maj_of_n", maj_k))
        }
        curves["sampled"] = self._sequential_curve(episodes)
        return summary, curves

    def search(self) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
        from backtrack_gym.agents.search import HFExpander, SearchConfig, self_backtracking_search

        config = self.config
        points, summary = [], {}
        expander = HFExpander(self.model, self.tokenizer, max_batch=config.batch_size)
        for record in self.records:
            record["search"] = {}
        settings = sorted(set(config.search_expansions))
        for expansions in self._progress_bar("search", settings, unit="setting"):
            search = SearchConfig(
                expansions=expansions,
                rounds=config.search_rounds,
                max_new_tokens=config.max_tokens,
                temperature=config.search_temperature,
                frontier=config.search_frontier,
                vote=config.search_vote,
                max_steps=config.max_env_steps,
                seed=config.seed,
            )
            results = self_backtracking_search(self.task, self.problems, expander, search)
            for record, result in zip(self.records, results, strict=True):
                flops = sum(self.shape.sequence_flops(p, g) for p, g in result.sequences)
                record["search"][expansions] = {
                    "solved": result.solved,
                    "answer": result.answer,
                    "tokens": result.generated_tokens,
                    "flops": flops,
                }
            rows = [record["search"][expansions] for record in self.records]
            point = {"n": expansions, **{key: statistics.fmean(r[key] for r in rows) for key in ("tokens", "flops")}}
            point["accuracy"] = statistics.fmean(r["solved"] for r in rows)
            points.append(point)
            summary[f"solve_rate@N={expansions}"] = point["accuracy"]
            summary[f"mean_tokens@N={expansions}"] = point["tokens"]
        summary.update(
            rounds=config.search_rounds,
            temperature=config.search_temperature,
            frontier=config.search_frontier,
            vote=config.search_vote,
        )
        return summary, {"search": points}

    # --- episodes ------------------------------------------------------------------

    def _play(self, *, samples: int, greedy: bool) -> list[list[Any]]:
        """``samples`` episodes per problem, grouped by problem."""
        import gymnasium as gym
        import torch

        from backtrack_gym.agents.lm import LMAgent, SamplingConfig

        config = self.config
        jobs = [index for index in range(config.n) for _ in range(samples)]
        episodes: list[Any] = []
        bar = self._progress_bar("greedy" if greedy else "sample", total=len(jobs), unit="episode")
        for start in range(0, len(jobs), config.batch_size):
            batch = jobs[start : start + config.batch_size]
            envs = [
                gym.make(
                    TASK_ENV_IDS[config.task],
                    interaction=config.interaction,
                    split=config.split,
                    **self.env_settings,
                    **config.task_config,
                )
                for _ in batch
            ]
            sampling = SamplingConfig(
                greedy=greedy,
                temperature=config.temperature,
                max_episode_tokens=config.max_tokens,
                seed=config.seed + start,
            )
            with torch.inference_mode():
                episodes += LMAgent(self.model, self.tokenizer, sampling).rollout(
                    envs, seed=config.seed, options=[{"index": index} for index in batch]
                )
            bar.update(len(batch))
        bar.close()
        return [episodes[i * samples : (i + 1) * samples] for i in range(config.n)]

    def _progress_bar(self, method: str, iterable: Any = None, *, total: int | None = None, unit: str) -> Any:
        """A tqdm bar on stderr for one method (a silent one without ``progress``)."""
        from tqdm.auto import tqdm

        label = self.config.label or Path(self.config.model).name
        return tqdm(iterable, total=total, desc=f"{label} {method}", unit=unit, disable=not self.progress)

    def _episode_record(self, episode: Any, *, text: bool = False) -> dict[str, Any]:
        model_tokens, env_tokens = _split_tokens(episode)
        written = self.tokenizer.decode(model_tokens, skip_special_tokens=True)
        record = {
            "solved": bool(episode.info["solved"]),
            "answer": answer_key(episode.info, written),
            "tokens": len(model_tokens),
            "flops": self.shape.sequence_flops(len(episode.prompt_ids) + len(env_tokens), len(model_tokens)),
            "backtracks": episode.info["backtracks"],
            "invalid_steps": episode.info["invalid_steps"],
        }
        if text:
            record["text"] = written
        return record

    def _sequential_curve(self, episodes: list[list[Any]]) -> list[dict[str, float]]:
        """Solve rate and mean cost of the episodes cut at each token budget."""
        points = []
        for budget in self.config.token_budgets():
            outcomes = [
                self._cut(episode, problem, budget)
                for problem, group in zip(self.problems, episodes, strict=True)
                for episode in group
            ]
            points.append(
                {
                    "budget": budget,
                    **{key: statistics.fmean(o[key] for o in outcomes) for key in ("tokens", "flops")},
                    "accuracy": statistics.fmean(o["solved"] for o in outcomes),
                }
            )
        return points

    def _cut(self, episode: Any, problem: Any, budget: int) -> dict[str, float]:
        """The episode's outcome and cost had it been stopped after ``budget`` model tokens."""
        model_tokens, env_tokens = _split_tokens(episode, budget)
        whole = len(model_tokens) == sum(episode.model_mask)
        cost = self.shape.sequence_flops(len(episode.prompt_ids) + len(env_tokens), len(model_tokens))
        if whole:
            return {"solved": bool(episode.info["solved"]), "tokens": len(model_tokens), "flops": cost}
        text = self.tokenizer.decode(model_tokens, skip_special_tokens=True)
        text = text[: text.rfind("\n") + 1]  # a line cut short is not written
        solved = play_completion(self.replay_env, problem, text).info["solved"]
        return {"solved": solved, "tokens": len(model_tokens), "flops": cost}


def answer_key(info: dict[str, Any], text: str) -> str:
    """The answer an episode votes for in maj@k: its final state (``info["state"]`` as sorted
    JSON), or ``text``, what the model wrote, when the env rejected one of its lines.

    A rejected line leaves the state unchanged, so keyed by state every broken answer
    would vote for the state it stopped in (often the start) and together they could
    outvote a right one; keyed by text, a broken answer only agrees with the same text,
    as :func:`backtrack_gym.agents.search.self_backtracking_search` keys it.
    """
    if info["invalid_steps"]:
        return text
    return json.dumps(info["state"], sort_keys=True, default=str)


def _split_tokens(episode: Any, budget: int | None = None) -> tuple[list[int], list[int]]:
    """The first ``budget`` model tokens of an episode's completion, and the env tokens among them."""
    model_tokens: list[int] = []
    env_tokens: list[int] = []
    for token, is_model in zip(episode.completion_ids, episode.model_mask, strict=True):
        if is_model:
            if budget is not None and len(model_tokens) == budget:
                break
            model_tokens.append(token)
        else:
            env_tokens.append(token)
    return model_tokens, env_tokens


def _summary(records: list[dict[str, Any]]) -> dict[str, float]:
    """Solve rate, mean tokens and FLOPs, backtracks and invalid steps over episode records."""
    return {
        "episodes": len(records),
        "solve_rate": statistics.fmean(r["solved"] for r in records),
        "mean_tokens": statistics.fmean(r["tokens"] for r in records),
        "mean_flops": statistics.fmean(r["flops"] for r in records),
        "backtracks": statistics.fmean(r["backtracks"] for r in records),
        "backtrack_rate": statistics.fmean(r["backtracks"] > 0 for r in records),
        "invalid_steps": statistics.fmean(r["invalid_steps"] for r in records),
    }


def _pass_at(samples: list[dict[str, Any]], k: int) -> float:
    return pass_at_k(len(samples), sum(s["solved"] for s in samples), k)


def _maj_at(samples: list[dict[str, Any]], k: int) -> float:
    return maj_at_k([(s["answer"], s["solved"]) for s in samples], k)


# --- output ------------------------------------------------------------------------


def write_report(report: dict[str, Any], output_dir: Path, label: str) -> None:
    """``eval.json`` (atomically), ``curves.png`` and TensorBoard scalars of one model's report."""
    from backtrack_gym.train.data import atomic_write

    text = json.dumps(report, indent=1, default=str)
    atomic_write(output_dir / "eval.json", lambda path: path.write_text(text))
    curves = {f"{label} {name}": points for name, points in report["curves"].items()}
    plot_curves(curves, output_dir / "curves.png", title=label)
    write_curves_tensorboard(curves, output_dir / "tensorboard")


LINESTYLES = {"greedy": "-", "sampled": ":", "best_of_n": "--", "maj_of_n": "-.", "search": "-"}


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path, *, title: str = "") -> None:
    """Solve rate against mean tokens and against mean FLOPs per problem, as a PNG.

    Curves are named ``"<model> <method>"``: one colour per model, one line style per method.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from backtrack_gym.train.data import atomic_write

    models = list(dict.fromkeys(name.rsplit(" ", 1)[0] for name in curves))
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in curves.items():
        model, _, method = name.rpartition(" ")
        style = {
            "color": colours(models.index(model) % 10),
            "linestyle": LINESTYLES.get(method, "-"),
            "marker": "s" if method == "search" else "o",
            "markersize": 4,
        }
        for axis, key in zip(axes, ("tokens", "flops"), strict=True):
            axis.plot([p[key] for p in points], [p["accuracy"] for p in points], label=name, **style)
    for axis, label in zip(axes, ("model tokens per problem", "FLOPs per problem"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("solve rate")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def write_curves_tensorboard(curves: dict[str, list[dict[str, float]]], log_dir: Path) -> None:
    """Each curve as scalars: accuracy against tokens (step = tokens) and kFLOPs (step = kFLOPs)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for name, points in curves.items():
        tag = name.replace(" ", "/")
        for point in points:
            writer.add_scalar(f"{tag}/accuracy_vs_tokens", point["accuracy"], round(point["tokens"]))
            writer.add_scalar(f"{tag}/accuracy_vs_kflops", point["accuracy"], round(point["flops"] / 1e3))
    writer.close()


def curve_table(curves: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per curve point, for printing."""
    return [
        {
            "curve": name,
            "budget": point.get("budget", point.get("n")),
            **{k: point[k] for k in ("tokens", "flops", "accuracy")},
        }
        for name, points in curves.items()
        for point in points
    ]
