"""OP-Mix as its code runs it, and equal compute as a re-planned run (toy; BENCHMARKS.md).

Equal main steps: OP-Mix on the default 5-domain toy task (1,000 steps, decisions of 10 steps)
with the options that follow michahu/on-policy-mix more closely, one at a time -- candidates
scored on a validation split (now the default) or on the scoring rows (the code's), the run
restarted after the prefix (the code's), the fit on the env's objective, the KL prior off, probes
sized to 40% of the run's compute (the paper's share) -- against uniform (= natural here) on the
same seeds.

Equal compute: a budget of 1,000 main-step equivalents. Uniform trains 1,000 steps; OP-Mix is
*re-planned* (`mixgym.agents.opmix.equal_compute_steps`): a run of n steps whose probes, sized
from n as any run's are, bring n + what-if compute to the budget, its learning-rate schedule
annealed over its own n steps. Beside it the truncated reading of the 1,000-step run (the
objective at the last decision within the budget), labelled so.

Continual: 400 steps on four domains, then 600 with "conflict" added (the continual variant).

``--part hf``: the same on pythia-tiny (the `opmix-hf.yaml` backend: 150 steps of 8 x 4 sequences
of 64 tokens, decisions of 5 steps) on a corpus folder (default: the packaged sample corpus),
OP-Mix with the code's probe lr 2x, budget 150.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/opmix_code.py --seeds 0 1 2 3 4 --out benchmarks/results/opmix_code.md
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/opmix_code.py --part hf --seeds 0 1 --out benchmarks/results/opmix_code_hf.md
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixgym.agents import learn_online
from mixgym.agents.opmix import OpMixConfig, equal_compute_steps
from mixgym.bench.report import objective_at_compute
from mixgym.envs import MixingEnv

BUDGET = 1000
TOY = {"lr_scale": 0.5}  # at the code's 2x the toy's SGD probes diverge (BENCHMARKS.md)
CONTINUAL_DOMAINS = ["easy", "hard", "noise", "redundant"]


def plain(steps: int) -> MixingEnv:
    return MixingEnv(total_steps=steps, action_map="simplex", reward="eval_loss", steps_per_action=10)


def continual(steps: int) -> MixingEnv:
    first = max(1, int(round(0.4 * steps)))
    phases = [(first, CONTINUAL_DOMAINS), (steps - first, CONTINUAL_DOMAINS + ["conflict"])]
    return MixingEnv(total_steps=steps, action_map="simplex", reward="eval_loss", steps_per_action=10, phases=phases)


def hf_env(corpus: str | None) -> Callable[[int], MixingEnv]:
    def make(steps: int) -> MixingEnv:
        where = {} if corpus is None else {"corpus": corpus}
        return MixingEnv(backend="hf", model="pythia-tiny", total_steps=steps, seq_len=64, micro_batch_size=8,
                         grad_accumulation=4, steps_per_action=5, action_map="simplex", reward="eval_loss", **where)  # fmt: skip

    return make


def run(
    make: Callable[[int], MixingEnv], steps: int, agent: str, options: dict[str, Any], seed: int, budget: int = BUDGET
) -> dict[str, float]:
    env = make(steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decisions = learn_online(agent, env, seeds=[seed], **options)[0].decisions  # as `mixgym bench` (non-proxy)
    return {
        "final": float(decisions["objective"].iloc[-1]),
        "truncated": objective_at_compute(decisions, budget),
        "whatif": float(decisions["whatif_compute"].iloc[-1]) if "whatif_compute" in decisions else 0.0,
        "steps": float(decisions["step"].iloc[-1]),
    }


Variant = tuple[str, str, dict[str, Any], "bool | int"]


def rows_of(make: Callable[[int], MixingEnv], variants: list[Variant], seeds: list[int], budget: int = BUDGET) -> list[str]:
    """Markdown rows: per variant (label, agent, options, re-planned? or its main steps) the
    final loss (mean +- std), paired difference to uniform at the budget (mean +- sem), the
    truncated reading, main steps and what-if compute."""
    base = {seed: run(make, budget, "uniform", {}, seed, budget)["final"] for seed in seeds}
    lines = []
    for label, agent, options, plan in variants:
        replanned = plan is True
        steps = budget if plan is False else int(plan)
        if replanned:
            steps = equal_compute_steps(budget, make, OpMixConfig(**options))
        start = time.perf_counter()
        results = [run(make, steps, agent, options, seed, budget) for seed in seeds]
        final = np.array([r["final"] for r in results])
        diff = final - np.array([base[s] for s in seeds])
        sem = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        truncated = "-" if steps != budget or agent == "uniform" else f"{np.mean([r['truncated'] for r in results]):.4f}"
        lines.append(
            f"| {label} | {len(seeds)} | {steps} | {final.mean():.4f} +- {final.std(ddof=1):.4f} | "
            f"{diff.mean():+.4f} +- {sem:.4f} ({100 * diff.mean() / np.mean(list(base.values())):+.1f}%) | {truncated} | "
            f"{np.mean([r['whatif'] for r in results]):.0f} | {time.perf_counter() - start:.0f} s |"
        )
        print(lines[-1], flush=True)
    return lines


HEAD = [
    "| run | seeds | main steps | final loss | vs uniform (whole budget) | truncated at equal compute | what-if compute | wall |",
    "|---|---|---|---|---|---|---|---|",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--part", choices=["toy", "hf"], default="toy")
    parser.add_argument("--corpus", default=None, help="hf: the corpus folder (default: the packaged sample corpus)")
    args = parser.parse_args()
    if args.part == "hf":
        make = hf_env(args.corpus)
        steps = equal_compute_steps(150, make, OpMixConfig())
        variants: list[Variant] = [
            ("uniform", "uniform", {}, False),
            ("opmix (validation split, per-sequence probes: the defaults)", "opmix", {}, False),
            ("opmix, candidates on the scoring rows, one-domain micro-batches", "opmix", {"score_split": "eval", "per_sequence": False}, False),
            ("opmix re-planned to equal compute", "opmix", {}, steps),
            (f"uniform, {steps} steps (as many as that run trains)", "uniform", {}, steps),
        ]  # fmt: skip
        text = "\n".join(["**pythia-tiny, budget 150**", "", *HEAD, *rows_of(make, variants, args.seeds, 150)]) + "\n"
        print(text)
        if args.out is not None:
            args.out.write_text(text)
        return
    equal_steps = [
        ("uniform", "uniform", {}, False),
        ("opmix (validation split, the default)", "opmix", dict(TOY), False),
        ("opmix, candidates on the scoring rows (the code's)", "opmix", {**TOY, "score_split": "eval"}, False),
        ("opmix, restart after the prefix (the code's)", "opmix", {**TOY, "restart_after_prefix": True}, False),
        ("opmix, fit on the objective (noise out)", "opmix", {**TOY, "fit_weights": "objective"}, False),
        ("opmix, KL prior off", "opmix", {**TOY, "kl_reg": 0.0}, False),
        ("opmix, probes 40% of the run's compute", "opmix", {**TOY, "probe_budget": 0.4}, False),
        ("opmix re-planned to equal compute (the code's probe sizes)", "opmix", dict(TOY), True),
        ("uniform, 545 steps (as many as that run trains)", "uniform", {}, 545),
        ("opmix re-planned to equal compute, probes 40%", "opmix", {**TOY, "probe_budget": 0.4}, True),
        ("uniform, 717 steps (as many as that run trains)", "uniform", {}, 717),
        ("opmix re-planned, probes 40%, restart", "opmix", {**TOY, "probe_budget": 0.4, "restart_after_prefix": True}, True),
    ]
    sections = ["**Default 5-domain toy, budget 1,000**", "", *HEAD, *rows_of(plain, equal_steps, args.seeds)]
    continual_variants = [
        ("uniform", "uniform", {}, False),
        ("opmix (continual variant)", "opmix", dict(TOY), False),
        ("opmix re-planned to equal compute", "opmix", dict(TOY), True),
        ("uniform, 535 steps (as many as that run trains)", "uniform", {}, 535),
        ("opmix re-planned to equal compute, probes 40%", "opmix", {**TOY, "probe_budget": 0.4}, True),
    ]
    sections += ["", "**Continual toy (400 + 600 steps, phases scaled with the run), budget 1,000**", "", *HEAD]
    sections += rows_of(continual, continual_variants, args.seeds)
    text = "\n".join(sections) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
