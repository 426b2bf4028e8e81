"""Swarms: many static-mixture runs of one task, the data every predictor of a mixture is fit on.

A swarm trains the same task on M static mixtures, S run seeds each, and writes one table,
``swarm.csv``, a row per run (RegMix's protocol: sail-sg/regmix; Olmix and Data Mixing Laws
fit the same kind of table). Mixtures (`swarm_mixtures`): uniform, natural, natural^0.5,
then RegMix's Dirichlet draws around the tempered natural mixture (`regmix_mixtures`).

Columns: ``mixture_id``, ``kind``, ``seed``, ``mixture/<d>``, ``eval_loss/<d>`` (held-out
loss per domain at the end), ``objective`` (the task's objective), ``natural_loss`` (the
held-out losses weighted by the natural mixture), ``epochs/<d>`` (passes over each domain's
training data), ``tokens``, ``wall_time`` and ``cpu_time`` (seconds).

Toy tasks run in this process, every (mixture, seed) a row of one `ToyRuns` trained in
batched calls, chunk after chunk; any other task (the real-LM ``lm-small``) runs each run as
a bench cell (agent ``fixed``) through the bench's engines (process pool, Ray, shards) and
its cell cache. Either way a row is appended to ``swarm.csv`` as soon as its run is done,
and running the same swarm again completes only what is missing.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixgym.tasks import get_task
from mixgym.validation import integer

SWARM_FILE = "swarm.csv"
BASE_COLUMNS = ("mixture_id", "kind", "seed", "objective", "natural_loss", "tokens", "wall_time", "cpu_time")
TOY_CHUNK = 512
"""Toy runs per batch whose rows reach ``swarm.csv`` together."""


def regmix_mixtures(
    natural: np.ndarray,
    count: int,
    rng: random.Random,
    temperature: float = 0.5,
    strengths: tuple[float, float] = (0.1, 5.0),
    max_usage: float = 15.0,
    minimum: float = 2e-4,
) -> np.ndarray:
    """`count` distinct mixtures drawn as RegMix draws them (sail-sg/regmix
    ``mixture_config/synthesize_mixture.py``, ``generate_weights_dirichlet``, lines 100-160):

    - the prior is the natural mixture tempered, ``natural^temperature`` normalised (TEMP 0.5);
    - each draw picks one of 15 concentrations spread log-uniformly over `strengths` (0.1: a
      few domains take almost everything; 5: near the prior) and draws Dirichlet(prior x it);
    - a draw giving a domain more than ``max_usage`` x its natural share is rejected (a domain
      may not be repeated more than ~15 epochs, MAXIMUM_USAGE);
    - weights below `minimum` are set to 0, the rest renormalised and rounded to `minimum`;
      duplicates are dropped.
    The generator is ``numpy`` seeded from `rng`, so the draws are reproducible.
    """
    natural = np.asarray(natural, dtype=np.float64)
    natural = natural / natural.sum()
    bound = np.minimum(natural * max_usage, 1.0)
    prior = natural**temperature
    prior = prior / prior.sum()
    levels = np.logspace(np.log10(strengths[0]), np.log10(strengths[1]), 15)
    generator = np.random.default_rng(rng.getrandbits(64))
    found: dict[bytes, np.ndarray] = {}
    for _ in range(1000 * count):
        if len(found) == count:
            break
        draw = generator.dirichlet(prior * levels[generator.integers(len(levels))])
        if np.any(draw > bound):
            continue
        draw = np.where(draw < minimum, 0.0, draw)
        if not draw.sum() > 0:
            continue
        draw = np.round(draw / draw.sum() / minimum) * minimum
        draw = draw / draw.sum()
        found.setdefault(np.round(draw, 6).tobytes(), draw)
    if len(found) < count:
        raise ValueError(f"only {len(found)} distinct RegMix mixtures found of {count} asked; ask for fewer")
    return np.array(list(found.values()))


def swarm_mixtures(natural: np.ndarray, count: int, seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(id, kind, mixture) of a swarm of `count` mixtures (>= 3): uniform, natural and
    natural^0.5, then ``count - 3`` RegMix draws (`regmix_mixtures`), drawn from `seed`."""
    integer("--mixtures", count, 3)
    natural = np.asarray(natural, dtype=np.float64) / np.sum(natural)
    k = len(natural)
    tempered = natural**0.5 / np.sum(natural**0.5)
    fixed = [("uniform", "uniform", np.full(k, 1.0 / k)), ("natural", "natural", natural), ("tempered-0.5", "tempered", tempered)]
    draws = regmix_mixtures(natural, count - 3, random.Random(seed)) if count > 3 else np.zeros((0, k))
    return fixed + [(f"regmix-{i:03d}", "regmix", m) for i, m in enumerate(draws)]


