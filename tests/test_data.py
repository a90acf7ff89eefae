import json
import os
import signal
import subprocess
import sys

import datasets
import numpy as np
import pytest

from backtrack_gym.agents.traces import write_trace
from backtrack_gym.envs import BACKTRACK, make_task
from backtrack_gym.envs.countdown import CountDownConfig, split_targets
from backtrack_gym.envs.seeding import item_rng
from backtrack_gym.settings import EpisodeConfig
from backtrack_gym.train.data import (
    TRACE_STREAM,
    DataConfig,
    atomic_write,
    build_sft_dataset,
    count_tokens,
    export,
    label_statistics,
    style_statistics,
)

COLUMNS = {"prompt", "completion", "problem", "style", "num_steps", "num_backtracks", "solved", "mask_spans"}


def test_dataset_columns_and_rows():
    dataset = build_sft_dataset("countdown", "self_backtrack", 20, seed=3, split="train")
    assert isinstance(dataset, datasets.Dataset) and len(dataset) == 20
    assert set(dataset.column_names) >= COLUMNS
    row = next(row for row in dataset if row["num_backtracks"])  # a back example
    problem = json.loads(row["problem"])
    assert row["prompt"].startswith(f"Target: {problem['target']} | Numbers:")
    assert row["style"] == "self_backtrack" and not row["solved"] and row["num_backtracks"] == 1
    (start, end), *_ = row["mask_spans"]
    assert row["completion"][start:end].rstrip("\n") in row["completion"].splitlines()


def test_same_arguments_give_byte_identical_files(tmp_path):
    paths = []
    for workers, name in ((1, "a"), (2, "b")):
        dataset = build_sft_dataset("countdown", "mix", 60, seed=1, workers=workers)
        paths.append(export(dataset, tmp_path / name))
    for first, second in zip(*paths, strict=True):
        assert first.read_bytes() == second.read_bytes(), first.suffix
    assert [p.suffix for p in paths[0]] == [".jsonl", ".parquet"]
    assert datasets.Dataset.from_parquet(str(paths[0][1]))[5] == build_sft_dataset("countdown", "mix", 6, seed=1)[5]


def test_splits_follow_held_out_targets():
    held_out = split_targets(CountDownConfig())["test"]
    train = build_sft_dataset("countdown", "direct", 200, split="train")
    test = build_sft_dataset("countdown", "direct", 200, split="test")
    assert not {json.loads(p)["target"] for p in train["problem"]} & held_out
    assert {json.loads(p)["target"] for p in test["problem"]} <= held_out


def test_direct_traces_are_several_times_shorter_than_dfs():
    direct = style_statistics(build_sft_dataset("countdown", "direct", 300))
    dfs = style_statistics(build_sft_dataset("countdown", "dfs", 300))
    assert direct["solved"] == 1.0
    assert dfs["tokens_mean"] > 3 * direct["tokens_mean"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def crash(path):
        path.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_atomic_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "out.jsonl"
    # A writer killed with SIGKILL mid-write, which no except clause survives.
    killed = (
        "import os, signal, sys\n"
        "from backtrack_gym.train.data import atomic_write\n"
        "def write(path):\n"
        "    path.write_text('partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    left = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", killed, str(target)], timeout=60)
        assert result.returncode == -signal.SIGKILL
        left.append({p.name for p in tmp_path.glob(".out.jsonl.*.tmp")})
    # Each killed writer left one file; the second removed the first's before writing.
    assert len(left[0]) == len(left[1]) == 1 and left[0] != left[1] and not target.exists()
    # A temporary file of a running writer (this process) is left alone.
    live = tmp_path / f".out.jsonl.{os.getpid()}-live.tmp"
    live.write_text("being written")
    atomic_write(target, lambda path: path.write_text("new\n"))
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.jsonl", live.name])


def test_count_tokens_counts_backtrack_once():
    assert count_tokens("1 + 2 = 3\n<backtrack>\n") == 10 + 2


def test_config_validation():
    with pytest.raises(ValueError, match="formats"):
        DataConfig(formats=("csv",)).validate()
    with pytest.raises(ValueError, match="split"):
        DataConfig(split="dev").validate()
    with pytest.raises(ValueError, match="^episode.interaction"):
        DataConfig(episode=EpisodeConfig(interaction="chat")).validate()


