"""The leaderboard: per-task normalised scores and rliable aggregates over the catalogue.

Input: the ``results.csv`` of one or more bench grids (`mixgym.bench.report.write_report`: one
row per cell: agent, backend label, seed, objective, final objective). A *task column* is a
backend label; labels of the form ``TASK@INSTANCE`` (``mix-junk@0``, ``mix-junk@1``, ...) are
instances of one task (as Procgen levels are), each with its own seeds.

Per task column, a run's normalised score is ``(uniform - final) / (uniform - static)``:
uniform = 0, the best static mixture (the grid's ``oracle`` baseline) = 1, where "uniform" and
"static" are those baselines' mean final objectives in that column. A task's score averages
its instances'. Across tasks, following rliable (Agarwal et al., "Deep Reinforcement Learning
at the Edge of the Statistical Precipice", NeurIPS 2021; google-research/rliable): the
interquartile mean (IQM) and the mean of the scores with stratified bootstrap 95% CIs, and the
probability of improvement over uniform with its CI. Beside them, Aioli's count (Chen et al.,
ICLR 2025): on how many of the N tasks the agent's final objective is below uniform's with the
90% CI of their per-seed difference excluding 0 (seeds are common random numbers: the same
seed trains every agent's run on the same draws).

A column must hold one task and one objective: runs of different objectives (or a task whose
baselines are missing) are refused with the values named. A task on whose instance the oracle
does not beat uniform has no scale: the leaderboard leaves it out and says so.

    mixgym leaderboard runs/catalogue --plot leaderboard.png
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BASELINES = ("uniform", "oracle")
"""The runs that define a task's normalised scale: uniform = 0, best static (oracle) = 1."""


def load_runs(paths: list[str | Path]) -> pd.DataFrame:
    """The rows of every ``results.csv`` in `paths` (a file, or a bench output folder)."""
    frames = []
    for path in map(Path, paths):
        file = path / "results.csv" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no results.csv at {str(path)!r} (give a bench output folder or its results.csv)")
        frame = pd.read_csv(file)
        missing = {"agent", "backend", "seed", "final_objective"} - set(frame.columns)
        if missing:
            raise ValueError(f"{str(file)!r} lacks the column(s) {sorted(missing)} of a bench results.csv")
        frames.append(frame)
    runs = pd.concat(frames, ignore_index=True)
    if "objective" not in runs.columns:
        runs["objective"] = "objective"
    runs["task"] = runs["backend"].astype(str).str.split("@").str[0]
    return runs


def check_columns(runs: pd.DataFrame) -> None:
    """One objective per task column, one task per column, both baselines in every column."""
    for task, rows in runs.groupby("task"):
        objectives = sorted(set(rows["objective"].astype(str)))
        if len(objectives) > 1:
            raise ValueError(f"task column {task!r} mixes objectives {objectives}: give one objective per column")
        if "task_name" in rows.columns and rows["task_name"].nunique() > 1:
            raise ValueError(f"task column {task!r} mixes tasks {sorted(set(rows['task_name']))}")
        for backend, instance in rows.groupby("backend"):
            absent = [b for b in BASELINES if b not in set(instance["agent"])]
            if absent:
                raise ValueError(f"task instance {backend!r} has no {' or '.join(absent)} runs: its scores cannot be normalised")


def unscalable_tasks(runs: pd.DataFrame, level: float = 0.9) -> dict[str, str]:
    """Tasks without a normalised scale, and why: an instance whose oracle does not beat uniform
    on average, or a task whose oracle does not beat uniform beyond noise (the `level` CI of
    their per-run difference, paired by instance and seed, includes 0): a scale that is noise
    would blow every score up."""
    from mixgym.llm_backend.oracle import mean_ci

    out = {}
    for task, rows in runs.groupby("task"):
        for backend, instance in rows.groupby("backend"):
            means = instance.groupby("agent")["final_objective"].mean()
            if not means["uniform"] - means["oracle"] > 0:
                out[str(task)] = f"on {backend} the oracle ({means['oracle']:.4f}) does not beat uniform ({means['uniform']:.4f})"
                break
        else:
            oracle = rows[rows["agent"] == "oracle"].set_index(["backend", "seed"])["final_objective"]
            uniform = rows[rows["agent"] == "uniform"].set_index(["backend", "seed"])["final_objective"]
            paired = (uniform - oracle).dropna().to_numpy()
            gap, half = mean_ci(paired, level) if len(paired) >= 2 else (np.nan, np.nan)
            if not gap - half > 0:
                out[str(task)] = f"the oracle beats uniform by {gap:.4f} ± {half:.4f} (90% CI over {len(paired)} runs): not beyond noise"
    return out


