"""Kill tiny SFT and GRPO runs at random instants, resume each time, and check that nothing is lost or doubled.

    python bench/kill_resume.py                    # 20 kills of each task, 12-17 minutes on 2 CPU cores
    python bench/kill_resume.py --task sft --kills 5 --json report.json

For each task an uninterrupted reference run comes first (the GRPO runs start from the
SFT reference's model). Then the same run is started with ``--trainer.resume true``, killed,
restarted, and so on until it finishes on its own (a trial); trials follow one another
until ``--kills`` kills have been made. The kills, in order:

- ``exit-before-state``: the process exits (``os._exit``) in its first save, when the
  model, optimizer and RNG state are written but ``trainer_state.json`` is not;
- ``exit-mid-state``: it exits having written half of ``trainer_state.json``;
- then at random: ``save`` (SIGKILL 0-25 ms after the checkpoint directory of a
  random step still to come appears, so mostly inside that save or the rotation of
  old checkpoints that follows it), ``train``
  (SIGKILL at a uniform instant of the training time, once training is under way)
  and ``startup`` (SIGKILL at a uniform instant before training, e.g. while loading
  a checkpoint).

The two deterministic exits are a hook this script installs in the child process (it
patches ``TrainerState.save_to_json``); the package has none. A finished trial must
match the reference: the same final weights (bit for bit), and TensorBoard curves and
sample texts, as the UI's loader (``plugin_event_accumulator``) reads them, with each
step once, the reference's steps and the reference's values. Timings, the arguments
(their paths differ) and the end-of-training summary (a session's) are compared by
step only; the summary may be missing, when a kill fell between the last checkpoint
and the summary. Prints one line per kill and a table per task; exits 1 when a check
fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}
# Compared by step only: timings, the end-of-training summary (a session's) and the arguments (paths differ).
STEPS_ONLY_TAGS = {
    f"train/{name}"
    for name in ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")
} | {"train/step_time", "args/text_summary"}
RANDOM_KILLS = (("save", 0.5), ("train", 0.35), ("startup", 0.15))
POLL_SECONDS = 0.002

# Runs the CLI; with KILL_RESUME_EXIT set, exits inside the first checkpoint save of this process.
DRIVER = r"""
import dataclasses, json, os, sys

