"""Can RL learn to mix? Learned agents against static mixtures, schedules and bandits (issue 12).

    nice -n 5 python benchmarks/learned_mixing.py run --task classic5 --workers 2   # resumable
    nice -n 5 python benchmarks/learned_mixing.py run --task pile22 --workers 2 --no-ablation
    python benchmarks/learned_mixing.py report          # tables -> benchmarks/results/learned_mixing.md

Proxy mode, as AC-ODM transfers its agent: every learned agent learns for ``--train-decisions``
decisions on a proxy toy (student width 16, the same domains), once per training seed
(``--train-seeds``, default 0 1 2), and then acts deterministically on the same 5 target runs
(student width 32, run seeds 100-104) as every other contender. References on those runs:
uniform, natural, the oracle static mixture and the best 2- and 4-phase schedules (searched by
`mixgym.llm_backend.oracle.search_schedule` on run seeds 0-2 of the target task), and the
bandits ODM, EXP3 and DoReMi (adapting online within each target run).

The learned agent: ``ppo-tuned`` (settings from `benchmarks/tune.py`'s search) with the
advantage reward (x100, uniform baseline twin) and the v1 observation; and its ablation
(`ABLATION`): each of reward, gamma, observation and exploration set back one at a time, and
the reward, gamma and observation of before issue 12 together.

Each cell (contender x training seed) is a separate process that writes its `Results` under
``--out/<task>/<label>/``; finished cells are skipped, so a stopped run resumes. ``report``
reads them all: final objective, regret against the oracle and the schedules, decisions to
reach uniform's and natural's final loss, the ablation, and a plot per task.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGET = {"total_steps": 1000, "hidden_dim": 32}
PROXY = {"total_steps": 1000, "hidden_dim": 16}
TARGET_SEEDS = 5
FIRST_TARGET_SEED = 100
ADVANTAGE_SCALE = 100.0
REFERENCES = ("uniform", "natural", "oracle", "schedule2", "schedule4", "odm", "exp3", "doremi")
LEARNED = "ppo-tuned"
ABLATION: dict[str, tuple[str, float | None, str, bool]] = {
    # variant: (reward, gamma (None: the searched one), observation, per-episode gSDE exploration)
    "tuned": ("advantage", None, "v1", True),
    "reward eval_loss": ("eval_loss", None, "v1", True),
    "reward advantage_terminal": ("advantage_terminal", None, "v1", True),
    "gamma 0.95": ("advantage", 0.95, "v1", True),
    "observation v0": ("advantage", None, "v0", True),
    "per-decision noise": ("advantage", None, "v1", False),
    "before issue 12": ("eval_loss", 0.95, "v0", True),
}
"""The ablation: the tuned set-up, each change undone one at a time, and all three reward x
gamma x observation changes undone together (one factor at a time plus the old corner: the
full 12-cell factorial did not fit the compute budget)."""


def task_options(task: str) -> dict[str, Any]:
    """Backend options of a task: ``classic5`` is the K=5 toy; ``pile22`` the registered Pile-like
    toy task when mixgym has one, else the K=22 toy (say which in the report)."""
    if task == "classic5":
        return {"num_domains": 5}
    if task == "pile22":
        try:
            from mixgym.tasks import get_task  # type: ignore[import-not-found]
        except ImportError:  # the registered Pile-like task has not landed: K=22 toy domains
            return {"num_domains": 22}
        get_task("pile22")
        return {"task": "pile22"}
    raise ValueError(f"unknown task {task!r}; choose classic5 or pile22")


@dataclass(frozen=True)
class Cell:
    """One contender on one task, for one training seed (None: nothing is learned)."""

    task: str
    agent: str
    variant: str | None = None
    train_seed: int | None = None

    @property
    def group(self) -> str:
        """The contender's label in tables (the cell's label without its training seed)."""
        return self.agent if self.variant is None else f"{self.agent} ({self.variant})"

    @property
    def setting(self) -> tuple[str, float | None, str, bool]:
        """(reward, gamma, observation, gSDE) of a learned cell."""
        assert self.variant is not None
        return ABLATION[self.variant]

    @property
    def folder(self) -> str:
        seed = "" if self.train_seed is None else f"__seed{self.train_seed}"
        return "".join(c if c.isalnum() or c in "-." else "_" for c in self.group) + seed


def grid(task: str, train_seeds: list[int], ablation: bool, ablation_seeds: int | None = None) -> list[Cell]:
    """Every cell of `task`: references, the tuned agent on every training seed and (if asked)
    the other ablation variants on the first `ablation_seeds` of them (default: all)."""
    cells = [Cell(task, name) for name in REFERENCES]
    for variant in ABLATION if ablation else ["tuned"]:
        seeds = train_seeds if variant == "tuned" else train_seeds[:ablation_seeds]
        cells += [Cell(task, LEARNED, variant, seed) for seed in seeds]
    return cells


class ScheduleMixer:
    """A P-phase schedule: phase p's mixture for the decisions in the p-th equal share of the run."""

    def __init__(self, mixtures: np.ndarray, num_decisions: int) -> None:
        self.mixtures, self.num_decisions, self.decision = np.asarray(mixtures), num_decisions, 0

    def reset(self, info: dict[str, Any]) -> None:
        self.decision = 0

    def observe(self, info: dict[str, Any]) -> None:
        self.decision = int(info["decision"])

    def mixture(self) -> np.ndarray:
        return self.mixtures[min(self.decision * len(self.mixtures) // self.num_decisions, len(self.mixtures) - 1)]

    def state_dict(self) -> dict[str, Any]:
        return {"decision": self.decision}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decision = int(state["decision"])


def run_cell(cell: Cell, out: Path, train_decisions: int) -> dict[str, Any]:
    """Run one cell in this process and write its results; returns its summary."""
    import torch

    from mixgym.agents import MixerAgent, evaluate, make_agent
    from mixgym.agents.base import EnvFacts
    from mixgym.agents.compare import env_for
    from mixgym.agents.mixer import MixerConfig
    from mixgym.llm_backend.oracle import search_schedule

    torch.set_num_threads(1)
    folder = out / cell.task / cell.folder
    start = time.perf_counter()
    options = task_options(cell.task)
    summary: dict[str, Any] = {"cell": asdict(cell)}
    if cell.train_seed is None:
        target = env_for(cell.agent if not cell.agent.startswith("schedule") else "fixed", {**options, **TARGET, "reward": "eval_loss"})
        if cell.agent.startswith("schedule"):
            schedule = search_schedule(target.backend.config, phases=int(cell.agent[len("schedule") :]))
            mixer = ScheduleMixer(schedule.mixtures, target.num_decisions)
            agent = MixerAgent(cell.agent, MixerConfig(), mixer, EnvFacts.of(target))
            summary["schedule"] = schedule.mixtures.tolist()
        else:
            agent = make_agent(cell.agent, target)
    else:
        reward, gamma, observation, gsde = cell.setting
        reward_kwargs = {"scale": ADVANTAGE_SCALE} if reward.startswith("advantage") else None
        env_options = {"reward": reward, "reward_kwargs": reward_kwargs, "observation": observation}
        proxy = env_for(cell.agent, {**options, **PROXY, **env_options})
        overrides: dict[str, Any] = {"seed": cell.train_seed}
        if gamma is not None:
            overrides["gamma"] = gamma
        if not gsde:
            overrides["sb3_kwargs"] = {"use_sde": False}
        agent = make_agent(cell.agent, proxy, **overrides)
        agent.learn(train_decisions)
        timings = proxy.timings["total"]
        summary.update(train_seconds=time.perf_counter() - start, train_env_timings=timings)
        agent.save(folder / "policy.zip")
        # the same reward as in training: under the advantage rewards the observation shows the twin
        target = env_for(cell.agent, {**options, **TARGET, **env_options})
    results = evaluate(agent, target, episodes=TARGET_SEEDS, seed=FIRST_TARGET_SEED)
    results.save(folder)
    summary.update(final_objectives=results.final_objectives().tolist(), seconds=time.perf_counter() - start)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _run_safely(cell: Cell, out: Path, train_decisions: int) -> tuple[Cell, str | None]:
    try:
        run_cell(cell, out, train_decisions)
        return cell, None
    except Exception:  # noqa: BLE001  (one failed cell must not stop the grid; its traceback is kept)
        folder = out / cell.task / cell.folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
        return cell, traceback.format_exc().splitlines()[-1]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    cells = grid(args.task, args.train_seeds, not args.no_ablation, args.ablation_seeds)
    if args.references_only:
        cells = [c for c in cells if c.train_seed is None]
    todo = [c for c in cells if not (out / c.task / c.folder / "summary.json").exists()]
    log = out / f"{args.task}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    meta_file = out / f"{args.task}.json"
    earlier = json.loads(meta_file.read_text()) if meta_file.exists() else {"train_decisions": args.train_decisions, "train_seeds": []}
    if earlier["train_decisions"] != args.train_decisions:
        raise SystemExit(f"{out} holds cells learned for {earlier['train_decisions']} decisions, not {args.train_decisions}: use another --out")
    seeds = sorted(set(earlier["train_seeds"]) | set(args.train_seeds))  # a run on fewer seeds keeps the others' cells in the report
    meta_file.write_text(json.dumps({"train_decisions": args.train_decisions, "train_seeds": seeds, "task": task_options(args.task)}))
    print(f"{len(cells)} cells, {len(todo)} to run, {args.workers} workers; progress in {log}", flush=True)
    failed = 0
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool, log.open("a") as progress:
        progress.write(f"# {date.today()} start, load average {os.getloadavg()}\n")
        futures = [pool.submit(_run_safely, cell, out, args.train_decisions) for cell in todo]
        for done, future in enumerate(as_completed(futures), 1):
            cell, error = future.result()
            failed += error is not None
            line = f"[{done}/{len(todo)}] {time.perf_counter() - started:7.0f}s load {os.getloadavg()[0]:.1f} {cell.folder}"
            line += f" FAILED: {error}" if error else ""
            print(line, flush=True)
            progress.write(line + "\n")
            progress.flush()
    return 1 if failed else 0


def _merged(folders: list[Path]) -> Any:
    """One `Results` of several cells' runs (episodes renumbered), or None if none finished."""
    from mixgym.agents.runner import Results

    parts = [Results.load(f) for f in folders if (f / "summary.json").exists()]
    if not parts:
        return None
    frames = []
    for i, part in enumerate(parts):
        frame = part.decisions.copy()
        frame["episode"] += i * TARGET_SEEDS
        frames.append(frame)
    return Results(pd.concat(frames, ignore_index=True), parts[0].config)


def task_table(out: Path, task: str) -> tuple[pd.DataFrame, Any] | None:
    """Per contender: final objective, regrets, decisions to uniform's and natural's final loss
    (None until uniform, natural and the oracle have run)."""
    from mixgym.agents.compare import Comparison

    meta = json.loads((out / f"{task}.json").read_text())
    cells = grid(task, meta["train_seeds"], True)
    groups: dict[str, list[Path]] = {}
    seeds_of: dict[str, list[Cell]] = {}
    for cell in cells:
        if (out / task / cell.folder).exists() or cell.train_seed is None:
            groups.setdefault(cell.group, []).append(out / task / cell.folder)
            seeds_of.setdefault(cell.group, []).append(cell)
    results = {group: merged for group, folders in groups.items() if (merged := _merged(folders)) is not None}
    if not {"uniform", "natural", "oracle"} <= set(results):
        return None
    comparison = Comparison(results, {g: "act" if g in REFERENCES else "proxy" for g in results}, {g: 0.0 for g in results})
    table = comparison.summary(oracle="oracle", baseline="uniform").set_index("agent")
    natural = comparison.summary(oracle="oracle", baseline="natural").set_index("agent")
    table["decisions_to_natural"] = natural["decisions_to_uniform"]
    table["pct_fewer_than_natural"] = natural["pct_fewer_than_uniform"]
    for schedule in ("schedule2", "schedule4"):
        if schedule in results:
            best = float(results[schedule].final_objectives().mean())
            table[f"regret_pct_{schedule}"] = 100.0 * (table["final_objective"] - best) / best
    spread = {}
    for group, folders in groups.items():
        means = [np.mean(json.loads((f / "summary.json").read_text())["final_objectives"]) for f in folders if (f / "summary.json").exists()]
        spread[group] = (len(means), float(np.std(means, ddof=1)) if len(means) > 1 else 0.0, float(np.min(means)) if means else np.nan)
    table["train_seeds"] = [spread[g][0] if seeds_of[g][0].train_seed is not None else 0 for g in table.index]
    table["sd_over_train_seeds"] = [spread[g][1] for g in table.index]
    table["best_train_seed"] = [spread[g][2] for g in table.index]
    return table, comparison


def _fmt_reach(decisions: Any, pct: Any) -> str:
    if pd.isna(decisions):
        return "never"
    text = f"{int(decisions)}"
    if not pd.isna(pct):
        text += f" ({pct:.0f}% fewer)" if pct >= 0 else f" ({-pct:.0f}% more)"
    return text


def markdown(table: pd.DataFrame, rows: list[str] | None = None) -> str:
    header = (
        "| contender | final objective (mean ± sd) | sd over training seeds | best training seed | regret vs oracle static "
        "| vs best 2-phase | vs best 4-phase | decisions to uniform's final | decisions to natural's final |"
    )
    lines = [header, "|" + "---|" * 9]
    for name in rows or list(table.index):
        if name not in table.index:
            continue
        row = table.loc[name]
        learned = bool(row["train_seeds"] > 0)
        spread = f"{row['sd_over_train_seeds']:.4f} ({int(row['train_seeds'])} seeds)" if learned else "-"
        best = f"{row['best_train_seed']:.4f}" if learned else "-"
        uniform = _fmt_reach(row["decisions_to_uniform"], np.nan if name == "uniform" else row["pct_fewer_than_uniform"])
        natural = _fmt_reach(row["decisions_to_natural"], np.nan if name == "natural" else row["pct_fewer_than_natural"])
        cells = [
            name,
            f"{row['final_objective']:.4f} ± {row['final_sd']:.4f}",
            spread,
            best,
            f"{row['regret_pct']:+.1f}%",
            f"{row.get('regret_pct_schedule2', np.nan):+.1f}%",
            f"{row.get('regret_pct_schedule4', np.nan):+.1f}%",
            uniform,
            natural,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_means(out: Path, task: str, variant: str) -> dict[int, float]:
    """Training seed -> mean final objective over the target runs, for the finished cells of a variant."""
    means = {}
    for cell in grid(task, json.loads((out / f"{task}.json").read_text())["train_seeds"], True):
        summary = out / task / cell.folder / "summary.json"
        if cell.variant == variant and summary.exists():
            means[int(cell.train_seed)] = float(np.mean(json.loads(summary.read_text())["final_objectives"]))
    return means


def ablation(table: pd.DataFrame, task: str, out: Path) -> str:
    """The ablation table: each variant's setting, result, and difference from the tuned set-up
    on the same training seeds (a variant may have run on fewer seeds than the tuned one)."""
    lines = [
        "| variant | reward | gamma | observation | exploration | training seeds | final objective | sd over training seeds "
        "| vs tuned, same seeds | regret vs oracle | decisions to uniform's final |",
        "|" + "---|" * 11,
    ]
    tuned = seed_means(out, task, "tuned")
    for variant, (reward, gamma, observation, gsde) in ABLATION.items():
        name = Cell(task, LEARNED, variant, 0).group
        if name not in table.index:
            continue
        row, means = table.loc[name], seed_means(out, task, variant)
        common = sorted(set(means) & set(tuned))
        change = np.mean([means[s] for s in common]) - np.mean([tuned[s] for s in common]) if common else np.nan
        lines.append(
            f"| {variant} | {reward} | {'searched' if gamma is None else gamma} | {observation} "
            f"| {'gSDE per run' if gsde else 'Gaussian per decision'} | {', '.join(map(str, sorted(means)))} "
            f"| {row['final_objective']:.4f} | {row['sd_over_train_seeds']:.4f} | {change:+.4f} | {row['regret_pct']:+.1f}% "
            f"| {_fmt_reach(row['decisions_to_uniform'], row['pct_fewer_than_uniform'])} |"
        )
    return "\n".join(lines)


def report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    text = [f"# Learned mixing (issue 12): generated by `benchmarks/learned_mixing.py report`, {date.today()}\n"]
    text.append(f"Machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}.\n")
    for task in ("classic5", "pile22"):
        if not (out / f"{task}.json").exists():
            continue
        meta = json.loads((out / f"{task}.json").read_text())
        tabled = task_table(out, task)
        if tabled is None:
            continue
        table, comparison = tabled
        table.to_csv(Path(args.md).with_name(f"learned_mixing_{task}.csv"))
        comparison.plot(Path(args.md).with_name(f"learned_mixing_{task}.png"))
        text.append(f"## {task}\n\nBackend options {meta['task']}; proxy learning {meta['train_decisions']} decisions, "
                    f"training seeds {meta['train_seeds']}; target run seeds {FIRST_TARGET_SEED}-{FIRST_TARGET_SEED + TARGET_SEEDS - 1}.\n")
        main = [g for g in table.index if g in REFERENCES] + [Cell(task, LEARNED, "tuned", 0).group]
        text.append(markdown(table, main) + "\n")
        text.append(f"### Ablation ({LEARNED})\n\n" + ablation(table, task, out) + "\n")
    Path(args.md).write_text("\n".join(text))
    print("\n".join(text))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the cells of one task (finished ones are skipped)")
    p.add_argument("--task", choices=("classic5", "pile22"), required=True)
    p.add_argument("--train-decisions", type=int, default=20000, help="proxy learning budget per agent (default 20000)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-ablation", action="store_true", help="only the references and the tuned agent")
    p.add_argument("--ablation-seeds", type=int, default=None, help="training seeds of the ablation variants (default: all)")
    p.add_argument("--references-only", action="store_true", help="only the references (they need no tuned settings)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/learned_mixing")
    p.set_defaults(func=run)
    r = sub.add_parser("report", help="tables and plots from the finished cells")
    r.add_argument("--out", default="runs/learned_mixing")
    r.add_argument("--md", default="benchmarks/results/learned_mixing.md")
    r.set_defaults(func=report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