def normalised_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """Per agent, task and seed: the normalised score, averaged over the task's instances
    (instances with the same seed index paired by their sorted seeds). A task whose oracle
    does not beat uniform on an instance has no scale: an error naming it (`leaderboard`
    leaves such tasks out and says so)."""
    check_columns(runs)
    unscalable = unscalable_tasks(runs)
    if unscalable:
        task, why = next(iter(unscalable.items()))
        raise ValueError(f"task {task!r} has no normalised score: {why} (it is not in the benchmark set)")
    rows = []
    for backend, instance in runs.groupby("backend"):
        means = instance.groupby("agent")["final_objective"].mean()
        scale = means["uniform"] - means["oracle"]
        for _, run in instance.iterrows():
            rows.append(
                {
                    "agent": run["agent"],
                    "task": str(backend).split("@")[0],
                    "backend": backend,
                    "seed": run["seed"],
                    "final_objective": run["final_objective"],
                    "score": (means["uniform"] - run["final_objective"]) / scale,
                }
            )
    scores = pd.DataFrame(rows)
    scores["run"] = scores.groupby(["agent", "backend"])["seed"].rank(method="first").astype(int) - 1
    return scores.groupby(["agent", "task", "run"], as_index=False)["score"].mean()


def score_matrices(scores: pd.DataFrame) -> dict[str, np.ndarray]:
    """rliable's input: per agent a (runs, tasks) matrix, over the tasks every agent ran and the
    runs every task has."""
    tasks = sorted(set.intersection(*[set(s["task"]) for _, s in scores.groupby("agent")]))
    runs = int(scores[scores["task"].isin(tasks)].groupby(["agent", "task"])["run"].nunique().min())
    out = {}
    for agent, rows in scores.groupby("agent"):
        table = rows[rows["task"].isin(tasks) & (rows["run"] < runs)].pivot(index="run", columns="task", values="score")
        out[str(agent)] = table[tasks].to_numpy()
    return out


@dataclass(frozen=True)
class Leaderboard:
    """Aggregates per agent (`table`, one row each) and the per-task scores behind them."""

    table: pd.DataFrame
    per_task: pd.DataFrame
    tasks: list[str]
    left_out: dict[str, str]
    """Tasks without a normalised scale (their oracle does not beat uniform), and why."""

    def markdown(self) -> str:
        """The table as Markdown; every ``[a, b]`` is a 95% stratified-bootstrap CI."""
        header = (
            "| agent | IQM [95% CI] | mean [95% CI] | P(improves on uniform) [95% CI] | beats uniform (90% CI) | "
            + " | ".join(self.tasks)
            + " |"
        )
        lines = [header, "|" + "---|" * (5 + len(self.tasks))]
        for _, row in self.table.iterrows():
            cells = [
                str(row["agent"]),
                f"{row['iqm']:.2f} [{row['iqm_low']:.2f}, {row['iqm_high']:.2f}]",
                f"{row['mean']:.2f} [{row['mean_low']:.2f}, {row['mean_high']:.2f}]",
                "n/a" if row["agent"] == "uniform" else f"{row['poi']:.2f} [{row['poi_low']:.2f}, {row['poi_high']:.2f}]",
                f"{int(row['beats'])} of {len(self.tasks)}",
            ]
            cells += [f"{self.per_task.loc[row['agent'], task]:.2f}" for task in self.tasks]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] * bool(self.left_out) + [f"left out: {task} ({why})" for task, why in self.left_out.items()]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Per agent its IQM with the 95% CI as error bars."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        table = self.table.sort_values("iqm")
        fig, ax = plt.subplots(figsize=(6, 0.45 * len(table) + 1.2))
        y = np.arange(len(table))
        err = np.array([table["iqm"] - table["iqm_low"], table["iqm_high"] - table["iqm"]])
        ax.errorbar(table["iqm"], y, xerr=err, fmt="o", capsize=4)
        ax.set_yticks(y, table["agent"])
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("IQM of normalised score (uniform = 0, best static = 1)")
        ax.set_title(f"{len(self.tasks)} tasks; bars: 95% stratified bootstrap CI", fontsize=10)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def beats_uniform(runs: pd.DataFrame, agent: str, level: float = 0.9) -> int:
    """On how many tasks `agent`'s final objective is below uniform's beyond noise: the `level`
    CI of the per-seed difference (paired by backend and seed) excludes 0."""
    from mixgym.llm_backend.oracle import mean_ci

    count = 0
    for _, rows in runs.groupby("task"):
        ours = rows[rows["agent"] == agent].set_index(["backend", "seed"])["final_objective"]
        theirs = rows[rows["agent"] == "uniform"].set_index(["backend", "seed"])["final_objective"]
        paired = (theirs - ours).dropna()
        if len(paired) >= 2:
            gap, half = mean_ci(paired.to_numpy(), level)
            count += gap - half > 0
    return count


