import gymnasium as gym
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from replay import replay_logprobs  # noqa: E402

import backtrack_gym  # noqa: E402, F401  (registers the envs)
from backtrack_gym.agents import DecodeConfig, LMAgent  # noqa: E402
from backtrack_gym.envs.core import BKSP  # noqa: E402
from backtrack_gym.envs.countdown import CountDownTask  # noqa: E402
from backtrack_gym.train import build_model, build_tokenizer  # noqa: E402

ENV_ID = "backtrack_gym/CountDown-v0"
PROBLEM = {"numbers": [3, 8], "target": 24}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CountDownTask())


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model("tiny", tokenizer, seed=0).eval()


class Script:
    """A logits processor that forces each row's scripted tokens and records the scores it saw."""

    def __init__(self, tokenizer, texts):
        eos = [tokenizer.eos_token_id]
        self.tokens = [tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in texts]
        self.seen = [[] for _ in texts]

    def __call__(self, rows, model_tokens, scores):
        forced = torch.full_like(scores, -torch.inf)
        for k, (row, emitted) in enumerate(zip(rows, model_tokens, strict=True)):
            self.seen[row].append(scores[k].clone())
            forced[k, self.tokens[row][len(emitted)]] = 0.0
        return forced


def make_envs(n, **kwargs):
    return [gym.make(ENV_ID, **kwargs) for _ in range(n)]


