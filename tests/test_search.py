import math
import re

import pytest

from backtrack_gym.agents.search import (
    STOPS,
    Continuation,
    HFExpander,
    SearchConfig,
    self_backtracking_search,
    state_key,
)
from backtrack_gym.agents.traces import write_trace
from backtrack_gym.envs import BACKTRACK, Episode, make_task
from backtrack_gym.settings import SamplingConfig

TASK = make_task("countdown", num_count=3)
P1 = {"numbers": [93, 81, 68], "target": 56}
P2 = {"numbers": [4, 6, 9], "target": 30}
PROMPT1 = "Target: 56 | Numbers: 93 81 68\n"
PROMPT2 = "Target: 30 | Numbers: 4 6 9\n"
SAMPLING = SamplingConfig(temperature=0.7)


def scripted(text: str, stop: str, p: float, prompt: str, model_p: float | None = None) -> Continuation:
    """One character a token (``<backtrack>`` one token, eos an empty piece), each sampled with probability
    ``p`` and of model probability ``model_p`` (None: no model log-probs, so scores use ``p``)."""
    pieces = [piece for part in re.split(f"({BACKTRACK})", text) for piece in ([part] if part == BACKTRACK else part)]
    if stop == "eos":
        pieces.append("")
    model = None if model_p is None else [math.log(model_p)] * len(pieces)
    return Continuation(list(range(len(pieces))), pieces, [math.log(p)] * len(pieces), stop, len(prompt), model)


class ScriptedExpander:
    """Returns hand-written continuations of each prompt and records every call."""

    def __init__(self, script: dict[str, list[tuple[str, str, float]]]):
        self.script = script
        self.calls: list[list[str]] = []
        self.seeds: list[int] = []
        self.settings: list[tuple[int, SamplingConfig]] = []

    def expand(self, prompts, n, *, max_new_tokens, sampling, seed):
        self.calls.append(list(prompts))
        self.seeds.append(seed)
        self.settings.append((max_new_tokens, sampling))
        assert all(len(self.script[prompt]) <= n for prompt in prompts)
        return [[scripted(*spec, prompt) for spec in self.script[prompt]] for prompt in prompts]


def geometric(*groups: tuple[int, float]) -> float:
    """exp(mean log-prob) of ``count`` tokens at probability ``p`` for each (count, p)."""
    return math.exp(sum(count * math.log(p) for count, p in groups) / sum(count for count, _ in groups))


def test_prompts_are_the_sft_prompts():
    assert TASK.prompt(TASK.problem_from_dict(P1)) + "\n" == PROMPT1
    assert TASK.prompt(TASK.problem_from_dict(P2)) + "\n" == PROMPT2


