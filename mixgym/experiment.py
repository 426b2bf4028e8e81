"""Long runs lose nothing: an agent learning on a `MixingEnv`, checkpointed and resumable.

An experiment is ``make_agent(agent, MixingEnv(**env), seed=seed).learn(decisions)`` -- one
run learned online (non-proxy, the default number of decisions) or many runs (proxy
training). Its folder holds:

- ``config.json``: the configuration (a resume must use the same one);
- ``decisions.csv``: one row per decision, appended as it happens (`Results.load` reads the
  folder), so the history lives on disk, not in memory;
- ``whatif/``: the answers of the backend's what-if simulations (`MixingEnv.what_if`, OP-Mix's
  probes), one ``.npz`` each, so that a run resumed from a checkpoint taken before a what-if
  call reads its answer instead of training the probes again;
- ``checkpoints/``: the last `keep` checkpoints (`mixgym.checkpoint.CheckpointStore`), each
  with the agent (SB3 model with optimisers and replay buffer, warm-up progress, bandit
  weights), the environment (backend model, optimiser, scheduler, data positions and RNGs;
  feature history and counters) and the global RNGs.

Checkpoints are taken every `checkpoint_every` decisions at a point where nothing is half
done: for an SB3 model at the start of a rollout (after the previous gradient step, before
the next action), for a bandit or static agent after a decision has been observed. A
SIGINT or SIGTERM makes the run checkpoint at the next such point and stop;
``run_experiment(..., resume=True)`` (``mixgym train --resume``) continues from the newest
checkpoint that reads back intact, and gives bit-identical mixtures, rewards and losses to a
run that was never interrupted (on CPU). A non-finite loss or reward stops the run with the
environment's error, naming the step and domain; the checkpoints written before stay valid.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from mixgym.agents import AGENTS, make_agent
from mixgym.agents.base import EnvFacts
from mixgym.agents.compare import env_for
from mixgym.agents.runner import CONFIG, TABLE, Results, decision_row
from mixgym.agents.sb3_presets import SB3Agent
from mixgym.checkpoint import CheckpointStore, StopRequest, capture_rng_state, restore_rng_state
from mixgym.envs.mixing_env import MixingEnv



WHATIF_DIR = "whatif"


class RunStopped(KeyboardInterrupt):
    """A run stopped by SIGINT/SIGTERM after writing its checkpoint (raised by `run_until_done`)."""


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment runs.

    Attributes:
        agent: a registered agent name.
        env: `MixingEnv` options, the backend's included (``backend="toy"``, ``model=...``).
            Unless given, the agent's action map and its paper's reward (`env_for`).
        seed: seed of the agent and its runs.
        decisions: decisions to learn for; None is one run (non-proxy mode).
        agent_options: overrides for `make_agent`.
        checkpoint_every: decisions between checkpoints.
        keep: checkpoints kept.
    """

    agent: str
    env: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    decisions: int | None = None
    agent_options: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 50
    keep: int = 3

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ValueError(f"unknown agent {self.agent!r}; known agents: {', '.join(sorted(AGENTS))}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every!r}")
        if self.decisions is not None and self.decisions < 1:
            raise ValueError(f"decisions must be >= 1, got {self.decisions!r}")


@dataclass(frozen=True)
class ExperimentResult:
    """How the experiment ended: "finished" or "stopped" (by a signal, with its number)."""

    status: str
    decisions: int
    directory: Path
    agent: Any
    env: MixingEnv
    signal: int | None = None

    def results(self) -> Results:
        """The per-decision table written so far."""
        return Results.load(self.directory)


class _DecisionLog:
    """decisions.csv, one row appended (and flushed) per decision.

    The columns are those of a decision's row (a reset row, decision 0, has no reward
    components), so reset rows wait until the first decision fixes them.
    """

    def __init__(self, path: Path, keep_rows: int | None) -> None:
        self._fields: list[str] | None = None
        if keep_rows is not None:  # resuming: drop rows written after the checkpoint
            lines = path.read_text().splitlines(keepends=True) if path.exists() else []
            path.write_text("".join(lines[: keep_rows + 1]))
            self.rows = max(0, min(len(lines) - 1, keep_rows))
            if self.rows:
                with open(path, newline="") as handle:
                    self._fields = next(csv.reader(handle))
        else:
            path.write_text("")
            self.rows = 0
        self._file = open(path, "a", newline="")
        self._writer = None if self._fields is None else csv.DictWriter(self._file, fieldnames=self._fields, restval="")
        self._pending: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._pending.append(row)
            if np.isnan(row["reward"]):
                return
            fields = list(row) + [k for r in self._pending for k in r if k not in row]
            self._writer = csv.DictWriter(self._file, fieldnames=list(dict.fromkeys(fields)), restval="")
            self._writer.writeheader()
            rows, self._pending = self._pending, []
        else:
            rows = [row]
        self._writer.writerows(rows)
        self._file.flush()
        self.rows += len(rows)

    def close(self) -> None:
        self._file.close()


