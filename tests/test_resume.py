"""Resuming after a kill: the newest complete checkpoint, and TensorBoard curves that show each step once."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from backtrack_gym.train.common import TENSORBOARD_DIR, last_checkpoint, tensorboard_callback  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "bench" / "kill_resume.py"


def ui_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar as (step, value) pairs, read by the loader behind TensorBoard's UI."""
    events = plugin_event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    curves = {}
    for tag in events.Tags()["tensors"]:
        points = events.Tensors(tag)
        if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
            curves[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in points]
        else:
            curves[tag] = [(e.step, 0.0) for e in points]
    return curves


def legacy_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _checkpoint(output: Path, step: int, state: str | None) -> None:
    path = output / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state)


def test_last_checkpoint_skips_incomplete_checkpoints_and_says_so(tmp_path, capsys):
    _checkpoint(tmp_path, 2, json.dumps({"global_step": 2}))
    _checkpoint(tmp_path, 10, json.dumps({"global_step": 10}))
    _checkpoint(tmp_path, 11, None)  # killed before the Trainer wrote its state
    _checkpoint(tmp_path, 12, json.dumps({"global_step": 12})[:9])  # killed while writing it
    _checkpoint(tmp_path, 13, json.dumps({"global_step": 3}))  # not this directory's state
    (tmp_path / "checkpoint-14").write_text("not a directory")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    out = capsys.readouterr().out
    assert all(f"skipping {tmp_path / f'checkpoint-{n}'}: incomplete" in out for n in (11, 12, 13))
    assert "checkpoint-2" not in out and f"resuming from {tmp_path / 'checkpoint-10'}" in out


def test_last_checkpoint_without_a_complete_checkpoint_starts_over(tmp_path):
    assert last_checkpoint(tmp_path / "missing") is None
    _checkpoint(tmp_path, 5, None)
    assert last_checkpoint(tmp_path) is None


class _Session:
    """One run's TensorBoard callback, driven as the Trainer drives it."""

    def __init__(self, output: Path, resume_step: int, main: bool = True):
        self.callback = tensorboard_callback(output, resume_step)
        self.state = SimpleNamespace(is_world_process_zero=main, is_hyper_param_search=False, global_step=resume_step)
        args = SimpleNamespace(to_json_string=lambda: "{}", output_dir=str(output))
        self.args = args
        self.callback.on_train_begin(args, self.state, None)

    def log(self, step: int, **logs: float) -> None:
        self.state.global_step = step
        self.callback.on_log(self.args, self.state, None, logs=logs)


def test_tensorboard_shows_each_step_once_after_kills_and_resumes(tmp_path):
    first = _Session(tmp_path, 0)
    for step in range(1, 6):  # killed after step 5; its checkpoint holds step 3
        first.log(step, loss=float(step), epoch=step / 10)
    second = _Session(tmp_path, 3)
    for step in range(4, 8):  # killed after step 7; its checkpoint holds step 6
        second.log(step, loss=100.0 + step, epoch=step / 10)
    third = _Session(tmp_path, 6)
    for step in (7, 8):
        third.log(step, loss=200.0 + step, epoch=step / 10)
    third.log(8, train_runtime=1.0, epoch=0.8)  # the Trainer's end-of-training summary repeats the epoch
    third.callback.add_text(third.state, "completions", "sample")
    third.callback.add_text(third.state, "completions", "again")  # a second sample at the same step is dropped
    _Session(tmp_path, 6, main=False).log(8, loss=-1.0)  # other processes write nothing

    expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 104.0), (5, 105.0), (6, 106.0), (7, 207.0), (8, 208.0)]
    for curves in (ui_curves(tmp_path / TENSORBOARD_DIR), legacy_curves(tmp_path / TENSORBOARD_DIR)):
        assert curves["train/loss"] == expected
        assert [step for step, _ in curves["train/epoch"]] == list(range(1, 9))
        assert curves["train/train_runtime"] == [(8, 1.0)]
    ui = ui_curves(tmp_path / TENSORBOARD_DIR)
    assert ui["completions/text_summary"] == [(8, 0.0)]
    assert ui["args/text_summary"] == [(0, 0.0)]  # written by the first run only
    assert len(list((tmp_path / TENSORBOARD_DIR).iterdir())) == 3  # one events file per main process


def test_tensorboard_fresh_run_replaces_an_earlier_runs_curve(tmp_path):
    old = _Session(tmp_path, 0)
    for step in range(1, 4):
        old.log(step, loss=float(step))
    new = _Session(tmp_path, 0)  # not resumed: the curve starts again
    new.log(1, loss=10.0)
    assert ui_curves(tmp_path / TENSORBOARD_DIR)["train/loss"] == [(1, 10.0)]


def _campaign(tmp_path: Path, task: str, *flags: str) -> dict:
    report = tmp_path / f"{task}.json"
    command = [sys.executable, str(BENCH), "--task", task, "--work-dir", str(tmp_path), "--json", str(report), *flags]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report.read_text())[task]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sft", "grpo"])
def test_runs_killed_inside_the_save_and_at_random_resume_to_the_uninterrupted_result(tmp_path, task):
    # Two deterministic deaths inside a save (before and while writing trainer_state.json), then one random kill.
    summary = _campaign(tmp_path, task, "--kills", "3", "--seed", str(os.getpid()))
    assert summary["kills"] == 3 and summary["inside_save"] >= 2
    assert summary["skipped_incomplete"] >= 2  # each death in a save left a checkpoint the resume skipped
    assert summary["failures"] == [], summary["failures"]
    assert summary["trials"] >= 1 and summary["weights_equal"] == summary["trials"]
