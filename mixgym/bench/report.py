"""Tables and plots of a finished grid, read back from the cells' files.

Per cell: final objective (target-weighted mean held-out loss), per-domain final held-out
loss, the objective *at equal compute* -- at the last decision whose compute (optimizer steps
plus what-if compute, `MixingEnv.what_if`) was within the run's step budget, which is the final
objective for agents that simulate nothing and an earlier one for OP-Mix -- and the what-if
compute, regret against the oracle static mixture (toy backends), decisions / optimizer steps /
tokens to reach the uniform baseline's final objective on the same backend and seed (and the
percentage of the budget saved), wall time and reward-computation time. Per group (agent,
reward, backend): mean and standard deviation over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mixgym.agents.runner import Results  # noqa: E402
from mixgym.bench.execute import CellOutcome  # noqa: E402

GROUP = ["agent", "reward", "backend"]


def _reach(trajectory: pd.DataFrame, target: float) -> tuple[float, float, float]:
    """(decisions, steps, tokens) at the first decision whose objective is <= target, else NaN."""
    hit = trajectory.index[trajectory["objective"] <= target + 1e-12]
    if len(hit) == 0:
        return np.nan, np.nan, np.nan
    row = trajectory.loc[hit[0]]
    return float(row["decision"]), float(row["step"]), float(row["tokens"])


def objective_at_compute(trajectory: pd.DataFrame, budget: float) -> float:
    """The objective at the last decision whose compute (steps + what-if) is within `budget`."""
    compute = trajectory["compute"] if "compute" in trajectory else trajectory["step"]
    within = trajectory[compute <= budget + 1e-9]
    return float(within["objective"].iloc[-1])


def collect(outcomes: list[CellOutcome]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per finished cell, and each cell's per-decision trajectory (by cell key)."""
    rows, trajectories = [], {}
    for outcome in outcomes:
        if outcome.status not in ("done", "cached") or outcome.cell.key in trajectories:
            continue
        summary = json.loads((outcome.directory / "summary.json").read_text())
        trajectory = Results.load(outcome.directory).decisions
        cell = outcome.cell
        trajectories[cell.key] = trajectory
        row = {
            "key": cell.key,
            "agent": cell.agent,
            "reward": cell.reward,
            "backend": cell.backend_label,
            "seed": cell.seed,
            "final_objective": summary["final_objective"],
            "oracle_objective": summary.get("oracle_objective", np.nan),
            "wall_time_s": summary["wall_time"],
            "reward_time_s": summary["reward_time"],
            "total_steps": int(trajectory["step"].iloc[-1]),
            "objective_equal_compute": objective_at_compute(trajectory, float(trajectory["step"].max())),
            "whatif_compute": float(trajectory["whatif_compute"].iloc[-1]) if "whatif_compute" in trajectory else 0.0,
        }
        row.update({f"final_{domain}": loss for domain, loss in summary["final_eval"].items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table, trajectories
    table["regret"] = table["final_objective"] - table["oracle_objective"]
    uniform = table[table["agent"] == "uniform"].set_index(["backend", "seed"])
    reached = []
    for _, row in table.iterrows():
        target = uniform["final_objective"].get((row["backend"], row["seed"]), np.nan)
        reached.append(_reach(trajectories[row["key"]], target) if np.isfinite(target) else (np.nan,) * 3)
    table[["decisions_to_uniform", "steps_to_uniform", "tokens_to_uniform"]] = reached
    table["percent_saved"] = 100.0 * (1.0 - table["steps_to_uniform"] / table["total_steps"])
    return table, trajectories


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds for every numeric column, per group."""
    numeric = [c for c in table.columns if c not in GROUP + ["key", "seed"] and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(GROUP)[numeric]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary.insert(0, "seeds", table.groupby(GROUP).size())
    return summary.reset_index()


def markdown(summary: pd.DataFrame) -> str:
    """The headline columns as a Markdown table (mean +- std over seeds)."""
    columns = [
        ("final_objective", "final held-out loss", 4),
        ("objective_equal_compute", "at equal compute", 4),
        ("whatif_compute", "what-if compute (steps)", 0),
        ("regret", "regret vs oracle", 4),
        ("decisions_to_uniform", "decisions to uniform's loss", 1),
        ("percent_saved", "% budget saved", 1),
        ("wall_time_s", "wall s", 1),
        ("reward_time_s", "reward s", 2),
    ]
    head = ["agent", "reward", "backend", "seeds"] + [title for _, title, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in summary.iterrows():
        cells = [str(row["agent"]), str(row["reward"]), str(row["backend"]), str(int(row["seeds"]))]
        for name, _, digits in columns:
            mean, std = row.get(f"{name}_mean", np.nan), row.get(f"{name}_std", np.nan)
            if not np.isfinite(mean):
                cells.append("n/a" if name == "regret" else "not reached")
            else:
                cells.append(f"{mean:.{digits}f} +- {0 if not np.isfinite(std) else std:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, trajectories: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """loss_vs_tokens.png, mixtures.png (the mixture trained on: realised shares of the
    samples) and final_loss.png in `out`; their paths."""
    paths = []
    combos = table[["reward", "backend"]].drop_duplicates().values.tolist()
    fig, axes = plt.subplots(1, len(combos), figsize=(6 * len(combos), 4), squeeze=False)
    for ax, (reward, backend) in zip(axes[0], combos):
        for agent, group in table[(table["reward"] == reward) & (table["backend"] == backend)].groupby("agent"):
            curves = [trajectories[key] for key in group["key"]]
            length = min(len(c) for c in curves)
            values = np.stack([c["objective"].to_numpy()[:length] for c in curves])
            tokens = curves[0]["tokens"].to_numpy()[:length]
            mean, std = values.mean(axis=0), values.std(axis=0)
            ax.plot(tokens, mean, label=agent)
            ax.fill_between(tokens, mean - std, mean + std, alpha=0.2)
        ax.set(xlabel="tokens", ylabel="held-out loss (objective)", title=f"{backend} / {reward}")
        ax.legend(fontsize=7)
    paths.append(_save(fig, out / "loss_vs_tokens.png"))

    first = table.sort_values("seed").groupby(GROUP).head(1)
    fig, axes = plt.subplots(1, len(first), figsize=(3.2 * len(first), 3), squeeze=False)
    for ax, (_, row) in zip(axes[0], first.iterrows()):
        trajectory = trajectories[row["key"]]
        acted = trajectory[trajectory["decision"] > 0]
        mix_cols = [c for c in acted.columns if c.startswith("realised_mixture/")]
        ax.stackplot(acted["step"], acted[mix_cols].to_numpy().T, labels=[c.split("/", 1)[1] for c in mix_cols])
        ax.set(title=f"{row['agent']}\n{row['reward']} / {row['backend']}", xlabel="step", ylim=(0, 1))
    axes[0][0].set_ylabel("trained on (realised mixture)")
    axes[0][0].legend(fontsize=6, loc="upper left")
    paths.append(_save(fig, out / "mixtures.png"))

    domains = [c[len("final_") :] for c in table.columns if c.startswith("final_") and c != "final_objective"]
    means = table.groupby(GROUP)[[f"final_{d}" for d in domains]].mean()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(domains) * max(1, len(means)) / 3), 4))
    width = 0.8 / max(1, len(means))
    for i, (group, values) in enumerate(means.iterrows()):
        ax.bar(np.arange(len(domains)) + i * width, values.to_numpy(), width, label="/".join(map(str, group)))
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains, rotation=30, ha="right")
    ax.set(ylabel="final held-out loss", title="per-domain final loss (mean over seeds)")
    ax.legend(fontsize=6)
    paths.append(_save(fig, out / "final_loss.png"))
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(outcomes: list[CellOutcome], out: Path) -> tuple[pd.DataFrame, str]:
    """results.csv (per cell), summary.csv and summary.md (per group) and the plots in `out`."""
    table, trajectories = collect(outcomes)
    out.mkdir(parents=True, exist_ok=True)
    if table.empty:
        return table, "no cell finished\n"
    table.drop(columns=["key"]).to_csv(out / "results.csv", index=False)
    summary = summarise(table)
    summary.to_csv(out / "summary.csv", index=False)
    text = markdown(summary)
    (out / "summary.md").write_text(text)
    plot(table, trajectories, out)
    return summary, text
