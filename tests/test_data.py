import json
import os
import signal
import subprocess
import sys

import datasets
import pytest

from backtrack_gym.envs.countdown import CountDownConfig, split_targets
from backtrack_gym.train.data import (
    DataConfig,
    atomic_write,
    build_sft_dataset,
    count_tokens,
    export,
    style_statistics,
)

COLUMNS = {"prompt", "completion", "problem", "style", "num_steps", "num_backtracks", "solved", "mask_spans"}


def test_dataset_columns_and_rows():
    dataset = build_sft_dataset("countdown", "self_backtrack", 20, seed=3, split="train")
    assert isinstance(dataset, datasets.Dataset) and len(dataset) == 20
    assert set(dataset.column_names) >= COLUMNS
    row = dataset[0]
    problem = json.loads(row["problem"])
    assert row["prompt"].startswith(f"Target: {problem['target']} | Numbers:")
    assert row["style"] == "self_backtrack" and row["solved"] and row["num_backtracks"] == 1
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
    with pytest.raises(ValueError, match="interaction"):
        DataConfig(interaction="chat").validate()


def test_step_rows_interleave_masked_observations():
    [completion_row] = build_sft_dataset("countdown", "self_backtrack", 1, seed=3)
    [step_row] = build_sft_dataset("countdown", "self_backtrack", 1, seed=3, interaction="step")
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
            "--task-config",
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
