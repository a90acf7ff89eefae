"""Train Stable-Baselines3 PPO on a tiny CountDown through ``TokenEnv`` (one token per step).

    python examples/token_env_ppo.py --steps 4000

Prints the mean return of the trained policy and of uniformly random tokens over the
same evaluation problems. Two numbers in 1..4 and a target in 1..8, a 22-token
vocabulary; solving pays 1, each invalid line costs 0.1, an episode has two lines.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.envs.token_env import TokenEnv
from backtrack_gym.train.tokenizer import build_tokenizer

ALPHABET = "0123456789+-*/= \n"


def make_env(seed: int = 0) -> TokenEnv:
    """The tiny CountDown as a token env (letters of the observation read as <unk>)."""
    env = gym.make(
        "backtrack_gym/CountDown-v0",
        num_count=2,
        number_min=1,
        number_max=4,
        target_min=1,
        target_max=8,
        held_out_fraction=0.0,
        max_steps=2,
    )
    return TokenEnv(env, build_tokenizer(ALPHABET), max_length=48, max_action_tokens=10)


def mean_return(env: TokenEnv, act, episodes: int, seed: int) -> float:
    """Mean return of ``act(observation) -> token`` over ``episodes`` seeded episodes."""
    total = 0.0
    for k in range(episodes):
        observation, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(act(observation))
            total += reward
            done = terminated or truncated
    return total / episodes


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="PPO environment steps")
    parser.add_argument("--episodes", type=int, default=200, help="evaluation episodes per policy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)  # small MLP: threads only add overhead
    env = make_env()
    model = PPO("MultiInputPolicy", env, n_steps=min(512, max(args.steps, 64)), batch_size=64, seed=args.seed)
    model.learn(total_timesteps=args.steps)
    rng = np.random.default_rng(args.seed)
    eval_seed = 10_000 + args.seed
    results = {
        "ppo": mean_return(env, lambda obs: int(model.predict(obs, deterministic=False)[0]), args.episodes, eval_seed),
        "random": mean_return(env, lambda obs: int(rng.integers(env.vocab_size)), args.episodes, eval_seed),
    }
    print(f"mean return over {args.episodes} episodes after {args.steps} PPO steps:")
    for name, value in results.items():
        print(f"  {name:>6}  {value:+.3f}")
    return results


if __name__ == "__main__":
    main()