class _Checkpointing(BaseCallback):
    """Logs every decision, checkpoints at safe points, stops cleanly on a signal."""

    def __init__(self, run: "_Run") -> None:
        super().__init__()
        self.run = run
        self._clock = time.perf_counter()
        self._stop_now = False

    def _on_training_start(self) -> None:
        if self.run.log.rows == 0:  # a fresh run: its reset is decision 0, as in the runner's tables
            self.run.write(self.training_env.reset_infos[0], np.nan, 0.0)

    def _on_rollout_start(self) -> None:
        if self.run.sb3 and (self.run.due() or self.run.stop.requested):
            self.run.save()
            self._stop_now = self.run.stop.requested is not None

    def _on_step(self) -> bool:
        now = time.perf_counter()
        self.run.write(self.locals["infos"][0], float(np.asarray(self.locals["rewards"])[0]), now - self._clock)
        self._clock = now
        if np.asarray(self.locals["dones"])[0]:  # the env was reset: the next run's decision 0
            self.run.episode += 1
            if self.run.decisions < self.run.total:
                self.run.write(self.training_env.reset_infos[0], np.nan, 0.0)
        if self.run.sb3:
            return not self._stop_now
        if self.run.due() or self.run.stop.requested:
            self.run.save()
        return self.run.stop.requested is None


@dataclass
class _Run:
    """The live objects of an experiment and the bookkeeping its callback needs."""

    config: ExperimentConfig
    env: MixingEnv
    agent: Any
    store: CheckpointStore
    log: _DecisionLog
    stop: StopRequest
    total: int
    episode: int = 0
    last_saved: int = 0

    @property
    def sb3(self) -> bool:
        return isinstance(self.agent, SB3Agent)

    @property
    def decisions(self) -> int:
        return int(self.agent.num_timesteps)

    def due(self) -> bool:
        return self.decisions - self.last_saved >= self.config.checkpoint_every

    def write(self, info: dict[str, Any], reward: float, wall: float) -> None:
        self.log.write(decision_row(self.episode, self.config.seed, self.env.domains, info, reward, wall))

    def save(self) -> None:
        payload = {"decisions": self.decisions, "rows": self.log.rows, "episode": self.episode, **experiment_state(self.agent, self.env)}
        self.store.save(payload, self.decisions)
        self.last_saved = self.decisions


def experiment_state(agent: Any, env: MixingEnv) -> dict[str, Any]:
    """What a checkpoint holds besides its bookkeeping: the agent, the environment, the RNGs."""
    return {"agent": agent.checkpoint_state(), "env": env.state_dict(), "rng": capture_rng_state()}


def _check_config(directory: Path, config: ExperimentConfig, resume: bool) -> None:
    path = directory / CONFIG
    saved = dataclasses.asdict(config)
    if resume and path.exists():
        before = json.loads(path.read_text())["experiment"]
        if before != json.loads(json.dumps(saved, default=str)):
            raise ValueError(f"{directory} holds an experiment with another configuration: {before}; this one is {saved}")


def run_experiment(config: ExperimentConfig, directory: str | Path, resume: bool = False) -> ExperimentResult:
    """Run (or, with `resume`, continue) the experiment in `directory` (see the module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _check_config(directory, config, resume)
    store = CheckpointStore(directory / "checkpoints", keep=config.keep)
    if not resume and store.paths():
        raise ValueError(f"{directory} already holds checkpoints: resume it (resume=True, --resume) or use a new folder")
    env = env_for(config.agent, config.env)
    cache = getattr(env.backend, "whatif_cache", None)
    if cache is not None:  # what-if answers survive a crash between checkpoints
        cache.directory = directory / WHATIF_DIR
    agent = make_agent(config.agent, env, seed=config.seed, **config.agent_options)
    total = config.decisions or env.num_decisions
    latest = store.load_latest() if resume else None
    (directory / CONFIG).write_text(
        json.dumps({"experiment": dataclasses.asdict(config), "env": EnvFacts.of(env).to_json(), "agent": config.agent}, indent=1, default=str)
    )
    log = _DecisionLog(directory / TABLE, latest[0]["rows"] if latest else None)
    done = 0
    with StopRequest() as stop:
        run = _Run(config, env, agent, store, log, stop, total)
        if latest is not None:
            payload = latest[0]
            agent.get_env().reset()  # wrappers (SB3's Monitor) start a run; the state below replaces it
            env.load_state_dict(payload["env"])
            agent.restore_checkpoint_state(payload["agent"])
            run.episode, run.last_saved, done = payload["episode"], payload["decisions"], payload["decisions"]
            restore_rng_state(payload["rng"])  # last: rebuilding the model above draws from torch's RNG
        try:
            if done < total:
                agent.learn(total - done, callback=_Checkpointing(run), reset_num_timesteps=latest is None)
        finally:
            log.close()
    status = "stopped" if stop.requested is not None and run.decisions < total else "finished"
    return ExperimentResult(status, run.decisions, directory, agent, env, stop.requested if status == "stopped" else None)


def run_until_done(config: ExperimentConfig, directory: str | Path) -> ExperimentResult:
    """Run the experiment in `directory`, resuming it if it has checkpoints (what `mixgym bench`
    does for each cell); `RunStopped` if a signal stopped it, so that callers stop too."""
    result = run_experiment(config, directory, resume=True)
    if result.status == "stopped":
        raise RunStopped(f"stopped by signal {result.signal} after {result.decisions} decisions; rerun to resume")
    return result
