import json
import math

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")

from replay import replay_batch  # noqa: E402

import backtrack_gym  # noqa: E402, F401  (registers the envs)
from backtrack_gym.agents import LMAgent  # noqa: E402
from backtrack_gym.agents.replay import backspace_slots  # noqa: E402
from backtrack_gym.config import build_config  # noqa: E402
from backtrack_gym.envs import make_task  # noqa: E402
from backtrack_gym.envs.core import BKSP  # noqa: E402
from backtrack_gym.train import build_model, build_tokenizer  # noqa: E402
from backtrack_gym.train.backspace import (  # noqa: E402
    IGNORE,
    BackspaceCollator,
    BackspaceConfig,
    SFTLossConfig,
    augment_dataset,
    augment_tokens,
    sequencematch_chi2_terms,
    transitions,
    wrong_token_candidates,
)
from backtrack_gym.train.data import trace_row  # noqa: E402
from backtrack_gym.train.sft import SFTRunConfig, run_sft, tokenize_row  # noqa: E402

TASK_CONFIG = {"num_count": 3, "number_max": 9, "target_min": 10, "target_max": 40}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return make_task("countdown", **TASK_CONFIG)


@pytest.fixture(scope="module")
def tokenizer(task):
    return build_tokenizer(task)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model("tiny", tokenizer, seed=0).eval()


def tokenized_rows(task, tokenizer, n, style="dfs"):
    from datasets import Dataset

    rows = [trace_row(task, style, "train", 0, {}, "completion", i) for i in range(n)]
    encoded = [tokenize_row(tokenizer, r["prompt"], r["completion"], r["mask_spans"]) for r in rows]
    return rows, Dataset.from_list(encoded)


def strip_insertions(ids, labels, bksp):
    """The sequence with every (wrong token, <bksp>) pair removed."""
    out_ids, out_labels, k = [], [], 0
    while k < len(ids):
        if k + 1 < len(ids) and ids[k + 1] == bksp:
            k += 2
            continue
        out_ids.append(ids[k])
        out_labels.append(labels[k])
        k += 1
    return out_ids, out_labels


def test_augmentation_rate_labels_and_determinism(task, tokenizer):
    bksp = tokenizer.convert_tokens_to_ids(BKSP)
    _, data = tokenized_rows(task, tokenizer, 200)
    rate = 0.1
    config = BackspaceConfig(rate=rate).validate()
    augmented, inserted, eligible = augment_dataset(data, tokenizer, config, seed=3, interaction="completion")
    # The share of augmented positions is the rate, within 4 binomial standard deviations.
    assert eligible > 2000
    assert abs(inserted / eligible - rate) < 4 * math.sqrt(rate * (1 - rate) / eligible)
    candidates = set(wrong_token_candidates(tokenizer))
    seen_bksp = 0
    for original, row in zip(data, augmented, strict=True):
        ids, labels = row["input_ids"], row["labels"]
        for k, token in enumerate(ids):
            if token == bksp:
                seen_bksp += 1
                assert labels[k] == bksp  # <bksp> is taught
                assert labels[k - 1] == IGNORE  # the wrong token is not
                assert ids[k - 1] in candidates and ids[k - 1] != ids[k + 1]  # never the expert token
                assert labels[k + 1] != IGNORE  # inserted only before labelled tokens
        assert strip_insertions(ids, labels, bksp) == (original["input_ids"], original["labels"])
    assert seen_bksp == inserted
    again, *_ = augment_dataset(data, tokenizer, config, seed=3, interaction="completion")
    other, *_ = augment_dataset(data, tokenizer, config, seed=4, interaction="completion")
    assert again["input_ids"] == augmented["input_ids"]
    assert other["input_ids"] != augmented["input_ids"]
    nothing, inserted, _ = augment_dataset(data, tokenizer, BackspaceConfig(rate=0.0), seed=3, interaction="completion")
    assert inserted == 0 and nothing["input_ids"] == data["input_ids"]


def test_step_mode_never_draws_a_newline(tokenizer):
    newline = tokenizer.convert_tokens_to_ids("\n")
    assert newline in wrong_token_candidates(tokenizer, "completion")
    assert newline not in wrong_token_candidates(tokenizer, "step")
    special = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    special |= set(tokenizer.convert_tokens_to_ids(["<backtrack>", BKSP]))
    assert not special & set(wrong_token_candidates(tokenizer, "completion"))


