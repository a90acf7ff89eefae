"""Train sb3-contrib's MaskablePPO on 4x4 Sudoku on the CPU, then compare it with a
masked-random policy on held-out puzzles.

The policy sees the board (``backtrack_gym/SudokuGrid-v0``) and picks one placement
per step among those the action mask allows (no repeated digit in a row, column or
box); a wrong but allowed placement leads to a dead end. Held-out puzzles come from
the test split, whose solution grids never occur in training.

    pip install stable-baselines3 sb3-contrib
    python examples/sudoku_maskable_ppo.py --timesteps 200000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env

from backtrack_gym.envs.sudoku.structured import SudokuGridEnv

Policy = Callable[[np.ndarray, np.ndarray], int]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4, help="board size (4, 6 or 9)")
    parser.add_argument("--timesteps", type=int, default=200_000, help="training steps")
    parser.add_argument("--envs", type=int, default=8, help="parallel training envs")
    parser.add_argument("--eval-episodes", type=int, default=500, help="held-out puzzles to evaluate on")
    parser.add_argument("--progress-weight", type=float, default=1.0, help="weight of the partial-credit reward")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def solve_rate(env: SudokuGridEnv, policy: Policy, episodes: int) -> float:
    """Share of held-out puzzles ``0..episodes-1`` that ``policy`` solves."""
    solved = 0
    for index in range(episodes):
        obs, info = env.reset(options={"index": index})
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs, info["action_mask"]))
            done = terminated or truncated
        solved += info["solved"]
    return solved / episodes


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate, print and return the held-out solve rates."""
    args = parse_args(argv)
    torch.set_num_threads(1)  # a small MLP: threads cost more than they save
    env_kwargs = {"size": args.size, "reward_weights": {"correct": 1.0, "progress": args.progress_weight}}
    train_env = make_vec_env(SudokuGridEnv, n_envs=args.envs, seed=args.seed, env_kwargs=env_kwargs)
    model = MaskablePPO(
        "MlpPolicy",
        train_env,
        n_steps=256,
        batch_size=256,
        gamma=0.99,
        ent_coef=0.01,
        policy_kwargs={"net_arch": [256, 256]},
        seed=args.seed,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    train_s = time.perf_counter() - start

    test_env = SudokuGridEnv(split="test", **env_kwargs)
    rng = np.random.default_rng(args.seed)
    rates = {
        "maskable_ppo": solve_rate(
            test_env,
            lambda obs, mask: int(model.predict(obs, action_masks=mask, deterministic=True)[0]),
            args.eval_episodes,
        ),
        "masked_random": solve_rate(
            test_env, lambda obs, mask: int(rng.choice(np.flatnonzero(mask))), args.eval_episodes
        ),
    }
    print(
        f"{args.size}x{args.size} Sudoku, {args.timesteps} steps of training in {train_s:.0f} s; "
        f"solve rate on {args.eval_episodes} held-out puzzles: "
        f"MaskablePPO {rates['maskable_ppo']:.1%}, masked random {rates['masked_random']:.1%}"
    )
    return rates


if __name__ == "__main__":
    main()
