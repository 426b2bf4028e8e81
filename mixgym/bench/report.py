"""Tables and plots of a finished grid, read back from the cells' files.

Per cell, for every objective the cell's env reports (`mixgym.llm_backend.objectives`:
domain-mean, natural, worst-domain, and the env's own if it is explicit weights): the final
value, and the optimizer step from which the run stays at or below the final value of each
reference baseline (`REFERENCES`: natural and uniform) on the same backend and seed
(`steps_to_reach`), with the share of the baseline's own steps saved (``100 * (1 - steps /
the baseline's steps)``: the papers' "x% fewer iterations to reach the baseline's final
perplexity"; NaN where the baseline's final value is no better than where it started, as
when a worst-domain loss rises). Also: final objective of the env and
regret against the oracle static mixture (toy backends; NaN on a backend where the grid ran the
oracle and uniform on >= 2 seeds and the oracle does not beat uniform beyond noise), the per-domain final held-out
losses, the total variation distance of the mean mixture trained on (realised) from uniform
and from natural -- which says whether a gain over natural is explained by moving towards
uniform -- wall time and reward time. Per group (agent, reward, backend): mean and standard
deviation over seeds. Where a cell simulated (OP-Mix's what-if calls, `MixingEnv.what_if`),
also the env's objective *truncated at equal compute* -- at the last decision whose compute
(optimizer steps plus what-if compute) was within the run's step budget, a reading of a run whose
learning-rate schedule has not annealed yet, so it overstates the loss of a run sized to that
compute (`mixgym.agents.opmix.equal_compute_steps` re-plans one) -- and the what-if compute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mixgym.agents.runner import Results  # noqa: E402
from mixgym.bench.execute import CellOutcome  # noqa: E402
from mixgym.llm_backend.objectives import Objective  # noqa: E402

GROUP = ["agent", "reward", "backend"]
REFERENCES = ("natural", "uniform")
"""Baselines whose final objective every run is timed against."""


def steps_to_reach(curve: pd.Series | np.ndarray, steps: pd.Series | np.ndarray, target: float, stay: bool = True) -> float:
    """The optimizer step from which the objective stays at or below `target` to the end of the
    run (``stay``), or at which it first gets there; NaN if it never does.

    "Stays" is what "reaches the final loss of X" means on a noisy curve: a dip below the
    target that does not last is not reaching it, and the baseline itself reaches its own final
    value where its curve last comes down to it (the end of the run, for a decreasing curve).
    """
    below = np.asarray(curve, dtype=np.float64) <= target + 1e-12
    if stay:
        above = np.flatnonzero(~below)
        first = 0 if not len(above) else above[-1] + 1
        return float(np.asarray(steps)[first]) if first < len(below) else np.nan
    hit = np.flatnonzero(below)
    return float(np.asarray(steps)[hit[0]]) if len(hit) else np.nan


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def _objectives(summary: dict) -> dict[str, Objective]:
    """The objectives a cell's summary names (cells written before they existed: none)."""
    return {
        name: Objective(name, np.asarray(spec["weights"], dtype=np.float64), bool(spec["worst"]))
        for name, spec in summary.get("objectives", {}).items()
    }


def objective_at_compute(trajectory: pd.DataFrame, budget: float) -> float:
    """The objective at the last decision whose compute (steps + what-if) is within `budget`."""
    compute = trajectory["compute"] if "compute" in trajectory else trajectory["step"]
    within = trajectory[compute <= budget + 1e-9]
    return float(within["objective"].iloc[-1])