def test_backtracks_cut_the_last_step_and_feed_a_capped_deduplicated_frontier():
    s1 = "68 + 81 = 149\n"
    s2 = "93 - 81 = 12\n12 + 68 = 80\n"
    s5 = "93 - 81 = 12\n"
    expander = ScriptedExpander(
        {
            PROMPT1: [
                ("68 + 81 = 149\n149 + 93 = 242\n<backtrack>", "backtrack", 0.8),  # -> s1
                ("68 + 81 = 149\n149 * 93 = 13857\n<backtrack>", "backtrack", 0.7),  # -> s1 again
                ("93 - 81 = 12\n12 + 68 = 80\n80 - 56 = 24\n<backtrack>", "backtrack", 0.6),  # -> s2
                ("81 + 68 = 149\n149 - 93 = 55<backtrack>", "backtrack", 0.5),  # third state: over the cap of 2
            ],
            PROMPT1 + s1: [
                ("149 - 93 = 56\n", "eos", 0.9),
                ("<backtrack>", "backtrack", 0.2),  # back to the root: already expanded
                ("93 + 149 = 242\n<backtrack>", "backtrack", 0.1),  # back to s1: already expanded
                ("149 - 93 = 5", "length", 0.99),  # dropped
            ],
            PROMPT1 + s2: [
                ("<backtrack>", "backtrack", 0.3),  # cuts into the prefix: s5, with the prefix's log-probs
                ("", "eos", 0.95),
            ],
            PROMPT1 + s5: [("68 + 12 = 80\n", "eos", 0.95)],
        }
    )
    sampling = SamplingConfig(temperature=0.5, top_p=0.9)
    config = SearchConfig(expansions=4, rounds=2, sampling=sampling, frontier="round_best", vote="exp_mean_logprob")
    [result] = self_backtracking_search(TASK, [P1], expander, config, max_new_tokens=50)

    assert config.frontier_size == 2
    assert expander.calls == [[PROMPT1], [PROMPT1 + s1, PROMPT1 + s2], [PROMPT1 + s5]]
    assert len(set(expander.seeds)) == 3
    assert expander.settings == [(50, sampling)] * 3
    a1 = geometric((len(s1), 0.8), (len("149 - 93 = 56\n") + 1, 0.9))
    a2 = geometric((len(s2), 0.6), (1, 0.95))
    a3 = geometric((len(s5), 0.6), (len("68 + 12 = 80\n") + 1, 0.95))  # the <backtrack> token's 0.3 is not kept
    found = [(c.key, c.text, c.solved) for c in result.candidates]
    assert found == [
        ('["56"]', s1 + "149 - 93 = 56\n", True),
        ('["80"]', s2, False),
        ('["80"]', s5 + "68 + 12 = 80\n", False),
    ]
    assert [c.score for c in result.candidates] == pytest.approx([a1, a2, a3], abs=1e-12)
    assert result.votes() == pytest.approx({'["56"]': a1, '["80"]': a2 + a3})
    assert a1 > max(a2, a3) and a2 + a3 > a1
    assert (result.answer, result.text, result.solved) == ('["80"]', s5 + "68 + 12 = 80\n", False)
    generated = {PROMPT1: [30, 32, 40, 28], PROMPT1 + s1: [15, 1, 16, 12], PROMPT1 + s2: [1, 1], PROMPT1 + s5: [14]}
    assert result.sequences == [(len(prompt), g) for prompt, lengths in generated.items() for g in lengths]
    assert result.generated_tokens == 190
    assert result.prompt_tokens == 4 * len(PROMPT1) + 4 * len(PROMPT1 + s1) + 2 * len(PROMPT1 + s2) + len(PROMPT1 + s5)


def test_state_vote_sums_scores_over_agreeing_answers_and_solved_is_the_envs_verdict():
    expander = ScriptedExpander(
        {
            PROMPT1: [
                ("93 - 81 = 12\n12 + 68 = 80\n", "eos", 0.9),  # wrong, single best score
                ("68 + 81 = 149\n149 - 93 = 56\n", "eos", 0.6),
                ("81 + 68 = 149\n149 - 93 = 56\n", "eos", 0.5),  # right twice: 1.1 > 0.9
            ],
            PROMPT2: [
                ("9 - 4 = 5\n5 * 6 = 30\n", "eos", 0.9),  # right, single best score
                ("4 + 6 = 10\n10 * 9 = 90\n", "eos", 0.5),
                ("6 + 4 = 10\n9 * 10 = 90\n", "eos", 0.45),  # wrong twice: 0.95 > 0.9
            ],
        }
    )
    config = SearchConfig(expansions=3, rounds=0, vote="exp_mean_logprob")
    r1, r2 = self_backtracking_search(TASK, [P1, P2], expander, config)

    assert expander.calls == [[PROMPT1, PROMPT2]]  # the problems share one batched call
    assert r1.votes() == pytest.approx({'["80"]': 0.9, '["56"]': 1.1})
    assert (r1.answer, r1.solved, r1.text) == ('["56"]', True, "68 + 81 = 149\n149 - 93 = 56\n")
    assert r2.votes() == pytest.approx({'["30"]': 0.9, '["90"]': 0.95})
    assert (r2.answer, r2.solved, r2.text) == ('["90"]', False, "4 + 6 = 10\n10 * 9 = 90\n")
    assert [c.solved for c in r2.candidates] == [True, False, False]


