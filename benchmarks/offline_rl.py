"""Offline RL from recorded random mixing runs (a Minari dataset), as Data Mixing Agent trains.

Records ``--episodes`` runs of the ``random`` agent (a fresh random mixture every decision) on a
toy task with the "eval_loss" reward, writes them as a Minari dataset, trains TorchRL's
behaviour cloning and TD3+BC on it (`mixgym.integrations.offline_rl`), then scores both, and
natural, uniform and ODM, on fresh seeds (100, 101, ...) on the task's objective. Prints a
Markdown table for BENCHMARKS.md.

    MINARI_DATASETS_PATH=runs/minari python benchmarks/offline_rl.py --task classic5
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import date

import numpy as np

from mixgym.agents import evaluate, make_agent
from mixgym.envs import MixingEnv
from mixgym.integrations.minari_datasets import record
from mixgym.integrations.offline_rl import train_offline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="classic5")
    parser.add_argument("--episodes", type=int, default=40, help="recorded random runs (default 40)")
    parser.add_argument("--steps", type=int, default=3000, help="offline minibatch updates (default 3000)")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation runs (default 5)")
    parser.add_argument("--total-steps", type=int, default=1000)
    args = parser.parse_args()
    env_options = {"total_steps": args.total_steps, "reward": "eval_loss"}
    dataset_id = f"mixgym/{args.task}/random-{args.episodes}-v0"
    start = time.perf_counter()
    record("random", dataset_id, task=args.task, episodes=args.episodes, seed=0, env_options=env_options)
    recorded = time.perf_counter() - start
    contenders = {}
    for method in ("bc", "td3bc"):
        start = time.perf_counter()
        contenders[f"offline-{method}"] = (train_offline(dataset_id, method=method, steps=args.steps), time.perf_counter() - start)
    rows = []
    for name in ("natural", "uniform", "odm", "random", "offline-bc", "offline-td3bc"):
        env = MixingEnv(task=args.task, action_map="simplex", **env_options)
        agent, seconds = contenders[name] if name in contenders else (make_agent(name, env), 0.0)
        finals = evaluate(agent, env, episodes=args.seeds, seed=100).final_objectives()
        rows.append((name, finals.mean(), finals.std(ddof=1), seconds))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{args.task}: {args.episodes} random runs recorded in {recorded:.1f} s; {args.steps} updates each; "
          f"{args.seeds} evaluation seeds from 100; {date.today()} at {commit}\n")
    print("| agent | final (domain-mean held-out loss) | train s |\n|---|---|---|")
    for name, mean, sd, seconds in sorted(rows, key=lambda row: row[1]):
        print(f"| {name} | {mean:.4f} +- {sd:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
