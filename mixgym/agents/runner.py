"""Run agents and keep every decision: `evaluate` (act), `learn_online` (non-proxy), `Results`.

Two ways an agent meets a target run:

- ``evaluate(agent, env, episodes, seed)`` -- the agent acts (SB3 models deterministically,
  as a proxy-trained policy acts on its target; bandits and DoReMi adapt as they always do,
  through ``observe``). Episode e is seeded ``seed + e``.
- ``learn_online(name, env, seeds)`` -- non-proxy mode: for each seed a fresh agent learns
  during the one run it drives (``learn(total_timesteps=decisions per run)``), and that run
  is the result.

Either gives `Results`: one row per decision and episode (decision 0 is the state after
``reset``), with the mixture, the scalar reward and its components, per-domain training and
held-out losses and samples, tokens, the objective (the env's, `MixingEnv.objective`) and
the wall time of the decision (agent and environment); plus a JSON-able ``config``. Saved as
``decisions.csv`` and ``config.json`` in a folder; `Results.load` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from stable_baselines3.common.callbacks import BaseCallback

from mixgym.agents.base import Agent, EnvFacts, InfoObserver, make_agent
from mixgym.agents.mixer import MixerAgent
from mixgym.llm_backend.objectives import Objective

TABLE = "decisions.csv"
CONFIG = "config.json"
PER_DOMAIN = ("mixture", "realised_mixture", "train_loss", "eval_loss", "samples")
"""Per-domain info keys; the table has one column ``"<key>/<domain>"`` per domain."""
_CHOSEN = ("mixture", "realised_mixture")
"""Per-domain keys that describe a decision: empty (NaN) in a reset's row, where none was taken."""


@dataclass
class Results:
    """Every decision of some runs of one agent.

    Attributes:
        decisions: one row per (episode, decision); columns ``episode``, ``seed``,
            ``decision``, ``step``, ``tokens``, ``objective``, ``reward``, ``wall_time``,
            ``compute`` (optimizer steps plus what-if compute, in main-step equivalents),
            ``whatif_compute``, ``"<key>/<domain>"`` for `PER_DOMAIN` keys, ``"reward/<component>"`` (or
            ``"reward/<component>/<domain>"`` for per-domain components), and the agent's
            own report, ``"agent/<name>[/<domain>]"`` (DoReMi's time-averaged weights).
        config: what produced them (agent, its options, environment facts, seeds).
    """

    decisions: pd.DataFrame
    config: dict[str, Any]

    @property
    def domains(self) -> list[str]:
        return list(self.config["env"]["domains"])

    def save(self, directory: str | Path) -> Path:
        """Write ``decisions.csv`` and ``config.json`` into `directory` (created)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.decisions.to_csv(folder / TABLE, index=False)
        (folder / CONFIG).write_text(json.dumps(self.config, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> Results:
        """Read results written by `save`."""
        folder = Path(directory)
        for name in (TABLE, CONFIG):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{str(folder)!r} holds no results: {name} is missing")
        try:
            config = json.loads((folder / CONFIG).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(folder / CONFIG)!r} is not valid JSON: {error}") from None
        return cls(pd.read_csv(folder / TABLE), config)

    def per_domain(self, key: str) -> pd.DataFrame:
        """Columns ``"<key>/<domain>"`` renamed to the domain names."""
        return self.decisions[[f"{key}/{d}" for d in self.domains]].set_axis(self.domains, axis=1)

    def objective_values(self, objective: Objective) -> pd.Series:
        """`objective` of every row's held-out losses: any objective, not only the env's."""
        return pd.Series(objective(self.per_domain("eval_loss").to_numpy()), index=self.decisions.index)

    def final_objectives(self) -> np.ndarray:
        """The objective at the end of each episode."""
        last = self.decisions.groupby("episode")["decision"].transform("max") == self.decisions["decision"]
        return self.decisions.loc[last, "objective"].to_numpy()

    def objective_curve(self) -> pd.Series:
        """Mean objective over episodes, by decision (0 = after reset)."""
        return self.decisions.groupby("decision")["objective"].mean()

    def mixture_curve(self, key: str = "mixture") -> pd.DataFrame:
        """Mean mixture over episodes, by decision (from decision 1): the one chosen
        (``"mixture"``) or the one trained on (``"realised_mixture"``)."""
        if key not in _CHOSEN:
            raise ValueError(f"key must be one of {', '.join(_CHOSEN)}, got {key!r}")
        rows = self.decisions[self.decisions["decision"] > 0]
        return rows.groupby("decision")[[f"{key}/{d}" for d in self.domains]].mean().set_axis(self.domains, axis=1)

    def final_report(self, name: str) -> pd.Series | None:
        """The agent's per-domain report `name` (``"agent/<name>/<domain>"`` columns, e.g.
        DoReMi's ``"time_averaged_mixture"``) at the last decision, by domain; None if the
        agent reports no such thing."""
        columns = [f"agent/{name}/{d}" for d in self.domains]
        if not all(c in self.decisions.columns for c in columns):
            return None
        return self.decisions[columns].iloc[-1].set_axis(self.domains)

    def decisions_to_reach(self, target: float) -> int | None:
        """First decision at which the mean objective is at most `target` (None: never)."""
        curve = self.objective_curve()
        reached = curve.index[curve.to_numpy() <= target]
        return int(reached[0]) if len(reached) else None

    def wall_time(self) -> float:
        """Seconds spent in decisions, summed over episodes."""
        return float(self.decisions["wall_time"].sum())


def decision_row(
    episode: int, seed: int | None, domains: Sequence[str], info: dict[str, Any], reward: float, wall: float
) -> dict[str, Any]:
    """One table row from an ``env.step`` info (or an ``env.reset`` info: decision 0)."""
    row: dict[str, Any] = {
        "episode": episode,
        "seed": seed,
        "decision": int(info.get("decision", 0)),
        "step": int(info.get("step", 0)),
        "tokens": int(info.get("tokens", 0)),
        "objective": float(info["objective"]),
        "reward": reward,
        "wall_time": wall,
        "compute": float(info.get("compute/total", info.get("step", 0))),
        "whatif_compute": float(info.get("compute/whatif", 0.0)),
    }
    for key in PER_DOMAIN:
        values = None if key in _CHOSEN and row["decision"] == 0 else info.get(key)
        for i, domain in enumerate(domains):
            row[f"{key}/{domain}"] = float(values[i]) if values is not None else np.nan
    for key, value in info.items():
        if not key.startswith(("reward/", "agent/")):
            continue
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 0:
            row[key] = float(array)
        else:
            row.update({f"{key}/{d}": float(v) for d, v in zip(domains, array.ravel())})
    return row


def _report(agent: Agent) -> dict[str, Any]:
    """The agent's own per-decision report (``"agent/<name>"`` keys; `MixerAgent.report`)."""
    report = getattr(agent, "report", None)
    return {} if report is None else report()


