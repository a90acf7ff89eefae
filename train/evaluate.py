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

The problems are distinct (:func:`distinct_problems`): the split's items are scanned in
order and each problem counts once, however often the split repeats it. Every solve
rate, pass@k, maj@k and curve point carries a 95% percentile bootstrap interval over
the problems (:mod:`.statistics`), and the solve rates are broken down by the task's
:attr:`~backtrack_gym.envs.core.Task.breakdown_key` (CountDown's target).

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

from backtrack_gym.agents.search import SearchConfig
from backtrack_gym.config import Config, build_config, check_at_least, check_choice, prefixed
from backtrack_gym.envs import TASK_ENV_IDS
from backtrack_gym.envs.core import TextEnv, play_completion
from backtrack_gym.settings import EpisodeConfig, SamplingConfig, TaskConfig, UnsetEpisodeConfig, UnsetTaskConfig
from backtrack_gym.train.common import run_environment
from backtrack_gym.train.compute import DecoderShape
from backtrack_gym.train.estimators import maj_at_k, pass_at_k
from backtrack_gym.train.statistics import mean_interval, ratio_interval

METHODS = ("greedy", "sample", "search")
# How a model whose directory names no training settings is played.
UNTRAINED_EPISODE = {"interaction": "completion", "backtrack": True, "env_steps": 64, "max_new_tokens": 256}
# An evaluation of n problems scans at most this many times n items for distinct ones.
SCAN_FACTOR = 50


@dataclass
class EvalSettings(Config):
    """How a model is evaluated: the methods, their samples and the compute curves (an experiment's ``eval:``).

    Attributes:
        n: distinct problems: the split's items are scanned in order (at most ``50 * n``),
            each problem kept the first time it appears; fewer when the split holds fewer.
        methods: any of ``greedy``, ``sample`` and ``search`` (see the module docs).
        samples: sampled episodes per problem (``sample``); pass@k and maj@k for k
            in the powers of two up to it.
        sampling: how ``sample`` samples.
        budgets: token budgets of the sequential curves; empty means powers of two
            from 8 up to ``episode.max_new_tokens``.
        search: the self-backtracking search (``search``; the paper's settings but two
            backtrack rounds); its ``expansions`` and ``seed`` are each curve point's and
            the evaluation's.
        search_expansions: continuations per frontier state (N) of each point of the search
            curve; each point runs ``search`` with that N.
        batch_size: episodes decoded together.
        split: ``test`` (held out) or ``train``.
    """

    n: int = 500
    methods: list[str] = field(default_factory=lambda: ["greedy"])
    samples: int = 16
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    budgets: list[int] = field(default_factory=list)
    search: SearchConfig = field(default_factory=lambda: SearchConfig(rounds=2))
    search_expansions: list[int] = field(default_factory=lambda: [4, 16])
    batch_size: int = 100
    split: str = "test"

    def check(self) -> None:
        from backtrack_gym.envs.core import SPLITS

        if not self.methods:
            raise ValueError(f"methods must be among {list(METHODS)}, got none")
        check_choice("methods", self.methods, METHODS)
        check_at_least(self, 1, "n", "samples", "batch_size", "budgets", "search_expansions")
        check_choice("split", self.split, SPLITS)


@dataclass
class EvalConfig(EvalSettings):
    """Evaluate a model on held-out problems: solve rate, pass@k, maj@k and accuracy-vs-compute curves.

    The task and the episode settings default to what the model was trained with, read
    from the run config its trainer saved in ``final/`` (:func:`trained_settings`); a
    field set to another value warns. A model that carries none is played on CountDown
    with :data:`UNTRAINED_EPISODE`.

    Attributes:
        model: path of the model directory (with its tokenizer), e.g. the main job's GRPO model.
        task: the task; each field unset: the model's.
        episode: how episodes are played; each field unset: the model's.
        seed: seed of the sampler.
        output_dir: when set, ``eval.json`` (the problems found, summaries and curves with
            their intervals, the per-target breakdown, per-problem outcomes and records),
            ``curves.png`` and TensorBoard scalars go there.
        label: the model's name in curves and tables (default: the model directory).
    """

    model: str = "runs/main/direct/grpo/final"
    task: UnsetTaskConfig = field(default_factory=UnsetTaskConfig)
    episode: UnsetEpisodeConfig = field(default_factory=UnsetEpisodeConfig)
    seed: int = 0
    output_dir: str = ""
    label: str = ""

    def check(self) -> None:
        """Check the fields (the task and episode as the model fills them in); the model itself is
        checked when it is loaded, as :func:`evaluate` may be handed one in memory."""
        super().check()
        check_at_least(self, 0, "seed")
        task, episode = self.as_trained(warn=False)
        for name, section in (("task", task), ("episode", episode)):
            try:
                section.validate()
            except ValueError as err:
                raise prefixed(err, name) from None

    def as_trained(self, *, warn: bool = True) -> tuple[TaskConfig, EpisodeConfig]:
        """The task and episode settings played: each field set here, else the model's (or the
        untrained defaults); with ``warn``, a field set to another value than the model's warns."""
        trained = trained_settings(self.model)
        played = []
        for name, section, default in (
            ("task", self.task, TaskConfig()),
            ("episode", self.episode, EpisodeConfig(**UNTRAINED_EPISODE)),
        ):
            base = trained.get(name, default)
            if warn and name in trained:
                for key, value in asdict(section).items():
                    if value is not None and _plain(value) != _plain(getattr(base, key)):
                        warnings.warn(
                            f"evaluating {self.model} with {name}.{key}={value!r}, "
                            f"but it was trained with {getattr(base, key)!r}",
                            stacklevel=3,
                        )
            played.append(section.over(copy.deepcopy(base)))
        return played[0], played[1]


def token_budgets(budgets: list[int], max_new_tokens: int) -> list[int]:
    """The sequential curves' budgets: ``budgets``, or the powers of two from 8 up to ``max_new_tokens``."""
    if budgets:
        return sorted(set(budgets))
    return [b for b in _powers_of_two(max_new_tokens) if b >= 8] or [max_new_tokens]


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]


