"""Running one cell of a grid: make the env and the agent, learn, play the scored run, log it.

The scored run is one episode of the target backend. In "non-proxy" mode it is the agent's
own learning run (the agent learns online, as ODM, AC-ODM and HDS do in their single
pretraining run); in "proxy" mode the agent first learns for `train_decisions` decisions on
the proxy backend and then plays the target run deterministically. Every decision is
appended to ``decisions.csv`` as it happens, so the history lives on disk, not in memory.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from mixgym.bench.config import Cell
from mixgym.envs.mixing_env import MixingEnv

ORACLE_EVAL_SEEDS = tuple(range(100, 105))
"""Run seeds on which the oracle static mixture's objective is measured for regret."""


class DecisionLog:
    """Appends one CSV row per decision: progress, objective, reward and per-domain values."""

    def __init__(self, path: Path, domains: list[str]) -> None:
        self.domains = domains
        self.last_info: dict[str, Any] = {}
        self.reward_time = 0.0
        self._file = open(path, "w", newline="")
        self._writer: csv.DictWriter | None = None
        self._start = time.perf_counter()

    def write(self, info: dict[str, Any], reward: float) -> None:
        row: dict[str, Any] = {
            "decision": info["decision"],
            "step": info["step"],
            "tokens": info["tokens"],
            "objective": info["objective"],
            "reward": reward,
            "wall_time": time.perf_counter() - self._start,
        }
        row.update({f"r_{k}": v for k, v in info["rewards"].items() if np.isscalar(v)})
        row.update({f"t_{k}": v for k, v in info.get("timings", {}).items()})
        self.reward_time += info.get("timings", {}).get("reward", 0.0)
        self.last_info = info
        for prefix, key in (("mix_", "mixture"), ("eval_", "eval_loss"), ("train_", "train_loss"), ("samples_", "samples")):
            row.update({prefix + d: v for d, v in zip(self.domains, np.asarray(info[key]).tolist())})
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RecordDecisions(BaseCallback):
    """SB3 callback: log every decision of the first run being learned on, then stop learning.

    Stopping at the run's end keeps an algorithm that collects fixed-size rollouts (PPO's
    2048 steps) from starting a second run that would not be scored.
    """

    def __init__(self, log: DecisionLog) -> None:
        super().__init__()
        self.log = log

    def _on_step(self) -> bool:
        self.log.write(self.locals["infos"][0], float(np.asarray(self.locals["rewards"])[0]))
        return not bool(np.asarray(self.locals["dones"])[0])


def play(agent: Any, env: MixingEnv, seed: int, log: DecisionLog) -> None:
    """One deterministic run of `agent` on `env` from `seed`, every decision logged."""
    obs, info = env.reset(seed=seed)
    if hasattr(agent, "reset_run"):
        agent.reset_run(info)
    terminated = truncated = False
    while not (terminated or truncated):
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        if hasattr(agent, "observe"):
            agent.observe(info)
        log.write(info, reward)


def _env(cell: Cell, action_map: str, backend_options: dict[str, Any]) -> MixingEnv:
    options = dict(backend_options)
    kind = options.pop("backend", "toy")
    env_options = {"action_map": action_map, **cell.env_options, "info_timings": True}
    return MixingEnv(backend=kind, reward=cell.reward, **env_options, **options)


def run_cell(cell: Cell, directory: Path, oracles: dict[str, float] | None = None) -> dict[str, Any]:
    """Run `cell`, writing ``decisions.csv`` into `directory`; the summary for ``summary.json``."""
    from mixgym.agents import AGENTS, make_agent

    action_map = cell.env_options.get("action_map", AGENTS[cell.agent].action_maps[0])
    target = _env(cell, action_map, cell.backend_options)
    log = DecisionLog(directory / "decisions.csv", target.domains)
    start = time.perf_counter()
    try:
        if cell.mode == "proxy":
            proxy = _env(cell, action_map, {**cell.backend_options, **cell.proxy_options})
            agent = make_agent(cell.agent, proxy, seed=cell.seed, **cell.agent_options)
            agent.learn(total_timesteps=cell.train_decisions)
            play(agent, target, cell.seed, log)
        else:
            agent = make_agent(cell.agent, target, seed=cell.seed, **cell.agent_options)
            agent.learn(total_timesteps=target.num_decisions, callback=RecordDecisions(log))
    finally:
        log.close()
    info = log.last_info
    summary = {
        "final_objective": float(info["objective"]),
        "final_eval": dict(zip(target.domains, np.asarray(info["eval_loss"]).tolist())),
        "wall_time": time.perf_counter() - start,
        "reward_time": log.reward_time,
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
