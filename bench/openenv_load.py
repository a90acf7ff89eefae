"""Load test of the OpenEnv server on loopback: N concurrent clients x S steps (issue #29, item 2).

Starts ``python -m backtrack_gym.envs.openenv_server --port 0`` in a child process, runs
``--clients`` threads, each a ``backtrack_gym/Remote-v0`` CountDown env (step mode, backtracking
on) stepping ``--steps`` actions (a few fixed lines and ``<backtrack>``, drawn from a generator
seeded by the client's number; reset when an episode ends). Then replays every client's seeds
and actions in a local env and checks each step's five values are equal: no client's episode
took state from another's. Prints steps/s locally (one env, the same actions) and through the server.

Run: ``nice -n 19 taskset -c 1 python bench/openenv_load.py`` (server and clients share the core).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import gymnasium as gym
import numpy as np

import backtrack_gym  # noqa: F401
from backtrack_gym.envs.openenv_server import to_json

ENV_ID = "backtrack_gym/CountDown-v0"
KWARGS = {"backtrack": True}
LINES = ["<backtrack>", "1 + 2 = 3", "8 - 5 = 3", "3 * 7 = 21", "21 + 3 = 24", "99 + 1 = 100", "nonsense"]


def plan(client: int, steps: int) -> list[str]:
    rng = np.random.default_rng(client)
    return [LINES[i] for i in rng.integers(0, len(LINES), steps)]


def play(env, client: int, actions: list[str]) -> list:
    """Every reset's and step's values, JSON; reset with seed client*1000+k at the k-th episode."""
    record, episode = [], 0
    record.append(to_json(env.reset(seed=client * 1000)))
    for action in actions:
        out = env.step(action)
        record.append(to_json(out))
        if out[2] or out[3]:
            episode += 1
            record.append(to_json(env.reset(seed=client * 1000 + episode)))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    plans = [plan(c, args.steps) for c in range(args.clients)]

    start = time.perf_counter()
    local = []
    for c in range(args.clients):
        env = gym.make(ENV_ID, **KWARGS)
        local.append(play(env, c, plans[c]))
        env.close()
    local_s = time.perf_counter() - start

    cmd = [
        sys.executable,
        "-m",
        "backtrack_gym.envs.openenv_server",
        "--port",
        "0",
        "--max-sessions",
        str(args.clients),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(server.stdout.readline())["url"]
        time.sleep(1.0)
        envs = [gym.make("backtrack_gym/Remote-v0", base_url=url, env_id=ENV_ID, **KWARGS) for _ in plans]
        remote: list = [None] * args.clients
        errors: list = []

        def run(c: int) -> None:
            try:
                remote[c] = play(envs[c], c, plans[c])
            except Exception as err:  # reported below
                errors.append((c, repr(err)))

        threads = [threading.Thread(target=run, args=(c,)) for c in range(args.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        remote_s = time.perf_counter() - start
        for env in envs:
            env.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    leaks = sum(remote[c] != local[c] for c in range(args.clients) if remote[c] is not None)
    total = args.clients * args.steps
    print(f"{args.clients} clients x {args.steps} steps, {ENV_ID} {KWARGS}, loopback")
    print("| where | steps | seconds | steps/s |")
    print("|---|---|---|---|")
    print(f"| local (one env at a time) | {total} | {local_s:.2f} | {total / local_s:.0f} |")
    print(
        f"| through the server ({args.clients} concurrent clients) | {total} "
        f"| {remote_s:.2f} | {total / remote_s:.0f} |"
    )
    print(f"episodes that differ from the local replay: {leaks} of {args.clients}; client errors: {errors[:3]}")
    return 0 if leaks == 0 and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
