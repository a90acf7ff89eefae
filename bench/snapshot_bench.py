"""What env snapshots cost: microseconds per snapshot, restore and fork, next to replaying the prefix.

Each task's env (step mode, backtracking on) plays the oracle's solution of ``--n``
problems up to its last step; at that point (the deepest before the goal) each
operation is timed, and so is what it replaces: a reset and the prefix replayed.

    python bench/snapshot_bench.py [--tasks countdown,sudoku,math] [--n 50]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial

import gymnasium as gym

from backtrack_gym.agents.play import format_table
from backtrack_gym.envs import TASK_ENV_IDS


def microseconds(call: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def replay(env: gym.Env, problem: dict, lines: list[str]) -> None:
    """What a restore replaces: a reset to the problem and its prefix stepped again."""
    env.reset(options={"problem": problem})
    for line in lines:
        env.step(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="countdown,sudoku,math", help="comma-separated task names")
    parser.add_argument("--n", type=int, default=50, help="problems per task")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per problem and operation")
    args = parser.parse_args()
    rows = []
    for name in args.tasks.split(","):
        env = gym.make(TASK_ENV_IDS[name], backtrack=True).unwrapped
        totals = {"snapshot": 0.0, "restore": 0.0, "fork": 0.0, "replay": 0.0, "json bytes": 0.0, "depth": 0.0}
        for index in range(args.n):
            _, info = env.reset(options={"index": index})
            problem = info["problem"]
            lines = [env.task.format_step(step) for step in env.task.solve(env.problem, env.episode.state)][:-1]
            for line in lines:
                env.step(line)
            snapshot = env.snapshot()

            totals["snapshot"] += microseconds(env.snapshot, args.repeats)
            totals["restore"] += microseconds(partial(env.restore, snapshot), args.repeats)
            totals["fork"] += microseconds(env.fork, args.repeats)
            totals["replay"] += microseconds(partial(replay, env, problem, lines), args.repeats)
            totals["json bytes"] += len(json.dumps(snapshot.to_dict()))
            totals["depth"] += len(lines)
        rows.append({"task": name, **{key: value / args.n for key, value in totals.items()}})
    print(f"mean over {args.n} problems per task, at the last step before the goal (microseconds; bytes)")
    print(format_table(rows))


if __name__ == "__main__":
    main()