def read_swarm(path: str | Path, domains: list[str] | None = None) -> pd.DataFrame:
    """A swarm table, checked: every column there, no NaN loss, mixtures that sum to 1 and, if
    `domains` is given, those domains; a clear error naming what is wrong otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no swarm table at {str(path)!r}")
    table = pd.read_csv(path)
    missing = [c for c in BASE_COLUMNS if c not in table.columns]
    found = [c[len("mixture/") :] for c in table.columns if c.startswith("mixture/")]
    if missing or not found:
        raise ValueError(f"{str(path)!r} is not a swarm table: missing column(s) {missing or ['mixture/<domain>']}")
    for prefix in ("eval_loss/", "epochs/"):
        absent = [f"{prefix}{d}" for d in found if f"{prefix}{d}" not in table.columns]
        if absent:
            raise ValueError(f"{str(path)!r}: missing column(s) {absent}")
    if domains is not None and list(domains) != found:
        raise ValueError(f"{str(path)!r} has domains {found}, the task has {list(domains)}")
    losses = table[[f"eval_loss/{d}" for d in found]]
    if losses.isna().any().any() or not np.isfinite(losses.to_numpy()).all():
        rows = table.index[losses.isna().any(axis=1) | ~np.isfinite(losses.to_numpy()).all(axis=1)].tolist()
        raise ValueError(f"{str(path)!r}: non-finite held-out loss in row(s) {rows[:5]}")
    sums = table[[f"mixture/{d}" for d in found]].sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        bad = table.index[~np.isclose(sums, 1.0, atol=1e-6)].tolist()
        raise ValueError(f"{str(path)!r}: mixtures of row(s) {bad[:5]} do not sum to 1 (sums {sums[bad[:5]].round(6).tolist()})")
    return table


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to the CSV at `path` (header first if new), flushed to disk: a killed swarm
    keeps every finished row."""
    frame = pd.DataFrame(rows)
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as handle:
        frame.to_csv(handle, header=new, index=False)
        handle.flush()
        os.fsync(handle.fileno())


