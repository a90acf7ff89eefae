"""The command line refuses bad configs and models with a one-line usage error (exit 2) before any work."""

import socket

import pytest

from backtrack_gym import cli

MISSING_MODEL = "/no/such/backtrack_gym/model"

# (subcommand, flags, YAML of the --config file or None, the field the error must name)
BAD_CONFIGS = [
    ("play", ["--env-id", "Chess-v0"], None, "env_id"),
    ("play", ["--episodes", "0"], None, "episodes"),
    ("play", ["--episode.env-steps", "0"], None, "episode.env_steps"),
    ("play", ["--episode.max-new-tokens", "8"], None, "episode.max_new_tokens"),
    ("play", ["--agents", "oracle,human"], None, "agents"),
    ("play", ["--episode.interaction", "chat"], None, "episode.interaction"),
    ("data", [], "n: 2.7", "n"),
    ("data", [], "n: true", "n"),
    ("data", ["--n", "-5"], None, "n"),
    ("data", ["--task.name", "chess"], None, "task.name"),
    ("data", ["--styles", "dfs,nope"], None, "styles"),
    ("data", ["--formats", "csv"], None, "formats"),
    ("data", ["--split", "dev"], None, "split"),
    ("data", ["--task.config", "{num_count: 0}"], None, "task.config"),
    ("data", [], "task: {nmae: countdown}", "task: unknown fields"),
    ("sft", ["--trainer.weight-decay", "-5"], None, "trainer.weight_decay"),
    ("sft", ["--trainer.warmup-ratio", "7"], None, "trainer.warmup_ratio"),
    ("sft", ["--task.config", "{num_count: 0}"], None, "task.config"),
    ("sft", ["--task.config", "{target_min: 50, target_max: 10}"], None, "task.config"),
    ("sft", ["--task.config", "{bogus: 1}"], None, "task.config"),
    ("sft", ["--task.config", "{num_count: 2.7}"], None, "task.config"),
    ("sft", ["--task.name", "chess"], None, "task.name"),
    ("sft", ["--style", "nope"], None, "style"),
    ("sft", ["--task.name", "math", "--style", "dfs"], None, "style"),
    ("sft", ["--trainer.learning-rate", "nan"], None, "trainer.learning_rate"),
    ("sft", ["--epochs", "inf"], None, "epochs"),
    ("sft", ["--seed", "-1"], None, "seed"),
    ("sft", ["--episode.interaction", "chat"], None, "episode.interaction"),
    ("sft", ["--model", MISSING_MODEL], None, "model"),
    ("sft", ["--model", "runs/sft/typo/final"], None, "model"),
    ("grpo", ["--beta", "-1"], None, "beta"),
    ("grpo", ["--trainer.save-steps", "0"], None, "trainer.save_steps"),
    ("grpo", ["--trainer.optimizer-steps", "0"], None, "trainer.optimizer_steps"),
    ("grpo", ["--sampling.temperature", "-1"], None, "sampling.temperature"),
    ("grpo", ["--sampling.top-p", "1.5"], None, "sampling.top_p"),
    ("grpo", ["--loss-type", "nope"], None, "loss_type"),
    ("grpo", ["--trainer.lr-scheduler", "nope"], None, "trainer.lr_scheduler"),
    ("grpo", ["--trainer.learning-rate", "nan"], None, "trainer.learning_rate"),
    ("grpo", ["--task.name", "chess"], None, "task.name"),
    ("grpo", ["--sft-style", "nope"], None, "sft_style"),
    ("grpo", ["--episode.max-new-tokens", "0"], None, "episode.max_new_tokens"),
    ("grpo", ["--reward-weights", "{solved: 1}"], None, "reward_weights"),
    ("grpo", ["--reward-weights", "{correct: yes}"], None, "reward_weights.correct"),
    ("grpo", ["--model", MISSING_MODEL], None, "model"),
    ("eval", ["--sampling.temperature", "-1"], None, "sampling.temperature"),
    ("eval", ["--task.name", "chess"], None, "task.name"),
    ("eval", ["--task.config", "{num_count: 0}"], None, "task.config"),
    ("eval", ["--methods", "beam"], None, "methods"),
    ("eval", ["--split", "dev"], None, "split"),
    ("eval", ["--episode.interaction", "chat"], None, "episode.interaction"),
    ("eval", ["--episode.max-new-tokens", "0"], None, "episode.max_new_tokens"),
    ("run", ["--grpo.beta", "-1"], None, "grpo.beta"),
    ("run", ["--grpo.trainer.learning-rate", "nan"], None, "grpo.trainer.learning_rate"),
    ("run", ["--sft.epochs", "inf"], None, "sft.epochs"),
    ("run", ["--sft.n-train", "0"], None, "sft.n_train"),
    ("run", ["--eval.n", "0"], None, "eval.n"),
    ("run", ["--arms", "{direct: {sft: {style: nope}}}"], None, "arms.direct: sft.style"),
    ("run", ["--eval.sampling.temperature", "-1"], None, "eval.sampling.temperature"),
    ("run", ["--task.config", "{bogus: 1}"], None, "task.config"),
    ("experiment", ["--plot", "nope"], None, "plot"),
    ("experiment", [], "arms: {a: {sft: {style: dfs, n_train: 2.7}}}", "arms.a.sft.n_train"),
    ("experiment", [], "arms: {a: {sft: {style: dfs}, eval: {methods: [beam]}}}", "arms.a: eval.methods"),
    ("experiment", [], "arms: {a: {sft: {style: nope}}}", "arms.a: sft.style"),
    ("experiment", [], "arms: {a: {style: dfs}}", "arms.a: unknown sections"),
    ("experiment", ["--grpo.trainer.optimizer-steps", "2", "--grpo.sampling.temperature", "0"], None, "grpo.sampling"),
    ("experiment", ["--name", "../escape"], None, "name"),
    ("verifiable", ["--samples", "0"], None, "samples"),
    ("verifiable", ["--sampling.temperature", "inf"], None, "sampling.temperature"),
    ("verifiable", ["--mix-with", "no_such_file.jsonl"], None, "mix_with"),
    ("verifiable", ["--task.name", "chess"], None, "task.name"),
    ("verifiable", ["--model", MISSING_MODEL], None, "model"),
]