def leaderboard(runs: pd.DataFrame, reps: int = 2000, seed: int = 0) -> Leaderboard:
    """Aggregate `runs` (`load_runs`): see the module docstring."""
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('the leaderboard needs rliable: pip install "mixgym[bench]"') from None
    check_columns(runs)
    left_out = unscalable_tasks(runs)
    runs = runs[~runs["task"].isin(left_out)]
    if runs.empty:
        raise ValueError(f"no task has a normalised scale: {'; '.join(left_out.values())}")
    scores = normalised_scores(runs)
    matrices = score_matrices(scores)
    tasks = sorted(set.intersection(*[set(s["task"]) for _, s in scores.groupby("agent")]))
    state = np.random.RandomState(seed)
    aggregate = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
    pairs = {agent: (m, matrices["uniform"]) for agent, m in matrices.items() if agent != "uniform"}
    with warnings.catch_warnings():  # arch (rliable's bootstrap) deprecates the RandomState rliable passes it
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = rly.get_interval_estimates(matrices, aggregate, reps=reps, random_state=state)
        poi, poi_ci = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps, random_state=state) if pairs else ({}, {})
    rows = []
    for agent in matrices:
        row = {
            "agent": agent,
            "iqm": points[agent][0],
            "iqm_low": intervals[agent][0, 0],
            "iqm_high": intervals[agent][1, 0],
            "mean": points[agent][1],
            "mean_low": intervals[agent][0, 1],
            "mean_high": intervals[agent][1, 1],
            "beats": 0 if agent == "uniform" else beats_uniform(runs[runs["task"].isin(tasks)], agent),
        }
        if agent in poi:
            low, high = np.ravel(poi_ci[agent])
            row.update(poi=float(np.ravel(poi[agent])[0]), poi_low=float(low), poi_high=float(high))
        else:
            row.update(poi=np.nan, poi_low=np.nan, poi_high=np.nan)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("iqm", ascending=False).reset_index(drop=True)
    per_task = scores[scores["task"].isin(tasks)].groupby(["agent", "task"])["score"].mean().unstack()
    return Leaderboard(table, per_task, tasks, left_out)


def _leaderboard_command(args: argparse.Namespace) -> int:
    board = leaderboard(load_runs(args.runs), reps=args.reps)
    text = board.markdown()
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.plot:
        print(f"plot: {board.plot(args.plot)}")
    return 0


def add_leaderboard_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``leaderboard RUNS...`` to the `mixgym` command line."""
    p = subparsers.add_parser(
        "leaderboard",
        help="normalised scores and rliable aggregates (IQM, bootstrap CIs) of bench results",
        description=__doc__.split("\n\n")[1] + " Normalised per task column: uniform = 0, best static (oracle) = 1; "
        "aggregates with rliable's stratified bootstrap; 'beats uniform' counts tasks where the 90%% CI of the "
        "per-seed difference excludes 0.",
    )
    p.add_argument("runs", nargs="+", help="bench output folders (or their results.csv)")
    p.add_argument("--plot", default=None, help="write a PNG: per agent its IQM with 95%% CI error bars")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default 2000)")
    p.set_defaults(func=_leaderboard_command)
