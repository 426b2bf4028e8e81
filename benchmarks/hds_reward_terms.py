"""HDS's reward terms before and after the fidelity fixes (issue 11), on the toy and pythia-tiny.

    python benchmarks/hds_reward_terms.py                 # toy K=5 (3 seeds) and pythia-tiny (1 seed)
    python benchmarks/hds_reward_terms.py --no-hf         # the toy only

"Before" is the holistic reward as mixgym computed it until issue 11 (raw alignment score
``m . s``, stability from the weight norms' change over a whole decision); "after" is the
default now (``m . mean_std_norm(s)`` as HDS, stability per optimizer step averaged over the
decision). Both are computed from the same snapshots of the same runs, so their difference
is the formula's alone. Each run trains on a fixed mixture -- uniform, natural, and one-hot on
one domain ("hard" on the toy) -- with HDS's forced micro-batches (22/144, as ``env_for("hds")``
sets them). Per mixture: the mean over decisions of each weighted term (1 x r_align,
10 x r_div, 10 x r_stab), the total, the final objective, and how much the raw score's scale
drifts within a run (mean |s| over the last 10% of decisions / over the first 10%).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mixgym.agents.compare import env_for
from mixgym.envs.rewards import HolisticReward, Reward, RewardResult, Snapshot

VARIANTS = {"before": HolisticReward(alignment="raw", stability="per-decision"), "after": HolisticReward()}


class BothVariants(Reward):
    """Pays the "after" reward and records every term of both variants per decision."""

    name = "holistic"
    requires = HolisticReward.requires

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def __call__(self, before: Snapshot, after: Snapshot, env: Any) -> RewardResult:
        row: dict[str, float] = {}
        for label, reward in VARIANTS.items():
            result = reward(before, after, env)
            parts = result.components
            row[f"{label}/align"] = reward.w_align * parts["alignment"]
            row[f"{label}/div"] = reward.w_div * parts["diversity"]
            row[f"{label}/stab"] = reward.w_stab * parts["stability"]
            row[f"{label}/total"] = result.value
        row["mean_abs_raw_s"] = float(np.abs(parts["alignment_scores"]).mean())
        self.records.append(row)
        return RewardResult(row["after/total"], {})


def run(options: dict[str, Any], mixture: np.ndarray, seed: int) -> tuple[pd.DataFrame, float]:
    reward = BothVariants()
    env = env_for("hds", {**options, "reward": reward}, action_map="simplex")
    env.reset(seed=seed)
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(mixture)
    return pd.DataFrame(reward.records), float(info["objective"])


def measure(label: str, options: dict[str, Any], mixtures: dict[str, np.ndarray], seeds: list[int]) -> pd.DataFrame:
    rows = []
    for name, mixture in mixtures.items():
        for seed in seeds:
            start = time.perf_counter()
            records, objective = run(options, mixture, seed)
            tail = max(1, len(records) // 10)
            rows.append(
                {
                    "backend": label,
                    "mixture": name,
                    "seed": seed,
                    **records.drop(columns="mean_abs_raw_s").mean().to_dict(),
                    "raw_s_drift": records["mean_abs_raw_s"].iloc[-tail:].mean() / records["mean_abs_raw_s"].iloc[:tail].mean(),
                    "final_objective": objective,
                    "seconds": time.perf_counter() - start,
                }
            )
            print(f"{label} {name} seed {seed}: {time.perf_counter() - start:.1f} s", flush=True)
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> str:
    grouped = frame.groupby(["backend", "mixture"], sort=False).mean(numeric_only=True)
    head = "| backend | mixture | reward | 1 x align | 10 x div | 10 x stab | total | final objective |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for (backend, mixture), row in grouped.iterrows():
        for label in VARIANTS:
            terms = " | ".join(f"{row[f'{label}/{t}']:.3f}" for t in ("align", "div", "stab", "total"))
            lines.append(f"| {backend} | {mixture} | {label} | {terms} | {row['final_objective']:.4f} |")
    drift = ", ".join(f"{b} {m}: {v:.2f}x" for (b, m), v in grouped["raw_s_drift"].items())
    return "\n".join(lines) + f"\n\nRaw-score drift (mean |s|, last 10% / first 10% of decisions): {drift}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-hf", action="store_true", help="skip pythia-tiny")
    parser.add_argument("--out", default="benchmarks/results/hds_reward_terms.md", help="Markdown report")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    toy = {"total_steps": 1000}
    k = 5
    natural = np.full(k, 1 / k)  # the default toy task's domains are equal in size
    frames = [
        measure(
            "toy K=5",
            toy,
            {"uniform": natural, "one-hot hard": np.eye(k)[1]},
            [0, 1, 2],
        )
    ]
    if not args.no_hf:
        hf = {"backend": "hf", "model": "pythia-tiny", "total_steps": 100, "steps_per_action": 5, "seq_len": 128,
              "micro_batch_size": 8, "grad_accumulation": 4}
        sizes = env_for("hds", hf).backend.info.domain_sizes
        frames.append(
            measure("pythia-tiny", hf, {"uniform": np.full(5, 0.2), "natural": sizes / sizes.sum(), "one-hot c": np.eye(5)[0]}, [0])
        )
    frame = pd.concat(frames)
    text = (
        f"`python benchmarks/hds_reward_terms.py` on {platform.node()} ({platform.processor() or platform.machine()}), "
        f"torch threads 1, load average at the end {Path('/proc/loadavg').read_text().split()[0]}\n\n" + table(frame)
    )
    Path(args.out).write_text(text)
    frame.to_csv(Path(args.out).with_suffix(".csv"), index=False)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
