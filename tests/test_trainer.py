"""SFT then GRPO with a tiny model on the CPU, TensorBoard curves, and resume after kill -9."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from backtrack_gym.config import build_config  # noqa: E402
from backtrack_gym.train.grpo import run_grpo  # noqa: E402
from backtrack_gym.train.grpo_config import GRPORunConfig  # noqa: E402
from backtrack_gym.train.sft import IGNORE, SFTRunConfig, run_sft, tokenize_row  # noqa: E402
from backtrack_gym.train.tokenizer import build_tokenizer  # noqa: E402

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}


def grpo_config(**values) -> GRPORunConfig:
    """A GRPO run config on TASK_CONFIG's CountDown from nested ``values``, as YAML gives them."""
    return build_config(GRPORunConfig, {"task": {"config": TASK_CONFIG}, **values})


def sft_config(**values) -> SFTRunConfig:
    return build_config(SFTRunConfig, {"task": {"config": TASK_CONFIG}, **values})


def tensorboard(path: Path) -> EventAccumulator:
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tokenize_row_masks_prompt_and_spans():
    from backtrack_gym.envs import make_task

    tokenizer = build_tokenizer(make_task("countdown"))
    completion = "3 + 4 = 7\n<backtrack>\n3 * 8 = 24\n"
    row = tokenize_row(tokenizer, "Target: 24 | Numbers: 3 4 8\n", completion, [[0, 10]])
    kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE]
    assert tokenizer.decode(kept) == "<backtrack>\n3 * 8 = 24\n" + tokenizer.eos_token
    masked = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == IGNORE]
    assert tokenizer.decode(masked) == "Target: 24 | Numbers: 3 4 8\n3 + 4 = 7\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_generations": 1}, "num_generations must be at least 2"),
        ({"trainer": {"warmup_ratio": 1.0}}, "trainer.warmup_ratio must be in"),
        ({"episode": {"env_steps": -1}}, "episode.env_steps must be non-negative"),
        ({"task": {"name": "chess"}}, "task.name must be one of"),
        ({"num_iterations": 0}, "num_iterations must be at least 1"),
        ({"top_entropy_quantile": 1.5}, "top_entropy_quantile must be in"),
        ({"resample_rounds": -1}, "resample_rounds must be non-negative"),
        ({"resample_rounds": 1, "episode": {"interaction": "completion"}}, "resample_rounds applies to the step path"),
        ({"sft_coef": -0.1}, "sft_coef must be non-negative"),
        ({"sft_batch_size": 0}, "sft_batch_size must be at least 1"),
        ({"reference_bf16": True, "beta": 0.0}, "reference_bf16 applies only with beta above 0"),
        ({"torch_compile": "maybe"}, "torch_compile: cannot read"),
    ],
)
def test_grpo_config_rejects_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        build_config(GRPORunConfig, fields).validate()


def test_speed_options_reach_trl_and_the_rollout():
    from trl import GRPOConfig

    from backtrack_gym.train.grpo_config import grpo_arguments

    default = grpo_config(model="tiny-model-dir-unchecked")
    assert (default.torch_compile, default.reference_bf16, default.share_prefill) == (False, False, True)
    fast = grpo_config(torch_compile=True, reference_bf16=True, beta=0.04, share_prefill=False)
    arguments = grpo_arguments(fast, output_dir="unused")
    assert arguments["torch_compile"] is True
    # TRL builds only the reference from model_init_kwargs (the policy is passed built).
    assert arguments["model_init_kwargs"] == {"dtype": "bfloat16"}
    assert "model_init_kwargs" not in grpo_arguments(default, output_dir="unused")
    trl_args = GRPOConfig(**grpo_arguments(fast, output_dir="unused", report_to=[]))
    assert trl_args.torch_compile and trl_args.model_init_kwargs == {"dtype": "bfloat16"}


