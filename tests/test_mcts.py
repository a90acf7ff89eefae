import math

import pytest

from backtrack_gym.agents.mcts import (
    MathTaskProposer,
    MCTSConfig,
    Node,
    PolicyProposer,
    Proposal,
    backup,
    mcts,
    select_child,
    uct_score,
)
from backtrack_gym.envs.math import MathProblem, MathTask


def test_uct_selection_and_backup_on_a_scripted_tree_by_hand():
    root = Node((), None)
    a, b = Node(("a",), None, root), Node(("b",), None, root)
    root.children = [a, b]
    backup([root, a], 1.0)
    backup([root, a], 0.0)
    backup([root, b], 0.0)
    assert (root.visits, root.value_sum, a.visits, a.value, b.value) == (3, 1.0, 2, 0.5, 0.0)
    c = math.sqrt(2)
    assert uct_score(a, 3, c) == pytest.approx(0.5 + c * math.sqrt(math.log(3) / 2))
    assert uct_score(b, 3, c) == pytest.approx(0.0 + c * math.sqrt(math.log(3) / 1))
    assert select_child(root, c) is a  # 0.5 + 1.414 * 0.741 = 1.548 > 0 + 1.414 * 1.048 = 1.482
    assert select_child(root, 3.0) is b  # more exploration: 0.5 + 2.223 = 2.723 < 3.144
    assert select_child(root, 0.0) is a  # pure exploitation
    assert uct_score(Node(("x",), None, root), 3, c) == math.inf


def test_config_rejects_bad_fields_by_name():
    for field, value in (("c", -1), ("max_nodes", 0), ("rollouts_per_leaf", 1.5), ("seed", -1), ("max_depth", True)):
        with pytest.raises(ValueError, match=field):
            MCTSConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match="slip"):
        MathTaskProposer(slip=1.0)


def test_search_finds_the_reference_answer_on_generated_problems_within_budget():
    task = MathTask()
    found = [mcts(task, task.generate(i), config=MCTSConfig(seed=i)) for i in range(60)]
    assert sum(tree.solved for tree in found) >= 0.85 * len(found)
    for tree in found:
        assert len(tree.nodes) - 1 <= 200 and tree.rollouts <= 1000
        if tree.solved:
            assert tree.solution[-1].startswith("Answer:")


def test_search_is_deterministic_per_seed():
    task = MathTask()
    problem = task.generate(3)
    runs = [[node.lines for node in mcts(task, problem, config=MCTSConfig(seed=s)).nodes] for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert any(mcts(task, task.generate(i), config=MCTSConfig(seed=1)).nodes != [] for i in range(2))


def test_the_proposer_carries_a_slip_on_to_a_wrong_answer():
    task = MathTask()
    problem = MathProblem("Start with 6. Add 4. Multiply by 3.", "30", ("6 + 4 = 10", "10 * 3 = 30", "Answer: 30"))
    state = task.apply(problem, task.initial_state(problem), task.parse_step("6 * 4 = 24"))
    lines = [p.line for p in MathTaskProposer().propose(task, problem, state)]
    assert lines[0] == "24 * 3 = 72"  # the reference's line as this path writes it
    assert "Answer: 24" in lines


class ScriptedPolicy:
    """LMAgent's interface: plays each env; writes a scripted line per call."""

    def __init__(self, lines):
        self.lines = lines

    def rollout(self, envs, *, seed=None, options=None):
        class Episode:
            pass

        out = []
        for k, env in enumerate(envs):
            observation, _ = env.reset(seed=seed)
            line = self.lines(observation)[k % len(self.lines(observation))]
            env.step(line)
            episode = Episode()
            episode.lines = [line]
            out.append(episode)
        return out


def test_policy_proposer_runs_the_same_search():
    task = MathTask()
    problem = MathProblem("Start with 6. Add 4.", "10", ("6 + 4 = 10", "Answer: 10"))

    def lines(observation):
        return (
            ["Answer: 10", "Answer: 11"] if "6 + 4 = 10" in observation else ["6 + 4 = 10", "6 + 4 = 11", "6 * 4 = 24"]
        )

    proposer = PolicyProposer(ScriptedPolicy(lines), samples=3)
    proposals = proposer.propose(task, problem, task.initial_state(problem))
    assert [p.line for p in proposals] == ["6 + 4 = 10", "6 + 4 = 11", "6 * 4 = 24"]
    tree = mcts(task, problem, proposer, MCTSConfig(seed=0, max_nodes=20))
    assert tree.solved and tree.solution == ("6 + 4 = 10", "Answer: 10")
    assert tree.invalid_proposals >= 1  # 6 + 4 = 11 is illegal in the env
    assert isinstance(proposals[0], Proposal)
    with pytest.raises(ValueError, match="samples"):
        PolicyProposer(ScriptedPolicy(lines), samples=0)
