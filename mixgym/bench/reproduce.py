"""The papers' headline claims, measured on finished grids: savings, verdicts, and whether the
toy ranks agents as a real language model does.

Each published gain is "x% fewer training steps to reach a reference's perplexity", on The
Pile, against its natural weights or another method, on the unweighted mean of per-domain
validation perplexity (`CLAIMS`). For one grid (`mixgym bench` output) and one objective,
`steps_saved` measures the same thing on the seed-mean curves: the reference's target is its
final value (``"final"``: ODM, HDS) or its best (``"best"``: AC-ODM's "optimal validation
perplexity of ODM"), reached at the end of the budget or at the best step; the claimant's
saving is ``100 * (1 - steps to reach the target / the reference's steps)``. `bootstrap`
resamples seeds (paired: the claimant and the reference keep the same seeds) for a 90%
interval. Every claim is also measured against natural and uniform: a gain over natural that
uniform matches, by a mixture closer to uniform than natural's, is a gain of moving towards
uniform, not of the method (`verdict`).

`spearman` ranks the agents both grids share by their final objective and gives the rank
correlation with an exact (or Monte Carlo) permutation p-value: whether an agent's standing on
the toy predicts its standing on a real model.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixgym.bench.config import load_config
from mixgym.bench.execute import CellOutcome, cell_dir
from mixgym.bench.report import collect, steps_to_reach

PUBLISHED = ("natural", "odm", "exp3", "doremi", "doremi-static", "acodm", "acodm-frozen-actor", "hds")
"""Methods a paper compares with (The Pile's natural weights and the published mixers): the
pool "the next best method" is drawn from. Uniform, tempered and the oracle are reported
beside, never chosen as the next best (no paper ran them)."""


@dataclass(frozen=True)
class Claim:
    """A published gain.

    Attributes:
        label: short name of the claim.
        agent: the mixgym agent that stands for the method.
        reference: the agent it is measured against, or ``"next-best"`` (the best of
            `PUBLISHED` by final objective, the agent excluded).
        target: ``"final"`` (the reference's final value) or ``"best"`` (its best).
        claimed: the claimed % of steps saved (None: an ablation without a number).
        protocol: the paper's set-up and source.
    """

    label: str
    agent: str
    reference: str
    target: str
    claimed: float | None
    protocol: str


CLAIMS = (
    Claim(
        "ODM: 19% fewer iterations than natural",
        "odm",
        "natural",
        "final",
        19.0,
        "Albalak et al. 2023 (arXiv:2312.02406): 1B GPT-NeoX on The Pile, 22 domains, online; reaches the final "
        "validation perplexity (unweighted mean over domains) of the next best method, The Pile's natural weights, "
        "with 19% fewer iterations.",
    ),
    Claim(
        "AC-ODM: 71% fewer steps than ODM to its best",
        "acodm",
        "odm",
        "best",
        71.0,
        "Ma, Dang, Liao 2025 (arXiv:2505.23878 v1): DDPG agent learned on a 410M proxy, its actor acting on a 1B "
        "target (proxy mode); reaches ODM's optimal validation perplexity 71% faster.",
    ),
    Claim(
        "AC-ODM: 66% fewer steps than competitive baselines",
        "acodm",
        "next-best",
        "best",
        66.0,
        "same paper, v2 (ICML 2026): on Pythia-1B, optimal validation perplexity with up to 66% fewer steps than "
        "competitive baselines (here: the best published method by final loss).",
    ),
    Claim(
        "HDS: 44% fewer iterations than the next best",
        "hds",
        "next-best",
        "final",
        44.0,
        "Dang, Ma, Liao 2026 (arXiv:2606.24133, KDD 2026): SAC with the holistic reward on The Pile; reaches the "
        "final validation perplexity of the next best method with 44% fewer iterations.",
    ),
    Claim(
        "ablation: acodm vs acodm-frozen-actor",
        "acodm",
        "acodm-frozen-actor",
        "final",
        None,
        "AC-ODM's released code never steps the actor's optimizer, so its published policy may be its random "
        "initialisation (a softmax-headed 5x1024 MLP): does the learned actor beat the frozen one?",
    ),
)


@dataclass(frozen=True)
class Grid:
    """A finished grid read back: per-cell table and trajectories (`mixgym.bench.report.collect`)."""

    name: str
    table: pd.DataFrame
    trajectories: dict[str, pd.DataFrame]

    @classmethod
    def load(cls, out: str | Path, backend: str | None = None) -> Grid:
        """The finished cells of the grid in folder `out` (its ``config.yaml``), one backend's."""
        out = Path(out)
        config = load_config(out / "config.yaml")
        outcomes = [
            CellOutcome(cell, "cached", cell_dir(out, cell))
            for cell in config.cells()
            if (cell_dir(out, cell) / "summary.json").exists() and (backend is None or cell.backend_label == backend)
        ]
        if not outcomes:
            raise ValueError(f"{str(out)!r} holds no finished cell" + (f" of backend {backend!r}" if backend else ""))
        table, trajectories = collect(outcomes)
        return cls(config.name if backend is None else f"{config.name}/{backend}", table, trajectories)

    @property
    def agents(self) -> list[str]:
        return sorted(self.table["agent"].unique())

    def curves(self, agent: str, objective: str) -> pd.DataFrame:
        """The agent's objective by optimizer step (rows) and seed (columns)."""
        rows = self.table[self.table["agent"] == agent]
        if rows.empty:
            raise ValueError(f"grid {self.name!r} has no agent {agent!r}; it has {', '.join(self.agents)}")
        columns = {}
        for _, row in rows.iterrows():
            trajectory = self.trajectories[row["key"]]
            columns[int(row["seed"])] = trajectory.set_index("step")[f"objective/{objective}"]
        return pd.DataFrame(columns).sort_index()

    def finals(self, agent: str, objective: str) -> pd.Series:
        """The agent's final objective, one value per seed."""
        return self.curves(agent, objective).iloc[-1]

    def final(self, agent: str, objective: str) -> float:
        return float(self.finals(agent, objective).mean())

    def mixture_tv(self, agent: str) -> float:
        """Mean over seeds of the total variation from uniform of the mixture trained on."""
        return float(self.table.loc[self.table["agent"] == agent, "tv_uniform"].mean())

    def next_best(self, agent: str, objective: str) -> str:
        """The best agent of `PUBLISHED` (the `agent` itself excluded) by final objective."""
        pool = [a for a in PUBLISHED if a in self.agents and a != agent]
        if not pool:
            raise ValueError(f"grid {self.name!r} has none of {PUBLISHED} besides {agent!r}")
        return min(pool, key=lambda a: self.final(a, objective))


def steps_saved(agent: pd.DataFrame, reference: pd.DataFrame, target: str = "final") -> float:
    """% of the reference's steps saved by `agent` reaching the reference's target value, on
    seed-mean curves (rows: optimizer steps, columns: seeds); NaN if never reached.

    ``"final"``: the reference's final value, reached where a curve comes down to it for good
    (`mixgym.bench.report.steps_to_reach`); ``"best"``: its lowest value, reached where a curve
    first gets there (the reference at its best step)."""
    a, r = agent.mean(axis=1), reference.mean(axis=1)
    if target not in ("final", "best"):
        raise ValueError(f"target must be 'final' or 'best', got {target!r}")
    stay = target == "final"
    value = r.iloc[-1] if stay else r.min()
    needed = steps_to_reach(r, r.index, value, stay)
    reached = steps_to_reach(a, a.index, value, stay)
    if not np.isfinite(reached) or not needed > 0:
        return np.nan
    return 100.0 * (1.0 - reached / needed)


def bootstrap(agent: pd.DataFrame, reference: pd.DataFrame, target: str, resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(share of resamples reaching the target, 5th and 95th percentile of `steps_saved`)
    over seed resamples; a resample that never reaches counts as -100% (twice the steps)."""
    seeds = sorted(set(agent.columns) & set(reference.columns))
    if not seeds:
        raise ValueError("the agent and the reference share no seed")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = list(rng.choice(seeds, size=len(seeds), replace=True))
        values.append(steps_saved(agent[chosen], reference[chosen], target))
    values = np.array(values)
    reached = np.isfinite(values)
    filled = np.where(reached, values, -100.0)
    return float(reached.mean()), float(np.percentile(filled, 5)), float(np.percentile(filled, 95))


@dataclass(frozen=True)
class Measurement:
    """One claim measured on one grid and objective (see `measure`)."""

    claim: Claim
    grid: str
    reference: str
    saved: float
    low: float
    high: float
    reached: float
    saved_vs_natural: float
    saved_vs_uniform: float
    uniform_low: float
    uniform_high: float
    final_vs_natural: float
    final_vs_uniform: float
    tv_agent: float
    tv_natural: float
    verdict: str


def measure(grid: Grid, claim: Claim, objective: str = "domain-mean") -> Measurement:
    """The claim on `grid`: saving vs its reference (with a bootstrap interval), vs natural
    and vs uniform (final targets), final objective relative to both, mixture distances."""
    reference = grid.next_best(claim.agent, objective) if claim.reference == "next-best" else claim.reference
    curves = {name: grid.curves(name, objective) for name in {claim.agent, reference, "natural", "uniform"}}
    agent = curves[claim.agent]
    saved = steps_saved(agent, curves[reference], claim.target)
    reached, low, high = bootstrap(agent, curves[reference], claim.target)
    _, uniform_low, uniform_high = bootstrap(agent, curves["uniform"], "final")
    vs = {name: steps_saved(agent, curves[name], "final") for name in ("natural", "uniform")}
    final = {name: 100.0 * (grid.final(claim.agent, objective) / grid.final(name, objective) - 1.0) for name in ("natural", "uniform")}
    seeds = grid.table["seed"].nunique()
    result = Measurement(
        claim, f"{grid.name} ({seeds} seeds)", reference, saved, low, high, reached, vs["natural"], vs["uniform"],
        uniform_low, uniform_high, final["natural"], final["uniform"], grid.mixture_tv(claim.agent),
        grid.mixture_tv("natural"), "",
    )
    return replace(result, verdict=verdict(result))


def verdict(m: Measurement) -> str:
    """Reproduced, smaller, not reproduced or the reverse, and whether uniform explains it.

    - the saving's 90% interval lies above 0: "reproduced" when the saving is at least half
      the claim (or, for an ablation, "the learned agent is faster"), else "smaller gain";
    - it lies below 0, or the reference's target is never reached: "not reproduced: slower";
    - otherwise: "not reproduced: no difference beyond noise";
    - a gain over natural (by the steps saved on the mean curves) that uniform matches within
      noise (the 90% interval of the steps saved against uniform reaches 0 or below), by a
      mixture closer to uniform than natural's: "explained by moving toward uniform".
    """
    claimed = m.claim.claimed
    if np.isfinite(m.saved) and m.low > 0:
        if claimed is None:
            text = "the learned agent is faster"
        elif m.saved >= claimed / 2:
            text = "reproduced"
        else:
            text = f"smaller gain ({m.saved:.0f}% vs {claimed:.0f}% claimed)"
    elif not np.isfinite(m.saved) or m.high < 0:
        text = "not reproduced: slower" if claimed is not None else "the learned agent is slower"
    else:
        text = "not reproduced: no difference beyond noise" if claimed is not None else "no difference beyond noise"
    beats_natural = np.isfinite(m.saved_vs_natural) and m.saved_vs_natural > 0
    if beats_natural and m.uniform_low <= 0 and m.tv_agent < m.tv_natural:
        text += "; its gain over natural is explained by moving toward uniform"
    return text


def measure_all(grids: Sequence[Grid], objective: str = "domain-mean", claims: Sequence[Claim] = CLAIMS) -> list[Measurement]:
    """Every claim on every grid that has its agent (and reference)."""
    out = []
    for claim in claims:
        for grid in grids:
            needed = {claim.agent, "natural", "uniform"} | ({claim.reference} - {"next-best"})
            if needed <= set(grid.agents):
                out.append(measure(grid, claim, objective))
    return out


def _pct(value: float) -> str:
    return "not reached" if not np.isfinite(value) else f"{value:+.0f}%"


def claims_markdown(measurements: Sequence[Measurement]) -> str:
    """The reproduction table: one block of rows per claim, one row per grid."""
    head = (
        "| claim (paper's protocol below) | task | vs | steps saved vs it (90% CI; resamples reaching) "
        "| steps saved vs natural | steps saved vs uniform (90% CI) | final loss vs natural | final loss vs uniform "
        "| TV from uniform: agent / natural | verdict |"
    )
    lines = [head, "|" + "---|" * 10]
    for m in measurements:
        claimed = f" (claimed {m.claim.claimed:.0f}%)" if m.claim.claimed is not None else ""
        lines.append(
            f"| {m.claim.label}{claimed} | {m.grid} | {m.reference} | {_pct(m.saved)} ({m.low:+.0f}% to {m.high:+.0f}%; "
            f"{m.reached:.0%}) | {_pct(m.saved_vs_natural)} | {_pct(m.saved_vs_uniform)} ({m.uniform_low:+.0f}% to "
            f"{m.uniform_high:+.0f}%) | {m.final_vs_natural:+.1f}% | {m.final_vs_uniform:+.1f}% "
            f"| {m.tv_agent:.2f} / {m.tv_natural:.2f} | {m.verdict} |"
        )
    protocols = sorted({(m.claim.label, m.claim.protocol) for m in measurements})
    lines += ["", "Protocols:", ""] + [f"- **{label}**: {protocol}" for label, protocol in protocols]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho between two grids' orders of the same agents, with a permutation p-value."""

    agents: tuple[str, ...]
    first: tuple[float, ...]
    second: tuple[float, ...]
    rho: float
    p_value: float


def spearman(first: Grid, second: Grid, objective: str = "domain-mean", exclude: Sequence[str] = ("oracle",)) -> RankCorrelation:
    """Spearman's rank correlation of the agents both grids ran (by mean final `objective`),
    with a one-sided permutation p-value (exact up to 8 agents, else 100,000 permutations)."""
    agents = tuple(a for a in first.agents if a in second.agents and a not in exclude)
    if len(agents) < 3:
        raise ValueError(f"a rank correlation needs at least 3 shared agents, got {list(agents)}")
    x = np.array([first.final(a, objective) for a in agents])
    y = np.array([second.final(a, objective) for a in agents])
    rank_x = pd.Series(x).rank().to_numpy()
    rank_y = pd.Series(y).rank().to_numpy()
    rho = float(np.corrcoef(rank_x, rank_y)[0, 1])
    n = len(agents)
    if n <= 8:
        permutations = np.array(list(itertools.permutations(rank_y)))
    else:
        rng = np.random.default_rng(0)
        permutations = np.array([rng.permutation(rank_y) for _ in range(100_000)])
    centred_x = rank_x - rank_x.mean()
    centred = permutations - permutations.mean(axis=1, keepdims=True)
    rhos = centred @ centred_x / (np.linalg.norm(centred, axis=1) * np.linalg.norm(centred_x))
    p_value = float((rhos >= rho - 1e-12).mean())
    return RankCorrelation(agents, tuple(x.tolist()), tuple(y.tolist()), rho, p_value)


def spearman_markdown(correlation: RankCorrelation, first: str, second: str) -> str:
    """The agents' final objectives and ranks on both grids, and rho."""
    order_first = pd.Series(correlation.first).rank().astype(int)
    order_second = pd.Series(correlation.second).rank().astype(int)
    lines = [f"| agent | {first}: final | rank | {second}: final | rank |", "|---|---|---|---|---|"]
    for i in np.argsort(correlation.first):
        agent = correlation.agents[i]
        lines.append(
            f"| {agent} | {correlation.first[i]:.4f} | {order_first[i]} | {correlation.second[i]:.4f} | {order_second[i]} |"
        )
    lines.append("")
    lines.append(
        f"Spearman's rho = {correlation.rho:+.2f} over {len(correlation.agents)} agents "
        f"(one-sided permutation p = {correlation.p_value:.3f})."
    )
    return "\n".join(lines) + "\n"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (reports are written, not shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _saved(fig: Any, path: str | Path) -> Path:
    """Write `fig` to `path` (its folder made) and close it."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out


def plot_ranks(correlation: RankCorrelation, first: str, second: str, path: str | Path) -> Path:
    """Scatter of the agents' ranks on the two grids, labelled, with the diagonal."""
    plt = _pyplot()
    x = pd.Series(correlation.first).rank().to_numpy()
    y = pd.Series(correlation.second).rank().to_numpy()
    n = len(x)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([1, n], [1, n], color="grey", lw=0.8, ls="--")
    ax.scatter(x, y)
    for xi, yi, agent in zip(x, y, correlation.agents):
        ax.annotate(agent, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(
        xlabel=f"rank on {first} (1 = lowest final loss)",
        ylabel=f"rank on {second}",
        title=f"Spearman rho = {correlation.rho:+.2f} (p = {correlation.p_value:.3f})",
        xlim=(0.5, n + 0.5),
        ylim=(0.5, n + 0.5),
    )
    return _saved(fig, path)



BASELINE_COLOURS = {"natural": "tab:red", "uniform": "tab:blue", "tempered": "tab:purple", "oracle": "tab:green"}
"""Colours of the reference mixtures in `plot_finals` (agents are grey)."""


def plot_finals(grids: Sequence[Grid], objectives: Sequence[str], path: str | Path) -> Path:
    """One panel per grid and objective: each agent's final objective relative to uniform's
    (%, lower is better), seed-mean bar and one dot per seed, best first; the baselines in
    colour, so whether a method beats natural, uniform, both or neither is read at a glance."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(grids), len(objectives), figsize=(4.2 * len(objectives), 0.3 * 12 * len(grids) + 1), squeeze=False)
    for row, grid in zip(axes, grids):
        for ax, objective in zip(row, objectives):
            uniform = grid.final("uniform", objective)
            finals = {agent: 100.0 * (grid.finals(agent, objective) / uniform - 1.0) for agent in grid.agents}
            order = sorted(finals, key=lambda agent: finals[agent].mean(), reverse=True)
            for y, agent in enumerate(order):
                colour = BASELINE_COLOURS.get(agent, "0.55")
                ax.barh(y, finals[agent].mean(), color=colour, alpha=0.6)
                ax.scatter(finals[agent].to_numpy(), np.full(len(finals[agent]), y), color=colour, s=9, zorder=3)
            ax.axvline(0.0, color="tab:blue", lw=0.8)
            ax.set_yticks(range(len(order)), order, fontsize=8)
            seeds = grid.table["seed"].nunique()
            ax.set(title=f"{grid.name} ({seeds} seeds): {objective}", xlabel="final loss vs uniform (%, lower is better)")
    return _saved(fig, path)
