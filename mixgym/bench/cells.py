"""Running one cell of a grid with the agents' runner (`mixgym.agents.runner`).

The scored run is one episode of the target backend. In "non-proxy" mode it is the agent's
own learning run (`learn_online`: the agent learns during the run, as ODM, AC-ODM and HDS do
in their single pretraining run); in "proxy" mode the agent first learns for
`train_decisions` decisions on the proxy backend and then acts on the target run
(`evaluate`, deterministic).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mixgym.bench.config import Cell
from mixgym.envs.mixing_env import MixingEnv

ORACLE_EVAL_SEEDS = tuple(range(100, 105))
"""Run seeds on which the oracle static mixture's objective is measured for regret."""


def _env(cell: Cell, action_map: str, backend_options: dict[str, Any]) -> MixingEnv:
    options = dict(backend_options)
    kind = options.pop("backend", "toy")
    return MixingEnv(backend=kind, reward=cell.reward, **{"action_map": action_map, **cell.env_options}, **options)


def run_cell(cell: Cell, directory: Path, oracles: dict[str, float] | None = None) -> dict[str, Any]:
    """Run `cell`, saving its `Results` into `directory`; the summary for ``summary.json``."""
    from mixgym.agents import AGENTS, make_agent
    from mixgym.agents.runner import evaluate, learn_online

    action_map = cell.env_options.get("action_map", AGENTS[cell.agent].action_maps[0])
    target = _env(cell, action_map, cell.backend_options)
    start = time.perf_counter()
    if cell.mode == "proxy":
        proxy = _env(cell, action_map, {**cell.backend_options, **cell.proxy_options})
        agent = make_agent(cell.agent, proxy, seed=cell.seed, **cell.agent_options)
        agent.learn(total_timesteps=cell.train_decisions)
        results = evaluate(agent, target, episodes=1, seed=cell.seed)
    else:
        results, _ = learn_online(cell.agent, target, seeds=[cell.seed], **cell.agent_options)
    results.save(directory)
    final = results.decisions.iloc[-1]
    summary = {
        "final_objective": float(final["objective"]),
        "final_eval": {d: float(final[f"eval_loss/{d}"]) for d in results.domains},
        "wall_time": time.perf_counter() - start,
        "reward_time": target.timings["total"].get("reward", 0.0),
    }
    if oracles and cell.backend_label in oracles:
        summary["oracle_objective"] = oracles[cell.backend_label]
    return summary


def oracle_objective(backend_options: dict[str, Any]) -> float | None:
    """Mean objective of the toy's oracle static mixture over `ORACLE_EVAL_SEEDS` (None: not toy)."""
    options = dict(backend_options)
    if options.pop("backend", "toy") != "toy":
        return None
    from mixgym.llm_backend.oracle import oracle_mixture, schedule_objective
    from mixgym.llm_backend.toy import ToyBackend

    backend = ToyBackend(**options)
    oracle = oracle_mixture(backend.config)
    return schedule_objective(backend, oracle.mixtures, ORACLE_EVAL_SEEDS)