def _config(agent: Agent | None, name: str, facts: EnvFacts, mode: str, **extra: Any) -> dict[str, Any]:
    options = getattr(agent, "config", None)
    return {
        "agent": name,
        "mode": mode,
        "agent_config": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {},
        "env": facts.to_json(),
        **extra,
    }


def evaluate(
    agent: Agent,
    env: gym.Env,
    episodes: int = 1,
    seed: int = 0,
    deterministic: bool = True,
    on_decision: Callable[[], None] | None = None,
) -> Results:
    """Run `episodes` episodes of `agent` acting on `env` (episode e seeded ``seed + e``).

    Agents that read ``info`` (`InfoObserver`) are told of every reset and step.
    `on_decision` is called after every decision (for progress bars).
    """
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    facts = EnvFacts.of(env)
    observer = agent if isinstance(agent, InfoObserver) else None
    if isinstance(agent, MixerAgent):
        agent.attach(env)
    rows = []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        if observer is not None:
            observer.reset_run(info)
        rows.append(decision_row(episode, seed + episode, facts.domains, info, np.nan, 0.0))
        done = False
        while not done:
            start = time.perf_counter()
            action, _ = agent.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            if observer is not None:
                observer.observe(info)
            info = {**info, **_report(agent)}
            rows.append(decision_row(episode, seed + episode, facts.domains, info, float(reward), time.perf_counter() - start))
            done = terminated or truncated
            if on_decision is not None:
                on_decision()
    name = getattr(agent, "name", type(agent).__name__)
    config = _config(agent, name, facts, "act", episodes=episodes, seed=seed, deterministic=deterministic)
    return Results(pd.DataFrame(rows), config)


class _Recorder(BaseCallback):
    """Records the first episode of a ``learn`` call as `Results` rows, then stops learning."""

    def __init__(
        self,
        episode: int,
        seed: int,
        domains: Sequence[str],
        rows: list[dict[str, Any]],
        on_decision: Callable[[], None] | None,
    ) -> None:
        super().__init__()
        self.episode, self.seed, self.domains, self.rows, self.on_decision = episode, seed, domains, rows, on_decision
        self._clock = 0.0

    def _on_training_start(self) -> None:
        info = self.training_env.reset_infos[0]
        self.rows.append(decision_row(self.episode, self.seed, self.domains, info, np.nan, 0.0))
        self._clock = time.perf_counter()

    def _on_step(self) -> bool:
        now = time.perf_counter()
        info = self.locals["infos"][0]
        reward = float(self.locals["rewards"][0])
        self.rows.append(decision_row(self.episode, self.seed, self.domains, info, reward, now - self._clock))
        self._clock = now
        if self.on_decision is not None:
            self.on_decision()
        return not bool(self.locals["dones"][0])


def learn_online(
    name: str,
    env: gym.Env,
    seeds: Sequence[int],
    on_decision: Callable[[], None] | None = None,
    callback: BaseCallback | None = None,
    **overrides: Any,
) -> tuple[Results, list[Agent]]:
    """Non-proxy mode: per seed, a fresh agent `name` learns during the one run it drives.

    ``make_agent(name, env, seed=seed, **overrides).learn(decisions per run)``: the agent's
    seed seeds the run, so seed s here and ``evaluate(..., seed=s)`` train the same backend
    runs. The wall time includes the agent's learning. `callback` (e.g. `MixtureLogger`)
    is passed to every ``learn``. Returns the runs and the agents as they are at the end of
    their run (to save or to reuse).
    """
    if not seeds:
        raise ValueError("learn_online needs at least one seed")
    facts = EnvFacts.of(env)
    rows: list[dict[str, Any]] = []
    agents = []
    for episode, seed in enumerate(seeds):
        agent = make_agent(name, env, seed=int(seed), **overrides)
        recorder = _Recorder(episode, int(seed), facts.domains, rows, on_decision)
        agent.learn(facts.num_decisions, callback=[recorder] if callback is None else [recorder, callback])
        agents.append(agent)
    config = _config(agents[-1], name, facts, "online", seeds=[int(s) for s in seeds])
    return Results(pd.DataFrame(rows), config), agents
