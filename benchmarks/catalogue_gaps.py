"""The catalogue's gap table: per task and task instance, uniform -> best static, natural ->
best static and best static -> best 2-phase schedule, with 90% CIs over fresh run seeds.

For each task of `mixgym.tasks.CATALOGUE_DOMAINS` and each task instance (``task_seed``), the
best static mixture and the best 2-phase schedule are searched (`search_schedule`, common
random numbers on run seeds 0-29), then uniform, natural, the static oracle and the schedule
are trained on 30 fresh seeds (10000-10029, the same for all four) and compared seed by seed.
A gap is reported relative to the reference's mean (uniform, natural, static), as mean and the
half-width of its 90% Student-t CI over the fresh seeds; a task's gap over instances is the
mean of its instances' gaps, with the half-width of that mean (sqrt(sum h_i^2) / n: the CI is
over seeds, conditional on the instances drawn); ± is that 90% CI half-width, "min" the
smallest instance's gap. A task enters the benchmark set when its uniform -> static gap is at
least 3x its half-width and positive on every instance; the last column applies the same rule
to the schedule gap.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/catalogue_gaps.py            # every task
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/catalogue_gaps.py --tasks junk crawl

Writes benchmarks/results/catalogue_gaps.json (one record per task instance) and prints the
table in BENCHMARKS.md ("The task catalogue").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mixgym.llm_backend.oracle import FRESH_SEED, SEARCH_SEEDS, mean_ci, search_schedule, seed_objectives
from mixgym.llm_backend.toy import ToyConfig
from mixgym.tasks import CATALOGUE_DOMAINS, get_task

RESULTS = Path(__file__).parent / "results" / "catalogue_gaps.json"
GAPS = ("uniform->static", "natural->static", "static->schedule")


def instance(task: str, task_seed: int, fresh: tuple[int, ...], static_rounds: int, schedule_rounds: int) -> dict:
    """One task instance's searches and re-scored gaps."""
    started = time.perf_counter()
    config = ToyConfig(**{**get_task(f"mix-{task}").backend_options, "task_seed": task_seed})
    k = config.num_domains
    sizes = np.array([d.size for d in config.domains], dtype=np.float64)
    static = search_schedule(config, seeds=SEARCH_SEEDS, n_random=0, rounds=static_rounds)
    schedule = search_schedule(config, phases=2, seeds=SEARCH_SEEDS, n_random=0, rounds=schedule_rounds)
    two = lambda m: np.tile(m, (2, 1))  # noqa: E731
    schedules = np.stack([two(np.full(k, 1 / k)), two(sizes / sizes.sum()), two(static.mixture), schedule.mixtures])
    values = seed_objectives(config, schedules, fresh)  # (4, seeds): uniform, natural, static, schedule
    uniform, natural, best, scheduled = values
    sd = {name: float(100 * v.std(ddof=1) / v.mean()) for name, v in zip(("uniform", "natural", "static", "schedule"), values)}
    gaps = {}
    for name, reference, other in zip(GAPS, (uniform, natural, best), (best, best, scheduled)):
        gap, half = mean_ci(reference - other)
        gaps[name] = (100 * gap / reference.mean(), 100 * half / reference.mean())
    return {
        "task": task,
        "task_seed": task_seed,
        "objectives": {name: float(v.mean()) for name, v in zip(("uniform", "natural", "static", "schedule"), values)},
        "seed_sd_pct": sd,
        "gaps_pct": gaps,
        "static": static.mixture.round(4).tolist(),
        "schedule": schedule.mixtures.round(4).tolist(),
        "search": {"seeds": len(SEARCH_SEEDS), "static_rounds": static_rounds, "schedule_rounds": schedule_rounds},
        "evaluations": static.evaluations + schedule.evaluations,
        "seconds": time.perf_counter() - started,
    }


def table(records: list[dict]) -> str:
    """The markdown table of `records`: per task the mean gap over its instances +- the 90% CI."""
    lines = [
        "| task | instances | uniform's seed sd % | uniform -> static % | natural -> static % | static -> 2-phase % | in the set | schedule gap >= 3x CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in records):
        rows = [r for r in records if r["task"] == task]
        cells, separated = [], {}
        for name in GAPS:
            gap = np.array([r["gaps_pct"][name] for r in rows])
            mean, half = gap[:, 0].mean(), np.sqrt((gap[:, 1] ** 2).sum()) / len(gap)
            cells.append(f"{mean:+.1f} ± {half:.1f} (min {gap[:, 0].min():+.1f})")
            separated[name] = mean >= 3 * half and bool((gap[:, 0] > 0).all())
        sd = np.mean([r["seed_sd_pct"]["uniform"] for r in rows])
        verdicts = ["yes" if separated[name] else "no" for name in ("uniform->static", "static->schedule")]
        lines.append(f"| mix-{task} | {len(rows)} | {sd:.1f} | " + " | ".join(cells + verdicts) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(CATALOGUE_DOMAINS), choices=list(CATALOGUE_DOMAINS))
    parser.add_argument("--instances", type=int, default=3, help="task seeds 0..N-1")
    parser.add_argument("--static-rounds", type=int, default=3)
    parser.add_argument("--schedule-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="only print the table of the records in --out")
    args = parser.parse_args()
    fresh = tuple(range(FRESH_SEED, FRESH_SEED + 30))
    records = json.loads(args.out.read_text()) if args.out.exists() else []
    for task in [] if args.table else args.tasks:
        for task_seed in range(args.instances):
            record = instance(task, task_seed, fresh, args.static_rounds, args.schedule_rounds)
            records = [r for r in records if (r["task"], r["task_seed"]) != (task, task_seed)] + [record]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(records, indent=1))
            print(task, task_seed, f"{record['seconds']:.0f} s", record["gaps_pct"], flush=True)
    print(table([r for r in records if r["task"] in args.tasks]))


if __name__ == "__main__":
    main()
