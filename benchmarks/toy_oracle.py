"""Does the toy reward dynamic mixing? Best static mixture vs best piecewise-static schedules.

Searches (on `--search-seeds`) the best static mixture and the best 2- and 4-phase
schedules of the default toy task (`mixgym.llm_backend.oracle`), then scores each, and the
uniform mixture, on held-out run seeds it was not searched on. A schedule that beats the
static oracle on held-out seeds shows that a dynamic policy has something to gain.

    python benchmarks/toy_oracle.py [--total-steps 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mixgym.llm_backend.oracle import schedule_objective, search_schedule
from mixgym.llm_backend.toy import ToyBackend, ToyConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-steps", type=int, default=1000)
    parser.add_argument("--search-seeds", type=int, default=5, help="run seeds 0..n-1 are searched on")
    parser.add_argument("--heldout-seeds", type=int, default=20, help="run seeds 100..100+n-1 score")
    args = parser.parse_args()
    config = ToyConfig(total_steps=args.total_steps)
    backend = ToyBackend(config)
    search = tuple(range(args.search_seeds))
    heldout = tuple(range(100, 100 + args.heldout_seeds))
    uniform = np.full((1, config.num_domains), 1 / config.num_domains)

    def per_seed(mixtures: np.ndarray) -> np.ndarray:
        return np.array([schedule_objective(backend, mixtures, (seed,)) for seed in heldout])

    base = per_seed(uniform)
    print(f"domains: {backend.domains}; budget {args.total_steps} steps; held-out seeds {len(heldout)}\n")
    print("| schedule | mixtures (per phase) | search objective | held-out objective (mean +- sem) | vs uniform | search s |")
    print("|---|---|---|---|---|---|")
    print(f"| uniform | {uniform.round(2).tolist()} | - | {base.mean():.4f} +- {base.std(ddof=1) / np.sqrt(len(base)):.4f} | - | - |")
    static_scores = None
    for phases in (1, 2, 4):
        start = time.perf_counter()
        result = search_schedule(config, phases=phases, seeds=search)
        seconds = time.perf_counter() - start
        scores = per_seed(result.mixtures)
        if phases == 1:
            static_scores = scores
        gain = 1 - scores.mean() / base.mean()
        name = "static oracle" if phases == 1 else f"{phases}-phase schedule"
        print(
            f"| {name} | {result.mixtures.round(2).tolist()} | {result.objective:.4f} | "
            f"{scores.mean():.4f} +- {scores.std(ddof=1) / np.sqrt(len(scores)):.4f} | {gain:+.1%} | {seconds:.0f} |"
        )
        if phases > 1 and static_scores is not None:
            diff = static_scores - scores
            print(f"|  paired vs static | | | {diff.mean():+.4f} +- {diff.std(ddof=1) / np.sqrt(len(diff)):.4f} (positive: schedule better) | | |")


if __name__ == "__main__":
    main()