@pytest.mark.slow
def test_sft_then_grpo_in_both_paths_with_tensorboard_curves(tmp_path):
    torch.set_num_threads(1)
    sft = run_sft(
        sft_config(
            model="tiny",
            style="self_backtrack",
            n_train=64,
            batch_size=8,
            trainer={"optimizer_steps": 4, "logging_steps": 1, "save_steps": 2},
            workers=1,
            output_dir=str(tmp_path / "sft"),
        )
    )
    assert (sft / "model.safetensors").is_file() and (sft / "tokenizer.json").is_file()
    assert {"train/loss", "train/learning_rate"} <= set(tensorboard(tmp_path / "sft" / "tensorboard").Tags()["scalars"])
    # TRL turns gradient checkpointing on by default; the config's False must reach the trainer.
    sft_args = torch.load(tmp_path / "sft" / "checkpoint-4" / "training_args.bin", weights_only=False)
    assert sft_args.gradient_checkpointing is False
    # The step path also reuses each rollout for two clipped updates on its high-entropy tokens,
    # with a supervised anchor term.
    reuse = {"num_iterations": 2, "epsilon_high": 0.28, "top_entropy_quantile": 0.5, "sft_coef": 0.5}
    for interaction in ("completion", "step"):
        out = tmp_path / f"grpo_{interaction}"
        final = run_grpo(
            grpo_config(
                model=str(sft),
                output_dir=str(out),
                episode={"interaction": interaction, "max_new_tokens": 24, "env_steps": 4},
                n_prompts=16,
                prompts_per_step=2,
                num_generations=2,
                beta=0.01,
                trainer={
                    "optimizer_steps": 2,
                    "learning_rate": 3e-5,
                    "lr_scheduler": "constant",
                    "logging_steps": 1,
                    "save_steps": 100,
                },
                **(reuse if interaction == "step" else {}),
            )
        )
        assert (final / "model.safetensors").is_file()
        events = tensorboard(out / "tensorboard")
        scalars = set(events.Tags()["scalars"])
        # The dead-end labels' curves too.
        labels = ("dead_end_steps", "dead_ends_left", "backtracks_from_solvable", "distinct_states")
        for name in ("correct", "solved", "backtracks", "invalid_steps", *labels):
            assert f"train/rewards/countdown_{name}/mean" in scalars, (interaction, sorted(scalars))
        # The labels' curves hold real counts: at least the start is a distinct state of every episode.
        assert all(e.value >= 1 for e in events.Scalars("train/rewards/countdown_distinct_states/mean"))
        assert all(e.value >= 0 for e in events.Scalars("train/rewards/countdown_dead_end_steps/mean"))
        assert {"train/completions/mean_length", "train/kl", "train/entropy", "train/reward"} <= scalars
        # Rewards are logged where a rollout was generated: each step, or every other one with reuse.
        generated = [1] if interaction == "step" else [1, 2]
        assert [e.step for e in events.Scalars("train/reward")] == generated
        assert [e.step for e in events.Scalars("train/learning_rate")] == [1, 2]
        assert [e.value for e in events.Scalars("train/learning_rate")] == pytest.approx([3e-5, 3e-5])
        assert any("completions" in tag for tag in events.Tags()["tensors"])
        assert ("train/sft_loss" in scalars) == (interaction == "step")
        # Step-mode episodes end by the env, not by eos: their endings replace TRL's eos-based metrics.
        assert ("train/episodes/clipped_ratio" in scalars) == ("train/completions/clipped_ratio" not in scalars)
        assert ("train/episodes/step_limit_ratio" in scalars) == (interaction == "step")
    card = (tmp_path / "grpo_step" / "README.md").read_text()
    assert f"`{sft}` trained further on `step`-mode episodes, trained with GRPO" in card and "None" not in card


class _Trainer:
    """What a rollout function uses of TRL's trainer."""

    def __init__(self, model):
        self.model = model
        self.accelerator = SimpleNamespace(unwrap_model=lambda model, **_: model, num_processes=1, process_index=0)
        self.state = SimpleNamespace(global_step=0)
        self.metrics = {}

    def _log_metric(self, name, value):
        self.metrics.setdefault(name, []).append(value)


def _rollout(resample_rounds: int, reward_weights: dict[str, float]):
    from backtrack_gym.envs import make_task
    from backtrack_gym.train import build_model
    from backtrack_gym.train.grpo_rollout import StepRollout, prompt_dataset

    task = make_task("countdown", **TASK_CONFIG)
    tokenizer = build_tokenizer(task)
    config = grpo_config(
        episode={"interaction": "step", "max_new_tokens": 16, "env_steps": 2},
        n_prompts=2,
        first_index=10,
        num_generations=2,
        reward_weights=reward_weights,
        resample_rounds=resample_rounds,
    )
    dataset = prompt_dataset(task, config.n_prompts, first_index=config.first_index)
    rollout = StepRollout(config, tokenizer, task, dict(zip(dataset["prompt"], dataset["problem"], strict=True)))
    trainer = _Trainer(build_model("tiny", tokenizer, seed=0))
    prompts = [prompt for prompt in dataset["prompt"] for _ in range(config.num_generations)]
    return task, tokenizer, rollout, trainer, prompts


