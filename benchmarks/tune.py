"""Search the tuned agents' settings with rl_zoo3's Optuna integration, and ship the result.

    nice -n 5 python benchmarks/tune.py --algo ppo --trials 16 --timesteps 20000   # resumable
    python benchmarks/tune.py --algo ppo --write-only      # rewrite the YAML from the stored study

Runs, unchanged, rl_zoo3's own hyper-parameter search (its samplers, TPE, median pruning) on
``mixgym/MixingAdvantage-v1`` in proxy mode: each trial trains on the proxy toy (student width
16) for ``--timesteps`` decisions and is scored on the target toy (width 32) by the mean
return of deterministic episodes -- under the advantage reward (x100, uniform baseline twin)
exactly 100 x the final advantage over the uniform mixture. The study lives in an SQLite file,
so an interrupted search resumes where it stopped. Then the best trial's parameters are
turned into SB3 arguments by rl_zoo3's own sampler (replayed on an `optuna.trial.FixedTrial`)
and written, in rl_zoo3's format, to ``mixgym/agents/hyperparams/<algo>.yml``, with the exact
command, the study's size and the best value in its header: the file the ``<algo>-tuned``
presets and ``rl_zoo3.train -conf`` read.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from mixgym.agents.tuned import ACTIVATIONS, TUNED_ENV, hyperparams_file

PROXY = {"hidden_dim": 16}
TARGET = {"hidden_dim": 32}
FIXED: dict[str, dict[str, Any]] = {"ppo": {"use_sde": True, "sde_sample_freq": 100}, "sac": {}, "td3": {}}
"""Settings held fixed in the search (rl_zoo3's samplers leave them alone). PPO explores with
generalised state-dependent noise (gSDE) resampled every 100 decisions -- once per toy run --
instead of fresh Gaussian noise at every decision: a run's return (its final advantage) then
measures one coherent perturbation of the policy, where 100 independent per-decision
perturbations average out and per-step PPO did not learn (BENCHMARKS.md)."""


def search_command(args: argparse.Namespace, base: Path, job: int = 0) -> list[str]:
    """The rl_zoo3 command line of search process `job` (all share one study and its trial count)."""
    return [
        sys.executable, "-m", "rl_zoo3.train", "--algo", args.algo, "--env", TUNED_ENV, "--gym-packages", "mixgym",
        "-conf", str(base), "-n", str(args.timesteps), "-optimize", "--max-total-trials", str(args.trials),
        "--n-jobs", "1", "--sampler", "tpe", "--pruner", "median", "--n-startup-trials", str(args.startup_trials),
        "--n-evaluations", str(args.evaluations), "--eval-episodes", str(args.eval_episodes), "--seed", str(args.seed + job),
        "--num-threads", "1", "--storage", f"sqlite:///{args.out}/{args.algo}.db", "--study-name", f"mixgym-{args.algo}",
        "--env-kwargs", *[f"{k}:{v}" for k, v in PROXY.items()],
        "--eval-env-kwargs", *[f"{k}:{v}" for k, v in TARGET.items()],
        "-f", str(Path(args.out) / "logs"), "--no-optim-plots",
    ]  # fmt: skip


def _source(value: Any) -> str:
    """`value` as rl_zoo3's policy_kwargs source text (what `parse_policy_kwargs` reads back)."""
    names = {cls: name for name, cls in ACTIVATIONS.items()}
    if isinstance(value, type) and value in names:
        return f"nn.{names[value]}"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_source(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_source(v) for v in value) + "]"
    return repr(value)


def best_entry(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The best trial's settings as an rl_zoo3 YAML entry, and the study."""
    import optuna
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    study = optuna.load_study(study_name=f"mixgym-{args.algo}", storage=f"sqlite:///{args.out}/{args.algo}.db")
    best = study.best_trial
    extra = {"using_her_replay_buffer": False, "her_kwargs": {}}
    settings = HYPERPARAMS_SAMPLER[args.algo](optuna.trial.FixedTrial(best.params), 5, 1, extra)
    entry: dict[str, Any] = {"policy": "MlpPolicy", "n_timesteps": args.timesteps, "env_kwargs": dict(PROXY), **FIXED[args.algo]}
    for key, value in settings.items():
        if key == "action_noise":
            entry["noise_type"], entry["noise_std"] = best.params["noise_type"], float(best.params["noise_std"])
        elif key == "policy_kwargs":
            entry[key] = _source(value)
        else:
            entry[key] = value.item() if hasattr(value, "item") else value
    return entry, study


def write_yaml(args: argparse.Namespace, command: list[str]) -> Path:
    entry, study = best_entry(args)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    header = [
        f"# {args.algo.upper()} for {TUNED_ENV}, found by benchmarks/tune.py on {date.today()}:",
        f"# rl_zoo3's Optuna search, {len(study.trials)} trials ({len(finished)} complete, {len(pruned)} pruned,",
        f"# {len(study.trials) - len(finished) - len(pruned)} stopped unfinished),",
        f"# best trial {study.best_trial.number}: mean evaluation return {study.best_value:.3f}",
        "# (= 100 x the final advantage over uniform on target runs, student width 32).",
        "# Command (benchmarks/tune.py " + " ".join(a for a in sys.argv[1:] if a != "--write-only") + "; its first process):",
        "#   " + shlex.join(command).replace(sys.executable, "python"),
        "# Use: python -m rl_zoo3.train --algo " + args.algo + f" --env {TUNED_ENV} --gym-packages mixgym -conf <this file>",
    ]
    path = Path(args.yaml) if args.yaml else hyperparams_file(args.algo, must_exist=False)
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump({TUNED_ENV: entry}, sort_keys=True))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=("ppo", "sac", "td3"), required=True)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=20000, help="decisions per trial (default 20000)")
    parser.add_argument("--startup-trials", type=int, default=5, help="random trials before TPE (default 5)")
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations per trial, for pruning (default 4)")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first process (the others: +1, +2, ...)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel rl_zoo3 processes on the one study (default 1)")
    parser.add_argument("--out", default="runs/tune")
    parser.add_argument("--write-only", action="store_true", help="only write the YAML from the stored study")
    parser.add_argument("--yaml", default=None, help="where to write it (default: the shipped mixgym/agents/hyperparams/<algo>.yml)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"base_{args.algo}.yml"
    fixed = {"policy": "MlpPolicy", "n_timesteps": args.timesteps, "env_kwargs": PROXY, **FIXED[args.algo]}
    base.write_text(yaml.safe_dump({TUNED_ENV: fixed}))
    commands = [search_command(args, base, job) for job in range(args.jobs)]
    if not args.write_only:
        print(*(shlex.join(c) for c in commands), f"(load average {os.getloadavg()})", sep="\n", flush=True)
        processes = [subprocess.Popen(c) for c in commands]
        failed = [c for c, p in zip(commands, processes) if p.wait() != 0]
        if failed:
            raise SystemExit(f"search process(es) failed: {[shlex.join(c) for c in failed]}")
    print(f"wrote {write_yaml(args, commands[0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