def trained_settings(model: str) -> dict[str, Any]:
    """``{"task": TaskConfig, "episode": EpisodeConfig}`` a model was trained with, from the run
    config its trainer saved in its directory (empty for a model without one, e.g. from the hub).

    A run config saved before the settings were nested (flat ``task_config``,
    ``max_completion_length``, ``max_env_steps``) is read too.
    """
    for config_name in ("GRPORunConfig", "SFTRunConfig"):
        path = Path(model) / f"{config_name}.json"
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
            if isinstance(saved.get("task"), str):
                saved = _nested_from_flat(saved)
            task = build_config(TaskConfig, saved["task"])
            episode = build_config(EpisodeConfig, saved.get("episode", {}), base=EpisodeConfig(**UNTRAINED_EPISODE))
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"model: cannot read {path}: {err}") from None
        return {"task": task, "episode": episode}
    return {}


def _nested_from_flat(saved: dict[str, Any]) -> dict[str, Any]:
    """A run config saved with flat fields, in the nested form (SFT's carried no episode budgets)."""
    flat_episode = {
        "interaction": "interaction",
        "backtrack": "backtrack",
        "max_new_tokens": "max_completion_length",
        "env_steps": "max_env_steps",
    }
    episode = {name: saved[old] for name, old in flat_episode.items() if old in saved}
    return {"task": {"name": saved["task"], "config": saved.get("task_config", {})}, "episode": episode}


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), to compare with a saved setting."""
    return json.loads(json.dumps(value))


@dataclass
class ProblemSet:
    """The distinct problems an evaluation plays, and how they were found.

    Attributes:
        indices: each problem's item index in the split (``task.generate(index, split)``).
        problems: the problems, in the order found.
        requested: how many distinct problems were asked for.
        scanned: items of the split scanned to find them.
        scan_limit: most items the scan would read.
        in_split: distinct problems the split holds (``Task.split_size``), None where it is
            not counted; ``len(problems) < requested`` then means none were left within the
            scan limit, so the split holds at least ``len(problems)``.
    """

    indices: list[int]
    problems: list[Any]
    requested: int
    scanned: int
    scan_limit: int
    in_split: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "distinct": len(self.problems),
            "requested": self.requested,
            "scanned": self.scanned,
            "scan_limit": self.scan_limit,
            "in_split": self.in_split,
        }


def distinct_problems(task: Any, split: str, n: int, scan_limit: int | None = None) -> ProblemSet:
    """The first ``n`` distinct problems of ``split``: items 0, 1, 2, ... each kept the first time
    its :meth:`~backtrack_gym.envs.core.Task.problem_key` appears, until ``n`` are found, every
    problem of the split is (when it is counted) or ``scan_limit`` items (default ``50 * n``) are read.
    """
    limit = SCAN_FACTOR * n if scan_limit is None else scan_limit
    in_split = task.split_size(split)
    wanted = n if in_split is None else min(n, in_split)
    seen: set[str] = set()
    indices, problems = [], []
    scanned = 0
    while len(problems) < wanted and scanned < limit:
        problem = task.generate(scanned, split)
        key = task.problem_key(problem)
        if key not in seen:
            seen.add(key)
            indices.append(scanned)
            problems.append(problem)
        scanned += 1
    return ProblemSet(indices, problems, n, scanned, limit, in_split)


def evaluate(config: EvalConfig, model: Any = None, tokenizer: Any = None, *, progress: bool = False) -> dict[str, Any]:
    """Run every method of ``config``; returns ``{"problem_set", "summary", "curves", "breakdown",
    "outcomes", "problems", "config", "settings"}`` (and writes them).

    ``problem_set`` says how many distinct problems were found and how (:class:`ProblemSet`).
    ``summary[method]`` holds solve rate, mean tokens and FLOPs, backtracks and invalid
    steps per episode (plus pass@k and maj@k for ``sample``), and under ``intervals``
    each rate's 95% bootstrap interval ``{ci_low, ci_high}``; ``curves[name]`` lists
    points ``{tokens, flops, accuracy, ci_low, ci_high}`` per compute budget.
    ``breakdown`` gives each solve rate per value of the task's breakdown key (None when
    the task has none). ``outcomes`` holds the per-problem values every interval is drawn
    from (``summary[method][stat]`` and ``curves[name][point]``, one value per problem,
    beside the problems' ``keys`` and breakdown ``groups``), so that evaluations of the same
    problems can be compared problem by problem. ``config`` is ``config`` as given,
    ``settings`` the task and episode it was played with (see :meth:`EvalConfig.as_trained`).
    ``progress`` shows a progress bar per method on stderr.
    """
    from backtrack_gym.train.models import load_pretrained
    from backtrack_gym.train.report import write_report

    config.validate()
    task_config, episode = config.as_trained()
    if model is None or tokenizer is None:
        loaded_tokenizer, loaded_model = load_pretrained(config.model)
        tokenizer = loaded_tokenizer if tokenizer is None else tokenizer
        model = loaded_model if model is None else model
    model.eval()
    evaluator = _Evaluator(config, task_config, episode, model, tokenizer, progress=progress)
    records = evaluator.problem_records()
    report: dict[str, Any] = {"problem_set": evaluator.problem_set.to_dict(), "summary": {}, "curves": {}}
    for method in config.methods:
        summary, curves = getattr(evaluator, method)()
        report["summary"][method] = summary
        report["curves"].update(curves)
    outcomes = evaluator.outcomes
    add_intervals(report["summary"], report["curves"], outcomes)
    report["breakdown"] = breakdown(evaluator.task.breakdown_key, outcomes)
    report["outcomes"] = outcomes
    report["problems"] = records
    report["config"] = asdict(config)
    report["environment"] = run_environment()  # with config.seed: what the numbers were measured with
    report["settings"] = {"task": asdict(task_config), "episode": asdict(episode)}
    if config.output_dir:
        write_report(report, Path(config.output_dir), config.label or Path(config.model).name)
    return report


class _Evaluator:
    def __init__(
        self,
        config: EvalConfig,
        task_config: TaskConfig,
        episode: EpisodeConfig,
        model: Any,
        tokenizer: Any,
        *,
        progress: bool = False,
    ):
        self.config = config
        self.task_config = task_config
        self.episode = episode
        self.progress = progress
        self.model = model
        self.tokenizer = tokenizer
        self.task = task = task_config.build()
        self.shape = DecoderShape.from_config(model.config)
        self.problem_set = distinct_problems(task, config.split, config.n)
        self.problems = self.problem_set.problems
        self.records: list[dict[str, Any]] = [{} for _ in self.problems]
        dicts = [task.problem_to_dict(problem) for problem in self.problems]
        key = task.breakdown_key
        # Each method's per-problem values, as evaluate() returns them under "outcomes".
        self.outcomes: dict[str, Any] = {
            "keys": [task.problem_key(problem) for problem in self.problems],
            "groups": None if key is None else [data[key] for data in dicts],
            "summary": {},
            "curves": {},
        }
        # The settings of every episode played, and of the replays of cut ones.
        self.env_settings = episode.env_settings()
        self.replay_env = TextEnv(task, interaction="completion", **self.env_settings)

    def problem_records(self) -> list[dict[str, Any]]:
        """Per problem: its item index in the split and its data, then one entry per method (filled
        as methods run)."""
        for index, problem, record in zip(self.problem_set.indices, self.problems, self.records, strict=True):
            record.update(index=index, problem=self.task.problem_to_dict(problem))
        return self.records

    # --- methods -------------------------------------------------------------------

    def greedy(self) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
        episodes = self._play(samples=1, greedy=True)
        records = [self._episode_record(episode, text=True) for (episode,) in episodes]
        for record, episode_record in zip(self.records, records, strict=True):
            record["greedy"] = episode_record
        self.outcomes["summary"]["greedy"] = {
            "solve_rate": [float(r["solved"]) for r in records],
            **_search_outcomes([[r] for r in records]),
        }
        return _summary(records), {"greedy": self._sequential_curve("greedy", episodes)}

    def sample(self) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
        episodes = self._play(samples=self.config.samples, greedy=False)
        per_problem = [[self._episode_record(e) for e in group] for group in episodes]
        for record, samples in zip(self.records, per_problem, strict=True):
            record["sample"] = samples
        summary = _summary([s for samples in per_problem for s in samples])
        ks = _powers_of_two(self.config.samples)
        pass_by_problem = {k: [_pass_at(samples, k) for samples in per_problem] for k in ks}
        maj_by_problem = {k: [_maj_at(samples, k) for samples in per_problem] for k in ks}
        pass_k = {k: statistics.fmean(values) for k, values in pass_by_problem.items()}
        maj_k = {k: statistics.fmean(values) for k, values in maj_by_problem.items()}
        self.outcomes["summary"]["sample"] = {
            "solve_rate": [statistics.fmean(s["solved"] for s in samples) for samples in per_problem],
            **_search_outcomes(per_problem),
            **{f"pass@{k}": values for k, values in pass_by_problem.items()},
            **{f"maj@{k}": values for k, values in maj_by_problem.items()},
        }
        self.outcomes["curves"]["best_of_n"] = list(pass_by_problem.values())
        self.outcomes["curves"]["maj_of_n"] = list(maj_by_problem.values())
        summary.update({f"pass@{k}": value for k, value in pass_k.items()})
        summary.update({f"maj@{k}": value for k, value in maj_k.items()})
        cost = {
            key: statistics.fmean(s[key] for samples in per_problem for s in samples) for key in ("tokens", "flops")
        }
        curves = {
            name: [{"n": k, "tokens": k * cost["tokens"], "flops": k * cost["flops"], "accuracy": acc[k]} for k in ks]
            for name, acc in (("best_of_n", pass_k), ("maj_of_n", maj_k))
        }
        curves["sampled"] = self._sequential_curve("sampled", episodes)
        return summary, curves

    def search(self) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
        from backtrack_gym.agents.search import HFExpander, self_backtracking_search

        config = self.config
        points, summary = [], {}
        expander = HFExpander(self.model, self.tokenizer, max_batch=config.batch_size)
        for record in self.records:
            record["search"] = {}
        by_setting = self.outcomes["summary"]["search"] = {}
        self.outcomes["curves"]["search"] = []
        settings = sorted(set(config.search_expansions))
        for expansions in self._progress_bar("search", settings, unit="setting"):
            search = replace(config.search, expansions=expansions, seed=config.seed)
            results = self_backtracking_search(
                self.task,
                self.problems,
                expander,
                search,
                max_new_tokens=self.episode.max_new_tokens,
                env_steps=self.episode.step_budget,
            )
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
            by_setting[f"solve_rate@N={expansions}"] = [float(r["solved"]) for r in rows]
            self.outcomes["curves"]["search"].append(by_setting[f"solve_rate@N={expansions}"])
            summary[f"solve_rate@N={expansions}"] = point["accuracy"]
            summary[f"mean_tokens@N={expansions}"] = point["tokens"]
        summary.update(
            rounds=config.search.rounds,
            temperature=config.search.sampling.temperature,
            frontier=config.search.frontier,
            vote=config.search.vote,
        )
        return summary, {"search": points}

    # --- episodes ------------------------------------------------------------------

    def _play(self, *, samples: int, greedy: bool) -> list[list[Any]]:
        """``samples`` episodes per problem, grouped by problem."""
        import gymnasium as gym
        import torch

        from backtrack_gym.agents.lm import DecodeConfig, LMAgent

        config = self.config
        jobs = [index for index in self.problem_set.indices for _ in range(samples)]
        episodes: list[Any] = []
        bar = self._progress_bar("greedy" if greedy else "sample", total=len(jobs), unit="episode")
        for start in range(0, len(jobs), config.batch_size):
            batch = jobs[start : start + config.batch_size]
            envs = [
                gym.make(
                    TASK_ENV_IDS[self.task_config.name],
                    interaction=self.episode.interaction,
                    split=config.split,
                    **self.env_settings,
                    **self.task_config.config,
                )
                for _ in batch
            ]
            decoding = DecodeConfig(**asdict(config.sampling), greedy=greedy, seed=config.seed + start)
            agent = LMAgent(self.model, self.tokenizer, decoding, max_new_tokens=self.episode.max_new_tokens)
            with torch.inference_mode():
                episodes += agent.rollout(envs, seed=config.seed, options=[{"index": index} for index in batch])
            bar.update(len(batch))
        bar.close()
        return [episodes[i * samples : (i + 1) * samples] for i in range(len(self.problems))]

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
            **{name: episode.info[name] for name in SEARCH_RECORD},
        }
        if text:
            record["text"] = written
        return record

    def _sequential_curve(self, name: str, episodes: list[list[Any]]) -> list[dict[str, float]]:
        """Solve rate and mean cost of the episodes cut at each token budget (the curve ``name``)."""
        points = []
        self.outcomes["curves"][name] = []
        for budget in token_budgets(self.config.budgets, self.episode.max_new_tokens):
            by_problem = [
                [self._cut(episode, problem, budget) for episode in group]
                for problem, group in zip(self.problems, episodes, strict=True)
            ]
            self.outcomes["curves"][name].append([statistics.fmean(o["solved"] for o in cut) for cut in by_problem])
            outcomes = [outcome for cut in by_problem for outcome in cut]
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


# The dead-end labels' counts (envs/labels.py) each episode record keeps; the first four are also
# per-problem outcomes with intervals, and backtrack precision is drawn from two of them.
SEARCH_RECORD = ("dead_end_steps", "dead_ends_left", "backtracks_from_solvable", "distinct_states", "deepest_depth")
SEARCH_OUTCOMES = ("dead_end_steps", "dead_ends_left", "backtracks", "backtracks_from_solvable")
# Each pooled ratio's (numerator, denominator) outcomes, summed over the problems.
POOLED_RATIOS = {"backtrack_precision": ("dead_ends_left", "backtracks"), "recovery_rate": ("recovered", "wrong_line")}


def _wrong_line(record: dict[str, Any]) -> bool:
    """The episode wrote a line that was wrong: one the env rejected, or one it later backtracked."""
    return record["invalid_steps"] > 0 or record["backtracks"] > 0


def _search_outcomes(per_problem: list[list[dict[str, Any]]]) -> dict[str, list[float]]:
    """Per problem, the mean over its episodes of each of :data:`SEARCH_OUTCOMES`, of
    ``wrong_line`` (the episode needed a correction, :func:`_wrong_line`) and of ``recovered``
    (it needed one and still solved the problem)."""
    outcomes = {
        name: [statistics.fmean(r[name] for r in records) for records in per_problem] for name in SEARCH_OUTCOMES
    }
    outcomes["wrong_line"] = [statistics.fmean(_wrong_line(r) for r in records) for records in per_problem]
    outcomes["recovered"] = [
        statistics.fmean(_wrong_line(r) and r["solved"] for r in records) for records in per_problem
    ]
    return outcomes


def add_intervals(summary: dict[str, Any], curves: dict[str, list[dict[str, Any]]], outcomes: dict[str, Any]) -> None:
    """Add to each rate of ``summary`` (under ``summary[method]["intervals"]``) and to each point
    of ``curves`` its 95% bootstrap interval ``{ci_low, ci_high}``, drawn from ``outcomes``' values:
    one per problem, or a (seeds, problems) array, resampled over seeds then problems.

    Pooled ratios of two outcomes get their ratio interval (:func:`~.statistics.ratio_interval`),
    and None where the denominator is 0 everywhere: ``backtrack_precision``, the share of all
    backtracks that left a dead end, and ``recovery_rate``, the share of the episodes with a
    wrong line (ASTRO's problems "that need correction") that still solved the problem.
    """
    import numpy as np

    for method, stats in outcomes["summary"].items():
        summary[method]["intervals"] = {stat: _interval(values) for stat, values in stats.items()}
        for name, (numerator, denominator) in POOLED_RATIOS.items():
            if numerator not in stats or denominator not in stats:
                continue
            top, bottom = np.asarray(stats[numerator]), np.asarray(stats[denominator])
            summary[method][name] = float(top.mean() / bottom.mean()) if bottom.any() else None
            interval = ratio_interval(top, bottom)
            if interval is not None:
                summary[method]["intervals"][name] = {"ci_low": interval[0], "ci_high": interval[1]}
    for name, per_point in outcomes["curves"].items():
        for point, values in zip(curves[name], per_point, strict=True):
            point.update(_interval(values))


def _interval(values: Any) -> dict[str, float]:
    low, high = mean_interval(values)
    return {"ci_low": low, "ci_high": high}


def breakdown(key: str | None, outcomes: dict[str, Any]) -> dict[str, Any] | None:
    """Each solve rate of ``outcomes`` per value of the problems' breakdown ``key`` (CountDown: per
    target), as ``{"by": key, "groups": [{key: value, "problems": count, "<method> <rate>": rate}]}``
    sorted by value; None when the task has no breakdown key.

    A value of ``outcomes["summary"]`` may be a (seeds, problems) array: a group's rate is
    then the mean over seeds and its problems.
    """
    if key is None or outcomes["groups"] is None:
        return None
    import numpy as np

    groups = outcomes["groups"]
    rates = {
        f"{method} {stat}": np.atleast_2d(np.asarray(values, dtype=float))
        for method, stats in outcomes["summary"].items()
        for stat, values in stats.items()
        if stat.startswith("solve_rate")
    }
    rows = []
    for value in sorted(set(groups), key=lambda v: (str(type(v)), v)):
        members = [i for i, group in enumerate(groups) if group == value]
        rows.append(
            {key: value, "problems": len(members), **{name: float(t[:, members].mean()) for name, t in rates.items()}}
        )
    return {"by": key, "groups": rows}


def _summary(records: list[dict[str, Any]]) -> dict[str, float]:
    """Solve rate, mean tokens and FLOPs, backtracks, invalid steps and the dead-end labels' counts
    over episode records."""
    return {
        "episodes": len(records),
        "solve_rate": statistics.fmean(r["solved"] for r in records),
        "mean_tokens": statistics.fmean(r["tokens"] for r in records),
        "mean_flops": statistics.fmean(r["flops"] for r in records),
        "backtracks": statistics.fmean(r["backtracks"] for r in records),
        "backtrack_rate": statistics.fmean(r["backtracks"] > 0 for r in records),
        "invalid_steps": statistics.fmean(r["invalid_steps"] for r in records),
        **{name: statistics.fmean(r[name] for r in records) for name in SEARCH_RECORD},
    }


def _pass_at(samples: list[dict[str, Any]], k: int) -> float:
    return pass_at_k(len(samples), sum(s["solved"] for s in samples), k)


def _maj_at(samples: list[dict[str, Any]], k: int) -> float:
    return maj_at_k([(s["answer"], s["solved"]) for s in samples], k)