def test_dynamic_sampling_replaces_groups_that_score_alike_with_fresh_problems():
    from backtrack_gym.train.grpo_rollout import EPISODE_PROMPT_COLUMN, INFO_COLUMN, prompt_row

    # An untrained model solves nothing: under the solve reward every group scores alike.
    task, tokenizer, rollout, trainer, prompts = _rollout(2, {"correct": 1.0})
    output = rollout(prompts, trainer)
    assert not any(info["solved"] for info in output[INFO_COLUMN])
    # Each round replaced both groups; the second round's problems are the ones played.
    assert trainer.metrics["resampled_groups"] == [4.0]
    fresh = [prompt_row(task, index)["prompt"] for index in (14, 15)]  # 10 + 2 data set rows + 2 first replacements
    assert output[EPISODE_PROMPT_COLUMN] == [fresh[0], fresh[0], fresh[1], fresh[1]]
    assert [tokenizer.decode(ids) for ids in output["prompt_ids"]] == output[EPISODE_PROMPT_COLUMN]
    assert len(output["completion_ids"]) == len(output["env_mask"]) == len(output["logprobs"]) == 4


def test_dynamic_sampling_keeps_groups_whose_rewards_differ():
    _, _, rollout, _, prompts = _rollout(1, {"correct": 1.0, "format": 1.0})
    episode = SimpleNamespace(
        info={"steps": 2, "valid_steps": 2, "malformed_steps": 0, "illegal_steps": 0, "backtracks": 0, "solved": False}
    )
    malformed = SimpleNamespace(info={**episode.info, "valid_steps": 1, "malformed_steps": 1})
    assert rollout._uniform_groups(prompts, [episode, malformed, episode, episode]) == [2]
    with pytest.raises(ValueError, match="whole groups of 2 identical prompts"):
        rollout._uniform_groups(prompts[1:] + prompts[:1], [episode] * 4)


def test_step_rollout_logs_how_its_episodes_ended():
    info = {"steps": 1, "valid_steps": 1, "malformed_steps": 0, "illegal_steps": 0, "backtracks": 0}
    info |= {"solved": False, "progress": 0.0}

    def episode(stop_reason: str, truncated: bool, length: int) -> SimpleNamespace:
        tokens = {"completion_ids": [6] * length, "logprobs": [0.0] * length, "model_mask": [1] * length}
        return SimpleNamespace(stop_reason=stop_reason, truncated=truncated, info=info, prompt_ids=[5], **tokens)

    episodes = [
        episode("env", False, 6),  # the env ended it: solved or failed
        episode("env", True, 10),  # out of env steps
        episode("eos", False, 2),
        episode("max_tokens", False, 16),  # cut by the token budget
    ]
    _, _, rollout, trainer, prompts = _rollout(0, {"correct": 1.0})
    rollout._play = lambda model, problems, stream: episodes[: len(problems)]
    output = rollout(prompts, trainer)
    assert len(output["completion_ids"]) == 4
    assert trainer.metrics == {
        "episodes/clipped_ratio": [0.25],
        "episodes/step_limit_ratio": [0.25],
        "episodes/mean_terminated_length": [6.0],
    }
    from backtrack_gym.train.grpo_rollout import episode_metrics

    assert episode_metrics(episodes[3:]) == {"episodes/clipped_ratio": 1.0, "episodes/step_limit_ratio": 0.0}


def test_lm_decoding_uses_the_current_cache_api(recwarn):
    import gymnasium as gym

    from backtrack_gym.agents.lm import DecodeConfig, LMAgent
    from backtrack_gym.agents.search import HFExpander
    from backtrack_gym.envs import make_task
    from backtrack_gym.settings import SamplingConfig
    from backtrack_gym.train import build_model

    tokenizer = build_tokenizer(make_task("countdown", **TASK_CONFIG))
    model = build_model("tiny", tokenizer, seed=0)
    envs = [gym.make("backtrack_gym/CountDown-v0", interaction="step", **TASK_CONFIG) for _ in range(2)]
    episodes = LMAgent(model, tokenizer, DecodeConfig(seed=0), max_new_tokens=12).rollout(envs, seed=0)
    assert all(len(e.completion_ids) > 1 for e in episodes)  # decoded past the first token, through the cache
    prompt = "Target: 24 | Numbers: 3 4 8\n"
    [[continuation]] = HFExpander(model, tokenizer).expand(
        [prompt], 1, max_new_tokens=6, sampling=SamplingConfig(), seed=0
    )
    assert len(continuation.token_ids) > 1
    assert not [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)]