def test_decode_config_validates_the_shared_sampling_fields_and_its_own(model, tokenizer):
    assert DecodeConfig().validate() == DecodeConfig()
    bad_values = ({"temperature": 0}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_line_tokens": 0}, {"seed": -1})
    for bad in bad_values:
        with pytest.raises(ValueError, match=next(iter(bad))):
            DecodeConfig(**bad).validate()
    with pytest.raises(ValueError, match="max_new_tokens"):
        LMAgent(model, tokenizer, max_new_tokens=0)


@pytest.mark.parametrize("interaction", ["step", "completion"])
def test_batched_rollout_logprobs_match_a_separate_forward_pass(model, tokenizer, interaction):
    bksp, newline = tokenizer.convert_tokens_to_ids([BKSP, "\n"])

    def favour_backspace(rows, model_tokens, scores):
        # A random model rarely writes <bksp> or newlines: make both common.
        scores[:, bksp] += 3.0
        scores[:, newline] += 2.0
        return scores

    decoding = DecodeConfig(temperature=0.9, top_k=40, top_p=0.95, max_line_tokens=12, seed=1)
    agent = LMAgent(model, tokenizer, decoding, max_new_tokens=48, logits_processor=favour_backspace)
    envs = make_envs(3, interaction=interaction, backtrack=True, max_steps=4)
    # Prompts of three lengths, so left padding is exercised.
    problems = [
        {"numbers": [3, 5, 7, 8], "target": 24},
        {"numbers": [12, 5], "target": 60},
        {"numbers": [3, 4, 9], "target": 24},
    ]
    episodes = agent.rollout(envs, options=[{"problem": problem} for problem in problems])
    assert len(episodes) == 3
    assert len({len(e.prompt_ids) for e in episodes}) == 3
    assert any(bksp in e.completion_ids for e in episodes)
    for episode, replayed in zip(episodes, replay_logprobs(model, episodes, temperature=0.9), strict=True):
        n = len(episode.completion_ids)
        assert len(episode.logprobs) == len(episode.model_mask) == n == len(replayed)
        assert len(episode.input_ids) == len(episode.position_ids) == len(episode.prompt_ids) + n
        assert sum(episode.model_mask) <= 48
        assert all(lp < 0 for lp, m in zip(episode.logprobs, episode.model_mask, strict=True) if m)
        assert torch.allclose(torch.tensor(episode.logprobs), torch.tensor(replayed), atol=1e-4)
        assert len(episode.rewards) == len(episode.lines) >= 1
        assert episode.info["interaction"] == interaction
    if interaction == "completion":
        assert all(len(e.lines) == 1 and e.terminated for e in episodes)
    else:
        # Env tokens (observations) sit between the model's lines.
        assert any(0 in e.model_mask for e in episodes if len(e.lines) > 1)


def test_backspace_by_masking_matches_a_fresh_encode(model, tokenizer):
    # Two rows with different prompt lengths and different backspace patterns.
    texts = ["12<bksp>3+45<bksp><bksp>6 = 9\n", "<bksp>7 * 3<bksp><bksp><bksp>8"]
    script = Script(tokenizer, texts)
    agent = LMAgent(model, tokenizer, max_new_tokens=64, logits_processor=script)
    envs = make_envs(2, interaction="completion")
    options = [{"problem": PROBLEM}, {"problem": {"numbers": [12, 5], "target": 60}}]
    episodes = agent.rollout(envs, options=options)
    bksp = tokenizer.convert_tokens_to_ids(BKSP)
    for row, episode in enumerate(episodes):
        assert episode.completion_ids == script.tokens[row]
        # Position ids of the kept tokens run 0..n-1: a backspace does not advance them.
        positions = [p for p, m in zip(episode.position_ids, episode.attention_mask, strict=True) if m]
        assert positions == list(range(len(episode.kept_ids())))
        kept = []
        for k, token in enumerate(episode.completion_ids[:-1]):
            if token != bksp:
                kept.append(token)
                continue
            if kept:
                kept.pop()
            # The scores that chose the token after this <bksp>, against a fresh encode of what is kept.
            fresh = model(input_ids=torch.tensor([episode.prompt_ids + kept])).logits[0, -1]
            assert torch.allclose(script.seen[row][k + 1], fresh, atol=1e-4)
    assert episodes[0].lines == ["13+6 = 9\n"]
    assert episodes[1].lines == ["7 8"]
    assert tokenizer.decode(episodes[1].kept_ids()[len(episodes[1].prompt_ids) :], skip_special_tokens=True) == "7 8"


def test_a_line_with_backspaces_reaches_the_env_as_the_kept_text(model, tokenizer):
    script = Script(tokenizer, ["3 + 9<bksp><bksp><bksp>* 8 = 24\n"])
    agent = LMAgent(model, tokenizer, logits_processor=script)
    [episode] = agent.rollout(make_envs(1), options={"problem": PROBLEM})
    assert episode.lines == ["3 * 8 = 24"]
    assert episode.info["solved"] and episode.terminated and episode.rewards == [1.0]
    assert episode.stop_reason == "env"


COUNTDOWN_SCRIPT = "3 + 8 = 11\n<backtrack>\n3 * 9<bksp>8 = 24\n"


@pytest.mark.parametrize("interaction", ["step", "completion"])
def test_scripted_countdown_solution_with_backspace_and_backtrack(model, tokenizer, interaction):
    script = Script(tokenizer, [COUNTDOWN_SCRIPT])
    agent = LMAgent(model, tokenizer, logits_processor=script)
    [episode] = agent.rollout(make_envs(1, interaction=interaction, backtrack=True), options={"problem": PROBLEM})
    assert episode.info["solved"] and episode.info["backtracks"] == 1 and episode.info["valid_steps"] == 2
    assert episode.ret == pytest.approx(1.0)
    if interaction == "step":
        assert episode.lines == ["3 + 8 = 11", "<backtrack>", "3 * 8 = 24"]
        observation = tokenizer("Target: 24 | Numbers: 11\n")["input_ids"]
        assert episode.completion_ids[11 : 11 + len(observation)] == observation
        assert episode.model_mask[11 : 11 + len(observation)] == [0] * len(observation)
    else:
        assert episode.lines == ["3 + 8 = 11\n<backtrack>\n3 * 8 = 24\n"]


def test_scripted_sudoku_solution_with_backspace_and_backtrack(model):
    sudoku = pytest.importorskip("backtrack_gym.envs.sudoku")
    task = sudoku.SudokuTask(sudoku.SudokuConfig(size=4))
    tokenizer = build_tokenizer(task)
    sudoku_model = build_model("tiny", tokenizer, seed=0).eval()
    env = gym.make("backtrack_gym/Sudoku-v0", size=4, backtrack=True)
    _, info = env.reset(seed=1)
    problem = task.coerce_problem(info["problem"])
    steps = [task.format_step(s) for s in task.solve(problem, task.initial_state(problem))]
    wrong = next(
        line
        for line in (task.format_step(s) for s in task.legal_steps(problem, task.initial_state(problem)))
        if line not in steps
    )
    first = steps[0]
    text = f"{wrong}\n<backtrack>\n{first[:-1]}9<bksp>{first[-1]}\n" + "".join(f"{s}\n" for s in steps[1:])
    script = Script(tokenizer, [text])
    agent = LMAgent(sudoku_model, tokenizer, max_new_tokens=256, logits_processor=script)
    [episode] = agent.rollout([env], options={"problem": info["problem"]})
    assert episode.info["solved"] and episode.info["backtracks"] == 1
    assert episode.lines[:3] == [wrong, "<backtrack>", first]
    assert episode.ret == pytest.approx(1.0)


def test_vector_env_and_pinned_problem(model, tokenizer):
    vector = gym.make_vec(ENV_ID, num_envs=3, interaction="step", max_steps=3)
    agent = LMAgent(model, tokenizer, DecodeConfig(max_line_tokens=8, seed=0), max_new_tokens=40)
    episodes = agent.rollout(vector, options={"problem": PROBLEM})
    prompt = tokenizer("Target: 24 | Numbers: 3 8\n")["input_ids"]
    assert all(e.prompt_ids == prompt for e in episodes)
    assert all(e.info["problem"]["target"] == 24 for e in episodes)
    for episode in episodes:
        assert len(episode.lines) == episode.info["steps"]
    vector.close()


def test_shared_prefill_plays_the_same_episodes_with_one_prompt_encode_per_group(model, tokenizer):
    problems = [PROBLEM] * 3 + [{"numbers": [2, 5, 7], "target": 70}] * 3
    batch_sizes = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: batch_sizes.append(len(kwargs["input_ids"])), with_kwargs=True
    )

    def play(share_prefill):
        batch_sizes.clear()
        agent = LMAgent(model, tokenizer, DecodeConfig(seed=4, share_prefill=share_prefill), max_new_tokens=30)
        episodes = agent.rollout(
            make_envs(6, interaction="step", max_steps=3), options=[{"problem": p} for p in problems]
        )
        return episodes, batch_sizes[0]

    try:
        (plain, plain_rows), (shared, shared_rows) = play(False), play(True)
    finally:
        hook.remove()
    assert (plain_rows, shared_rows) == (6, 2)
    for a, b in zip(plain, shared, strict=True):
        assert (a.prompt_ids, a.completion_ids, a.masked_from, a.lines) == (
            b.prompt_ids,
            b.completion_ids,
            b.masked_from,
            b.lines,
        )
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-4)
    assert len({tuple(e.completion_ids) for e in shared}) > 2  # the rows went their own ways after the prompt


