"""Long runs lose nothing: an agent learning on a `MixingEnv`, checkpointed and resumable.

An experiment is ``make_agent(agent, MixingEnv(**env), seed=seed).learn(decisions)`` -- one
run learned online (non-proxy, the default number of decisions) or many runs (proxy
training). Its folder holds:

- ``config.json``: the configuration (a resume must use the same one);
- ``decisions.csv``: one row per decision, appended as it happens (`Results.load` reads the
  folder), so the history lives on disk, not in memory;
- ``whatif/``: the answers of the backend's what-if simulations (`MixingEnv.what_if`, OP-Mix's
  probes), one sealed ``.whatif`` file each (`mixgym.llm_backend.whatif`), so that a run
  resumed from a checkpoint taken before a what-if call reads its answer instead of training
  the probes again (a corrupt or foreign file is recomputed with a warning, or refused with
  ``strict_whatif_cache``);
- ``checkpoints/``: the last `keep` checkpoints (`mixgym.checkpoint.CheckpointStore`), each
  with the agent (SB3 model with optimisers and replay buffer, warm-up progress, bandit
  weights), the environment (backend model, optimiser, scheduler, data positions and RNGs;
  feature history and counters) and the global RNGs.

Checkpoints are taken every `checkpoint_every` decisions at a point where nothing is half
done: for a bandit or static agent after a decision has been observed; for an SB3 model at
the start of a rollout (after the previous gradient step, before the next action) and, for
an on-policy one (PPO), between any two decisions of its rollout, the partly filled rollout
buffer included (`mixgym.agents.rollouts`). A SIGINT or SIGTERM makes the run checkpoint at
the next such point and stop; ``run_experiment(..., resume=True)`` (``mixgym train
--resume``) continues from the newest checkpoint that reads back intact, and gives
bit-identical mixtures, rewards and losses to a run that was never interrupted (on CPU). A
non-finite loss or reward stops the run with the environment's error, naming the step and
domain; the checkpoints written before stay valid.

What a resume refuses rather than guesses: a folder another process is writing (one writer
per folder, `mixgym.runlock`); a checkpoint this installation did not sign (unless
``trust_checkpoint``, `mixgym.trust`); a folder whose checkpoints are all unreadable, and a
``decisions.csv`` missing rows the checkpoint counts or changed since (unless ``restart``,
which starts over). Rows written after the checkpoint are dropped: the run redoes them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from mixgym.agents import make_agent
from mixgym.agents.base import EnvFacts, agent_spec
from mixgym.agents.compare import env_for
from mixgym.agents.runner import CONFIG, TABLE, Results, decision_row
from mixgym.agents.sb3_presets import SB3Agent
from mixgym.checkpoint import CheckpointStore, CorruptCheckpoint, StopRequest, atomic_write_bytes, capture_rng_state, restore_rng_state
from mixgym.envs.mixing_env import MixingEnv
from mixgym.runlock import RunLock
from mixgym.validation import integer


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
        agent_spec(self.agent)  # an unknown name: an error listing the known ones
        integer("checkpoint_every", self.checkpoint_every, 1)
        integer("keep", self.keep, 1)
        integer("seed", self.seed, 0, 2**32 - 1)
        if self.decisions is not None:
            integer("decisions", self.decisions, 1)
        for name in ("env", "agent_options"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a mapping of options, got {getattr(self, name)!r}")


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
    """decisions.csv: one row appended (and flushed) per decision, fsynced at each checkpoint.

    The columns are those of a decision's row (a reset row, decision 0, has no reward
    components), so reset rows wait until the first decision fixes them. Rows go through the
    csv module, so a domain name holding a comma, a quote or a newline is quoted, never split.
    The log knows where it is -- rows written, bytes written and a SHA-256 of those bytes,
    plus the rows still waiting for their columns -- and every checkpoint records that
    `position`. `resume` holds the file to it: rows written after the checkpoint are dropped;
    rows missing or changed (a deleted, truncated or edited table) are an error naming them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        self.pending: list[dict[str, Any]] = []
        self.rows = 0
        self.bytes = 0
        self._digest = hashlib.sha256()
        self._file: Any = None

    def start(self) -> None:
        """A fresh table."""
        self._file = open(self.path, "wb")

    def resume(self, position: dict[str, Any], checkpoint: Path) -> None:
        """Continue the table where the checkpoint at `checkpoint` left it (see the class docstring)."""
        data = self.path.read_bytes() if self.path.exists() else b""
        size, rows = int(position["bytes"]), int(position["rows"])
        kept = data[:size]
        if len(data) < size or hashlib.sha256(kept).hexdigest() != position["sha256"]:
            present = _count_rows(data)
            if present < rows:
                problem = f"holds {present} decision rows, but {checkpoint.name} was taken after {rows}: rows {present + 1} to {rows} are missing (the file was truncated or deleted)"
            else:
                problem = f"was changed after {checkpoint.name} was taken: its first {rows} rows are not the ones written"
            raise ValueError(f"{str(self.path)!r} {problem}. Restore it, or start over with --restart (restart=True)")
        self._file = open(self.path, "r+b")
        self._file.truncate(size)  # rows written after the checkpoint: the run redoes them
        self._file.seek(size)
        self.fields = None if position["fields"] is None else list(position["fields"])
        self.pending = list(position["pending"])
        self.rows, self.bytes = rows, size
        self._digest = hashlib.sha256(kept)

    def position(self) -> dict[str, Any]:
        """Where the table is, for a checkpoint."""
        return {"rows": self.rows, "bytes": self.bytes, "sha256": self._digest.hexdigest(), "fields": self.fields, "pending": list(self.pending)}

    def write(self, row: dict[str, Any]) -> None:
        header = self.fields is None
        if header:
            self.pending.append(row)
            if np.isnan(row["reward"]):
                return
            fields = list(row) + [k for r in self.pending for k in r if k not in row]
            self.fields = list(dict.fromkeys(fields))
            rows, self.pending = self.pending, []
        else:
            rows = [row]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields, restval="")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode("utf-8")
        self._file.write(data)
        self._file.flush()
        self._digest.update(data)
        self.bytes += len(data)
        self.rows += len(rows)

    def sync(self) -> None:
        """Make every row written so far durable (before a checkpoint that counts them)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _legacy_position(path: Path, rows: int, checkpoint: Path) -> dict[str, Any]:
    """The table position of a checkpoint from before positions were recorded (it counted rows
    only): the table is cut to those rows, rewritten by the csv module."""
    records = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8") if path.exists() else "", newline="")))
    if len(records) - 1 < rows:
        raise ValueError(f"{str(path)!r} holds {max(len(records) - 1, 0)} decision rows, but {checkpoint.name} was taken after {rows}; restore it, or start over with --restart")
    text = io.StringIO()
    csv.writer(text).writerows(records[: rows + 1] if rows else [])
    data = text.getvalue().encode("utf-8")
    atomic_write_bytes(path, data)
    return {"rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "fields": records[0] if rows else None, "pending": []}


def _count_rows(data: bytes) -> int:
    """Data rows (records after the header) of a CSV file's bytes, up to the first unreadable one."""
    count = -1
    try:
        for _ in csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline="")):
            count += 1
    except csv.Error:
        pass
    return max(count, 0)


