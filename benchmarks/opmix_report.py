"""Tables and plots for BENCHMARKS.md from the OP-Mix bench grids (run them first, see each config).

For each grid: per agent, the final objective (equal main steps) and the objective at equal
compute (main steps plus what-if compute within the step budget), each with its paired
difference to the no-mixing baselines (uniform, and natural where it ran) over the same seeds;
for real-LM grids also the average per-domain perplexity (mean over domains of exp(loss)) and
its relative change, the quantity of OP-Mix's headline claim (6.3% better than no mixing).
A plot of the objective against compute (main steps + what-if) per agent.

    python benchmarks/opmix_report.py runs/opmix-toy runs/opmix-toy-tuned runs/opmix-hf ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mixgym.agents.runner import Results  # noqa: E402
from mixgym.bench import load_config  # noqa: E402
from mixgym.bench.execute import cell_dir  # noqa: E402
from mixgym.bench.report import objective_at_compute  # noqa: E402

BASELINES = ("uniform", "natural")


def cells(folder: Path) -> pd.DataFrame:
    """One row per finished cell: agent, seed, final objective, at equal compute, perplexity."""
    config = load_config(folder / "config.yaml")
    rows = []
    for cell in config.cells():
        directory = cell_dir(folder, cell)
        if not (directory / "summary.json").exists():
            continue
        decisions = Results.load(directory).decisions
        final = decisions.iloc[-1]
        domains = [c.split("/", 1)[1] for c in decisions.columns if c.startswith("eval_loss/")]
        budget = float(decisions["step"].max())
        within = decisions[decisions["compute"] <= budget + 1e-9].iloc[-1]
        rows.append(
            {
                "agent": cell.agent,
                "seed": cell.seed,
                "final": float(final["objective"]),
                "equal_compute": objective_at_compute(decisions, budget),
                "whatif_compute": float(final["whatif_compute"]),
                "main_steps_at_equal_compute": int(within["step"]),
                "perplexity": float(np.mean([np.exp(final[f"eval_loss/{d}"]) for d in domains])),
                "perplexity_equal_compute": float(np.mean([np.exp(within[f"eval_loss/{d}"]) for d in domains])),
                "directory": str(directory),
            }
        )
    return pd.DataFrame(rows)


def paired(table: pd.DataFrame, column: str, baseline: str, relative: bool = False) -> pd.Series:
    """Per agent: mean and sem over seeds of (agent - baseline) on the same seed (relative: / baseline)."""
    base = table[table["agent"] == baseline].set_index("seed")[column]
    out = {}
    for agent, group in table.groupby("agent"):
        values = group.set_index("seed")[column]
        common = values.index.intersection(base.index)
        diff = values[common] - base[common]
        if relative:
            diff = 100.0 * diff / base[common]
        out[agent] = (diff.mean(), diff.sem() if len(diff) > 1 else np.nan, len(diff))
    return pd.Series(out)


def markdown(table: pd.DataFrame, title: str, perplexity: bool) -> str:
    baselines = [b for b in BASELINES if b in set(table["agent"])]
    head = ["agent", "seeds", "final loss", *[f"vs {b}" for b in baselines], "truncated at equal compute",
            *[f"vs {b} (eq. compute)" for b in baselines], "main steps at eq. compute", "what-if compute"]  # fmt: skip
    if perplexity:
        head += [f"avg perplexity vs {b}" for b in baselines]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    diffs = {(b, c): paired(table, c, b) for b in baselines for c in ("final", "equal_compute")}
    ppl = {b: paired(table, "perplexity", b, relative=True) for b in baselines}
    for agent, group in table.groupby("agent"):
        cells = [agent, str(len(group)), f"{group['final'].mean():.4f} +- {group['final'].std(ddof=1):.4f}"]
        for b in baselines:
            mean, sem, _ = diffs[(b, "final")][agent]
            cells.append(f"{mean:+.4f} +- {sem:.4f}" if agent != b else "-")
        cells.append(f"{group['equal_compute'].mean():.4f} +- {group['equal_compute'].std(ddof=1):.4f}")
        for b in baselines:
            mean, sem, _ = diffs[(b, "equal_compute")][agent]
            cells.append(f"{mean:+.4f} +- {sem:.4f}" if agent != b else "-")
        cells.append(f"{group['main_steps_at_equal_compute'].mean():.0f}")
        cells.append(f"{group['whatif_compute'].mean():.0f}")
        if perplexity:
            for b in baselines:
                mean, sem, _ = ppl[b][agent]
                cells.append(f"{mean:+.2f}% +- {sem:.2f}" if agent != b else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for agent, group in table.groupby("agent"):
        curves = [Results.load(d).decisions for d in group["directory"]]
        length = min(len(c) for c in curves)
        compute = np.mean([c["compute"].to_numpy()[:length] for c in curves], axis=0)
        objective = np.mean([c["objective"].to_numpy()[:length] for c in curves], axis=0)
        ax.plot(compute, objective, label=agent, lw=2.2 if agent == "opmix" else 1.2)
    steps = Results.load(table["directory"].iloc[0]).decisions["step"].max()
    ax.axvline(steps, color="grey", ls="--", lw=1, label="step budget")
    ax.set(xlabel="compute: optimizer steps + what-if (main-step equivalents)", ylabel="held-out loss (objective)", title=title)
    ax.set_ylim(table["final"].min() * 0.97, table["equal_compute"].max() * 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="output folders of mixgym bench runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "opmix")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    text = []
    for folder in args.folders:
        table = cells(folder)
        name = folder.name
        real_lm = "hf" in name
        text.append(markdown(table, name, perplexity=real_lm))
        table.drop(columns=["directory"]).to_csv(args.out / f"{name}.csv", index=False)
        plot(table, name, args.out / f"{name}_compute.png")
    (args.out / "tables.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
