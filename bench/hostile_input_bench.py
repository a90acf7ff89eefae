"""How long one hostile step takes: every named bad input of the test suite, in every text env.

The tests only check that a bad input is a defined outcome and does not hang (a
CPU-time guard of seconds); this measures the time itself. Each figure is the best
of ``--repeats`` steps of a fresh episode, in one process, so other load on the
machine inflates no figure by more than it inflates the fastest run.

    python bench/hostile_input_bench.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.agents.play import format_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bad_inputs import NAMED_BAD_INPUTS  # noqa: E402  (the test suite's list, so both cover the same inputs)

ENVS = {
    "CountDown": ("backtrack_gym/CountDown-v0", {"max_steps": 64}),
    "Sudoku 9x9": ("backtrack_gym/Sudoku-v0", {"size": 9}),
    "Math": ("backtrack_gym/Math-v0", {}),
}


def best_step_ms(env_id: str, kwargs: dict, interaction: str, action: str, repeats: int) -> float:
    """Milliseconds of the fastest of ``repeats`` first steps with ``action``."""
    env = gym.make(env_id, interaction=interaction, backtrack=True, **kwargs).unwrapped
    best = float("inf")
    for _ in range(repeats):
        env.reset(seed=0)
        start = time.perf_counter()
        env.step(action)
        best = min(best, time.perf_counter() - start)
    env.close()
    return 1000 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per figure (the best is kept)")
    args = parser.parse_args()
    rows = []
    worst = {}
    for name, action in sorted(NAMED_BAD_INPUTS.items()):
        row: dict[str, object] = {"input": name, "chars": len(action)}
        for env_name, (env_id, kwargs) in ENVS.items():
            for interaction in ("step", "completion"):
                ms = best_step_ms(env_id, kwargs, interaction, action, args.repeats)
                row[f"{env_name} {interaction} ms"] = ms
                worst[(env_name, interaction)] = max(worst.get((env_name, interaction), 0.0), ms)
        rows.append(row)
    print(f"one step with each named bad input, best of {args.repeats} (milliseconds)")
    print(format_table(rows))
    slowest = max(worst, key=worst.get)
    print(f"slowest: {worst[slowest]:.1f} ms ({slowest[0]}, {slowest[1]} mode)")


if __name__ == "__main__":
    main()