class _Checkpointing(BaseCallback):
    """Logs every decision, checkpoints at safe points, stops cleanly on a signal.

    Safe points: for a bandit or static agent, after any decision; for an SB3 model, at the
    start of a rollout (after the previous gradient step, before the next action) and, for an
    on-policy model (PPO), also between the decisions of a rollout, the decision just taken
    included in the checkpoint (`SB3Agent.checkpoint_after_step`). An off-policy model asked
    to stop mid-rollout checkpoints at the next rollout start and stops one decision later,
    a decision the resumed run takes again (its table row is dropped on resume).
    """

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run
        self._clock = time.perf_counter()
        self._stop_now = False

    def _on_training_start(self) -> None:
        if not self.run.resumed:  # a fresh run: its reset is decision 0, as in the runner's tables
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
        if self._stop_now:
            return False
        if self.run.sb3 and not self.run.agent.checkpoint_after_step:
            return True
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
    resumed: bool = False
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
        try:
            self.log.sync()  # the rows a checkpoint counts are on disk before it is
        except OSError as error:
            raise self.store.write_failed(error, f"the decisions table {str(self.log.path)!r}") from error
        payload = {"decisions": self.decisions, "episode": self.episode, "log": self.log.position(), **experiment_state(self.agent, self.env)}
        self.store.save(payload, self.decisions)
        self.last_saved = self.decisions


def experiment_state(agent: Any, env: MixingEnv) -> dict[str, Any]:
    """What a checkpoint holds besides its bookkeeping: the agent, the environment, the RNGs."""
    return {"agent": agent.checkpoint_state(), "env": env.state_dict(), "rng": capture_rng_state()}


