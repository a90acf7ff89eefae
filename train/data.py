"""SFT data sets built from oracle search traces.

Each row is one problem and one trace of one style: the env's prompt, the trace as
the completion, the problem as JSON, counts, and the character spans of the
completion to leave out of the loss. ``self_backtrack`` rows are the paper's mix, each
drawn by the row's own stream: an optimal path, or a back example that ends at its
``<backtrack>`` (:mod:`backtrack_gym.agents.traces.self_backtracking`). Rows are deterministic per (task config, seed,
split, index): the problem comes from the task's generator and the trace's random
choices from an independent stream of the same item, so any number of worker
processes gives the same rows in the same order.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from backtrack_gym.agents.traces import styles_for, write_trace
from backtrack_gym.config import Config
from backtrack_gym.envs import BACKTRACK, make_task
from backtrack_gym.envs.core import SPLITS, Episode, Task, check_interaction
from backtrack_gym.envs.seeding import item_rng
from backtrack_gym.settings import EpisodeConfig, TaskConfig

TRACE_STREAM = 1  # extra item_rng key of a trace's random choices (the problem's stream has none)
FORMATS = ("jsonl", "parquet")


def count_tokens(text: str, special: Iterable[str] = (BACKTRACK,)) -> int:
    """Tokens of ``text`` under the task tokenizers: one per character, one per special token."""
    return len(text) - sum(text.count(token) * (len(token) - 1) for token in special)


def trace_row(
    task: Task, style: str, split: str, seed: int, options: dict[str, Any], interaction: str, index: int
) -> dict[str, Any]:
    """The data set row of item ``index``; a ``step`` row interleaves the env's observations (masked)."""
    problem, trace = _trace(task, style, split, seed, options, index)
    if interaction == "step":
        completion, spans = trace.step_transcript(task, problem)
    else:
        completion, spans = trace.completion, trace.mask_spans()
    return {
        "index": index,
        "prompt": task.prompt(problem) + "\n",
        "completion": completion,
        "problem": json.dumps(task.problem_to_dict(problem), sort_keys=True),
        "style": style,
        "num_lines": len(trace.lines),
        "num_steps": trace.steps,
        "num_backtracks": trace.backtracks,
        "num_reflections": trace.reflections,
        "num_tokens": count_tokens(completion),
        "solved": trace.solved,
        "mask_spans": [list(span) for span in spans],
    }


def _trace(task: Task, style: str, split: str, seed: int, options: dict[str, Any], index: int) -> tuple[Any, Any]:
    """The problem of item ``index`` and its trace (the same for every build of the same arguments)."""
    problem = task.generate(index, split)
    return problem, write_trace(task, problem, style, rng=item_rng(seed, split, index, TRACE_STREAM), **options)


