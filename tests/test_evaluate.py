"""Estimators, FLOP accounting, budget curves and the experiment runner, on hand-computed cases and a tiny model."""

import dataclasses
import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backtrack_gym.train.compute import DecoderShape
from backtrack_gym.train.estimators import maj_at_k, pass_at_k

torch = pytest.importorskip("torch")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from backtrack_gym.cli import main  # noqa: E402
from backtrack_gym.config import build_config  # noqa: E402
from backtrack_gym.envs import make_task  # noqa: E402
from backtrack_gym.envs.core import TextEnv, play_completion  # noqa: E402
from backtrack_gym.settings import EpisodeConfig, TaskConfig  # noqa: E402
from backtrack_gym.train.evaluate import EvalConfig, _Evaluator, answer_key, distinct_problems, evaluate  # noqa: E402
from backtrack_gym.train.experiment import ExperimentConfig, run_experiment  # noqa: E402
from backtrack_gym.train.models import build_model, model_config  # noqa: E402
from backtrack_gym.train.report import accuracy_within, stage_table  # noqa: E402
from backtrack_gym.train.statistics import mean_interval  # noqa: E402
from backtrack_gym.train.tokenizer import build_tokenizer  # noqa: E402

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}


def eval_config(model, **values):
    """An EvalConfig on TASK_CONFIG's CountDown, from nested ``values`` as YAML would give them."""
    return build_config(EvalConfig, {"model": str(model), "task": {"config": TASK_CONFIG}, **values})


# --- estimators -----------------------------------------------------------------------


def test_pass_at_k_matches_hand_computed_cases():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share correct
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0  # only one wrong sample: any two include a correct one
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert pass_at_k(1000, 10, 500) == pytest.approx(1 - math.comb(990, 500) / math.comb(1000, 500))