def test_model_source_draws_from_the_given_distribution_without_the_expert_token():
    bksp, candidates = 4, [5, 6, 7]
    ids, labels = [9, 5, 6, 7, 5], [IGNORE, 5, 6, 7, 5]
    probs = np.zeros((5, 10))
    probs[:, 7] = 1.0  # the model always wants 7
    out, out_labels, inserted = augment_tokens(
        ids, labels, rate=0.999, rng=np.random.default_rng(0), candidates=candidates, bksp_id=bksp, probs=probs
    )
    assert inserted == 4
    wrong = [out[k - 1] for k, t in enumerate(out) if t == bksp]
    # 7 wherever it is not the expert token; where it is, the rest has no mass: uniform over the others.
    assert wrong[0] == 7 and wrong[1] == 7 and wrong[2] in (5, 6) and wrong[3] == 7


def test_model_source_is_deterministic_per_seed(task, tokenizer, model):
    _, data = tokenized_rows(task, tokenizer, 6)
    config = BackspaceConfig(rate=0.3, source="model", model="unused")  # a model object is given directly
    first, inserted, _ = augment_dataset(data, tokenizer, config, seed=1, interaction="completion", model=model)
    second, *_ = augment_dataset(data, tokenizer, config, seed=1, interaction="completion", model=model)
    assert inserted > 0 and first["input_ids"] == second["input_ids"]
    with pytest.raises(ValueError, match="model"):
        augment_dataset(data, tokenizer, config, seed=1, interaction="completion")


