"""How faithful is OP-Mix's interpolation? Merged probe deltas vs exact branches vs the real run.

OP-Mix scores a candidate mixture by the current model plus the weighted deltas of probes
trained on other mixtures (`mixgym.llm_backend.whatif`, ``method="merge"``). Three rankings of
the same candidates are compared by Spearman's rho over the candidates, per run seed:

- merge: the merged probe deltas (what OP-Mix fits its laws to);
- exact: a branch trained on the candidate's own mixture, the same way as a probe;
- continuation (toy only): the main run itself continued on the candidate's mixture to the end
  of its budget with its own schedule -- the outcome a mixture choice is about.

Scored on the objective (the target-weighted mean held-out loss) and, averaged over domains, on
each domain's loss (what OP-Mix's per-domain laws are fitted to). Also: the continuation regret
of the candidate each ranking puts first. The state is OP-Mix's probing point: 20% of the run
trained on the uniform mixture; the probes and 12 Dirichlet(1) candidates are OP-Mix's design.

    python benchmarks/whatif_fidelity.py toy           # ~10 min on 2 busy cores
    python benchmarks/whatif_fidelity.py hf --seeds 2  # pythia-tiny; ~1 h on 2 busy cores
    python benchmarks/whatif_fidelity.py hf --seeds 1 --total-steps 150 --seq-len 64 --steps 15  # ~15 min

Writes benchmarks/results/whatif_fidelity_<part>.csv/.md/.png.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mixgym.envs import MixingEnv  # noqa: E402

OUT = Path(__file__).parent / "results"
PREFIX = 0.2


def opmix_request(k: int, candidates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """OP-Mix's first-phase probes (old = uniform, then 0.9 d + 0.1 old) and Dirichlet candidates."""
    old = np.full(k, 1.0 / k)
    probes = np.vstack([old, 0.1 * old + 0.9 * np.eye(k)])
    return probes, np.random.default_rng(seed).dirichlet(np.ones(k + 1), candidates)


def rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; a diverged (non-finite) loss ranks last, as the worst."""
    return float(spearmanr(np.nan_to_num(a, nan=np.inf), np.nan_to_num(b, nan=np.inf)).statistic)


def domain_rho(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """Mean over the objective's domains of the per-domain Spearman rho."""
    return float(np.mean([rho(a[:, d], b[:, d]) for d in np.flatnonzero(weights > 0)]))


def continuation(env: MixingEnv, state: dict, mixtures: np.ndarray) -> np.ndarray:
    """(C, K) final held-out losses of the run continued from `state` on each mixture."""
    backend = env.backend
    finals = []
    for mixture in mixtures:
        backend.load_state_dict(state)
        backend.train(mixture, backend.total_steps - backend.step)
        finals.append(list(backend.evaluate().values()))
    backend.load_state_dict(state)
    return np.array(finals)


def scores(merge: np.ndarray, exact: np.ndarray, truth: np.ndarray | None, weights: np.ndarray) -> dict[str, float]:
    row = {
        "diverged_merge": float(np.mean(~np.isfinite(merge @ weights))),
        "diverged_exact": float(np.mean(~np.isfinite(exact @ weights))),
        "rho_merge_exact": rho(merge @ weights, exact @ weights),
        "rho_merge_exact_domains": domain_rho(merge, exact, weights),
    }
    if truth is not None:
        final = truth @ weights
        best = final.min()
        row.update(
            {
                "rho_merge_continuation": rho(merge @ weights, final),
                "rho_exact_continuation": rho(exact @ weights, final),
                "regret_merge_pick": float(final[np.nanargmin(np.nan_to_num(merge @ weights, nan=np.inf))] - best),
                "regret_exact_pick": float(final[np.nanargmin(np.nan_to_num(exact @ weights, nan=np.inf))] - best),
                "regret_random_pick": float(final.mean() - best),
            }
        )
    return row


