"""Running one cell of a grid with the agents' runner (`mixgym.agents.runner`).

The scored run is one episode of the target backend. In "non-proxy" mode it is the agent's
own learning run (the agent learns during the run, as ODM, AC-ODM and HDS do in their single
pretraining run); in "proxy" mode the agent first learns for `train_decisions` decisions on
the proxy backend and then acts on the target run (`evaluate`, deterministic).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mixgym.bench.config import Cell

ORACLE_EVAL_SEEDS = tuple(range(100, 105))
"""Run seeds on which the oracle static mixture's objective is measured for regret."""


def _env_options(cell: Cell, backend_options: dict[str, Any]) -> dict[str, Any]:
    """The cell's `MixingEnv` options; `env_for` adds the agent's action map unless given."""
    return {**cell.env_options, "reward": cell.reward, **backend_options}


def run_cell(cell: Cell, directory: Path, oracles: dict[str, float] | None = None) -> dict[str, Any]:
    """Run `cell` in `directory` (resuming its checkpoints); the summary for ``summary.json``.

    Learning goes through `mixgym.experiment` (checkpoints every 50 decisions), so a cell
    that was stopped or killed continues where it was when the grid is run again.
    """
    from mixgym.agents.compare import env_for
    from mixgym.agents.runner import Results, evaluate
    from mixgym.experiment import ExperimentConfig, run_until_done

    target_options = _env_options(cell, cell.backend_options)
    start = time.perf_counter()
    if cell.mode == "proxy":
        proxy_options = _env_options(cell, {**cell.backend_options, **cell.proxy_options})
        config = ExperimentConfig(cell.agent, proxy_options, cell.seed, cell.train_decisions, dict(cell.agent_options))
        trained = run_until_done(config, directory / "train")
        target = env_for(cell.agent, target_options)
        results = evaluate(trained.agent, target, episodes=1, seed=cell.seed)
        results.save(directory)
        reward_time = target.timings["total"].get("reward", 0.0)
    else:
        config = ExperimentConfig(cell.agent, target_options, cell.seed, None, dict(cell.agent_options))
        finished = run_until_done(config, directory)
        results = Results.load(directory)
        reward_time = finished.env.timings["total"].get("reward", 0.0)
    final = results.decisions.iloc[-1]
    summary = {
        "final_objective": float(final["objective"]),
        "final_eval": {d: float(final[f"eval_loss/{d}"]) for d in results.domains},
        "wall_time": time.perf_counter() - start,
        "reward_time": reward_time,
        **scoring(target if cell.mode == "proxy" else finished.env),
    }
    agent = (trained if cell.mode == "proxy" else finished).agent
    if hasattr(agent, "updates"):  # an RL agent: how many gradient updates it made (0: untrained)
        summary["updates"] = int(agent.updates)
    averaged = results.final_report("time_averaged_mixture")  # DoReMi's output
    if averaged is not None:
        summary["time_averaged_mixture"] = {d: float(w) for d, w in averaged.items()}
    if oracles and cell.backend_label in oracles:
        summary["oracle_objective"] = oracles[cell.backend_label]
    return summary


def scoring(env: Any) -> dict[str, Any]:
    """How the report scores a cell's run: the env's objective, every named objective's
    weights (`mixgym.llm_backend.objectives.all_objectives`) and the natural mixture."""
    from mixgym.llm_backend.objectives import all_objectives

    inner = env.unwrapped
    objectives = {**all_objectives(inner.backend.info, len(inner.domains)), inner.objective.name: inner.objective}
    sizes = np.asarray(inner.backend.info.domain_sizes, dtype=np.float64)
    return {
        "objective": inner.objective.name,
        "objectives": {name: {"weights": o.weights.tolist(), "worst": o.worst} for name, o in objectives.items()},
        "natural_mixture": (sizes / sizes.sum()).tolist(),
    }


def oracle_objective(backend_options: dict[str, Any], search: dict[str, Any] | None = None) -> float | None:
    """Mean objective of the toy's oracle static mixture over `ORACLE_EVAL_SEEDS` (None: not toy,
    or a run in phases, for which a static mixture over all domains is no oracle), searched with the ``oracle`` agent's options `search` (`mixgym.agents.static.OracleConfig`):
    regret is measured against the oracle the grid runs."""
    options = dict(backend_options)
    if options.pop("backend", "toy") != "toy" or "phases" in options:
        return None
    options.pop("budget", None)  # an env option, not the toy's
    from mixgym.agents import make_config
    from mixgym.llm_backend.oracle import oracle_mixture, schedule_objective
    from mixgym.llm_backend.toy import ToyBackend
    from mixgym.tasks import get_task

    if "task" in options:
        options = get_task(options.pop("task")).backend_kwargs(options)
    backend = ToyBackend(**options)
    how = make_config("oracle", **(search or {}))
    oracle = oracle_mixture(backend.config, seeds=how.search_seeds, n_random=how.n_random, rounds=how.rounds, split=how.search_split)
    return schedule_objective(backend, oracle.mixtures, ORACLE_EVAL_SEEDS)
