"""The cost of the advantage reward's baseline twin on the toy (issue 12).

    python benchmarks/advantage_cost.py [--seconds 3] [--repeats 3] [--hf-decisions 6]

Random actions, ``steps_per_action=10``, resets included, one process, the v1 observation.
For each K, the rewards are measured in alternation (``--repeats`` rounds) so that load from
other work hits them alike; the table gives the median env steps/s of the rounds, the ratio
to ``eval_loss`` (the same env without a twin) measured in the same rounds, and the twin's
share of the env's step time from ``env.timings`` (its training and evaluation), and the
rate per CPU second of this process (what a quiet machine would see). Goal: >= 1,000 env
steps/s at K=5 with the twin. Then the HF backend (pythia-tiny on the sample
corpus, 4 optimizer steps of 2 x 4 sequences of 64 tokens per decision, one torch thread):
seconds per decision with ``eval_loss`` and with ``advantage``, and the twin's share. Prints
Markdown tables; BENCHMARKS.md records them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as toy_throughput: one BLAS thread, set before numpy loads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mixgym.envs import MixingEnv  # noqa: E402
from toy_throughput import measure  # noqa: E402  (the same random-action loop as the throughput table)

REWARDS = ("eval_loss", "advantage", "advantage_terminal")


def twin_share(num_domains: int, reward: str) -> float:
    """The twin's share of the env's timed parts over one run (0 without a twin)."""
    env = MixingEnv(num_domains=num_domains, reward=reward, steps_per_action=10)
    env.reset(seed=0)
    actions = np.random.default_rng(1).uniform(-1, 1, (env.num_decisions, num_domains)).astype(np.float32)
    for action in actions:
        env.step(action)
    total = env.timings["total"]
    return total["twin"] / sum(total.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell and round (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--hf-decisions", type=int, default=6, help="HF decisions per reward (0: skip HF)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, python {platform.python_version()}, load average {os.getloadavg()}\n")
    print("| K | reward | env steps/s (median) | per CPU second | vs eval_loss | twin's share of step time | CPU rate vs goal 1000 |")
    print("|---|---|---|---|---|---|---|")
    for k in (5, 22):
        rates: dict[str, list[float]] = {r: [] for r in REWARDS}
        cpu_rates: dict[str, list[float]] = {r: [] for r in REWARDS}
        shares: dict[str, list[float]] = {r: [] for r in REWARDS}
        for _ in range(args.repeats):
            for reward in REWARDS:
                measured = measure(k, reward, 2 * args.seconds, 1)  # half of it times the env, half its floor
                rates[reward].append(measured["rate"])
                cpu_rates[reward].append(measured["cpu_rate"])
                shares[reward].append(twin_share(k, reward))
        base = float(np.median(rates["eval_loss"]))
        for reward in REWARDS:
            rate, cpu_rate = float(np.median(rates[reward])), float(np.median(cpu_rates[reward]))
            share = float(np.median(shares[reward]))
            print(f"| {k} | {reward} | {rate:,.0f} | {cpu_rate:,.0f} | {rate / base:.2f} | {share:.0%} | {cpu_rate / 1000:.2f}x |")
    if args.hf_decisions:
        import torch

        torch.set_num_threads(1)
        print("\n| backend | reward | s / decision | vs eval_loss | twin's share of step time |")
        print("|---|---|---|---|---|")
        hf = {"backend": "hf", "model": "pythia-tiny", "seq_len": 64, "micro_batch_size": 4, "grad_accumulation": 2}
        seconds = {}
        for reward in ("eval_loss", "advantage"):
            env = MixingEnv(reward=reward, steps_per_action=4, total_steps=4 * args.hf_decisions, **hf)
            env.reset(seed=0)
            start = time.perf_counter()
            for _ in range(args.hf_decisions):
                env.step(np.zeros(len(env.domains), dtype=np.float32))
            seconds[reward] = (time.perf_counter() - start) / args.hf_decisions
            total = env.timings["total"]
            print(
                f"| hf pythia-tiny | {reward} | {seconds[reward]:.2f} | {seconds[reward] / seconds['eval_loss']:.2f} "
                f"| {total['twin'] / sum(total.values()):.0%} |"
            )
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