def _config_json(config: ExperimentConfig) -> dict[str, Any]:
    """The configuration as JSON values; an object given as an option (a backend instance) is
    named by its class (``dataclasses.asdict`` would deep-copy it, and its address changes)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return json.loads(json.dumps(fields, default=lambda o: f"<{type(o).__module__}.{type(o).__qualname__}>"))


def _check_config(directory: Path, config: ExperimentConfig, resume: bool) -> None:
    path = directory / CONFIG
    if resume and path.exists():
        before, now = json.loads(path.read_text())["experiment"], _config_json(config)
        if before != now:
            raise ValueError(f"{directory} holds an experiment with another configuration: {before}; this one is {now}")


def run_experiment(
    config: ExperimentConfig,
    directory: str | Path,
    resume: bool = False,
    restart: bool = False,
    trust_checkpoint: bool = False,
    strict_whatif_cache: bool = False,
) -> ExperimentResult:
    """Run the experiment in `directory` (see the module docstring).

    Args:
        config: what to run.
        directory: the run folder; one writer at a time (`mixgym.runlock.RunLock`): a second
            process gets `FolderInUse`.
        resume: continue from the newest intact checkpoint (a fresh start if there is none at
            all; an error if there are some and none reads back).
        restart: discard the folder's checkpoints and table and start from decision 0.
        trust_checkpoint: load checkpoints this installation did not sign (`mixgym.trust`):
            unpickling them can run code, so only for files you trust.
        strict_whatif_cache: a corrupt or unsigned file in ``whatif/`` raises
            `mixgym.llm_backend.whatif.WhatIfCacheError` instead of being recomputed.
    """
    directory = Path(directory)
    if resume and restart:
        raise ValueError("resume and restart exclude each other: resume continues the folder's run, restart discards it")
    with RunLock(directory):
        store = CheckpointStore(directory / "checkpoints", keep=config.keep)
        store.remove_temporary()
        if restart:
            store.clear()
        elif not resume and store.paths():
            raise ValueError(
                f"{str(directory)!r} already holds checkpoints: continue it (--resume, resume=True) or "
                "start over (--restart, restart=True)"
            )
        _check_config(directory, config, resume)
        latest = store.load_latest(trusted=trust_checkpoint) if resume else None
        if latest is not None:
            _check_payload(*latest)
        log = _DecisionLog(directory / TABLE)
        if latest is not None:
            position = latest[0].get("log") or _legacy_position(log.path, latest[0]["rows"], latest[1])
            log.resume(position, latest[1])
        else:
            log.start()
        try:
            return _run(config, directory, store, log, latest[0] if latest is not None else None, strict_whatif_cache)
        finally:
            log.close()


def _run(
    config: ExperimentConfig,
    directory: Path,
    store: CheckpointStore,
    log: _DecisionLog,
    payload: dict[str, Any] | None,
    strict_whatif_cache: bool = False,
) -> ExperimentResult:
    env = env_for(config.agent, config.env)
    cache = getattr(env.backend, "whatif_cache", None)
    if cache is not None:  # what-if answers survive a crash between checkpoints
        cache.directory, cache.strict = directory / WHATIF_DIR, strict_whatif_cache
    agent = make_agent(config.agent, env, seed=config.seed, **config.agent_options)
    total = config.decisions or env.num_decisions
    facts = {"experiment": _config_json(config), "env": EnvFacts.of(env).to_json(), "agent": config.agent}
    atomic_write_bytes(directory / CONFIG, json.dumps(facts, indent=1).encode())
    done = 0
    with StopRequest() as stop:
        run = _Run(config, env, agent, store, log, stop, total, resumed=payload is not None)
        if payload is not None:
            agent.get_env().reset()  # wrappers (SB3's Monitor) start a run; the state below replaces it
            try:
                env.load_state_dict(payload["env"])
                agent.restore_checkpoint_state(payload["agent"])
                restore_rng_state(payload["rng"])  # last: rebuilding the model above draws from torch's RNG
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:  # a trusted file that is not ours
                raise CorruptCheckpoint(
                    f"the checkpoint resumed in {str(directory)!r} does not hold this experiment's state "
                    f"({type(error).__name__}: {error}): delete it, or start over with --restart"
                ) from None
            run.episode, run.last_saved, done = payload["episode"], payload["decisions"], payload["decisions"]
        if done < total:
            agent.learn(total - done, callback=_Checkpointing(run), reset_num_timesteps=payload is None)
    status = "stopped" if stop.requested is not None and run.decisions < total else "finished"
    return ExperimentResult(status, run.decisions, directory, agent, env, stop.requested if status == "stopped" else None)


_PAYLOAD = {"env": dict, "agent": dict, "rng": dict, "episode": int, "decisions": int}


def _check_payload(payload: Any, path: Path) -> None:
    """`CorruptCheckpoint` naming what a loaded checkpoint lacks (one crafted, or from another
    program, and loaded with ``trust_checkpoint``) before anything is restored from it."""
    if not isinstance(payload, dict):
        raise CorruptCheckpoint(f"{path} does not hold a mixgym experiment's state (it holds a {type(payload).__name__})")
    wrong = [f"{key!r} ({kind.__name__})" for key, kind in _PAYLOAD.items() if not isinstance(payload.get(key), kind)]
    if not payload.get("log") and not isinstance(payload.get("rows"), int):
        wrong.append("'log' or 'rows'")
    if wrong:
        raise CorruptCheckpoint(f"{path} does not hold a mixgym experiment's state: it lacks {', '.join(wrong)}")


def run_until_done(config: ExperimentConfig, directory: str | Path) -> ExperimentResult:
    """Run the experiment in `directory`, resuming it if it has checkpoints (what `mixgym bench`
    does for each cell); `RunStopped` if a signal stopped it, so that callers stop too."""
    result = run_experiment(config, directory, resume=True)
    if result.status == "stopped":
        raise RunStopped(f"stopped by signal {result.signal} after {result.decisions} decisions; rerun to resume")
    return result