def collect(outcomes: list[CellOutcome]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per finished cell, and each cell's per-decision trajectory (by cell key), with a
    column ``objective/<name>`` per objective."""
    rows, trajectories = [], {}
    for outcome in outcomes:
        if outcome.status not in ("done", "cached") or outcome.cell.key in trajectories:
            continue
        summary = json.loads((outcome.directory / "summary.json").read_text())
        results = Results.load(outcome.directory)
        trajectory = results.decisions.copy()
        objectives = _objectives(summary)
        for name, objective in objectives.items():
            trajectory[f"objective/{name}"] = results.objective_values(objective)
        cell = outcome.cell
        trajectories[cell.key] = trajectory
        row = {
            "key": cell.key,
            "agent": cell.agent,
            "reward": cell.reward,
            "backend": cell.backend_label,
            "seed": cell.seed,
            "objective": summary.get("objective", "objective"),
            "final_objective": summary["final_objective"],
            "oracle_objective": summary.get("oracle_objective", np.nan),
            "wall_time_s": summary["wall_time"],
            "updates": summary.get("updates", np.nan),
            "reward_time_s": summary["reward_time"],
            "total_steps": int(trajectory["step"].iloc[-1]),
            "objective_equal_compute": objective_at_compute(trajectory, float(trajectory["step"].max())),
            "whatif_compute": float(trajectory["whatif_compute"].iloc[-1]) if "whatif_compute" in trajectory else 0.0,
        }
        row.update({f"{name}/final": float(trajectory[f"objective/{name}"].iloc[-1]) for name in objectives})
        acted = results.per_domain("realised_mixture")[trajectory["decision"] > 0].mean().to_numpy()
        k = len(results.domains)
        row["tv_uniform"] = total_variation(acted, np.full(k, 1.0 / k))
        if "natural_mixture" in summary:
            row["tv_natural"] = total_variation(acted, np.asarray(summary["natural_mixture"]))
        row.update({f"final_{domain}": loss for domain, loss in summary["final_eval"].items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table, trajectories
    table["regret"] = table["final_objective"] - table["oracle_objective"]
    for backend in _oracle_not_separable(table):  # no regret against an oracle that does not beat uniform
        table.loc[table["backend"] == backend, "regret"] = np.nan
    for reference in REFERENCES:
        base = table[table["agent"] == reference].set_index(["backend", "seed"])
        for name in [c[: -len("/final")] for c in table.columns if c.endswith("/final")]:
            steps, needed = [], []
            for _, row in table.iterrows():
                target = base[f"{name}/final"].get((row["backend"], row["seed"]), np.nan)
                if not np.isfinite(target):
                    steps.append(np.nan), needed.append(np.nan)
                    continue
                own = trajectories[base["key"][(row["backend"], row["seed"])]]
                trajectory = trajectories[row["key"]]
                steps.append(steps_to_reach(trajectory[f"objective/{name}"], trajectory["step"], target))
                needed.append(steps_to_reach(own[f"objective/{name}"], own["step"], target))
            table[f"{name}/steps_to_{reference}"] = steps
            with np.errstate(divide="ignore", invalid="ignore"):
                saved = 100.0 * (1.0 - np.array(steps) / np.array(needed))
            table[f"{name}/saved_vs_{reference}"] = np.where(np.array(needed) > 0, saved, np.nan)
            table[f"{name}/reached_{reference}"] = table[f"{name}/steps_to_{reference}"].notna().astype(float)
    return table, trajectories


def _oracle_not_separable(table: pd.DataFrame) -> list[str]:
    """Backends whose grid ran the oracle and uniform on >= 2 common seeds and where the 90% CI
    of their per-seed difference does not exclude 0 on the oracle's side."""
    from mixgym.llm_backend.oracle import mean_ci

    out = []
    for backend, rows in table.groupby("backend"):
        oracle = rows[rows["agent"] == "oracle"].set_index("seed")["final_objective"]
        uniform = rows[rows["agent"] == "uniform"].set_index("seed")["final_objective"]
        paired = (uniform - oracle).dropna()
        if len(paired) >= 2:
            gap, half = mean_ci(paired.to_numpy())
            if not gap - half > 0:
                out.append(backend)
    return out


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds for every numeric column, per group (means of
    steps and savings are over the seeds that reached the baseline)."""
    numeric = [c for c in table.columns if c not in GROUP + ["key", "seed"] and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(GROUP)[numeric]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary.insert(0, "seeds", table.groupby(GROUP).size())
    if "updates" in table:  # a group with a cell that never updated is marked in every table
        summary["updates_min"] = table.groupby(GROUP)["updates"].min()
    if "objective" in table:
        summary.insert(1, "objective", table.groupby(GROUP)["objective"].first())
    return summary.reset_index()


def _cell(row: pd.Series, name: str, digits: int, missing: str = "n/a") -> str:
    mean, std = row.get(f"{name}_mean", np.nan), row.get(f"{name}_std", np.nan)
    if not np.isfinite(mean):
        return missing
    return f"{mean:.{digits}f} +- {0 if not np.isfinite(std) else std:.{digits}f}"


def markdown(summary: pd.DataFrame) -> str:
    """One Markdown table per objective (mean +- std over seeds): final value, % of the budget
    saved reaching natural's and uniform's final value, the mixture's distance from both; for
    the env's objective, where a cell simulated, the value at equal compute and the what-if compute."""
    names = [c[: -len("/final_mean")] for c in summary.columns if c.endswith("/final_mean")]
    env_objective = str(summary["objective"].iloc[0]) if "objective" in summary else None
    blocks = []
    for name in names:
        head = ["agent", "reward", "backend", "seeds", "final"]
        head += [f"% steps saved vs {reference}" for reference in REFERENCES]
        head += ["TV to uniform", "TV to natural"]
        with_regret = name == env_objective and summary.get("regret_mean", pd.Series(dtype=float)).notna().any()
        head += ["regret vs oracle"] if with_regret else []
        simulated = name == env_objective and (summary.get("whatif_compute_mean", pd.Series(dtype=float)) > 0).any()
        head += ["truncated at equal compute", "what-if compute (steps)"] if simulated else []
        head += ["wall s"]
        title = f"{name}" + (" (the env's objective)" if name == env_objective else "")
        backends = list(dict.fromkeys(summary["backend"]))  # in the config's order
        for backend in backends:  # one table per backend: rows of different backends never interleave
            rows = summary[summary["backend"] == backend]
            heading = title if len(backends) == 1 else f"{title}, backend {backend}"
            blocks.append(_objective_table(rows, name, heading, head, with_regret, simulated))
    return "\n".join(blocks)


def _objective_table(
    summary: pd.DataFrame, name: str, heading: str, head: list[str], with_regret: bool, simulated: bool
) -> str:
    """One Markdown table of `markdown`: `summary`'s rows, best `name` first."""
    lines = [heading, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in summary.sort_values(f"{name}/final_mean").iterrows():
        untrained = row.get("updates_min", np.nan) == 0
        agent = str(row["agent"]) + (" (0 updates: untrained)" if untrained else "")
        cells = [agent, str(row["reward"]), str(row["backend"]), str(int(row["seeds"])), _cell(row, f"{name}/final", 4)]
        for reference in REFERENCES:
            text = _cell(row, f"{name}/saved_vs_{reference}", 1, "not reached")
            reached = row.get(f"{name}/reached_{reference}_mean", np.nan)
            if np.isfinite(reached) and 0 < reached < 1:
                text += f" ({round(reached * row['seeds'])}/{int(row['seeds'])} seeds)"
            cells.append(text)
        cells += [_cell(row, "tv_uniform", 3), _cell(row, "tv_natural", 3)]
        cells += [_cell(row, "regret", 4)] if with_regret else []
        cells += [_cell(row, "objective_equal_compute", 4), _cell(row, "whatif_compute", 0)] if simulated else []
        cells += [_cell(row, "wall_time_s", 1)]
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
    columns = min(len(first), MAX_PANELS_PER_ROW)  # panels wrap into rows: the width stays bounded
    rows = -(-len(first) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3 * rows), squeeze=False)
    for ax, (_, row) in zip(axes.flat, first.iterrows()):
        trajectory = trajectories[row["key"]]
        acted = trajectory[trajectory["decision"] > 0]
        mix_cols = [c for c in acted.columns if c.startswith("realised_mixture/")]
        ax.stackplot(
            acted["step"], acted[mix_cols].to_numpy().T, labels=[c.split("/", 1)[1] for c in mix_cols], colors=_colours(len(mix_cols))
        )
        ax.set(title=f"{row['agent']}\n{row['reward']} / {row['backend']}", xlabel="step", ylim=(0, 1))
    for ax in axes.flat[len(first) :]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("trained on (realised mixture)")
    _legend_outside(fig, *axes.flat)
    paths.append(_save(fig, out / "mixtures.png"))

    domains = [c[len("final_") :] for c in table.columns if c.startswith("final_") and c != "final_objective"]
    means = table.groupby(GROUP)[[f"final_{d}" for d in domains]].mean()
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, max(6, 0.35 * len(domains) * max(1, len(means)) ** 0.5 + 2)), 4))
    width = 0.8 / max(1, len(means))
    for i, ((group, values), colour) in enumerate(zip(means.iterrows(), _colours(len(means)))):
        ax.bar(np.arange(len(domains)) + i * width, values.to_numpy(), width, label="/".join(map(str, group)), color=colour)
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains, rotation=45 if len(domains) > 8 else 30, ha="right")
    ax.set(ylabel="final held-out loss", title="per-domain final loss (mean over seeds)")
    _legend_outside(fig, ax)
    paths.append(_save(fig, out / "final_loss.png"))
    return paths


MAX_PANELS_PER_ROW = 5
MAX_WIDTH_IN = 14.0
"""Plots stay readable at K=22 and many agents: at most this many mixture panels a row and
this many inches of axes (110 dpi), legends beside the axes rather than over them."""


def _colours(count: int) -> Any:
    """`count` distinguishable colours (tab10's repeat after ten: a K=22 stack needs more)."""
    return plt.get_cmap("tab10" if count <= 10 else "tab20" if count <= 20 else "turbo")(np.linspace(0, 1, count) if count > 20 else range(count))


def _legend_outside(fig: plt.Figure, *axes: plt.Axes) -> None:
    """The axes' legend entries (each label once) to the right of the whole figure, in as many
    columns as 20 entries need."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels, handles = list(entries), list(entries.values())
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, ncol=-(-len(labels) // 20))


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" keeps the legend beside the axes
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