def test_answers_with_rejected_lines_do_not_pool_their_votes():
    broken = ["93 + 81 = 12\n", "9 * 9 = 80\n", "68 - 1 = 67\n"]  # wrong sum, numbers not on the board
    expander = ScriptedExpander(
        {PROMPT1: [*((text, "eos", 0.5) for text in broken), ("68 + 81 = 149\n149 - 93 = 56\n", "eos", 0.6)]}
    )
    config = SearchConfig(expansions=4, rounds=0, vote="exp_mean_logprob")
    [result] = self_backtracking_search(TASK, [P1], expander, config)

    # each broken answer leaves the board unchanged; keyed by state they would outvote the solution 1.5 to 0.6
    assert [c.key for c in result.candidates[:3]] == broken
    assert (result.answer, result.solved) == ('["56"]', True)


def test_no_finished_answer_is_not_solved():
    expander = ScriptedExpander(
        {PROMPT1: [("68 + 81 = 149\n<backtrack>", "backtrack", 0.5), ("68 + 81 = 14", "length", 0.5)]}
    )
    [result] = self_backtracking_search(TASK, [P1], expander, SearchConfig(expansions=2, rounds=3))

    assert expander.calls == [[PROMPT1]]  # the only backtrack led to the root: nothing left to expand
    assert (result.answer, result.solved, result.text, result.candidates) == (None, False, None, [])
    assert result.sequences == [(len(PROMPT1), 15), (len(PROMPT1), 12)]
    assert (result.prompt_tokens, result.generated_tokens) == (2 * len(PROMPT1), 27)


# --- the paper's rules (LAMDASZ-ML/Self-Backtracking src/decoder/decoders.py, commit c6ce624) ----------


def test_defaults_are_the_papers_decoder():
    # decode(input_ids, max_length, b=1, n=32, temperature=0.7); eval_search.py --b 1 --n 32
    config = SearchConfig().validate()
    assert (config.expansions, config.rounds, config.sampling) == (32, 1, SamplingConfig(temperature=0.7))
    assert config.frontier_size == 5  # sqrt(N)
    assert (config.frontier, config.vote) == ("expansion_order", "sum_logprob")


A = "68 + 81 = 149\n"
B = "93 - 81 = 12\n"
A1 = A + "93 + 149 = 242\n"
B1 = B + "12 + 68 = 80\n"
B2 = B + "68 - 12 = 56\n"
C = "4 + 6 = 10\n"
FRONTIER_SCRIPT = {
    PROMPT1: [
        (A + "149 + 93 = 242\n<backtrack>", "backtrack", 0.5),
        (B + "12 * 68 = 816\n<backtrack>", "backtrack", 0.9),
        ("68 + 81 = 14", "length", 0.99),
    ],
    PROMPT2: [(C + "10 * 9 = 90\n<backtrack>", "backtrack", 0.4)],
    PROMPT1 + B: [
        (B1[len(B) :] + "80 + 56 = 136\n<backtrack>", "backtrack", 0.2),  # sampled first, scores lower
        (B2[len(B) :] + "56 * 1 = 56\n<backtrack>", "backtrack", 0.3),
    ],
    PROMPT1 + A: [(A1[len(A) :] + "242 - 1 = 241\n<backtrack>", "backtrack", 0.95)],
    PROMPT2 + C: [],
    **{PROMPT1 + state: [] for state in (A1, B1, B2)},
}


def test_the_papers_frontier_is_read_in_expansion_order_and_capped_across_the_round():
    # The paper's decode appends cut states while len(next_input_ids_list_new) < sqrt(N), scanning the
    # round's expansions in frontier order and each one's beams best first; the list is shared by the round.
    expander = ScriptedExpander(FRONTIER_SCRIPT)
    self_backtracking_search(TASK, [P1, P2], expander, SearchConfig(expansions=4, rounds=2))

    assert expander.calls[:2] == [[PROMPT1, PROMPT2], [PROMPT1 + B, PROMPT1 + A, PROMPT2 + C]]
    # B's two cut states fill P1's frontier of 2, best first; A's better-scoring A1 comes too late.
    assert expander.calls[2] == [PROMPT1 + B2, PROMPT1 + B1]