EXIT_IN_SAVE = {exit_code}
mode = os.environ.get("KILL_RESUME_EXIT")
if mode:
    from transformers.trainer_callback import TrainerState

    def exit_in_save(self, json_path):
        if mode == "mid-state":
            text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
            with open(json_path, "w") as f:
                f.write(text[: len(text) // 2])
        os._exit(EXIT_IN_SAVE)

    TrainerState.save_to_json = exit_in_save

from backtrack_gym.cli import main

sys.exit(main(sys.argv[1:]))
"""
EXIT_IN_SAVE = 86
DRIVER = DRIVER.replace("{exit_code}", str(EXIT_IN_SAVE))


def sft_command(output: Path) -> list[str]:
    return [
        "sft", "--model", "tiny", "--style", "dfs", "--n-train", "256", "--batch-size", "8",
        "--trainer.optimizer-steps", "16", "--trainer.save-steps", "1", "--trainer.save-total-limit", "2",
        "--trainer.logging-steps", "1", "--trainer.learning-rate", "3e-3",
        "--workers", "1", "--task.config", json.dumps(TASK_CONFIG), "--output-dir", str(output),
    ]  # fmt: skip


def grpo_command(output: Path, start: Path) -> list[str]:
    return [
        "grpo", "--model", str(start), "--n-prompts", "16", "--trainer.optimizer-steps", "8",
        "--prompts-per-step", "2", "--num-generations", "4", "--episode.max-new-tokens", "24",
        "--episode.env-steps", "4", "--trainer.learning-rate", "1e-4", "--trainer.lr-scheduler", "constant",
        "--reward-weights", json.dumps({"correct": 1.0, "format": 0.5, "validity": 0.5}),
        "--trainer.save-steps", "1", "--trainer.save-total-limit", "2", "--trainer.logging-steps", "1",
        "--samples-to-log", "2", "--task.config", json.dumps(TASK_CONFIG), "--output-dir", str(output),
    ]  # fmt: skip


def start(command: list[str], log: Path, exit_mode: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("KILL_RESUME_EXIT", None)
    if exit_mode:
        env["KILL_RESUME_EXIT"] = exit_mode
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, *command, "--trainer.resume", "true"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def checkpoints(output: Path) -> dict[int, Path]:
    from backtrack_gym.train.common import CHECKPOINT_NAME, checkpoint_step

    if not output.is_dir():
        return {}
    return {checkpoint_step(p): p for p in output.iterdir() if CHECKPOINT_NAME.fullmatch(p.name)}


def newest_complete(output: Path) -> int:
    from backtrack_gym.train.common import checkpoint_is_complete

    return max((step for step, path in checkpoints(output).items() if checkpoint_is_complete(path)), default=0)


def wait_for(process: subprocess.Popen, ready) -> bool:
    """Wait until ``ready()`` (True) or the process ends (False)."""
    while process.poll() is None:
        if ready():
            return True
        time.sleep(POLL_SECONDS)
    return False


def saving(output: Path, step: int, since: float) -> bool:
    """Whether a checkpoint past ``step`` has been written to since ``since`` (a wall-clock time)."""
    for s, path in checkpoints(output).items():
        try:
            if s > step and path.stat().st_mtime >= since:
                return True
        except FileNotFoundError:  # rotated away meanwhile
            pass
    return False


def training(output: Path, files_before: int) -> bool:
    """Whether this session has opened its TensorBoard events file (at the start of training)."""
    events = output / "tensorboard"
    return events.is_dir() and len(list(events.iterdir())) > files_before


def sleep_or_end(process: subprocess.Popen, seconds: float) -> bool:
    """Sleep ``seconds`` unless the process ends first; whether it is still running."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return process.poll() is None


def session(command: list[str], output: Path, log: Path, kind: str | None, rng: random.Random, times: dict) -> dict:
    """Run one session, killing it as ``kind`` says (None: let it finish); what happened."""
    resumed_from = newest_complete(output)
    events_files = len(list((output / "tensorboard").iterdir())) if (output / "tensorboard").is_dir() else 0
    began, began_wall = time.monotonic(), time.time()
    exit_mode = kind.removeprefix("exit-") if kind and kind.startswith("exit-") else None
    process = start(command, log, exit_mode)
    killed = False
    if kind == "startup":
        killed = sleep_or_end(process, rng.uniform(0, times["startup"]))
    elif kind == "train" and wait_for(process, lambda: training(output, events_files)):
        killed = sleep_or_end(process, rng.uniform(0, times["train"]))
    elif kind == "save":
        step = rng.randrange(resumed_from, max(times["steps"], resumed_from + 1))  # a save still to come
        if wait_for(process, lambda: saving(output, step, began_wall)):
            killed = sleep_or_end(process, rng.uniform(0, 0.025))
    if killed:
        process.send_signal(signal.SIGKILL)
    returncode = process.wait()
    killed = killed or (exit_mode is not None and returncode == EXIT_IN_SAVE)
    from backtrack_gym.train.common import checkpoint_is_complete

    newest = max(checkpoints(output), default=0)
    path = checkpoints(output).get(newest)
    left_incomplete = path is not None and not checkpoint_is_complete(path) and path.stat().st_mtime >= began_wall
    return {
        "kind": kind if killed else None,
        "returncode": returncode,
        "seconds": time.monotonic() - began,
        "resumed_from": resumed_from,
        "newest": newest,
        "inside_save": left_incomplete,  # this kill left the newest checkpoint half written
    }


def ui_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar and text tag as (step, value) pairs, read by the loader behind TensorBoard's UI."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # each purge at a restart marker is logged
    events = plugin_event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    curves = {}
    for tag in events.Tags()["tensors"]:
        scalar = events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        values = [tensor_util.make_ndarray(e.tensor_proto) for e in events.Tensors(tag)]
        values = [float(v) if scalar else v.item().decode() for v in values]
        curves[tag] = [(e.step, value) for e, value in zip(events.Tensors(tag), values, strict=True)]
    return curves


def compare(output: Path, reference: Path) -> tuple[bool, float, list[str]]:
    """Whether the final weights equal the reference's, the largest difference, and what disagrees."""
    import torch
    from safetensors.torch import load_file

    problems = []
    final = output / "final" / "model.safetensors"
    if not final.is_file():
        return False, float("inf"), [f"{output.name}: no final model"]
    weights, expected = load_file(final), load_file(reference / "final" / "model.safetensors")
    equal = weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    diff = max((float((weights[k] - expected[k]).abs().max()) for k in expected if k in weights), default=0.0)
    curves, reference_curves = ui_curves(output / "tensorboard"), ui_curves(reference / "tensorboard")
    for tag in sorted(curves.keys() | reference_curves.keys()):
        got, want = curves.get(tag, []), reference_curves.get(tag, [])
        steps = [step for step, _ in got]
        doubled = sorted(step for step, count in Counter(steps).items() if count > 1)
        if doubled:
            problems.append(f"{output.name}: {tag} shows steps {doubled} more than once")
        elif tag in STEPS_ONLY_TAGS:
            if got and steps != [step for step, _ in want]:
                problems.append(f"{output.name}: {tag} at steps {steps}, the reference's at {[s for s, _ in want]}")
        elif got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
            where = f"{got[first]} against {want[first]}" if first is not None else f"{len(got)} points for {len(want)}"
            problems.append(f"{output.name}: {tag} differs from the reference: {where}")
    return equal, diff, problems


def kill_plan(kills: int, rng: random.Random) -> list[str]:
    kinds, weights = zip(*RANDOM_KILLS, strict=True)
    return ["exit-before-state", "exit-mid-state", *rng.choices(kinds, weights, k=max(kills - 2, 0))][:kills]


def campaign(task: str, command_for, work: Path, kills: int, rng: random.Random) -> dict:
    """The reference run, then trials until ``kills`` kills are made; the summary."""
    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    log = work / "reference.log"
    began = time.monotonic()
    process = start(command_for(reference), log)
    wait_for(process, lambda: training(reference, 0))
    startup = time.monotonic() - began
    if process.wait() != 0:
        raise RuntimeError(f"the {task} reference run failed; see {log}")
    times = {"startup": startup, "train": time.monotonic() - began - startup, "steps": max(checkpoints(reference))}
    print(f"{task}: reference run {times['startup']:.1f} s to start training, then {times['train']:.1f} s")

    plan = kill_plan(kills, rng)
    summary = {"kills": 0, "inside_save": 0, "sessions": 0, "trials": 0, "weights_equal": 0, "max_weight_diff": 0.0}
    summary.update({"skipped_incomplete": 0, "failures": [], "kinds": dict(Counter(plan))})
    while plan:
        summary["trials"] += 1
        output, log = work / f"trial-{summary['trials']}", work / f"trial-{summary['trials']}.log"
        shutil.rmtree(output, ignore_errors=True)
        log.unlink(missing_ok=True)
        while True:
            kind = plan[0] if plan else None
            result = session(command_for(output), output, log, kind, rng, times)
            summary["sessions"] += 1
            if result["kind"] is None:
                if result["returncode"] != 0:
                    summary["failures"].append(f"{output.name}: a session failed (exit {result['returncode']}); {log}")
                break
            plan.pop(0)
            summary["kills"] += 1
            summary["inside_save"] += result["inside_save"]
            print(
                f"  kill {summary['kills']:2d} {result['kind']:17s} after {result['seconds']:5.1f} s: "
                f"resumed from step {result['resumed_from']}, newest checkpoint {result['newest']}"
                + (" (incomplete)" if result["inside_save"] else "")
            )
        summary["skipped_incomplete"] += log.read_text().count("skipping ")
        if not summary["failures"]:
            equal, diff, problems = compare(output, reference)
            summary["weights_equal"] += equal
            summary["max_weight_diff"] = max(summary["max_weight_diff"], diff)
            summary["failures"] += problems + ([] if equal else [f"{output.name}: final weights differ by {diff:g}"])
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("sft", "grpo", "both"), default="both")
    parser.add_argument("--kills", type=int, default=20, help="kills of each task (the first two exit inside a save)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill kinds and instants")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/kill_resume"))
    parser.add_argument("--json", type=Path, help="also write the summaries here")
    args = parser.parse_args()
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    rng = random.Random(args.seed)
    summaries = {}
    sft_reference = args.work_dir / "sft" / "reference"
    for task in ("sft", "grpo") if args.task == "both" else (args.task,):
        work = args.work_dir / task
        work.mkdir(parents=True, exist_ok=True)
        if task == "sft":
            command_for = sft_command
        else:
            if not (sft_reference / "final").is_dir():  # the GRPO runs start from the SFT reference's model
                (args.work_dir / "sft").mkdir(parents=True, exist_ok=True)
                if start(sft_command(sft_reference), args.work_dir / "sft" / "reference.log").wait() != 0:
                    raise RuntimeError("the SFT run that GRPO starts from failed")

            def command_for(output: Path) -> list[str]:
                return grpo_command(output, sft_reference / "final")

        summaries[task] = campaign(task, command_for, work, args.kills, rng)

    columns = ("kills", "inside_save", "skipped_incomplete", "sessions", "trials", "weights_equal", "max_weight_diff")
    print("\n| task | " + " | ".join(columns) + " | kinds | failures |")
    print("|---" * (len(columns) + 3) + "|")
    for task, summary in summaries.items():
        cells = [f"{summary[c]:g}" if isinstance(summary[c], float) else str(summary[c]) for c in columns]
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary["kinds"].items()))
        print(f"| {task} | " + " | ".join(cells) + f" | {kinds} | {len(summary['failures'])} |")
    for task, summary in summaries.items():
        for failure in summary["failures"]:
            print(f"{task}: {failure}")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))
    return 1 if any(summary["failures"] for summary in summaries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