def generate_rows(
    task: Task,
    style: str,
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    workers: int = 1,
    progress: bool = False,
    trace_options: dict[str, Any] | None = None,
    interaction: str = "completion",
) -> Iterator[dict[str, Any]]:
    """Rows ``0..n-1`` in order, written by ``workers`` processes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_interaction(interaction)
    if n < 0 or workers < 1:
        raise ValueError(f"need n >= 0 and workers >= 1, got n={n}, workers={workers}")
    make_row = partial(trace_row, task, style, split, seed, dict(trace_options or {}), interaction)
    if n:
        make_row(0)  # fail fast (unknown style, bad options) here rather than in a worker
    bar = _progress(n, f"{task.name}/{style}") if progress else None
    if workers == 1:
        rows: Iterable[dict[str, Any]] = map(make_row, range(n))
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)
        rows = pool.imap(make_row, range(n), chunksize=max(1, min(64, n // (8 * workers))))
    try:
        for row in rows:
            if bar is not None:
                bar.update()
            yield row
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()


def _progress(total: int, description: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="trace")


def build_sft_dataset(
    task: str | Task,
    style: str,
    n: int,
    seed: int = 0,
    split: str = "train",
    *,
    workers: int = 1,
    progress: bool = False,
    task_config: dict[str, Any] | None = None,
    trace_options: dict[str, Any] | None = None,
    interaction: str = "completion",
) -> Any:
    """A ``datasets.Dataset`` of ``n`` traces of ``style`` on ``split`` problems.

    ``task`` is a task name (built with ``task_config`` and ``seed``) or a task
    object (whose own config, seed included, picks the problems; ``seed`` then
    seeds only the traces' random choices). ``interaction="step"`` writes each
    trace as a step-mode agent sees it, the env's observations between its lines.
    """
    import datasets

    if isinstance(task, str):
        task = make_task(task, **{**(task_config or {}), "seed": seed})
    rows = list(
        generate_rows(
            task,
            style,
            n,
            seed=seed,
            split=split,
            workers=workers,
            progress=progress,
            trace_options=trace_options,
            interaction=interaction,
        )
    )
    return datasets.Dataset.from_list(rows, features=dataset_features())


def dataset_features() -> Any:
    """The column types (fixed, so every build writes the same schema)."""
    import datasets

    return datasets.Features(
        {
            "index": datasets.Value("int64"),
            "prompt": datasets.Value("string"),
            "completion": datasets.Value("string"),
            "problem": datasets.Value("string"),
            "style": datasets.Value("string"),
            "num_lines": datasets.Value("int32"),
            "num_steps": datasets.Value("int32"),
            "num_backtracks": datasets.Value("int32"),
            "num_reflections": datasets.Value("int32"),
            "num_tokens": datasets.Value("int32"),
            "solved": datasets.Value("bool"),
            "mask_spans": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
        }
    )


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a partial file.

    The temporary file is ``.<name>.<pid>-<random>.tmp`` beside ``path``. A process
    killed mid-write cannot remove its own, so each write first removes those of
    ``path`` whose writer is no longer running (see :func:`remove_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def temp_prefix(path: Path) -> str:
    """The name start of this process's temporary copies of ``path``: ``.<name>.<pid>-``
    (they end in ``.tmp``), so :func:`remove_stale_temps` can tell whose they are."""
    return f".{path.name}.{os.getpid()}-"


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files or directories (:func:`temp_prefix`) left for ``path`` by processes that died.

    Both :func:`atomic_write` and :func:`~backtrack_gym.train.common.atomic_save_dir`
    name theirs so. One whose name carries the id of a running process is kept (that
    process may still be writing it); one with no process id (written before ids
    were part of the name) or a dead one is removed. Returns what was removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        writer = tmp.name[len(path.name) + 2 :].split("-", 1)[0]
        if writer.isdigit() and _process_running(int(writer)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's running process
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export(dataset: Any, path_stem: str | os.PathLike, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``dataset`` to ``<stem>.jsonl`` and/or ``<stem>.parquet``, each atomically."""
    written = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        target = Path(f"{path_stem}.{fmt}")
        if fmt == "jsonl":
            written.append(atomic_write(target, partial(_write_jsonl, dataset)))
        else:
            written.append(atomic_write(target, partial(_write_parquet, dataset)))
    return written


def _write_parquet(dataset: Any, path: Path) -> None:
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one-batch writes; the builder has its own bar
    try:
        dataset.to_parquet(str(path))
    finally:
        if shown:
            datasets.enable_progress_bars()


def _write_jsonl(dataset: Any, path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in dataset:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def style_statistics(dataset: Any) -> dict[str, float]:
    """Count, solved fraction, trace length in tokens and lines (mean/median/max), mean backtracks and reflections."""
    tokens, lines = dataset["num_tokens"], dataset["num_lines"]
    count = len(tokens)
    if not count:
        return {"count": 0}
    return {
        "count": count,
        "solved": sum(dataset["solved"]) / count,
        "tokens_mean": statistics.fmean(tokens),
        "tokens_median": statistics.median(tokens),
        "tokens_max": max(tokens),
        "lines_mean": statistics.fmean(lines),
        "lines_median": statistics.median(lines),
        "lines_max": max(lines),
        "backtracks_mean": statistics.fmean(dataset["num_backtracks"]),
        "reflections_mean": statistics.fmean(dataset["num_reflections"]),
    }


# Traces whose dead-end labels `backtrack-gym data` summarises per style (each one is written again).
LABELLED_TRACES = 500


def label_statistics(
    task: Task, style: str, n: int, *, seed: int = 0, split: str = "train", trace_options: dict[str, Any] | None = None
) -> dict[str, float | None]:
    """The dead-end labels (:mod:`backtrack_gym.envs.labels`) of the first ``n`` traces of ``style``,
    replayed in completion mode: the oracle's own mistakes before the solution and backtrack
    precision, the reference a model's are compared with.

    Means per trace of the steps into dead ends (``dead_end_steps``, Qin et al.'s "mistakes
    before finding the right answer"), of needless backtracks and of the search's distinct
    states and depth; ``backtrack_precision`` (the share that left a dead end) and
    ``needless_backtrack_share`` (the share that undid a solvable state) pool every
    backtrack of the traces (None without one).
    """
    means = ("dead_end_steps", "dead_ends_never_left", "backtracks_from_solvable", "distinct_states", "deepest_depth")
    totals: Counter[str] = Counter()
    for index in range(n):
        problem, trace = _trace(task, style, split, seed, dict(trace_options or {}), index)
        episode = Episode(task, problem, backtrack=True, labels=True)
        episode.run(trace.completion, max_steps=len(trace.lines) + 1)
        totals.update({name: getattr(episode.stats, name) for name in (*means, "dead_ends_left", "backtracks")})
    if not n:
        return {}
    return {
        **{f"{name}_mean": totals[name] / n for name in means},
        "backtrack_precision": totals["dead_ends_left"] / totals["backtracks"] if totals["backtracks"] else None,
        # The other reading of precision: a search that exhausts a deep dead end backtracks many
        # times to leave it once, yet none of those backtracks undid a solvable state.
        "needless_backtrack_share": (
            totals["backtracks_from_solvable"] / totals["backtracks"] if totals["backtracks"] else None
        ),
    }


@dataclass
class DataConfig(Config):
    """Build SFT data sets of oracle traces and print per-style statistics.

    Attributes:
        task: the task whose problems are traced.
        styles: trace styles to build, one data set each (empty: every style of the task).
        n: problems (rows) per style.
        seed: seed of the problems and of the traces' random choices.
        split: ``train`` or ``test`` problems (held-out rules follow the env).
        out_dir: directory the files are written to (``<task>_<style>_<split>.<format>``).
        formats: file formats to write (``jsonl``, ``parquet``).
        workers: worker processes generating traces.
        max_lines: line budget of search traces (``dfs``, ``bfs``, ``mix``, ``think``).
        trace_options: more options of the trace writers, e.g. ``{wrong_step_rate: 0.5}``
            (the share of ``self_backtrack`` traces that are back examples) or
            ``{example_form: continued}``.
        episode: the episodes the traces are for: ``interaction`` ``completion`` traces, or
            ``step`` traces with the env's observation after each line (masked), as a
            step-mode agent sees them; the budgets do not apply.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    styles: tuple[str, ...] = ()
    n: int = 1000
    seed: int = 0
    split: str = "train"
    out_dir: str = "data"
    formats: tuple[str, ...] = FORMATS
    workers: int = 2
    max_lines: int = 512
    trace_options: dict[str, Any] = field(default_factory=dict)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)

    def check(self) -> None:
        from backtrack_gym.config import check_at_least, check_choice, check_style

        check_at_least(self, 1, "n", "workers", "max_lines")
        check_at_least(self, 0, "seed")
        check_choice("split", self.split, SPLITS)
        if not self.formats:
            raise ValueError(f"formats must be among {list(FORMATS)}, got none")
        check_choice("formats", self.formats, FORMATS)
        task = self.task.build()
        for style in self.styles:
            check_style("styles", style, task)


def build_and_export(config: DataConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Build, write and summarise each style of ``config``; returns one statistics row per style."""
    table = []
    styles = config.styles or tuple(styles_for(config.task.build()))
    task = config.task.build(seed=config.seed)  # as build_sft_dataset builds it
    trace_options = {"max_lines": config.max_lines, **config.trace_options}
    for style in styles:
        dataset = build_sft_dataset(
            config.task.name,
            style,
            config.n,
            config.seed,
            config.split,
            workers=config.workers,
            progress=progress,
            task_config=config.task.config,
            trace_options=trace_options,
            interaction=config.episode.interaction,
        )
        export(dataset, Path(config.out_dir) / f"{config.task.name}_{style}_{config.split}", config.formats)
        labelled = min(config.n, LABELLED_TRACES)
        labels = label_statistics(
            task, style, labelled, seed=config.seed, split=config.split, trace_options=trace_options
        )
        table.append({"style": style, **style_statistics(dataset), **labels})
    return table