def test_vector_env_same_step_autoreset_reports_the_final_info(tokenizer, model):
    vector = gym.make_vec(ENV_ID, num_envs=2, vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    script = Script(tokenizer, ["3 * 8 = 24\n", "3 + 8 = 11\n"])
    episodes = LMAgent(model, tokenizer, logits_processor=script).rollout(vector, options={"problem": PROBLEM})
    assert episodes[0].info["solved"] and episodes[0].terminated
    assert not episodes[1].info["solved"] and episodes[1].info["state"] == ["11"]
    vector.close()
    disabled = gym.make_vec(ENV_ID, num_envs=2, vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED})
    with pytest.raises(ValueError, match="autoreset"):
        LMAgent(model, tokenizer).rollout(disabled)
    disabled.close()


def test_sampling_is_seeded_and_budgets_hold(model, tokenizer):
    def run(max_new_tokens=512, **kwargs):
        agent = LMAgent(model, tokenizer, DecodeConfig(**kwargs), max_new_tokens=max_new_tokens)
        return agent.rollout(make_envs(2, max_steps=3), seed=0)

    first, again = run(seed=3, max_line_tokens=5), run(seed=3, max_line_tokens=5)
    assert [e.completion_ids for e in first] == [e.completion_ids for e in again]
    for episode in first:
        assert all(len(line) <= 5 for line in episode.lines)
    greedy, top1, nucleus = run(greedy=True), run(top_k=1, seed=7), run(top_p=1e-6, seed=5)
    assert [e.completion_ids for e in greedy] == [e.completion_ids for e in top1] == [e.completion_ids for e in nucleus]
    eos = tokenizer.eos_token_id
    for episode in run(seed=0, stop_at_eos=False, max_new_tokens=20):
        assert eos not in episode.completion_ids and sum(episode.model_mask) <= 20


def test_eos_stops_the_episode_and_sends_the_pending_line(model, tokenizer):
    script = Script(tokenizer, ["3 + 5 = 8", ""])  # the script ends with eos
    episodes = LMAgent(model, tokenizer, logits_processor=script).rollout(make_envs(2), options={"problem": PROBLEM})
    assert episodes[0].lines == ["3 + 5 = 8"] and episodes[0].stop_reason == "eos"
    assert episodes[1].lines == [] and episodes[1].stop_reason == "eos" and episodes[1].rewards == []
    assert episodes[1].completion_ids == [tokenizer.eos_token_id]


@pytest.mark.parametrize("style", ["direct", "dfs"])
def test_step_mode_sft_rows_are_what_a_step_mode_agent_sees(model, tokenizer, style):
    from backtrack_gym.train.data import build_sft_dataset
    from backtrack_gym.train.sft import IGNORE, tokenize_row

    rows = build_sft_dataset("countdown", style, 8, seed=0, interaction="step")
    # the longest direct trace; the shortest dfs trace that backtracks
    row = (
        max(rows, key=lambda r: r["num_lines"])
        if style == "direct"
        else min((r for r in rows if r["num_backtracks"]), key=lambda r: r["num_lines"])
    )
    assert row["solved"] and row["num_lines"] > 1
    labels = tokenize_row(tokenizer, row["prompt"], row["completion"], row["mask_spans"])["labels"]
    written = [t for t in labels if t != IGNORE][:-1]  # what the model writes (the final eos is never reached)
    script = Script(tokenizer, [tokenizer.decode(written)])
    agent = LMAgent(model, tokenizer, logits_processor=script)
    envs = make_envs(1, interaction="step", backtrack=True, max_steps=64)
    [episode] = agent.rollout(envs, options={"problem": row["problem"]})
    assert episode.info["solved"]
    assert tokenizer.decode(episode.prompt_ids) == row["prompt"]
    assert tokenizer.decode(episode.completion_ids) == row["completion"]
    prompt_length = len(episode.prompt_ids)
    assert episode.model_mask == [int(t != IGNORE) for t in labels[prompt_length:-1]]