def test_the_round_best_frontier_ranks_the_whole_rounds_cut_states():
    expander = ScriptedExpander(FRONTIER_SCRIPT)
    config = SearchConfig(expansions=4, rounds=2, frontier="round_best")
    self_backtracking_search(TASK, [P1, P2], expander, config)

    assert expander.calls[1] == [PROMPT1 + B, PROMPT1 + A, PROMPT2 + C]
    # mean kept log-prob: A1 (14 tokens at 0.5, 15 at 0.95) > B2 (13 at 0.9, 13 at 0.3) > B1
    assert expander.calls[2] == [PROMPT1 + A1, PROMPT1 + B2]


@pytest.mark.parametrize("rounds", [0, 1, 2, 3])
def test_b_counts_the_rounds_after_the_first_as_the_papers_loop(rounds):
    # for t in range(b+1): with a backtrack in every round, b = 0 samples once, each b one more round
    lines = ["68 + 81 = 149\n", "149 - 93 = 56\n", "56 + 1 = 57\n", "57 - 1 = 56\n"]
    states = ["".join(lines[:k]) for k in range(len(lines) + 1)]
    # from each state the model writes the next line, a wrong one and <backtrack>: the cut is the next state
    script = {
        PROMPT1 + state: [(line + "1 + 1 = 2\n<backtrack>", "backtrack", 0.5)]
        for state, line in zip(states[:-1], lines, strict=True)
    }
    expander = ScriptedExpander({**script, PROMPT1 + states[-1]: []})
    self_backtracking_search(TASK, [P1], expander, SearchConfig(expansions=1, rounds=rounds))

    assert expander.calls == [[PROMPT1 + state] for state in states[: rounds + 1]]


def test_the_papers_vote_groups_answers_by_text_and_sums_mean_logprobs():
    right, same_state, wrong = A + "149 - 93 = 56\n", "81 + 68 = 149\n149 - 93 = 56\n", B + "12 + 68 = 80\n"
    expander = ScriptedExpander(
        {
            PROMPT1: [
                (right, "eos", 0.6),
                (right, "eos", 0.6),  # the same text: one group, ln 0.6 + ln 0.6 = -1.02
                (same_state, "eos", 0.5),  # the same final state, another text: its own group, -0.69
                (wrong, "eos", 0.55),  # -0.60: the largest sum
            ]
        }
    )
    [paper] = self_backtracking_search(TASK, [P1], expander, SearchConfig(expansions=4, rounds=0))
    [voted] = self_backtracking_search(
        TASK, [P1], expander, SearchConfig(expansions=4, rounds=0, vote="exp_mean_logprob")
    )

    assert [c.key for c in paper.candidates] == [right, right, same_state, wrong]
    assert paper.votes() == pytest.approx({right: 2 * math.log(0.6), same_state: math.log(0.5), wrong: math.log(0.55)})
    assert (paper.answer, paper.text, paper.solved) == (wrong, wrong, False)
    # grouped by state and scored in (0, 1], the three answers that make 56 outvote the one that makes 80
    assert voted.votes() == pytest.approx({'["56"]': 0.6 + 0.6 + 0.5, '["80"]': 0.55})
    assert (voted.answer, voted.text, voted.solved) == ('["56"]', right, True)


def test_a_backtrack_cuts_a_research_format_step_whole():
    # The paper's cut drops the last line, one step of its compact traces; a research-format step is
    # its Exploring Operation line and the node lines after it, which go with it.
    lines = write_trace(TASK, TASK.problem_from_dict(P1), "direct", trace_format="research").lines
    start = lines[0] + "\n"  # Current State of the root
    first = "".join(line + "\n" for line in lines[:4])  # ... and one step: Exploring, Generated Node, Current State
    assert start.startswith("Current State:") and lines[1].startswith("Exploring Operation:")
    expander = ScriptedExpander(
        {
            PROMPT1: [
                (first + "<backtrack>", "backtrack", 0.5),  # back before the first step
                (first + lines[4] + "\n<backtrack>", "backtrack", 0.6),  # back before the second
            ],
            PROMPT1 + first: [],
            PROMPT1 + start: [],
        }
    )
    self_backtracking_search(TASK, [P1], expander, SearchConfig(expansions=4, rounds=1))

    assert expander.calls == [[PROMPT1], [PROMPT1 + first, PROMPT1 + start]]


