"""How much signal the rewards carry about a mixture choice, on the K=5 toy (issue 12).

    python benchmarks/reward_signal.py [--seeds 8]

Two measurements, each on ``--seeds`` runs (seeds 0..n-1), baseline uniform:

1. Return noise: a fixed policy (the oracle static mixture) played for a whole run. The return
   under ``eval_loss`` is A_0 - A_T (the agent's objective at reset minus at the end); under
   ``advantage`` it is B_T - A_T (a uniform twin's final objective minus the agent's). Both
   differ between policies by the same amount in expectation; what the twin changes is the
   noise across runs (common random numbers): the table gives the mean and sd of each return
   over seeds, and the ratio of mean to sd (the return's signal-to-noise ratio).
2. One decision's effect: at decision t, the run branches (`MixingEnv.state_dict`): one branch
   trains the decision on the oracle mixture, the other on uniform; both then continue on
   uniform to the end. The immediate reward difference (identical for ``eval_loss`` and
   ``advantage``: the twin's term does not depend on the action) is set beside the lasting
   difference of the final objective. A large immediate effect that does not last is what a
   short discount (gamma 0.95: ~20 decisions) chases.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np

from mixgym.envs import MixingEnv
from mixgym.llm_backend.oracle import oracle_mixture


def play(env: MixingEnv, mixture: np.ndarray, seed: int) -> tuple[float, dict]:
    _, info = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        _, reward, done, _, info = env.step(mixture)
        total += reward
    return total, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    env = {r: MixingEnv(reward=r, action_map="simplex") for r in ("eval_loss", "advantage")}
    oracle = oracle_mixture(env["eval_loss"].backend.config).mixture
    uniform = np.full(len(oracle), 1 / len(oracle))
    print(f"load average {os.getloadavg()}; oracle mixture {np.round(oracle, 3).tolist()}\n")
    print("| reward | return of the oracle mixture, mean ± sd over runs | signal / noise |")
    print("|---|---|---|")
    for name, e in env.items():
        returns = np.array([play(e, oracle, seed)[0] for seed in range(args.seeds)])
        if name == "eval_loss":  # the part of A_0 - A_T that the policy controls is -A_T
            uniform_returns = np.array([play(e, uniform, seed)[0] for seed in range(args.seeds)])
            gain = returns - uniform_returns  # the same runs: only used for the signal
            print(f"| eval_loss | {returns.mean():.4f} ± {returns.std(ddof=1):.4f} | {gain.mean() / returns.std(ddof=1):.2f} |")
        else:
            print(f"| advantage | {returns.mean():.4f} ± {returns.std(ddof=1):.4f} | {returns.mean() / returns.std(ddof=1):.2f} |")
    print("\n| decision t | immediate reward effect of one oracle decision (mean ± sd) | lasting effect on the final objective | lasting / immediate |")
    print("|---|---|---|---|")
    e = env["advantage"]
    for t in (5, 25, 50, 75, 95):
        immediate, lasting = [], []
        for seed in range(args.seeds):
            e.reset(seed=seed)
            for _ in range(t):
                e.step(uniform)
            state = copy.deepcopy(e.state_dict())
            outcome = []
            for first in (oracle, uniform):
                e.load_state_dict(copy.deepcopy(state))
                _, reward, done, _, info = e.step(first)
                while not done:
                    _, _, done, _, info = e.step(uniform)
                outcome.append((reward, float(info["objective"])))
            immediate.append(outcome[0][0] - outcome[1][0])
            lasting.append(outcome[1][1] - outcome[0][1])  # lower final objective is better
        im, la = np.array(immediate), np.array(lasting)
        print(f"| {t} | {im.mean():+.5f} ± {im.std(ddof=1):.5f} | {la.mean():+.5f} ± {la.std(ddof=1):.5f} | {la.mean() / im.mean():.2f} |")
    print(f"\n{time.perf_counter() - start:.0f} s, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
