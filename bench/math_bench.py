"""Math task throughput: generation, replay, answer checking, and math-verify's timeout.

Each rate is the best of ``--repeats`` timed runs in one process; the math-verify
figures need the ``math`` extra (they run in its child process).

    python bench/math_bench.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from backtrack_gym.envs.math import MathConfig, MathEnv, answers_match, generate
from backtrack_gym.envs.math.latex_verify import LatexVerifier, math_verify_installed


def best_rate(work: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` runs of ``work`` (which returns its item count)."""
    best = float("inf")
    count = 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = work()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = MathConfig(min_reasoning_steps=1, max_reasoning_steps=8)
    env = MathEnv(config, interaction="completion")

    def generation() -> int:
        for index in range(args.items):
            generate(config, index)
        return args.items

    def replay() -> int:
        for index in range(args.items):
            env.reset(options={"index": index})
            env.step(env.task.reference_text(env.problem))
        return args.items

    pairs = [("1250", "$1,250"), ("0.75", "\\frac{3}{4}"), ("18", "18 apples"), ("18", "19")] * (args.items // 4)

    def numeric() -> int:
        for gold, pred in pairs:
            answers_match(gold, pred)
        return len(pairs)

    print(f"generate problems/s:             {best_rate(generation, args.repeats):10.0f}")
    print(f"completion replays/s:            {best_rate(replay, args.repeats):10.0f}")
    print(f"numeric answer checks/s:         {best_rate(numeric, args.repeats):10.0f}")
    if not math_verify_installed():
        print("math-verify is not installed: LaTeX figures skipped")
        return
    verifier = LatexVerifier()
    start = time.perf_counter()
    verifier.verify("x", "x")
    print(f"math-verify worker start (s):    {time.perf_counter() - start:10.2f}")

    def latex() -> int:
        for k in range(50):
            verifier.verify(f"\\frac{{{k}}}{{7}}", f"\\frac{{{2 * k}}}{{14}}")
        return 50

    print(f"math-verify checks/s (warm):     {best_rate(latex, args.repeats):10.1f}")
    start = time.perf_counter()
    result = verifier.verify("5x", "9^{9^{9^{9}}}", timeout=1.0)
    print(f"9^{{9^{{9^{{9}}}}}}, timeout 1 s (s): {time.perf_counter() - start:10.2f}  equal={result}")
    verifier.close()


if __name__ == "__main__":
    main()