def toy(seeds: int, out: Path) -> pd.DataFrame:
    steps_grid, lr_grid, rank_grid = (20, 50, 100), (0.5, 1.0, 2.0), (None, 16, 4, 1)
    rows = []
    env = MixingEnv(total_steps=1000)
    weights = env.objective.weights  # a weighted mean: the default objective
    k = len(env.domains)
    bar = tqdm(total=seeds * len(steps_grid) * len(lr_grid), desc="toy states x settings")
    for seed in range(seeds):
        env.reset(seed=seed)
        env.backend.train(np.full(k, 1.0 / k), int(PREFIX * env.backend.total_steps))
        state = env.backend.state_dict()
        probes, candidates = opmix_request(k, 12, seed)
        truth = continuation(env, state, candidates @ probes)
        for steps, lr_scale in itertools.product(steps_grid, lr_grid):
            exact = env.backend.simulate(probes, steps, candidates, "exact", lr_scale)
            for rank in rank_grid:
                merge = env.backend.simulate(probes, steps, candidates, "merge", lr_scale, rank)
                rows.append(
                    {"seed": seed, "steps": steps, "lr_scale": lr_scale, "rank": "full" if rank is None else rank,
                     "merge_cost": merge.cost, "exact_cost": exact.cost, **scores(merge.candidate_loss, exact.candidate_loss, truth, weights)}
                )  # fmt: skip
            bar.update()
    bar.close()
    table = pd.DataFrame(rows)
    example = _example(env, 0, 100, 0.5, 16)
    _report(table, example, out, "toy", "toy, 5 domains, 1,000 steps; state after 200 uniform steps")
    return table


def _example(env: MixingEnv, seed: int, steps: int, lr_scale: float, rank: int | None) -> dict[str, np.ndarray]:
    """One toy seed's objectives by the three rankings, for the scatter plot."""
    k = len(env.domains)
    env.reset(seed=seed)
    env.backend.train(np.full(k, 1.0 / k), int(PREFIX * env.backend.total_steps))
    probes, candidates = opmix_request(k, 12, seed)
    weights = env.objective.weights  # a weighted mean: the default objective
    merge = env.backend.simulate(probes, steps, candidates, "merge", lr_scale, rank).candidate_loss @ weights
    exact = env.backend.simulate(probes, steps, candidates, "exact", lr_scale).candidate_loss @ weights
    truth = continuation(env, env.backend.state_dict(), candidates @ probes) @ weights
    return {"merge": merge, "exact": exact, "continuation": truth}


def hf(seeds: int, out: Path, corpus: str, steps: int, total_steps: int, seq_len: int) -> pd.DataFrame:
    import torch

    torch.set_num_threads(1)
    env = MixingEnv(backend="hf", model="pythia-tiny", corpus=corpus, total_steps=total_steps, seq_len=seq_len,
                    micro_batch_size=8, grad_accumulation=4)  # fmt: skip
    weights = env.objective.weights  # a weighted mean: the default objective
    k = len(env.domains)
    rows = []
    for seed in tqdm(range(seeds), desc="hf seeds"):
        env.reset(seed=seed)
        env.backend.train(np.full(k, 1.0 / k), int(PREFIX * env.backend.total_steps))
        probes, candidates = opmix_request(k, 12, seed)
        start = time.perf_counter()
        merge = env.backend.simulate(probes, steps, candidates, "merge", 2.0, 16)
        merge_s = time.perf_counter() - start
        exact = env.backend.simulate(probes, steps, candidates, "exact", 2.0, 16)
        rows.append(
            {"seed": seed, "steps": steps, "lr_scale": 2.0, "rank": 16, "merge_cost": merge.cost, "exact_cost": exact.cost,
             "merge_s": merge_s, "exact_s": exact.wall_time, "spread_merge": float(np.ptp(merge.candidate_loss @ weights)),
             "spread_exact": float(np.ptp(exact.candidate_loss @ weights)), **scores(merge.candidate_loss, exact.candidate_loss, None, weights)}
        )  # fmt: skip
        if seed == 0:
            example = {"merge": merge.candidate_loss @ weights, "exact": exact.candidate_loss @ weights}
    table = pd.DataFrame(rows)
    prefix = int(PREFIX * total_steps)
    setting = (
        f"pythia-tiny on {corpus}, {total_steps} steps of 32 x {seq_len} tokens; state after {prefix} uniform steps; "
        f"{steps} probe steps, LoRA r 16, lr 2x"
    )
    _report(table, example, out, "hf", setting)
    return table