def _forbid_work(monkeypatch, tmp_path):
    """Run in an empty directory; any subcommand's work function fails the test."""
    monkeypatch.chdir(tmp_path)

    def no_work(config):
        raise AssertionError(f"work started with {config}")

    for name, (config_class, _, defaults) in cli.COMMANDS.items():
        monkeypatch.setitem(cli.COMMANDS, name, (config_class, no_work, defaults))


def _usage_error(capsys, argv):
    """The exit status and the stderr lines of ``main(argv)``."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "command, flags, yaml_text, field", BAD_CONFIGS, ids=[f"{c[0]} {' '.join(c[1]) or c[2]}" for c in BAD_CONFIGS]
)
def test_bad_config_is_a_one_line_usage_error_before_any_work(
    command, flags, yaml_text, field, capsys, monkeypatch, tmp_path_factory
):
    workdir = tmp_path_factory.mktemp("work")
    _forbid_work(monkeypatch, workdir)
    argv = [command, *flags]
    if yaml_text is not None:
        path = tmp_path_factory.mktemp("yaml") / "config.yaml"
        path.write_text(yaml_text + "\n")
        argv += ["--config", str(path)]
    code, lines = _usage_error(capsys, argv)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"backtrack-gym {command}: error: {field}"), lines[0]
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("argv", [["eval", "--model", MISSING_MODEL], ["eval"], ["eval", "--model", "runs/grpo/final"]])
def test_eval_of_a_missing_model_is_a_usage_error_without_the_hub(argv, capsys, monkeypatch, tmp_path):
    """A name that is neither a directory nor a hub id never reaches the network."""

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)
    code, lines = _usage_error(capsys, argv)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("backtrack-gym eval: error: model: no such directory"), lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "sft", "grpo", "verifiable"])
def test_a_hub_id_the_hub_cannot_provide_is_a_usage_error(command, capsys, monkeypatch, tmp_path):
    """A name of the hub's form is tried there; offline that is one clear line, not a traceback."""
    import huggingface_hub.constants

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)
    code, lines = _usage_error(capsys, [command, "--model", "no-such-org/no-such-model"])
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"backtrack-gym {command}: error: model: 'no-such-org/no-such-model' is no local directory "
        "and the hub could not provide it (We couldn't connect to"
    ), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_model_sources_are_told_apart_on_the_local_file_system(tmp_path):
    from backtrack_gym.train.models import ModelNotFoundError, check_model_source

    check_model_source("tiny", presets=True)
    check_model_source("Qwen/Qwen2.5-0.5B")  # a hub id: left to the hub
    with pytest.raises(ModelNotFoundError, match="model: no such directory '/.*/tiny'"):
        check_model_source(str(tmp_path / "tiny"), presets=True)
    with pytest.raises(ModelNotFoundError, match=r"it takes a preset \(tiny, 1M, .*\), a model directory or a hub id"):
        check_model_source("runs/sft/final", presets=True)
    with pytest.raises(ModelNotFoundError, match="holds no saved model"):
        check_model_source(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    check_model_source(str(tmp_path))


def test_grpo_loss_types_are_the_losses_trl_computes():
    import inspect

    from trl import GRPOTrainer

    from backtrack_gym.train.grpo_config import LOSS_TYPES

    source = inspect.getsource(GRPOTrainer)
    assert all(f'"{loss}"' in source for loss in LOSS_TYPES)


def test_grpo_schedules_are_transformers_schedules():
    from transformers.trainer_utils import SchedulerType

    from backtrack_gym.train.common import LR_SCHEDULERS

    assert set(LR_SCHEDULERS) <= {schedule.value for schedule in SchedulerType}


def test_play_takes_short_env_ids_and_the_envs_own_step_budget(capsys):
    args = ["play", "--env-id", "Sudoku-v0", "--episodes", "1", "--agents", "oracle", "--episode.backtrack", "true"]
    assert cli.main(args) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()[1:]
    columns = header.split()
    assert len(rows) == 2  # step and completion
    for row in rows:
        assert float(row.split()[columns.index("solve_rate")]) == 1.0