def test_sft_final_has_a_true_model_card_and_loads_with_auto_tokenizer(tmp_path, recwarn):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    output = tmp_path / "sft"
    config = sft_config(
        model="tiny", n_train=16, trainer={"optimizer_steps": 1}, batch_size=4, workers=1, output_dir=str(output)
    )
    final = run_sft(config)
    assert not [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)]
    text = "Target: 24 | Numbers: 3 4 8\n3 * 8 = 24\n<backtrack>\n"
    tokenizer = build_tokenizer(make_task_for_test())
    loaded = AutoTokenizer.from_pretrained(final)  # the standard loader, beside a Qwen2 config
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    trusted = AutoTokenizer.from_pretrained(final, trust_remote_code=True)  # the class declared beside it
    assert trusted(text)["input_ids"] == tokenizer(text)["input_ids"]
    AutoModelForCausalLM.from_pretrained(final)
    card = (output / "README.md").read_text()
    assert "None" not in card and "huggingface.co" not in card and "base_model" not in card
    assert "a `tiny` preset trained from scratch on `dfs` traces, trained with SFT" in card


def make_task_for_test():
    from backtrack_gym.envs import make_task

    return make_task("countdown", **TASK_CONFIG)


def _sft_command(output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "backtrack_gym", "sft", "--model", "tiny", "--n-train", "256", "--batch-size", "8",
        "--trainer.optimizer-steps", "12", "--trainer.save-steps", "3", "--trainer.save-total-limit", "10",
        "--trainer.logging-steps", "1", "--workers", "1", "--output-dir", str(output),
        "--task.config", json.dumps(TASK_CONFIG), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    output = tmp_path / "sft"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kill_after = random.Random(os.getpid()).choice([1, 2, 3])  # checkpoints written before the kill
    process = subprocess.Popen(_sft_command(output), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (output / f"checkpoint-{3 * kill_after}" / "trainer_state.json").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = {p.name for p in output.iterdir() if p.name.startswith("checkpoint-")}
    assert not (output / "final").exists()

    subprocess.run(_sft_command(output, "--trainer.resume", "true"), env=env, check=True, capture_output=True)
    assert written <= {p.name for p in output.iterdir()}, "a checkpoint of the killed run was lost"
    state = json.loads((output / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    assert (output / "final" / "model.safetensors").is_file()
    steps = [event.step for event in tensorboard(output / "tensorboard").Scalars("train/loss")]
    assert steps == list(range(1, 13)), steps  # the curve continues, each step once
    tokens = [event.value for event in tensorboard(output / "tensorboard").Scalars("train/num_tokens")]
    assert tokens == sorted(tokens) and len(set(tokens)) == 12, tokens  # the resumed run counts on from the checkpoint

    # Killed after its last checkpoint: a resume loads that checkpoint and trains no step more.
    weights = (output / "final" / "model.safetensors").read_bytes()
    result = subprocess.run(_sft_command(output, "--trainer.resume", "true"), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint-12 is the last step's: loading it" in result.stdout
    assert not (output / "checkpoint-13").exists()
    from safetensors.torch import load

    final = load((output / "final" / "model.safetensors").read_bytes())
    assert all(torch.equal(final[k], v) for k, v in load(weights).items())


@pytest.mark.slow
def test_sft_runs_under_accelerate_with_two_cpu_processes(tmp_path):
    output = tmp_path / "sft"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--module", "backtrack_gym",
        *_sft_command(output)[3:], "--trainer.optimizer-steps", "4",
    ]  # fmt: skip
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (output / "final" / "model.safetensors").is_file()
    # Only the main process writes TensorBoard events (another's restart marker would hide the curve).
    assert len(list((output / "tensorboard").iterdir())) == 1


def _untrained_model(path: Path) -> tuple[Path, object]:
    """A freshly initialised tiny model saved with its tokenizer, as a GRPO starting point."""
    from backtrack_gym.envs import make_task
    from backtrack_gym.train import build_model

    tokenizer = build_tokenizer(make_task("countdown", **TASK_CONFIG))
    build_model("tiny", tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer


@pytest.mark.slow
def test_step_grpo_with_dynamic_sampling_and_anchor_runs_under_accelerate_with_two_cpu_processes(tmp_path):
    start, _ = _untrained_model(tmp_path / "start")
    output = tmp_path / "grpo"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--module", "backtrack_gym", "grpo",
        "--model", str(start), "--output-dir", str(output), "--task.config", json.dumps(TASK_CONFIG),
        "--episode.interaction", "step", "--reward-weights", json.dumps({"correct": 1.0}), "--resample-rounds", "1",
        "--n-prompts", "8", "--trainer.optimizer-steps", "2", "--prompts-per-step", "2", "--num-generations", "2",
        "--episode.max-new-tokens", "16", "--episode.env-steps", "2", "--trainer.logging-steps", "1",
        "--trainer.save-steps", "2",
        "--sft-coef", "0.5", "--sft-batch-size", "4",
    ]  # fmt: skip
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (output / "final" / "model.safetensors").is_file()
    # The untrained model solves nothing, so each process replaces both of its groups every step.
    resampled = tensorboard(output / "tensorboard").Scalars("train/resampled_groups")
    assert [(e.step, e.value) for e in resampled] == [(1, 2.0), (2, 2.0)]
    assert len(tensorboard(output / "tensorboard").Scalars("train/sft_loss")) == 2


def test_sft_anchor_batches_are_masked_oracle_traces_drawn_per_step():
    from backtrack_gym.envs import make_task
    from backtrack_gym.train.grpo import SFTAnchor
    from backtrack_gym.train.sft import IGNORE

    task = make_task("countdown", **TASK_CONFIG)
    tokenizer = build_tokenizer(task)
    anchor = SFTAnchor(grpo_config(episode={"interaction": "step"}, sft_batch_size=4), tokenizer, task)
    batch = anchor.batch(step=3, micro_step=0, process_index=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 4
    assert torch.equal(batch["input_ids"], anchor.batch(3, 0, 0)["input_ids"])  # a resumed run sees the same
    for other in (anchor.batch(4, 0, 0), anchor.batch(3, 1, 0), anchor.batch(3, 0, 1)):
        assert not torch.equal(batch["input_ids"], other["input_ids"])
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        text = tokenizer.decode(ids[labels != IGNORE])
        prompt = tokenizer.decode(ids[: int((labels != IGNORE).nonzero()[0])])
        assert prompt.startswith("Target: ") and " = " not in prompt
        assert text.endswith(tokenizer.eos_token) and " = " in text and "Numbers" not in text  # observations masked
    with pytest.raises(ValueError, match="unknown style"):
        SFTAnchor(grpo_config(sft_style="telepathy"), tokenizer, task)


def test_sft_anchor_moves_the_policy_where_grpo_has_no_gradient(tmp_path):
    from backtrack_gym.train import build_model

    torch.set_num_threads(1)
    start, tokenizer = _untrained_model(tmp_path / "start")
    weights = {}
    for coef in (0.0, 1.0):
        # An untrained model solves nothing: every advantage is 0, and without a KL term GRPO's loss is flat.
        final = run_grpo(
            grpo_config(
                model=str(start),
                output_dir=str(tmp_path / f"grpo_{coef}"),
                episode={"interaction": "step", "max_new_tokens": 16, "env_steps": 2},
                reward_weights={"correct": 1.0},
                n_prompts=4,
                prompts_per_step=2,
                num_generations=2,
                trainer={"optimizer_steps": 1, "learning_rate": 1e-3, "lr_scheduler": "constant", "logging_steps": 1},
                sft_coef=coef,
                sft_batch_size=4,
            )
        )
        weights[coef] = torch.cat([p.flatten() for p in build_model(str(final), tokenizer).parameters()])
    initial = torch.cat([p.flatten() for p in build_model(str(start), tokenizer).parameters()])
    assert torch.equal(weights[0.0], initial)
    assert not torch.equal(weights[1.0], initial)
    losses = tensorboard(tmp_path / "grpo_1.0" / "tensorboard").Scalars("train/sft_loss")
    assert len(losses) == 1 and 0 < losses[0].value < 10
