"""Benchmark the LM agent: decoding throughput against ``model.generate``, and the cost of a backspace.

    python bench/lm_agent_bench.py            # small defaults, well under 3 minutes on 2 CPU cores
    python bench/lm_agent_bench.py --help

1. Tokens per second of :class:`~backtrack_gym.agents.LMAgent` in completion mode on
   CountDown against plain ``model.generate`` with the same model (a fresh "3M"
   preset), prompts (the envs' first observations), batch size, sampling settings
   and number of new tokens (eos is suppressed in both: ``stop_at_eos=False`` and
   ``min_new_tokens``). Best of ``--repeats`` runs each, interleaved.
2. The time of one decode step after a ``<bksp>`` against one after an ordinary
   token, at several context lengths (batch 1), and of re-encoding the context from
   scratch, which is what masking avoids. A step is timed from one sampling call to
   the next, so it includes the agent's bookkeeping.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym

import backtrack_gym  # noqa: F401  (registers the envs)
from backtrack_gym.agents import DecodeConfig, LMAgent
from backtrack_gym.envs.countdown import CountDownTask
from backtrack_gym.train import build_model, build_tokenizer

ENV_ID = "backtrack_gym/CountDown-v0"


def throughput(model, tokenizer, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(system, seconds, tokens/s) of the agent and of ``generate`` on the same batch."""
    import torch

    decoding = DecodeConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, stop_at_eos=False, seed=0)
    agent = LMAgent(model, tokenizer, decoding, max_new_tokens=args.new_tokens)
    envs = [gym.make(ENV_ID, interaction="completion") for _ in range(args.batch)]
    prompts = [env.reset(seed=args.seed + i)[0] + "\n" for i, env in enumerate(envs)]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    generate_kwargs = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }

    def run_agent() -> int:
        episodes = agent.rollout(envs, seed=args.seed)
        return sum(sum(e.model_mask) for e in episodes)

    def run_generate() -> int:
        with torch.inference_mode():
            out = model.generate(**batch, **generate_kwargs)
        return (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]

    systems = {"LMAgent (completion)": run_agent, "model.generate": run_generate}
    best = {name: float("inf") for name in systems}
    tokens = {}
    for run in systems.values():  # warm up
        run()
    for _ in range(args.repeats):
        for name, run in systems.items():
            start = time.perf_counter()
            tokens[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    if len(set(tokens.values())) != 1:
        raise RuntimeError(f"the systems generated different numbers of tokens: {tokens}")
    return [(name, best[name], tokens[name] / best[name]) for name in systems]


def backspace_cost(model, tokenizer, context: int, steps: int) -> tuple[float, float, float]:
    """Median ms of a decode step after an ordinary token and after a ``<bksp>``, and of a full re-encode."""
    import torch

    pattern = tokenizer("ab<bksp>", add_special_tokens=False)["input_ids"]
    bksp = tokenizer.convert_tokens_to_ids("<bksp>")
    script = pattern * steps
    stamps: list[float] = []

    def force(rows, model_tokens, scores):
        stamps.append(time.perf_counter())
        forced = torch.full_like(scores, -torch.inf)
        forced[0, script[min(len(model_tokens[0]), len(script) - 1)]] = 0.0
        return forced

    env = gym.make(ENV_ID, interaction="completion")
    observation, _ = env.reset(seed=0)
    filler = (observation + "\n") * (context // (len(observation) + 1) + 1)
    decoding = DecodeConfig(stop_at_eos=False, greedy=True)
    agent = LMAgent(
        model,
        tokenizer,
        decoding,
        max_new_tokens=len(script),
        prompt_format=lambda _: filler[-context:],
        logits_processor=force,
    )
    agent.rollout([env], seed=0)
    # The interval from sampling token k to sampling token k + 1 is the step that applies and feeds token k.
    after = {True: [], False: []}
    for k in range(len(script) - 1):
        after[script[k] == bksp].append(stamps[k + 1] - stamps[k])
    ids = torch.tensor([tokenizer(filler[-context:], add_special_tokens=False)["input_ids"]])
    encode = []
    with torch.inference_mode():
        for _ in range(5):
            start = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1)
            encode.append(time.perf_counter() - start)
    return 1e3 * statistics.median(after[False]), 1e3 * statistics.median(after[True]), 1e3 * min(encode)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LMAgent throughput and backspace cost")
    parser.add_argument("--model", default="3M", help="model preset")
    parser.add_argument("--batch", type=int, default=8, help="envs decoded together")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per sequence")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per system (best is kept)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 512, 2048], help="contexts for backspace")
    parser.add_argument("--backspace-steps", type=int, default=20, help="'a b <bksp>' groups per context")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer(CountDownTask())
    model = build_model(args.model, tokenizer, seed=args.seed).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model} ({n_params / 1e6:.2f}M parameters), {args.threads} torch thread(s)")
    print(
        f"\n1. completion-mode decoding: batch {args.batch}, {args.new_tokens} new tokens each, "
        f"temperature {args.temperature}, top-k {args.top_k}, top-p {args.top_p}; best of {args.repeats}"
    )
    rows = throughput(model, tokenizer, args)
    baseline = rows[-1][2]
    print(f"{'system':>22} {'seconds':>9} {'tokens/s':>9} {'x generate':>11}")
    for name, seconds, rate in rows:
        print(f"{name:>22} {seconds:9.3f} {rate:9.0f} {rate / baseline:11.2f}")
    print(f"\n2. one decode step (batch 1, median of {args.backspace_steps} each), milliseconds")
    print(f"{'context':>8} {'ordinary':>9} {'backspace':>10} {'bksp/ord':>9} {'re-encode':>10}")
    for context in args.contexts:
        ordinary, backspace, encode = backspace_cost(model, tokenizer, context, args.backspace_steps)
        print(f"{context:8d} {ordinary:9.2f} {backspace:10.2f} {backspace / ordinary:9.2f} {encode:10.2f}")


if __name__ == "__main__":
    main()