def run_swarm(
    task: str,
    mixtures: int,
    seeds: int,
    out: str | Path,
    options: dict[str, Any] | None = None,
    mixture_seed: int = 0,
    engine: str = "process",
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the swarm of `task` (see the module docstring) into `out`; returns its table."""
    integer("--seeds", seeds, 1)
    preset = get_task(task)
    backend_options = preset.backend_kwargs(dict(options or {}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    domains, natural, unit, make_info = _describe(preset.backend, backend_options)
    plan = swarm_mixtures(natural, mixtures, mixture_seed)
    from mixgym.bench.config import input_digest

    inputs = input_digest({"backend": preset.backend, **backend_options})  # the corpus' content: a rebuilt corpus is another swarm
    spec = {"task": task, "options": backend_options, "inputs": inputs, "mixtures": mixtures, "mixture_seed": mixture_seed}
    spec_path = out / "swarm.json"
    key = json.loads(json.dumps(spec, default=str))
    if spec_path.exists():  # the same swarm (more seeds may be asked)
        stored = json.loads(spec_path.read_text())
        if {k: stored.get(k) for k in key} != key:
            raise ValueError(f"{str(out)!r} holds another swarm ({json.dumps({k: stored.get(k) for k in key})}); use another --out")
    kinds = list(make_info.domain_kinds or ["text"] * len(domains))
    spec_path.write_text(json.dumps({**key, "domains": domains, "kinds": kinds}, indent=1, default=str))
    path = out / SWARM_FILE
    done = set()
    if path.exists():
        table = read_swarm(path, domains)
        done = set(zip(table["mixture_id"], table["seed"].astype(int)))
    todo = [(i, s) for i in range(len(plan)) for s in range(seeds) if (plan[i][0], s) not in done]
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    context = {"plan": plan, "domains": domains, "natural": natural, "unit": unit, "info": make_info, "path": path}
    if preset.backend == "toy":
        _run_toy(backend_options, todo, context, progress)
    else:
        _run_cells(task, dict(options or {}), backend_options, todo, context, out, engine, workers, progress)
    return read_swarm(path, domains)


def _describe(kind: str, options: dict[str, Any]) -> tuple[list[str], np.ndarray, float, Any]:
    """(domains, natural mixture, size unit, backend info) of a task's backend: for the toy,
    sizes are examples and a sample is one; for an LM, sizes are tokens and a sample a sequence."""
    if kind == "toy":
        from mixgym.llm_backend.toy import ToyBackend

        backend = ToyBackend(**options)
        info = backend.info
        return list(backend.domains), info.domain_sizes / info.domain_sizes.sum(), 1.0, info
    from mixgym.envs import MixingEnv

    env = MixingEnv(backend=kind, **options)
    info = env.backend.info
    return list(env.domains), info.domain_sizes / info.domain_sizes.sum(), float(info.tokens_per_sample), info


def _row(
    context: dict[str, Any], index: int, seed: int, losses: np.ndarray, objective: float, samples: np.ndarray, tokens: int,
    wall: float, cpu: float,
) -> dict[str, Any]:
    """One row of ``swarm.csv`` (see the module docstring)."""
    mixture_id, kind, mixture = context["plan"][index]
    info, domains = context["info"], context["domains"]
    row: dict[str, Any] = {"mixture_id": mixture_id, "kind": kind, "seed": seed}
    row.update({f"mixture/{d}": float(w) for d, w in zip(domains, mixture)})
    row.update({f"eval_loss/{d}": float(v) for d, v in zip(domains, losses)})
    epochs = np.asarray(samples, dtype=np.float64) * context["unit"] / info.domain_sizes
    row.update({f"epochs/{d}": float(e) for d, e in zip(domains, epochs)})
    row.update(
        objective=float(objective), natural_loss=float(context["natural"] @ losses), tokens=int(tokens), wall_time=wall, cpu_time=cpu
    )
    return row


def _run_toy(options: dict[str, Any], todo: list[tuple[int, int]], context: dict[str, Any], progress: bool) -> None:
    """Toy runs, `TOY_CHUNK` at a time as rows of one `ToyRuns` (`oracle.train_schedules`),
    the task's whole budget on each run's mixture."""
    from tqdm.auto import tqdm

    from mixgym.llm_backend.oracle import train_schedules
    from mixgym.llm_backend.toy import ToyBackend

    config = ToyBackend(**options).config
    bar = tqdm(total=len(todo), desc="toy swarm", unit="run", disable=not progress)
    for start in range(0, len(todo), TOY_CHUNK):
        chunk = todo[start : start + TOY_CHUNK]
        wall, cpu = time.perf_counter(), time.process_time()
        rows = []
        schedules = np.array([[context["plan"][index][2]] for index, _ in chunk])  # one phase: static
        backends, samples = train_schedules(config, schedules, [seed for _, seed in chunk])
        wall, cpu = (time.perf_counter() - wall) / len(chunk), (time.process_time() - cpu) / len(chunk)
        for (index, seed), backend, counts in zip(chunk, backends, samples):
            losses = np.array(list(backend.evaluate().values()))
            tokens = int(counts.sum()) * config.input_dim
            rows.append(_row(context, index, seed, losses, backend.objective(), counts, tokens, wall, cpu))
        _append(context["path"], rows)
        bar.update(len(chunk))
    bar.close()


def _run_cells(
    task: str,
    overrides: dict[str, Any],
    options: dict[str, Any],
    todo: list[tuple[int, int]],
    context: dict[str, Any],
    out: Path,
    engine: str,
    workers: int | None,
    progress: bool,
) -> None:
    """Every run a bench cell (agent ``fixed`` on the run's mixture, one decision per
    `SWARM_DECISION_STEPS` steps, held-out loss at the end only), through the bench's engines
    and cell cache; rows appended as the cells finish."""
    from mixgym.bench.config import Cell, input_digest
    from mixgym.bench.execute import run_cells

    steps = int(options.get("total_steps", 1))
    env = {"action_map": "simplex", "steps_per_action": min(SWARM_DECISION_STEPS, steps), "eval_every": 10**9}
    digest = input_digest({"backend": get_task(task).backend, **options})
    cells = [
        Cell(
            agent="fixed", agent_options={"mixture": [float(w) for w in context["plan"][index][2]]}, reward="eval_loss",
            backend_label=task, backend_options={"task": task, **overrides}, env_options=env, seed=seed, mode="non-proxy",
            train_decisions=0, proxy_options={}, inputs=digest,
        )
        for index, seed in todo
    ]
    batch = workers or os.cpu_count() or 1
    failed = []
    for start in range(0, len(cells), batch):  # rows reach swarm.csv batch by batch, not at the very end
        part, planned = cells[start : start + batch], todo[start : start + batch]
        if engine == "ray":
            from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray

            outcomes = run_cells_on_ray(part, out, _cell_runner, RayOptions(), progress)
        else:
            outcomes = run_cells(part, out, _cell_runner, workers, progress)
        failed += [o for o in outcomes if o.status == "failed"]
        _collect(planned, outcomes, context, out)
        if any(o.status in ("stopped", "skipped") for o in outcomes):
            break  # Ctrl-C: the finished rows are written; the same command continues
    if failed:
        raise RuntimeError(f"{len(failed)} swarm run(s) failed, e.g. {failed[0].cell.label}: {failed[0].error}; run the swarm again to retry")


def _collect(todo: list[tuple[int, int]], outcomes: list[Any], context: dict[str, Any], out: Path) -> None:
    """Append the rows of the finished cells among `outcomes` to ``swarm.csv``."""
    from mixgym.agents.runner import Results
    from mixgym.bench.execute import cell_dir

    rows = []
    for (index, seed), outcome in zip(todo, outcomes):
        if outcome.status not in ("done", "cached"):
            continue
        results = Results.load(cell_dir(out, outcome.cell))
        final = results.decisions.iloc[-1]
        losses = np.array([final[f"eval_loss/{d}"] for d in context["domains"]])
        samples = results.decisions[[f"samples/{d}" for d in context["domains"]]].sum().to_numpy()
        summary = json.loads((cell_dir(out, outcome.cell) / "summary.json").read_text())
        times = summary["wall_time"], summary.get("cpu_time", summary["wall_time"])
        rows.append(_row(context, index, seed, losses, float(final["objective"]), samples, int(final["tokens"]), *times))
    if rows:
        _append(context["path"], rows)


SWARM_DECISION_STEPS = 100
"""Optimizer steps per decision of a swarm run on the real-LM backend (a static mixture needs
no decisions: fewer, longer ones cost less bookkeeping)."""


def _cell_runner(cell: Any, directory: Path) -> dict[str, Any]:
    from mixgym.bench.cells import run_cell

    start = time.process_time()
    summary = run_cell(cell, directory)
    return {**summary, "cpu_time": time.process_time() - start}


def report(path: str | Path, folds: int = 5, out: str | Path | None = None, calibrated_toy: dict[str, Any] | None = None) -> str:
    """The held-out agreement of every predictor (`mixgym.bench.predictors`) on the swarm at
    `path`, as Markdown; writes ``agreement.csv``, ``predictions.csv`` and
    ``predicted_vs_measured.png`` beside it (or into `out`)."""
    from dataclasses import asdict

    from mixgym.bench.predictors import PREDICTORS, agreement, markdown, seed_noise

    table = read_swarm(path)
    predictors = dict(PREDICTORS)
    if calibrated_toy:
        predictors["calibrated-toy"] = calibrated_toy_predictor(table, Path(path), calibrated_toy)
    results, predictions = agreement(table, predictors, folds=folds)
    noise = [seed_noise(table, objective) for objective in ("objective", "natural_loss")]
    folder = Path(out) if out is not None else Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([asdict(r) for r in results]).to_csv(folder / "agreement.csv", index=False)
    predictions.to_csv(folder / "predictions.csv", index=False)
    _plot(predictions, folder / "predicted_vs_measured.png")
    return markdown(results, noise)


def calibrated_toy_predictor(table: pd.DataFrame, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Per objective column, a `mixgym.bench.predictors.Predictor` that calibrates a toy task
    (`mixgym.calibration`) on the training mixtures' runs of `table` and predicts held-out
    mixtures' objective through its readout. The objective's weights over the domains are
    recovered by least squares from the swarm's per-domain losses (exact: each objective is a
    weighted sum of them)."""
    from mixgym.calibration import _swarm_kinds, calibrate

    names = [c[len("mixture/") :] for c in table.columns if c.startswith("mixture/")]
    kinds = _swarm_kinds(path, names)
    columns = [f"mixture/{d}" for d in names]
    losses = table[[f"eval_loss/{d}" for d in names]].to_numpy()

    def for_objective(column: str) -> Any:
        weights = np.linalg.lstsq(losses, table[column].to_numpy(), rcond=None)[0]

        def predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
            seen = {tuple(np.round(x, 12)) for x in train_x}
            rows = table[[tuple(np.round(x, 12)) in seen for x in table[columns].to_numpy()]]
            return calibrate(rows, kinds, progress=False, **options).predict(test_x) @ weights

        return predict

    return {column: for_objective(column) for column in ("objective", "natural_loss")}


def _plot(predictions: pd.DataFrame, path: Path) -> None:
    """Predicted against measured objective, one panel per (objective, predictor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(predictions.groupby(["objective", "predictor"], sort=False))
    columns = predictions["predictor"].nunique()
    rows = -(-len(pairs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    for ax, ((objective, predictor), frame) in zip(axes.ravel(), pairs):
        ax.scatter(frame["measured"], frame["predicted"], s=12)
        low, high = frame[["measured", "predicted"]].min().min(), frame[["measured", "predicted"]].max().max()
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_title(f"{predictor} ({objective})", fontsize=9)
        ax.set_xlabel("measured", fontsize=8)
        ax.set_ylabel("predicted (held out)", fontsize=8)
    for ax in axes.ravel()[len(pairs) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _swarm_command(args: Any) -> int:
    if args.task == "report":
        if args.table is None:
            raise ValueError("mixgym swarm report needs the swarm table: mixgym swarm report OUT/swarm.csv")
        toy = {"rounds": args.calibrate_rounds, "total_steps": args.calibrate_steps} if args.calibrated_toy else None
        print(report(args.table, folds=args.folds, calibrated_toy=toy))
        return 0
    if args.table is not None:
        raise ValueError(f"unexpected argument {args.table!r}: mixgym swarm TASK takes one task name")
    from mixgym.bench import parse_shard

    shard = parse_shard(args.shard) if args.shard is not None else None
    out = Path(args.out or Path("runs") / f"swarm-{args.task}")
    table = run_swarm(
        args.task, args.mixtures, args.seeds, out, options=dict(args.env), mixture_seed=args.mixture_seed,
        engine=args.engine, workers=args.workers, shard=shard, progress=not args.no_progress,
    )
    planned = args.mixtures * args.seeds
    if len(table) < planned:
        rest = "the other shards run the rest" if shard is not None else "the same command runs the rest"
        print(f"{len(table)} of {planned} runs in {out / SWARM_FILE}; {rest}")
        return 0 if shard is not None else 130
    print(f"{len(table)} runs in {out / SWARM_FILE}; `mixgym swarm report {out / SWARM_FILE}` scores the predictors")
    return 0


def add_swarm_cli(subparsers: Any) -> None:
    """Add ``swarm TASK`` and ``swarm report SWARM.csv`` to the `mixgym` command line."""
    from mixgym.cli import _key_value, int_at_least

    p = subparsers.add_parser(
        "swarm",
        help="run many static mixtures of a task (RegMix's swarm), or score predictors on one (swarm report)",
        description="Run TASK on --mixtures static mixtures (uniform, natural, natural^0.5, then RegMix's Dirichlet "
        "draws) x --seeds run seeds, into OUT/swarm.csv, a row per run, appended as runs finish; the same command "
        "completes what is missing. Toy tasks run batched in this process; real-LM tasks run as bench cells "
        "(--engine, --workers, --shard, cached under OUT/cells). `mixgym swarm report OUT/swarm.csv` scores the "
        "predictors (linear, LightGBM, mixing law) on held-out mixtures.",
    )
    p.add_argument("task", help="a task name (classic5, pile22, lm-small, ...) or 'report'")
    p.add_argument("table", nargs="?", default=None, help="with report: the swarm table (OUT/swarm.csv)")
    p.add_argument("--mixtures", type=int_at_least(3), default=32, help="static mixtures (>= 3; default 32)")
    p.add_argument("--seeds", type=int_at_least(1), default=2, help="run seeds per mixture (default 2)")
    p.add_argument("--mixture-seed", type=int_at_least(0), default=0, help="seed of the RegMix draws (default 0)")
    p.add_argument("--env", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="backend option of the task, repeatable (corpus=..., total_steps=...)")
    p.add_argument("--out", default=None, help="output folder (default runs/swarm-TASK)")
    p.add_argument("--engine", choices=("process", "ray"), default="process", help="real-LM tasks: process pool or Ray")
    p.add_argument("--workers", type=int_at_least(1), default=None, help="real-LM tasks: parallel processes (default: all cores)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run only every N-th missing run from the I-th")
    p.add_argument("--folds", type=int_at_least(2), default=5, help="report: cross-validation folds over mixtures (default 5)")
    p.add_argument("--calibrated-toy", action="store_true", help="report: also score a toy calibrated on each fold (slow)")
    p.add_argument("--calibrate-rounds", type=int_at_least(1), default=2, help="report: its coordinate-search rounds (default 2)")
    p.add_argument("--calibrate-steps", type=int_at_least(1), default=400, help="report: its toy runs' steps (default 400)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_swarm_command)
