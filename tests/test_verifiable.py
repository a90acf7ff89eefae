import pytest

from backtrack_gym.envs import BACKTRACK, make_task
from backtrack_gym.rewards import replay_stats
from backtrack_gym.settings import EpisodeConfig, SamplingConfig, TaskConfig
from backtrack_gym.train.verifiable import VerifiableConfig, verifiable_rows

TASK = make_task("countdown", num_count=3, number_max=9, target_min=10, target_max=40)


def scripted_policy(config):
    """First answers: right for even items, a legal non-solving step for odd ones.
    Continuations after the backtrack line: a solution for items 1 mod 4, nothing otherwise."""
    problems = {TASK.prompt(p) + "\n": (i, p) for i, p in enumerate(TASK.generate(i) for i in range(config.n_problems))}

    def generate(texts):
        out = []
        for text in texts:
            prompt = text[: text.index("\n") + 1]
            index, problem = problems[prompt]
            solution = "\n".join(map(str, TASK.solve(problem, problem.numbers)))
            if config.backtrack_token not in text:
                wrong = next(s for s in TASK.legal_steps(problem, problem.numbers) if s.result != problem.target)
                out.append(solution if index % 2 == 0 else str(wrong))
            else:
                out.append(solution if index % 4 == 1 else "")
        return out

    return generate


@pytest.mark.parametrize("token", [BACKTRACK, "Wait, that's not right."])
def test_keeps_only_traces_verified_wrong_then_right(token):
    config = VerifiableConfig(n_problems=24, first_index=0, samples=1, backtrack_token=token)
    rows = verifiable_rows(TASK, config, scripted_policy(config))
    assert len(rows) == 6  # items 1, 5, 9, 13, 17, 21
    for row in rows:
        wrong, rest = row["completion"].split(token + "\n")
        assert not replay_stats(TASK, row["problem"], wrong, backtrack_token=token).solved
        full = replay_stats(TASK, row["problem"], row["completion"], backtrack_token=token)
        assert full.solved and full.backtracks == 1 and row["num_backtracks"] == 1
        assert rest and row["mask_spans"] == []


def test_mask_wrong_covers_the_wrong_answer():
    config = VerifiableConfig(n_problems=8, first_index=0, samples=1, mask_wrong=True)
    rows = verifiable_rows(TASK, config, scripted_policy(config))
    for row in rows:
        ((start, end),) = row["mask_spans"]
        assert start == 0 and row["completion"][end:].startswith(BACKTRACK)


def test_config_rejects_a_multiline_phrase():
    with pytest.raises(ValueError, match="one non-empty line"):
        VerifiableConfig(backtrack_token="Wait\nno").validate()


def test_config_composes_the_shared_settings_and_names_their_fields(tmp_path):
    config = VerifiableConfig()
    assert (config.task, config.sampling.temperature, config.episode.max_new_tokens) == (TaskConfig(), 1.0, 64)
    (tmp_path / "config.json").write_text("{}")
    model = str(tmp_path)
    bad = {
        "task.name": {"task": TaskConfig(name="chess")},
        "task.config": {"task": TaskConfig(config={"num_count": 1})},
        "sampling.temperature": {"sampling": SamplingConfig(temperature=0)},
        "episode.max_new_tokens": {"episode": EpisodeConfig(max_new_tokens=0)},
    }
    for field, change in bad.items():
        with pytest.raises(ValueError, match=field):
            VerifiableConfig(model=model, **change).validate()


def test_recipe_runs_end_to_end_with_a_model_and_mixes_rows(tmp_path):
    import datasets

    from backtrack_gym.train.data import build_sft_dataset, export
    from backtrack_gym.train.models import build_model
    from backtrack_gym.train.tokenizer import build_tokenizer
    from backtrack_gym.train.verifiable import run_verifiable

    tokenizer = build_tokenizer(TASK)
    build_model("tiny", tokenizer, seed=0).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    task_config = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}
    base = build_sft_dataset("countdown", "direct", 10, task_config=task_config)
    export(base, tmp_path / "sft", ["jsonl"])
    kept, paths = run_verifiable(
        VerifiableConfig(
            model=str(tmp_path / "model"),
            task=TaskConfig(config=task_config),
            n_problems=4,
            samples=2,
            episode=EpisodeConfig(max_new_tokens=8),
            mix_with=str(tmp_path / "sft.jsonl"),
            out=str(tmp_path / "mixed"),
        )
    )
    mixed = datasets.Dataset.from_parquet(str(tmp_path / "mixed.parquet"))
    assert len(mixed) == 10 + kept and {p.name for p in paths} == {"mixed.jsonl", "mixed.parquet"}