def test_step_rows_interleave_masked_observations():
    options = {"wrong_step_rate": 1.0, "example_form": "continued"}
    [completion_row] = build_sft_dataset("countdown", "self_backtrack", 1, seed=3, trace_options=options)
    [step_row] = build_sft_dataset("countdown", "self_backtrack", 1, seed=3, interaction="step", trace_options=options)
    text, spans = step_row["completion"], step_row["mask_spans"]
    gaps = zip([(0, 0), *spans], [*spans, (len(text), 0)], strict=True)
    kept = "".join(text[end:start] for (_, end), (start, _) in gaps)
    masked = [text[start:end] for start, end in spans]
    # The model-written text is the completion trace less its masked wrong step.
    wrong = [completion_row["completion"][start:end] for start, end in completion_row["mask_spans"]]
    assert kept == completion_row["completion"].replace(wrong[0], "", 1)
    # Every masked span is the wrong step and/or observations of the state, one per line.
    observations = [line for span in masked for line in span.splitlines() if line.startswith("Target:")]
    assert len(observations) == completion_row["num_lines"] - 1  # none after the solving line
    assert any(wrong[0] in span for span in masked)


def test_cli_data_prints_statistics(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backtrack_gym",
            "data",
            "--n",
            "30",
            "--styles",
            "direct,dfs",
            "--out-dir",
            str(tmp_path),
            "--workers",
            "1",
            "--task.config",
            "{num_count: 3, target_max: 60}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tokens_mean" in result.stdout and "direct" in result.stdout and "dfs" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "countdown_dfs_train.jsonl",
        "countdown_dfs_train.parquet",
        "countdown_direct_train.jsonl",
        "countdown_direct_train.parquet",
    ]
    rows = [json.loads(line) for line in (tmp_path / "countdown_direct_train.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(len(json.loads(r["problem"])["numbers"]) == 3 for r in rows)


# --- self-backtracking data: the paper's mix (LAMDASZ-ML/Self-Backtracking src/train.py) ---------------


@pytest.mark.parametrize(
    "task_name, task_config, n, trace_format",
    [
        ("countdown", {}, 300, "compact"),
        ("countdown", {}, 100, "research"),
        ("math", {}, 100, "compact"),
        ("sudoku", {"size": 6}, 40, "compact"),
    ],
)
def test_self_backtrack_rows_are_optimal_paths_or_back_examples_that_end_at_the_backtrack(
    task_name, task_config, n, trace_format
):
    # D = D_op ∪ D_back, D_back = {(x, prefix(y) ∘ a_err ∘ <backtrack>)}: a back example is a prefix of the
    # optimal path (the direct trace), the wrong step masked, then <backtrack>, and it ends there.
    task = make_task(task_name, **task_config)
    options = {"trace_format": trace_format} if trace_format != "compact" else {}
    back = 0
    for index in range(n):
        problem = task.generate(index)
        direct = write_trace(task, problem, "direct", **options)
        trace = write_trace(task, problem, "self_backtrack", rng=item_rng(0, "train", index, TRACE_STREAM), **options)
        if not trace.masked:
            assert trace.lines == direct.lines and trace.solved and trace.backtracks == 0
            continue
        back += 1
        first = trace.masked[0]
        assert trace.lines[:first] == direct.lines[:first]  # a prefix of the optimal path
        assert trace.masked == list(range(first, len(trace.lines) - 1))  # the wrong step's line(s)
        assert trace.lines[-1] == BACKTRACK and trace.backtracks == 1 and not trace.solved
        if trace_format == "compact":
            assert len(trace.masked) == 1
    # each trace draws its kind: about half are back examples (a binomial(n, 0.5) within 3.5 sd)
    assert abs(back - n / 2) <= 3.5 * (n / 4) ** 0.5


def test_self_backtrack_share_is_the_wrong_step_rate():
    task = make_task("countdown")

    def back_share(**options):
        traces = [
            write_trace(task, task.generate(i), "self_backtrack", rng=item_rng(0, "train", i, TRACE_STREAM), **options)
            for i in range(400)
        ]
        return sum(bool(t.masked) for t in traces) / len(traces)

    assert back_share(wrong_step_rate=0.0) == 0.0
    assert back_share(wrong_step_rate=1.0) == 1.0  # every CountDown solution has a step that can go wrong
    assert 0.2 <= back_share(wrong_step_rate=0.3) <= 0.4
    with pytest.raises(ValueError, match="wrong_step_rate"):
        write_trace(task, task.generate(0), "self_backtrack", wrong_step_rate=1.5)
    with pytest.raises(ValueError, match="example_form"):
        write_trace(task, task.generate(0), "self_backtrack", example_form="spliced")


def test_self_backtrack_labels_train_the_backtrack_but_not_the_wrong_step():
    # The paper's train.py sets labels to -100 between the last two newlines of a back example (its wrong
    # step) and trains the rest, <backtrack> and eos included.
    from backtrack_gym.train.sft import IGNORE, tokenize_row
    from backtrack_gym.train.tokenizer import build_tokenizer

    task = make_task("countdown")
    tokenizer = build_tokenizer(task)
    row = next(row for row in build_sft_dataset("countdown", "self_backtrack", 10, seed=3) if row["mask_spans"])
    encoded = tokenize_row(tokenizer, row["prompt"], row["completion"], row["mask_spans"])
    *prefix, wrong, backtrack = row["completion"].splitlines(keepends=True)
    prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    pieces = [tokenizer("".join(prefix), add_special_tokens=False)["input_ids"]] if prefix else [[]]
    pieces += [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (wrong, backtrack)]
    expected = [IGNORE] * len(prompt_ids) + pieces[0] + [IGNORE] * len(pieces[1]) + pieces[2]
    assert encoded["labels"] == [*expected, tokenizer.eos_token_id]
    assert tokenizer.convert_tokens_to_ids(BACKTRACK) in pieces[2]


def test_self_backtrack_rows_do_not_depend_on_the_worker_count():
    options = {"example_form": "ended"}
    one = build_sft_dataset("countdown", "self_backtrack", 40, seed=2, workers=1, trace_options=options)
    two = build_sft_dataset("countdown", "self_backtrack", 40, seed=2, workers=2, trace_options=options)
    assert one.to_list() == two.to_list()
    assert 0 < sum(one["num_backtracks"]) < 40


def test_continued_back_examples_solve_their_problem():
    options = {"example_form": "continued"}
    dataset = build_sft_dataset("countdown", "self_backtrack", 40, seed=2, trace_options=options)
    assert all(dataset["solved"]) and 0 < sum(dataset["num_backtracks"]) < 40


def test_atomic_save_dir_removes_a_killed_save_only_while_the_target_exists(tmp_path):
    from backtrack_gym.train.common import atomic_save_dir

    target = tmp_path / "final"
    # What a save killed with SIGKILL before its swap leaves: a temporary directory of a dead process.
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".final.{int(killed.stdout)}-abcd.tmp"
    (stale / "final").mkdir(parents=True)
    (stale / "final" / "weights").write_text("the only copy")
    # Without the target, the stale directory may hold the only copy (a kill between the renames): kept.
    atomic_save_dir(target, lambda path: (path / "weights").write_text("first"))
    assert stale.exists() and (target / "weights").read_text() == "first"
    # Once the target exists, a dead process's temporary directory is garbage: removed.
    atomic_save_dir(target, lambda path: (path / "weights").write_text("second"))
    assert (target / "weights").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_label_statistics_of_oracle_traces():
    task = make_task("countdown", num_count=3, number_max=9)
    direct = label_statistics(task, "direct", 100)
    assert direct["dead_end_steps_mean"] == 0 and direct["backtrack_precision"] is None
    assert direct["distinct_states_mean"] == 3 and direct["deepest_depth_mean"] == 2  # two steps, no search
    dfs = label_statistics(task, "dfs", 100)
    # A depth-first search leaves each dead end once, however many backtracks its subtree takes.
    assert dfs["dead_end_steps_mean"] > 1 and 0 < dfs["backtrack_precision"] < 1
    assert dfs["needless_backtrack_share"] == 0  # it never gives up a subtree that still solves
    # Each back example is one wrong step, undone at once: every backtrack leaves its dead end.
    back = label_statistics(task, "self_backtrack", 100, seed=3)
    rows = build_sft_dataset(task, "self_backtrack", 100, seed=3)
    assert back["backtrack_precision"] == 1.0 and back["needless_backtrack_share"] == 0.0
    assert back["dead_end_steps_mean"] == pytest.approx(np.mean(rows["num_backtracks"]))
