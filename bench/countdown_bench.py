"""CountDown throughput: backtrack-gym against reasoning-gym's ``countdown``, side by side.

Both generate problems with 4 numbers in 1..99 and targets in 10..100, and both
verify the same answer strings (reasoning-gym's reference expressions and a
corrupted copy of each, so half are wrong). Ours is timed with the research's
generator (the default: a uniform target, numbers drawn until the exact solver
reaches it using all of them) and with the earlier constructive one. Each figure is
the best of ``--repeats`` timed runs on this machine, in one process.

    pip install -e ".[bench]" && python bench/countdown_bench.py
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from backtrack_gym.agents.play import format_table
from backtrack_gym.envs.countdown import CountDownConfig, CountDownProblem, Rules, generate, verify_answer

SETTINGS = {"num_count": 4, "number_min": 1, "number_max": 99, "target_min": 10, "target_max": 100}


def best_rates(works: dict[tuple[str, str], Callable[[], int]], repeats: int) -> dict[tuple[str, str], float]:
    """Items per second of the fastest of ``repeats`` runs of each work (which returns its item count).

    The works take turns within each round, so a change in machine load over the run
    touches every system alike.
    """
    best = dict.fromkeys(works, float("inf"))
    for _ in range(repeats):
        for key, work in works.items():
            start = time.perf_counter()
            count = work()
            best[key] = min(best[key], (time.perf_counter() - start) / count)
    return {key: 1.0 / seconds for key, seconds in best.items()}


def corrupt(expression: str) -> str:
    """The same expression with its last number changed, so it no longer verifies."""
    match = list(re.finditer(r"\d+", expression))[-1]
    return expression[: match.start()] + str(int(match.group()) + 1) + expression[match.end() :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=300, help="problems generated per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the best is kept)")
    args = parser.parse_args()

    from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset

    rg = CountdownDataset(
        CountdownConfig(
            min_numbers=4, max_numbers=4, min_value=1, max_value=99, min_target=10, max_target=100, seed=0, size=10**9
        )
    )
    research = CountDownConfig(**SETTINGS)
    # The earlier generator and goal rule, as they were measured before (its skewed split needs the override).
    constructive = CountDownConfig(
        **SETTINGS, generator="constructive", use_all_numbers=False, held_out_rule="hash", min_effective_share=0.0
    )
    n = args.problems

    entries = [rg[i] for i in range(n)]
    answers = [(e, a) for e in entries for a in (e["answer"], corrupt(e["answer"]))]
    # reasoning-gym accepts any expression sympy evaluates: compare under the same loose rules.
    rules = Rules(allow_negative=True, allow_fractions=True)
    problems = {id(e): CountDownProblem(tuple(e["metadata"]["numbers"]), e["metadata"]["target"]) for e in entries}
    ours_verdicts = [verify_answer(problems[id(e)], a, rules) for e, a in answers]
    rg_verdicts = [rg.score_answer(a, e) == 1.0 for e, a in answers]
    agreement = sum(x == y for x, y in zip(ours_verdicts, rg_verdicts, strict=True)) / len(answers)

    rates = best_rates(
        {
            ("generate", "backtrack-gym (research)"): lambda: len([generate(research, i) for i in range(n)]),
            ("generate", "backtrack-gym (constructive)"): lambda: len([generate(constructive, i) for i in range(n)]),
            ("generate", "reasoning-gym"): lambda: len([rg[i] for i in range(n)]),
            ("verify", "backtrack-gym"): lambda: len([verify_answer(problems[id(e)], a, rules) for e, a in answers]),
            ("verify", "reasoning-gym"): lambda: len([rg.score_answer(a, e) for e, a in answers]),
        },
        args.repeats,
    )

    rows = []
    for (task, system), rate in rates.items():
        baseline = rates[(task, "reasoning-gym")]
        rows.append({"task": task, "system": system, "items/s": rate, "x reasoning-gym": rate / baseline})
    print(f"CountDown, 4 numbers in 1..99, targets 10..100; {n} problems, {2 * n} answers, best of {args.repeats}")
    print(format_table(rows))
    print(f"verdict agreement with reasoning-gym: {agreement:.1%}")


if __name__ == "__main__":
    main()
