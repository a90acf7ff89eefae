"""Oracle trace throughput: traces per second per task and style, on one core and on two.

Each figure times writing ``--n`` data set rows (problem generation included) with
1 and with ``--workers`` worker processes, in one run on the same machine.

    python bench/traces_bench.py [--tasks countdown,sudoku,math] [--n 400]
"""

from __future__ import annotations

import argparse
import time

from backtrack_gym.agents.play import format_table
from backtrack_gym.agents.traces import styles_for
from backtrack_gym.envs import make_task
from backtrack_gym.train.data import generate_rows


def traces_per_second(task, style: str, n: int, workers: int) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in generate_rows(task, style, n, workers=workers))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="countdown", help="comma-separated task names")
    parser.add_argument("--n", type=int, default=400, help="traces per figure")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the parallel figure")
    args = parser.parse_args()
    rows = []
    for name in args.tasks.split(","):
        task = make_task(name)
        for style in styles_for(task):
            one = traces_per_second(task, style, args.n, 1)
            many = traces_per_second(task, style, args.n, args.workers)
            rows.append(
                {"task": name, "style": style, "1 core": one, f"{args.workers} workers": many, "speed-up": many / one}
            )
    print(f"traces per second, {args.n} traces per figure")
    print(format_table(rows))


if __name__ == "__main__":
    main()