def _report(table: pd.DataFrame, example: dict[str, np.ndarray], out: Path, part: str, setting: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"whatif_fidelity_{part}.csv", index=False)
    metrics = [c for c in table.columns if c.startswith(("rho_", "regret_", "diverged_"))]
    grouped = table.groupby(["steps", "lr_scale", "rank"], sort=False)[metrics]
    mean, sem = grouped.mean(), grouped.sem()
    lines = [f"What-if fidelity, {part}: {setting}; {table['seed'].nunique()} seeds; mean (sem) over seeds.", ""]
    lines.append("| probe steps | lr scale | rank | " + " | ".join(metrics) + " |")
    lines.append("|" + "---|" * (3 + len(metrics)))
    for key in mean.index:
        cells = [f"{mean.loc[key, m]:.3f} ({0 if np.isnan(sem.loc[key, m]) else sem.loc[key, m]:.3f})" for m in metrics]
        lines.append("| " + " | ".join(str(v) for v in key) + " | " + " | ".join(cells) + " |")
    (out / f"whatif_fidelity_{part}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    panels = 2 if part == "toy" else 1
    fig, axes = plt.subplots(1, panels + 1, figsize=(5 * (panels + 1), 4))
    ax = axes[0]
    ax.scatter(example["exact"], example["merge"], label="merge vs exact")
    if "continuation" in example:
        ax.scatter(example["continuation"], example["merge"], marker="x", label="merge vs continuation")
    ax.set(xlabel="exact branch (or continuation) objective", ylabel="merged-delta objective", title="one state, 12 candidates")
    ax.legend(fontsize=7)
    if part == "toy":
        sub = table[(table["steps"] == 100) & (table["lr_scale"] == 0.5)]
        by_rank = sub.groupby("rank", sort=False)[["rho_merge_exact", "rho_merge_continuation", "rho_exact_continuation"]]
        by_rank.mean().plot.bar(yerr=by_rank.sem(), ax=axes[1], rot=0)
        axes[1].set(ylabel="Spearman rho over candidates", title="100 probe steps, lr 0.5x: by delta rank", ylim=(-0.2, 1))
        heat = table[table["rank"] == 16].groupby(["steps", "lr_scale"])["rho_merge_exact"].mean().unstack()
        image = axes[2].imshow(heat.to_numpy(), vmin=-0.2, vmax=1, cmap="viridis")
        axes[2].set_xticks(range(len(heat.columns)), [f"{c}x" for c in heat.columns])
        axes[2].set_yticks(range(len(heat.index)), heat.index)
        axes[2].set(xlabel="probe lr / peak lr", ylabel="probe steps", title="rho(merge, exact), rank 16")
        for (i, j), value in np.ndenumerate(heat.to_numpy()):
            axes[2].text(j, i, f"{value:.2f}", ha="center", va="center", color="w")
        fig.colorbar(image, ax=axes[2])
    else:
        axes[1].bar(["objective", "per domain"], [table["rho_merge_exact"].mean(), table["rho_merge_exact_domains"].mean()],
                    yerr=[table["rho_merge_exact"].sem(), table["rho_merge_exact_domains"].sem()])  # fmt: skip
        axes[1].set(ylabel="Spearman rho(merge, exact)", ylim=(-0.2, 1), title="LoRA merge vs LoRA branch")
    fig.tight_layout()
    fig.savefig(out / f"whatif_fidelity_{part}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["toy", "hf"])
    parser.add_argument("--seeds", type=int, default=None, help="run seeds (toy 10, hf 3)")
    parser.add_argument("--corpus", default="runs/corpus5", help="hf: the corpus folder")
    parser.add_argument("--steps", type=int, default=30, help="hf: probe steps")
    parser.add_argument("--total-steps", type=int, default=300, help="hf: the run's optimizer steps")
    parser.add_argument("--seq-len", type=int, default=128, help="hf: tokens per sequence")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    start = time.perf_counter()
    if args.part == "toy":
        toy(args.seeds or 10, args.out)
    else:
        hf(args.seeds or 3, args.out, args.corpus, args.steps, args.total_steps, args.seq_len)
    print(f"{time.perf_counter() - start:.0f} s; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