def test_scores_use_the_models_own_logprobs_not_the_sampling_ones():
    # The paper scores with log_softmax(model(sequences).logits): no temperature.
    continuation = scripted(A + "149 - 93 = 56\n", "eos", 0.9, PROMPT1, model_p=0.4)
    expander = ScriptedExpander({})
    expander.expand = lambda prompts, n, **_: [[continuation] for _ in prompts]
    [result] = self_backtracking_search(TASK, [P1], expander, SearchConfig(expansions=1, rounds=0))

    assert result.candidates[0].score == pytest.approx(math.log(0.4))


@pytest.mark.parametrize(
    "bad",
    [
        {"expansions": 0},
        {"expansions": 2.5},
        {"expansions": True},
        {"rounds": -1},
        {"max_frontier": 0},
        {"sampling": SamplingConfig(temperature=0.0)},
        {"sampling": SamplingConfig(temperature=math.nan)},
        {"sampling": SamplingConfig(top_k=-1)},
        {"seed": -1},
        {"frontier": "per_state"},
        {"vote": "majority"},
    ],
)
def test_bad_config_raises(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SearchConfig(**bad).validate()
    with pytest.raises(ValueError, match=next(iter(bad))):
        self_backtracking_search(TASK, [P1], ScriptedExpander({}), SearchConfig(**bad))


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"env_steps": 0}, {"env_steps": 2.5}])
def test_bad_budgets_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        self_backtracking_search(TASK, [P1], ScriptedExpander({}), **bad)


def test_config_defaults_and_bad_continuations():
    assert SearchConfig(expansions=10).validate().frontier_size == 3
    assert SearchConfig(expansions=10, max_frontier=5).frontier_size == 5
    with pytest.raises(ValueError):
        Continuation([1, 2], ["a"], [0.0, 0.0], "eos", 3)
    with pytest.raises(ValueError):
        Continuation([1], ["a"], [0.0], "done", 3)
    with pytest.raises(ValueError, match="model_logprobs"):
        Continuation([1], ["a"], [0.0], "eos", 3, [0.0, 0.0])


# --- HFExpander with a tiny random model -------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two busy cores spin far slower than one
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(torch):
    from backtrack_gym.train import build_tokenizer

    return build_tokenizer(TASK)


@pytest.fixture(scope="module")
def model(tokenizer):
    from backtrack_gym.train import build_model

    return build_model("tiny", tokenizer, seed=0)


@pytest.fixture(scope="module")
def biased(torch, model, tokenizer):
    """The tiny model with a logit bias, so that a random model writes lines, backtracks and stops."""

    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.bias = torch.zeros(len(tokenizer))
            self.bias[[tokenizer.convert_tokens_to_ids(t) for t in ("\n", BACKTRACK, tokenizer.eos_token)]] = (
                torch.tensor([3.0, 2.0, 1.0])
            )

        def forward(self, **kwargs):
            out = self.model(**kwargs)
            out.logits = out.logits + self.bias
            return out

    return Biased()