def test_the_4d_mask_equals_the_agents_replay_mask(task, tokenizer, model):
    bksp = tokenizer.convert_tokens_to_ids(BKSP)
    rows, data = tokenized_rows(task, tokenizer, 3, style="direct")
    augmented, inserted, _ = augment_dataset(
        data, tokenizer, BackspaceConfig(rate=0.3), seed=0, interaction="completion"
    )
    assert inserted > 0
    collator = BackspaceCollator(tokenizer.pad_token_id, bksp)
    batch = collator(list(augmented))
    envs = [gym.make("backtrack_gym/CountDown-v0", interaction="completion", **TASK_CONFIG) for _ in rows]
    prompts = [len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    completions = [row["input_ids"][n:] for row, n in zip(augmented, prompts, strict=True)]

    def force(batch_rows, model_tokens, scores):
        forced = torch.full_like(scores, -torch.inf)
        for k, (row, emitted) in enumerate(zip(batch_rows, model_tokens, strict=True)):
            forced[k, completions[row][len(emitted)]] = 0.0
        return forced

    agent = LMAgent(model, tokenizer, max_new_tokens=256, logits_processor=force)
    problems = [{"problem": task.problem_from_dict(json.loads(r["problem"]))} for r in rows]
    episodes = agent.rollout(envs, options=problems)
    replayed = replay_batch(episodes, tokenizer.pad_token_id)
    assert [e.prompt_ids + e.completion_ids for e in episodes] == list(augmented["input_ids"])
    for key in ("input_ids", "position_ids", "attention_mask"):
        assert torch.equal(batch[key], replayed[key]), key
    # The logits after each <bksp> are those of a fresh encode of the kept tokens.
    with torch.inference_mode():
        logits = model(**{k: batch[k] for k in ("input_ids", "position_ids", "attention_mask")}).logits
        for i, row in enumerate(augmented["input_ids"]):
            k = row.index(bksp)
            kept, _ = strip_insertions(row[: k + 1], row[: k + 1], bksp)
            fresh = model(input_ids=torch.tensor([kept])).logits[0, -1]
            assert torch.allclose(logits[i, k], fresh, atol=1e-5)


def test_backspace_slots_refuse_a_bksp_with_nothing_to_delete():
    with pytest.raises(ValueError, match="tokens"):
        backspace_slots([7, 4], 4)
    fed, positions, masked_from = backspace_slots([5, 6, 9, 4, 7], 4)
    assert fed == [5, 6, 9, 6, 7] and positions == [0, 1, 2, 1, 2] and masked_from == [5, 3, 3, 5, 5]


@pytest.mark.parametrize(
    ("cls", "values", "field"),
    [
        (BackspaceConfig, {"rate": 1.0}, "rate"),
        (BackspaceConfig, {"rate": -0.1}, "rate"),
        (BackspaceConfig, {"source": "oracle"}, "source"),
        (BackspaceConfig, {"rate": 0.1, "source": "model"}, "model"),
        (BackspaceConfig, {"rate": 0.1, "source": "model", "model": "/no/such/dir"}, "model"),
        (SFTLossConfig, {"name": "chi2"}, "name"),
        (SFTLossConfig, {"alpha": 0.0}, "alpha"),
        (SFTLossConfig, {"gamma": 1.5}, "gamma"),
        (SFTLossConfig, {"mix": -0.5}, "mix"),
    ],
)
def test_bad_values_name_the_field(cls, values, field):
    with pytest.raises(ValueError, match=field):
        cls(**values).validate()


def test_bad_values_in_the_sft_config_name_the_dotted_field():
    with pytest.raises(ValueError, match=r"^backspace\.rate"):
        build_config(SFTRunConfig, {"task": {"config": TASK_CONFIG}, "backspace": {"rate": 2.0}}).validate()
    with pytest.raises(ValueError, match=r"^loss\.name"):
        build_config(SFTRunConfig, {"task": {"config": TASK_CONFIG}, "loss": {"name": "mle"}}).validate()


def test_chi2_loss_on_a_two_token_vocabulary_by_hand():
    # Tokens 0 and 1. Written: [p, a, X, <bksp>, b]; slot 3 is the <bksp> slot, which the
    # loss sees only through its logits (the state after the deletion).
    # Actions: from slot 0 the data's a=1; from slot 1 the wrong X=0; from slot 2 the
    # <bksp> (here id 1 to fit the vocabulary); from slot 3 the data's b=0 (terminal).
    logits = torch.tensor([[[0.5, 1.5], [2.0, -1.0], [0.0, 0.3], [1.2, 0.2], [0.0, 0.0]]])
    tokens = [0, 1, 0, 1, 0]
    labels = [IGNORE, 1, IGNORE, 1, 0]
    t = transitions(tokens, labels, bksp_id=1)
    assert t["data_action"] == [1, 0, 1, 1, 0] and t["wrong_action"] == [0, 1, 0, 0, 0]
    assert t["next_state"] == [1, 2, 3, -1, -1] and t["action_ids"] == [1, 0, 1, 0, 0]
    alpha, gamma, mix = 0.5, 0.9, 0.25
    terms = sequencematch_chi2_terms(
        logits,
        torch.tensor([t["action_ids"]]),
        torch.tensor([t["data_action"]]).bool(),
        torch.tensor([t["wrong_action"]]).bool(),
        torch.tensor([t["next_state"]]),
        alpha=alpha,
        gamma=gamma,
        mix=mix,
    )

    def v(a, b):
        return math.log(math.exp(a) + math.exp(b))

    v0, v1, v2, v3 = v(0.5, 1.5), v(2.0, -1.0), v(0.0, 0.3), v(1.2, 0.2)
    # Data transitions: (slot 0, a=1, slot 1), (slot 2, <bksp>=1, slot 3), (slot 3, b=0, end).
    r_data = [1.5 - gamma * v1, 0.3 - gamma * v3, 1.2 - 0.0]
    logp = [1.5 - v0, 0.3 - v2, 1.2 - v3]
    # The off-data transition: (slot 1, X=0, slot 2).
    r_off = 2.0 - gamma * v2
    bc = -sum(logp) / 3
    chi2 = (1 - mix) * sum(r * r for r in r_data) / 3 + mix * r_off**2
    assert terms["bc"].item() == pytest.approx(bc, rel=1e-6)
    assert terms["chi2"].item() == pytest.approx(chi2, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(bc + chi2 / (4 * alpha), rel=1e-6)
    # The same equals IQ-Learn's form: -E[phi(r)] + E[V(s) - gamma V(s')] + mixture term.
    values_data = [v0 - gamma * v1, v2 - gamma * v3, v3 - 0.0]
    iq = -sum(r_data) / 3 + sum(values_data) / 3 + chi2 / (4 * alpha)
    assert terms["loss"].item() == pytest.approx(iq, rel=1e-6)


def test_tiny_sft_run_on_augmented_data_with_each_loss(tmp_path, monkeypatch):
    import json as _json

    batches = []
    collate = BackspaceCollator.__call__

    def counted(self, rows):
        batch = collate(self, rows)
        batches.append(batch)
        return batch

    monkeypatch.setattr(BackspaceCollator, "__call__", counted)
    from backtrack_gym.train.tokenizer import save_tokenizer

    sampler = tmp_path / "sampler"  # a saved model whose own errors are the wrong tokens
    tokenizer = build_tokenizer(make_task("countdown", **TASK_CONFIG))
    build_model("tiny", tokenizer, seed=1).save_pretrained(sampler)
    save_tokenizer(tokenizer, sampler)
    runs = [
        ("bc", {"rate": 0.2}),
        ("sequencematch_chi2", {"rate": 0.2}),
        ("bc", {"rate": 0.2, "source": "model", "model": str(sampler)}),
    ]
    for k, (loss, backspace) in enumerate(runs):
        out = tmp_path / f"run{k}"
        config = build_config(
            SFTRunConfig,
            {
                "task": {"config": TASK_CONFIG},
                "model": "tiny",
                "style": "dfs",
                "n_train": 16,
                "batch_size": 4,
                "workers": 1,
                "backspace": backspace,
                "loss": {"name": loss},
                "trainer": {"optimizer_steps": 2, "logging_steps": 1, "save_steps": 2},
                "output_dir": str(out),
            },
        )
        final = run_sft(config)
        assert (final / "model.safetensors").is_file()
        state = _json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
        losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
        assert losses and all(math.isfinite(x) and x > 0 for x in losses)
    # The trainer was fed the collator's 4D-masked batches, <bksp> included.
    assert batches and all(b["attention_mask"].dim() == 4 for b in batches)
    assert any(bool(b["wrong_action"].any()) for b in batches)


def test_the_4d_mask_equals_the_agents_replay_mask_in_step_mode(task, tokenizer, model):
    from datasets import Dataset

    bksp = tokenizer.convert_tokens_to_ids(BKSP)
    rows = [trace_row(task, "dfs", "train", 0, {}, "step", i) for i in range(3)]
    data = Dataset.from_list([tokenize_row(tokenizer, r["prompt"], r["completion"], r["mask_spans"]) for r in rows])
    augmented, inserted, _ = augment_dataset(data, tokenizer, BackspaceConfig(rate=0.3), seed=0, interaction="step")
    assert inserted > 0
    # The model writes the labelled tokens and the wrong ones; the env writes the observations.
    written = []
    for row in augmented:
        ids, labels = row["input_ids"], row["labels"]
        written.append([t for k, t in enumerate(ids) if labels[k] != IGNORE or ids[k + 1 : k + 2] == [bksp]])

    def force(batch_rows, model_tokens, scores):
        forced = torch.full_like(scores, -torch.inf)
        for k, (row, emitted) in enumerate(zip(batch_rows, model_tokens, strict=True)):
            forced[k, written[row][len(emitted)]] = 0.0
        return forced

    envs = [
        gym.make("backtrack_gym/CountDown-v0", interaction="step", backtrack=True, max_steps=64, **TASK_CONFIG)
        for _ in rows
    ]
    agent = LMAgent(model, tokenizer, max_new_tokens=512, logits_processor=force)
    problems = [{"problem": task.problem_from_dict(json.loads(r["problem"]))} for r in rows]
    episodes = agent.rollout(envs, options=problems)
    batch = BackspaceCollator(tokenizer.pad_token_id, bksp)(list(augmented))
    for i, (episode, row) in enumerate(zip(episodes, augmented, strict=True)):
        # The env ends the episode at the solving line, before the trace's last eos.
        n = len(episode.input_ids)
        assert episode.stop_reason == "env" and episode.prompt_ids + episode.completion_ids == row["input_ids"][:n]
        replayed = replay_batch([episode], tokenizer.pad_token_id)
        assert torch.equal(batch["input_ids"][i, :n], replayed["input_ids"][0])
        assert torch.equal(batch["position_ids"][i, :n], replayed["position_ids"][0])
        assert torch.equal(batch["attention_mask"][i, :, :n, :n], replayed["attention_mask"][0])


def test_an_experiment_arm_turns_the_augmentation_and_the_loss_on():
    from backtrack_gym.train.experiment import ExperimentConfig

    arms = {
        "plain": {"sft": {"style": "dfs"}},
        "sequencematch": {"sft": {"backspace": {"rate": 0.05}, "loss": {"name": "sequencematch_chi2", "alpha": 1.0}}},
    }
    config = build_config(ExperimentConfig, {"task": {"config": TASK_CONFIG}, "arms": arms}).validate()
    plain, matched = config.sft_config("plain"), config.sft_config("sequencematch")
    assert plain.backspace.rate == 0.0 and plain.loss.name == "bc"
    assert matched.backspace.rate == 0.05 and matched.loss.name == "sequencematch_chi2" and matched.loss.alpha == 1.0
    assert matched.loss.gamma == SFTLossConfig().gamma  # a section laid over its default, field by field