@pytest.mark.parametrize("n, c, k", [(3, 1, 0), (3, 1, 4), (3, 4, 1), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_maj_at_k_votes_in_disjoint_groups_and_splits_ties():
    assert maj_at_k([("a", True), ("a", True), ("b", False)], 3) == 1.0
    assert maj_at_k([("a", False), ("b", True), ("a", False)], 3) == 0.0
    # groups (a, b) and (b, a): each a tie between one right and one wrong answer
    assert maj_at_k([("a", True), ("b", False), ("b", False), ("a", True)], 2) == 0.5
    # k=1 is the share correct; no answer (None) never wins
    assert maj_at_k([(None, False), ("a", True), ("b", False), ("a", True)], 1) == 0.5
    assert maj_at_k([(None, False), (None, False)], 2) == 0.0
    assert maj_at_k([(None, False), ("a", True)], 2) == 1.0
    # five samples, k=2: two groups, the fifth sample is left out
    assert maj_at_k([("a", True), ("a", True), ("b", False), ("b", False), ("a", True)], 2) == 0.5
    with pytest.raises(ValueError):
        maj_at_k([("a", True)], 2)


def test_maj_at_k_keys_an_answer_with_a_rejected_line_by_its_text():
    env = TextEnv(make_task("countdown", num_count=3), interaction="completion", backtrack=True)
    problem = {"numbers": [93, 81, 68], "target": 56}
    right = ["68 + 81 = 149\n149 - 93 = 56\n", "81 + 68 = 149\n149 - 93 = 56\n"]  # two texts, one state
    broken = ["93 + 81 = 12\n", "9 * 9 = 80\n", "68 - 1 = 67\n"]  # a wrong sum, numbers not on the board
    samples = []
    for text in right + broken:
        info = play_completion(env, problem, text).info
        samples.append((info, text))
    keys = [answer_key(info, text) for info, text in samples]
    assert keys[0] == keys[1] == '["56"]' and keys[2:] == broken
    # each broken answer leaves the board as it was: keyed by state they would outvote the solution 3 to 2
    by_state = [(json.dumps(info["state"], sort_keys=True), info["solved"]) for info, _ in samples]
    assert maj_at_k(by_state, 5) == 0.0
    assert maj_at_k([(key, info["solved"]) for key, (info, _) in zip(keys, samples, strict=True)], 5) == 1.0


# --- FLOPs ----------------------------------------------------------------------------


def test_flops_match_the_decoder_formula_by_hand():
    shape = DecoderShape(d_model=4, layers=2, d_kv=2, d_ff=8, vocab=10)
    assert shape.weight_macs_per_layer() == 2 * 16 + 2 * 4 * 2 + 3 * 4 * 8 == 144
    # one token over a context of 3: 2 layers x (144 + 2*4*3) MACs + the head 4*10, two FLOPs each
    assert shape.token_flops(3) == 2 * (2 * (144 + 24) + 40) == 752
    # 2 prompt tokens then 1 sampled: positions 1, 2, 3; logits only for the sampled one
    by_token = shape.token_flops(1, logits=False) + shape.token_flops(2, logits=False) + shape.token_flops(3)
    assert shape.sequence_flops(2, 1) == by_token == 2000


def test_decoder_shape_reads_a_hf_config():
    shape = DecoderShape.from_config(model_config("1M", 40))
    assert shape == DecoderShape(d_model=128, layers=4, d_kv=32, d_ff=512, vocab=40)


# --- evaluation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tokenizer(make_task("countdown", **TASK_CONFIG))
    build_model("tiny", tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _fake_episode(tokenizer, text: str, solved: bool):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return SimpleNamespace(prompt_ids=[0] * 5, completion_ids=ids, model_mask=[1] * len(ids), info={"solved": solved})


def test_sequential_budget_cuts_an_episode_at_complete_lines(tiny_model_dir):
    task = make_task("countdown", **TASK_CONFIG)
    problem = task.problem_from_dict({"numbers": [3, 4, 1], "target": 13})
    config = eval_config(tiny_model_dir, n=1)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = build_tokenizer(task)
    evaluator = _Evaluator(config, *config.as_trained(), model, tokenizer)
    text = "3 * 4 = 12\n12 + 1 = 13\n"
    episode = _fake_episode(tokenizer, text, solved=True)
    first_line = len("3 * 4 = 12\n")
    assert evaluator._cut(episode, problem, len(text))["solved"] is True
    assert evaluator._cut(episode, problem, len(text) - 1)["solved"] is False  # "12 + 1 = 1" is not written
    cut = evaluator._cut(episode, problem, first_line)
    assert cut["solved"] is False and cut["tokens"] == first_line
    assert cut["flops"] == evaluator.shape.sequence_flops(5, first_line)


def test_evaluate_every_method_writes_json_plot_and_tensorboard(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    config = eval_config(
        tiny_model_dir,
        n=3,
        methods=["greedy", "sample", "search"],
        samples=4,
        episode={"max_new_tokens": 16},
        search={"rounds": 1},
        search_expansions=[2, 4],
        output_dir=str(out),
        label="tiny",
    )
    report = evaluate(config)
    assert set(report["summary"]) == {"greedy", "sample", "search"}
    assert set(report["curves"]) == {"greedy", "sampled", "best_of_n", "maj_of_n", "search"}
    assert [p["n"] for p in report["curves"]["best_of_n"]] == [1, 2, 4]
    assert [p["budget"] for p in report["curves"]["greedy"]] == [8, 16]
    sample = report["summary"]["sample"]
    assert sample["episodes"] == 12 and 0 <= sample["pass@1"] <= sample["pass@4"] <= 1
    tokens = [p["tokens"] for p in report["curves"]["best_of_n"]]
    assert tokens == pytest.approx([tokens[0] * n for n in (1, 2, 4)])
    assert all(p["tokens"] <= 16 for p in report["curves"]["greedy"])
    problems = report["problems"]
    assert len(problems) == 3 and len(problems[0]["sample"]) == 4 and set(problems[0]["search"]) == {2, 4}
    # the greedy curve's last budget covers whole episodes: it is the greedy solve rate
    assert report["curves"]["greedy"][-1]["accuracy"] == report["summary"]["greedy"]["solve_rate"]
    saved = json.loads((out / "eval.json").read_text())
    assert saved["environment"]["packages"]["torch"] and saved["config"]["seed"] == 0  # what it was measured with
    assert saved["summary"] == json.loads(json.dumps(report["summary"]))
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert "tiny/best_of_n/accuracy_vs_tokens" in events.Tags()["scalars"]


def test_countdown_problems_are_the_same_in_any_order_and_its_split_is_counted():
    task = make_task("countdown", **TASK_CONFIG)
    one, other = (task.problem_from_dict({"numbers": numbers, "target": 13}) for numbers in ([3, 4, 1], [1, 4, 3]))
    assert task.problem_key(one) == task.problem_key(other)
    assert task.problem_key(one) != task.problem_key(task.problem_from_dict({"numbers": [3, 4, 1], "target": 12}))
    # the split's count is exact: scanning far past it finds just as many
    keys = {task.problem_key(task.generate(index, "test")) for index in range(3000)}
    assert task.split_size("test") == len(keys)
    assert make_task("countdown").split_size("test") is None  # four numbers of 1..99: not counted


def test_distinct_problems_skips_repeats_and_says_how_far_it_scanned(monkeypatch):
    task = make_task("countdown", **TASK_CONFIG)
    drawn = distinct_problems(task, "test", 40)
    keys = [task.problem_key(problem) for problem in drawn.problems]
    assert len(set(keys)) == len(keys) == 40
    assert drawn.scanned > 40  # the split repeats problems within its first items
    assert drawn.indices[0] == 0 and drawn.indices[-1] == drawn.scanned - 1
    assert [task.generate(index, "test") for index in drawn.indices] == drawn.problems
    # a split smaller than asked for: its every problem, found well before the scan limit
    every = distinct_problems(task, "test", 500)
    assert len(every.problems) == every.in_split == task.split_size("test") < 500
    assert every.scanned < every.scan_limit == 25_000
    # uncounted, the scan stops at its limit and the split holds at least what it found
    monkeypatch.setattr(task, "split_size", lambda split: None)
    capped = distinct_problems(task, "test", 500, scan_limit=300)
    assert capped.scanned == 300 and len(capped.problems) < 300 and capped.in_split is None


def test_an_evaluation_counts_each_distinct_problem_once_with_intervals_and_targets(tiny_model_dir, tmp_path):
    config = eval_config(tiny_model_dir, n=30, methods=["greedy", "sample"], samples=2, episode={"max_new_tokens": 8})
    report = evaluate(replace_output(config, tmp_path))
    problem_set = report["problem_set"]
    assert problem_set["distinct"] == problem_set["requested"] == 30 and problem_set["scanned"] > 30
    task = make_task("countdown", **TASK_CONFIG)
    assert problem_set["in_split"] == task.split_size("test")
    records = report["problems"]
    assert len({task.problem_key(task.problem_from_dict(r["problem"])) for r in records}) == 30
    assert all(task.generate(r["index"], "test") == task.problem_from_dict(r["problem"]) for r in records)
    # every rate and curve point carries the bootstrap interval of its per-problem outcomes
    greedy = report["summary"]["greedy"]
    solved = report["outcomes"]["summary"]["greedy"]["solve_rate"]
    assert solved == [float(r["greedy"]["solved"]) for r in records]
    assert tuple(greedy["intervals"]["solve_rate"].values()) == mean_interval(solved)
    sample = report["summary"]["sample"]
    labels = {"dead_end_steps", "dead_ends_left", "backtracks", "backtracks_from_solvable", "wrong_line", "recovered"}
    precision = {"backtrack_precision"} if sample["backtracks"] else set()
    precision |= {"recovery_rate"} if any(_wrong(e) for r in records for e in r["sample"]) else set()
    assert set(sample["intervals"]) == {"solve_rate", "pass@1", "pass@2", "maj@1", "maj@2"} | labels | precision
    # the dead-end labels' outcomes are each problem's mean over its episodes, as the episodes counted them
    dead_ends = report["outcomes"]["summary"]["sample"]["dead_end_steps"]
    assert dead_ends == [statistics.fmean(e["dead_end_steps"] for e in r["sample"]) for r in records]
    assert greedy["dead_end_steps"] == pytest.approx(statistics.fmean(r["greedy"]["dead_end_steps"] for r in records))
    for points in report["curves"].values():
        assert all(p["ci_low"] <= p["accuracy"] <= p["ci_high"] for p in points)
    # the breakdown by target: every problem once, the rates averaging to the whole
    breakdown = report["breakdown"]
    assert breakdown["by"] == "target"
    groups = breakdown["groups"]
    assert [g["target"] for g in groups] == sorted({r["problem"]["target"] for r in records})
    assert sum(g["problems"] for g in groups) == 30
    overall = sum(g["problems"] * g["greedy solve_rate"] for g in groups) / 30
    assert overall == pytest.approx(greedy["solve_rate"])
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["breakdown"] == json.loads(json.dumps(breakdown)) and saved["problem_set"] == problem_set


def replace_output(config, path):
    return dataclasses.replace(config, output_dir=str(path))


def test_eval_config_rejects_unknown_methods():
    with pytest.raises(ValueError, match="methods"):
        EvalConfig(methods=["beam"]).validate()
    with pytest.raises(ValueError, match="samples"):
        EvalConfig(samples=0).validate()
    with pytest.raises(ValueError, match="^search.frontier"):
        build_config(EvalConfig, {"search": {"frontier": "per_state"}}).validate()
    with pytest.raises(ValueError, match="^search.vote"):
        build_config(EvalConfig, {"search": {"vote": "majority"}}).validate()
    with pytest.raises(ValueError, match="^search.sampling.temperature"):
        build_config(EvalConfig, {"search": {"sampling": {"temperature": 0.0}}}).validate()


def test_cli_eval_prints_summaries_and_curves(tiny_model_dir, capsys):
    args = ["eval", "--model", str(tiny_model_dir), "--task.config", json.dumps(TASK_CONFIG), "--n", "2"]
    assert main([*args, "--methods", "greedy,sample", "--samples", "2", "--episode.max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    assert "pass@2" in captured.out and "best_of_n" in captured.out and "greedy" in captured.out
    # a progress bar per method on stderr: 2 greedy episodes, then 2 x 2 sampled ones
    assert "greedy: 100%" in captured.err and "2/2" in captured.err
    assert "sample: 100%" in captured.err and "4/4" in captured.err


def test_evaluate_shows_no_progress_unless_asked(tiny_model_dir, capsys):
    config = eval_config(tiny_model_dir, n=2, episode={"max_new_tokens": 8})
    evaluate(config)
    assert "greedy" not in capsys.readouterr().err
    evaluate(config, progress=True)
    assert "greedy: 100%" in capsys.readouterr().err


def _save_trained(tmp_path, config):
    """A tiny untrained model saved as a trainer saves its ``final/``, with ``config`` as its run config."""
    from backtrack_gym.train.common import save_final

    trainer = SimpleNamespace(
        is_world_process_zero=lambda: True, accelerator=SimpleNamespace(wait_for_everyone=lambda: None)
    )
    tokenizer = build_tokenizer(make_task("countdown", **TASK_CONFIG))
    return save_final(trainer, build_model("tiny", tokenizer, seed=0), tokenizer, tmp_path, config)


def test_eval_plays_a_model_as_it_was_trained_and_warns_when_told_otherwise(tmp_path, capsys):
    import warnings

    from backtrack_gym.train.grpo_config import GRPORunConfig

    episode = EpisodeConfig(interaction="step", backtrack=False, max_new_tokens=12, env_steps=3)
    trained = GRPORunConfig(task=TaskConfig(config=TASK_CONFIG), episode=episode)
    final = _save_trained(tmp_path / "grpo", trained)
    as_trained = {"task": {"name": "countdown", "config": TASK_CONFIG}, "episode": dataclasses.asdict(episode)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate(EvalConfig(model=str(final), n=2))
        set_alike = build_config(EvalConfig, {"model": str(final), "n": 1, "episode": {"interaction": "step"}})
        assert evaluate(set_alike)["settings"] == as_trained
    assert not [w for w in caught if "trained with" in str(w.message)]  # the same settings, set or not, never warn
    assert report["settings"] == as_trained
    assert report["summary"]["greedy"]["mean_tokens"] <= 12
    # a setting told otherwise is used, with a warning
    told = build_config(EvalConfig, {"model": str(final), "n": 1, "episode": {"interaction": "completion"}})
    with pytest.warns(UserWarning, match="episode.interaction='completion', but it was trained with 'step'"):
        report = evaluate(told)
    assert report["settings"]["episode"] == {**as_trained["episode"], "interaction": "completion"}
    told = build_config(EvalConfig, {"model": str(final), "n": 1, "episode": {"env_steps": 9}})
    with pytest.warns(UserWarning, match="episode.env_steps=9, but it was trained with 3"):
        evaluate(told)
    # the CLI says what it played
    assert main(["eval", "--model", str(final), "--n", "1"]) == 0
    assert "interaction step" in capsys.readouterr().out


def test_eval_takes_an_sft_models_task_and_episode(tmp_path):
    from backtrack_gym.train.sft import SFTRunConfig

    episode = EpisodeConfig(interaction="step", max_new_tokens=32)
    final = _save_trained(tmp_path / "sft", SFTRunConfig(task=TaskConfig(config=TASK_CONFIG), episode=episode))
    task, played = EvalConfig(model=str(final)).as_trained()
    assert (task.config, played) == (TASK_CONFIG, episode)


def test_eval_reads_a_run_config_saved_with_flat_fields(tmp_path):
    """A model saved before the settings were nested is still played as it was trained."""
    final = _save_trained(tmp_path / "grpo", EpisodeConfig())
    (final / "EpisodeConfig.json").unlink()
    flat = {"task": "countdown", "task_config": TASK_CONFIG, "interaction": "step", "max_completion_length": 12}
    (final / "GRPORunConfig.json").write_text(json.dumps({**flat, "backtrack": False, "max_env_steps": 3}))
    task, played = EvalConfig(model=str(final)).as_trained()
    assert task == TaskConfig(config=TASK_CONFIG)
    assert played == EpisodeConfig(interaction="step", backtrack=False, env_steps=3, max_new_tokens=12)


# --- experiments ----------------------------------------------------------------------


def test_accuracy_within_takes_the_best_affordable_point():
    points = [{"flops": 10, "accuracy": 0.2}, {"flops": 20, "accuracy": 0.5}, {"flops": 40, "accuracy": 0.4}]
    assert accuracy_within(points, 5) is None
    assert accuracy_within(points, 25) == 0.5
    assert accuracy_within(points, 40) == 0.5


def test_experiment_seeds_come_from_a_flag_and_must_differ():
    import argparse

    from backtrack_gym.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ExperimentConfig)
    config = config_from_args(ExperimentConfig, parser.parse_args(["--seeds", "0,1,2", "--output-dir", "runs/x"]))
    assert config.seeds == [0, 1, 2]
    assert (config.for_seed(1).seed, config.for_seed(1).seeds, config.for_seed(1).output_dir) == (
        1,
        [],
        "runs/x/seed-1",
    )
    with pytest.raises(ValueError, match="seeds must differ"):
        config_from_args(ExperimentConfig, parser.parse_args(["--seeds", "1,1"]))
    with pytest.raises(ValueError, match="seeds must be non-negative"):
        config_from_args(ExperimentConfig, parser.parse_args(["--seeds", "-1"]))


def test_experiment_config_rejects_bad_arms():
    with pytest.raises(ValueError, match="arms.a: unknown sections"):
        build_config(ExperimentConfig, {"arms": {"a": {"style": "dfs"}}}).validate()
    with pytest.raises(ValueError, match="arms.a.sft: unknown fields"):
        build_config(ExperimentConfig, {"arms": {"a": {"sft": {"style": "dfs", "lr": 1}}}}).validate()
    with pytest.raises(ValueError, match="arms.a: eval.methods"):
        build_config(ExperimentConfig, {"arms": {"a": {"eval": {"methods": ["beam"]}}}}).validate()


def test_an_arm_overrides_its_sections_field_by_field():
    config = build_config(
        ExperimentConfig,
        {
            "sft": {"n_train": 100, "trainer": {"learning_rate": 0.01}},
            "grpo": {"trainer": {"optimizer_steps": 5}},
            "arms": {"a": {"sft": {"style": "dfs", "trainer": {"warmup_ratio": 0.2}}}, "b": {"grpo": {"beta": 0.1}}},
        },
    ).validate()
    a, b = config.sft_config("a"), config.sft_config("b")
    assert (a.style, a.n_train, a.trainer.learning_rate, a.trainer.warmup_ratio) == ("dfs", 100, 0.01, 0.2)
    assert (b.style, b.trainer.warmup_ratio) == ("dfs", 0.05)  # the section default
    assert (config.grpo_config("a", "m").beta, config.grpo_config("b", "m").beta) == (0.0, 0.1)
    assert config.grpo_config("b", "m").first_index == 100  # past the SFT data


@pytest.mark.slow
def test_experiment_trains_evaluates_and_resumes(tmp_path):
    torch.set_num_threads(1)
    values = {
        "name": "tiny",
        "task": {"config": TASK_CONFIG},
        "arms": {
            "direct": {"sft": {"style": "direct"}, "grpo": {"trainer": {"optimizer_steps": 0}}},
            "self_backtrack": {"sft": {"style": "self_backtrack"}, "eval": {"methods": ["greedy", "search"]}},
        },
        "model": "tiny",
        "output_dir": str(tmp_path),
        "episode": {"max_new_tokens": 16},
        "sft": {"n_train": 64, "batch_size": 16},
        "grpo": {"trainer": {"optimizer_steps": 2}, "num_generations": 2, "prompts_per_step": 2},
        "eval": {"n": 3, "samples": 2, "search_expansions": [2], "search": {"rounds": 1}},
    }
    config = build_config(ExperimentConfig, values)
    results = run_experiment(config)
    assert set(results["arms"]["direct"]) == {"sft"}
    assert set(results["arms"]["self_backtrack"]) == {"sft", "grpo"}
    assert "best_of_n" in results["arms"]["direct"]["sft"]["curves"]
    assert "search" in results["arms"]["self_backtrack"]["grpo"]["curves"]
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"tiny.{suffix}").is_file()
    assert "self_backtrack+GRPO" in (tmp_path / "tiny.md").read_text()
    # A second run reuses every stage: no training, no new evaluation.
    stamps = {path: path.stat().st_mtime_ns for path in Path(tmp_path).rglob("*") if path.is_file()}
    again = run_experiment(config)
    assert again["arms"] == json.loads(json.dumps(results["arms"]))
    for path, stamp in stamps.items():
        if path.suffix not in (".json", ".md", ".png") or path.parent == tmp_path:
            continue
        assert path.stat().st_mtime_ns == stamp, path
    # A stage trained under other settings is never reused or overwritten.
    values["arms"]["direct"]["sft"]["trace_options"] = {"max_lines": 3}
    with pytest.raises(ValueError, match="other settings"):
        run_experiment(build_config(ExperimentConfig, values))


def test_an_experiment_over_seeds_gives_each_seed_and_their_mean_with_two_level_intervals(tmp_path):
    import numpy as np

    torch.set_num_threads(1)
    values = {
        "name": "tiny",
        "task": {"config": TASK_CONFIG},
        "arms": {"direct": {"sft": {"style": "direct"}}},
        "model": "tiny",
        "output_dir": str(tmp_path),
        "seeds": [0, 1],
        "episode": {"max_new_tokens": 16},
        "sft": {"n_train": 32, "batch_size": 16},
        "grpo": {"trainer": {"optimizer_steps": 1}, "num_generations": 2, "prompts_per_step": 2},
        "eval": {"n": 12, "samples": 2},
    }
    results = run_experiment(build_config(ExperimentConfig, values))
    assert results["seeds"] == [0, 1]
    for seed in (0, 1):  # each seed is a whole experiment in its own directory
        assert json.loads((tmp_path / f"seed-{seed}" / "tiny.json").read_text())["config"]["seed"] == seed
        assert (tmp_path / f"seed-{seed}" / "direct" / "grpo" / "stage.json").is_file()
    sft = results["arms"]["direct"]["sft"]
    runs = [sft["seeds"][seed]["summary"] for seed in ("0", "1")]
    assert sft["summary"]["greedy"]["solve_rate"] == pytest.approx(np.mean([r["greedy"]["solve_rate"] for r in runs]))
    # the mean's interval: seeds, then the same problems, resampled from both seeds' outcomes
    outcomes = [
        json.loads((tmp_path / f"seed-{seed}" / "direct" / "sft_eval-greedy-sample" / "eval.json").read_text())[
            "outcomes"
        ]
        for seed in (0, 1)
    ]
    stacked = np.array([o["summary"]["sample"]["pass@2"] for o in outcomes])
    assert tuple(sft["summary"]["sample"]["intervals"]["pass@2"].values()) == mean_interval(stacked)
    curve = np.array([o["curves"]["greedy"][-1] for o in outcomes])
    assert (sft["curves"]["greedy"][-1]["ci_low"], sft["curves"]["greedy"][-1]["ci_high"]) == mean_interval(curve)
    assert sum(group["problems"] for group in sft["breakdown"]["groups"]) == sft["problem_set"]["distinct"] == 12
    # GRPO against SFT: paired within each seed on the same problems, each seed's difference beside the mean
    (greedy,) = [d for d in results["differences"] if d["method"] == "greedy" and d["stat"] == "solve_rate"]
    assert (greedy["from"], greedy["to"], greedy["paired"], set(greedy["seeds"])) == (
        "direct",
        "direct+GRPO",
        True,
        {"0", "1"},
    )
    assert greedy["difference"] == pytest.approx(np.mean(list(greedy["seeds"].values())))
    assert greedy["ci_low"] <= greedy["difference"] <= greedy["ci_high"]
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["arms"] == json.loads(json.dumps(results["arms"]))
    markdown = (tmp_path / "tiny.md").read_text()
    assert "Mean over seeds 0, 1" in markdown and "Each seed" in markdown and "Solve rate per target" in markdown
    assert "| direct | direct+GRPO | greedy | solve_rate |" in markdown
    table = stage_table(results, "direct")
    assert [(row["seed"], row["stage"]) for row in table] == [
        ("0", "sft"),
        ("1", "sft"),
        ("0", "grpo"),
        ("1", "grpo"),
        ("mean", "sft"),
        ("mean", "grpo"),
    ]
    assert table[-1]["solve_rate"].count("[") == 1


def test_main_job_hands_its_grpo_and_env_settings_to_each_stage():
    from backtrack_gym.config import load_yaml
    from backtrack_gym.train.experiment import MAIN_CONFIG

    weights = {"correct": 1.0, "validity": 0.3}
    values = load_yaml(MAIN_CONFIG)
    values["grpo"] = {"sampling": {"temperature": 0.5}, "trainer": {"warmup_ratio": 0.2}, "beta": 0.01}
    values["grpo"].update(reward_weights=weights)
    values["episode"]["env_steps"] = 3
    experiment = build_config(ExperimentConfig, values).validate()
    grpo = experiment.grpo_config("direct", "model")
    assert (grpo.sampling.temperature, grpo.trainer.warmup_ratio, grpo.beta) == (0.5, 0.2, 0.01)
    assert (grpo.episode.step_budget, grpo.reward_weights) == (3, weights)
    values["grpo"]["reward_weights"] = {"solved": 1.0}
    with pytest.raises(ValueError, match="unknown reward terms"):
        build_config(ExperimentConfig, values).validate()
    assert grpo.episode.interaction == experiment.sft_config("direct").episode.interaction == "step"
    evaluation = experiment.eval_config("direct", "model", "sft_eval")
    assert evaluation.as_trained(warn=False)[1].step_budget == 3
    # Both stages are scored greedily and by sampling at the main job's evaluation temperature.
    values["eval"] = {"samples": 4, "sampling": {"temperature": 0.9}}
    sampled = build_config(ExperimentConfig, values).eval_config("direct", "model", "grpo_eval")
    assert evaluation.methods == sampled.methods == ["greedy", "sample"]
    assert (sampled.samples, sampled.sampling.temperature) == (4, 0.9)


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/experiments/**/*.yaml")), ids=str)
def test_shipped_experiment_configs_load_and_validate(path):
    import argparse

    from backtrack_gym.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ExperimentConfig)
    config = config_from_args(ExperimentConfig, parser.parse_args(["--config", str(path)]))
    assert config.validate().name == path.stem


@pytest.mark.slow
@pytest.mark.parametrize("interaction", ["step", "completion"])
def test_main_job_cli_prints_the_table_and_writes_results_and_plots(tmp_path, capsys, interaction):
    torch.set_num_threads(1)
    args = ["run", "--model", "tiny", "--task.config", json.dumps(TASK_CONFIG), "--output-dir", str(tmp_path)]
    args += ["--episode.interaction", interaction, "--sft.n-train", "64", "--grpo.trainer.optimizer-steps", "2"]
    args += ["--grpo.num-generations", "2", "--eval.samples", "2"]
    assert main([*args, "--eval.n", "4"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "solve_rate" in out and "sft" in out and "grpo" in out and "main.png" in out
    # each evaluation stage shows its progress: 4 greedy episodes, then 4 x 2 sampled ones
    assert "direct+GRPO greedy: 100%" in captured.err and "direct+GRPO sample: 100%" in captured.err
    assert "4/4" in captured.err and "8/8" in captured.err
    assert "sampled" in out and "pass@2" in out
    results = json.loads((tmp_path / "main.json").read_text())
    for stage in ("sft", "grpo"):
        summary = results["arms"]["direct"][stage]["summary"]
        assert summary["greedy"]["episodes"] == 4
        assert summary["sample"]["episodes"] == 8 and 0 <= summary["sample"]["pass@1"] <= summary["sample"]["pass@2"]
        assert (tmp_path / "direct" / stage / "final" / "model.safetensors").is_file()
        assert (tmp_path / "direct" / stage / "stage.json").is_file()
    assert (tmp_path / "main.png").is_file()
    # The SFT data and both evaluations follow the interaction.
    sft_settings = json.loads((tmp_path / "direct" / "sft" / "stage.json").read_text())["config"]
    eval_settings = json.loads((tmp_path / "direct" / "grpo_eval-greedy-sample" / "eval.json").read_text())["config"]
    assert sft_settings["episode"]["interaction"] == eval_settings["episode"]["interaction"] == interaction
    # A finished run prints its table again without training.
    assert main([*args, "--eval.n", "4"]) == 0
    assert "grpo" in capsys.readouterr().out


def _wrong(episode):
    return episode["invalid_steps"] > 0 or episode["backtracks"] > 0


def test_recovery_rate_is_the_solved_share_of_the_episodes_with_a_wrong_line(tiny_model_dir, tmp_path):
    # Sampled at temperature 1, the untrained model writes whole lines, most of them wrong.
    config = eval_config(tiny_model_dir, n=30, methods=["sample"], samples=2, episode={"max_new_tokens": 64})
    report = evaluate(replace_output(config, tmp_path))
    episodes = [e for r in report["problems"] for e in r["sample"]]
    wrong = [e for e in episodes if _wrong(e)]
    assert wrong
    assert report["summary"]["sample"]["recovery_rate"] == pytest.approx(sum(e["solved"] for e in wrong) / len(wrong))
    outcomes = report["outcomes"]["summary"]["sample"]
    assert outcomes["wrong_line"] == [statistics.fmean(map(_wrong, r["sample"])) for r in report["problems"]]


def test_backtrack_precision_is_pooled_over_the_backtracks_with_a_ratio_interval():
    from backtrack_gym.train.evaluate import add_intervals
    from backtrack_gym.train.statistics import ratio_interval

    rng = np.random.default_rng(5)
    backtracks = rng.integers(0, 4, size=60).astype(float)
    left = rng.binomial(backtracks.astype(int), 0.4).astype(float)
    outcomes = {"summary": {"greedy": {"dead_ends_left": list(left), "backtracks": list(backtracks)}}, "curves": {}}
    summary = {"greedy": {}}
    add_intervals(summary, {}, outcomes)
    greedy = summary["greedy"]
    assert greedy["backtrack_precision"] == pytest.approx(left.sum() / backtracks.sum())
    interval = greedy["intervals"]["backtrack_precision"]
    assert (interval["ci_low"], interval["ci_high"]) == ratio_interval(left, backtracks)
    assert interval["ci_low"] < greedy["backtrack_precision"] < interval["ci_high"]
    # Without a backtrack there is no precision to measure.
    outcomes["summary"]["greedy"] = {"dead_ends_left": [0.0] * 5, "backtracks": [0.0] * 5}
    add_intervals(summary, {}, outcomes)
    assert summary["greedy"]["backtrack_precision"] is None
    assert "backtrack_precision" not in summary["greedy"]["intervals"]