def test_hf_expander_samples_consistent_continuations_with_exact_logprobs(torch, biased, tokenizer):
    expander = HFExpander(biased, tokenizer, max_batch=6)  # 3 samples a prompt: two prompts a batch
    prompts = [PROMPT1, PROMPT1 + "93 - 81 = 12\n", PROMPT2]  # unequal lengths: left padding
    stops = {"eos": tokenizer.eos_token_id, "backtrack": tokenizer.convert_tokens_to_ids(BACKTRACK)}
    seen = set()
    for seed in range(1, 21):  # until every way to stop was exercised
        out = expander.expand(prompts, 3, max_new_tokens=12, sampling=SAMPLING, seed=seed)
        assert [len(samples) for samples in out] == [3, 3, 3]
        for prompt, samples in zip(prompts, out, strict=True):
            prompt_ids = tokenizer(prompt)["input_ids"]
            for c in samples:
                seen.add(c.stop)
                assert c.prompt_tokens == len(prompt_ids)
                assert len(c.token_ids) == len(c.pieces) == len(c.logprobs) <= 12
                assert not set(c.token_ids[:-1]) & set(stops.values())
                if c.stop == "length":
                    assert len(c.token_ids) == 12 and c.token_ids[-1] not in stops.values()
                else:
                    assert c.token_ids[-1] == stops[c.stop]
                assert c.pieces == [tokenizer.decode([t], skip_special_tokens=True) for t in c.token_ids]
                with torch.inference_mode():
                    logits = biased(input_ids=torch.tensor([prompt_ids + c.token_ids])).logits[0].float()
                logits = logits[len(prompt_ids) - 1 : -1]
                chosen = torch.tensor(c.token_ids)[:, None]
                expected = torch.log_softmax(logits / 0.7, dim=-1).gather(1, chosen)[:, 0]
                assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)
                expected = torch.log_softmax(logits, dim=-1).gather(1, chosen)[:, 0]  # no temperature
                assert torch.allclose(torch.tensor(c.model_logprobs), expected, atol=1e-4)
        if seen == set(STOPS):
            break
    assert seen == set(STOPS)

    again = expander.expand(prompts, 3, max_new_tokens=12, sampling=SAMPLING, seed=seed)
    other = expander.expand(prompts, 3, max_new_tokens=12, sampling=SAMPLING, seed=seed + 1)
    assert again == out
    assert [c.token_ids for s in other for c in s] != [c.token_ids for s in out for c in s]


def test_hf_expander_applies_top_k(torch, biased, tokenizer):
    # top_k=1 leaves the most likely token only: every sample is the greedy continuation.
    expander = HFExpander(biased, tokenizer)
    [samples] = expander.expand([PROMPT1], 3, max_new_tokens=8, sampling=SamplingConfig(top_k=1), seed=0)
    ids = tokenizer(PROMPT1)["input_ids"]
    with torch.inference_mode():
        for _ in range(8):
            ids.append(int(biased(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(BACKTRACK)):
                break
    greedy = ids[len(tokenizer(PROMPT1)["input_ids"]) :]
    assert [c.token_ids for c in samples] == [greedy] * 3


@pytest.mark.parametrize("rules", [{}, {"frontier": "round_best", "vote": "exp_mean_logprob"}])
def test_search_with_a_tiny_model_runs_end_to_end(torch, biased, tokenizer, rules):
    config = SearchConfig(expansions=4, rounds=2, seed=2, **rules)
    results = self_backtracking_search(TASK, [P1, P2], HFExpander(biased, tokenizer), config, max_new_tokens=24)
    again = self_backtracking_search(TASK, [P1, P2], HFExpander(biased, tokenizer), config, max_new_tokens=24)

    assert results == again
    later_rounds = 0
    for problem, prompt, result in zip([P1, P2], [PROMPT1, PROMPT2], results, strict=True):
        root_tokens = len(tokenizer(prompt)["input_ids"])
        assert len(result.sequences) % 4 == 0 and len(result.sequences) <= 4 * (1 + 2 * 2)
        assert [p for p, _ in result.sequences[:4]] == [root_tokens] * 4
        assert all(p > root_tokens and 1 <= g <= 24 for p, g in result.sequences[4:])  # expanded prefixes
        later_rounds += len(result.sequences) > 4
        assert result.generated_tokens == sum(g for _, g in result.sequences)
        for c in result.candidates:
            episode = Episode(TASK, TASK.problem_from_dict(problem))
            episode.run(c.text, max_steps=64)  # the search's default env_steps
            if config.vote == "sum_logprob":  # the paper's: keyed by text, scored by mean log-prob
                assert c.key == c.text and c.score <= 0
            else:
                rejected = episode.stats.malformed + episode.stats.illegal
                assert c.key == (c.text if rejected else state_key(TASK, episode.state))
                assert 0 < c.score <= 1
        votes = result.votes()
        assert votes and votes[result.answer] == max(votes.values())
        episode = Episode(TASK, TASK.problem_from_dict(problem))
        episode.run(result.text, max_steps=64)
        assert result.solved == episode.stats.solved
    assert later_rounds == 2  # both problems backtracked into later rounds (fixed seed)
