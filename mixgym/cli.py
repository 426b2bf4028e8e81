"""The `mixgym` command line."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from mixgym.envs.mixing_env import MixingEnv


def _run_static(env: MixingEnv, policy: str, seed: int) -> tuple[float, float]:
    """One episode under a static policy ("uniform" or "random" Dirichlet each decision)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    k = len(env.domains)
    start = time.perf_counter()
    terminated, info = False, {}
    while not terminated:
        mixture = np.full(k, 1.0 / k) if policy == "uniform" else rng.dirichlet(np.ones(k))
        _, _, terminated, _, info = env.step(env.action_mapper.inverse(mixture))
    return float(info["objective"]), time.perf_counter() - start


def demo(args: argparse.Namespace) -> int:
    """One toy pretraining run per policy, printed as a table."""
    console = Console()
    env = MixingEnv(backend="toy", reward="alignment", total_steps=args.total_steps)
    table = Table(title=f"toy backend, K={len(env.domains)}, {args.total_steps} optimizer steps, seed {args.seed}")
    for column in ("policy", "final mean held-out loss", "wall time (s)"):
        table.add_column(column)
    for policy in ("uniform", "random"):
        objective, seconds = _run_static(env, policy, args.seed)
        table.add_row(policy, f"{objective:.4f}", f"{seconds:.2f}")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixgym", description="Online data mixing as a Gymnasium environment.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="run the toy backend under a few mixing policies and print a table")
    p.add_argument("--total-steps", type=int, default=1000, help="optimizer steps per run (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
