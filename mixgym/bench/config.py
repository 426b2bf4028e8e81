"""A benchmark grid: agents x rewards x backends x seeds, read from YAML and checked up front.

```yaml
name: toy                      # a label for the output folder and tables
mode: proxy                    # proxy | non-proxy (see `BenchConfig`)
seeds: [0, 1, 2]
agents: [uniform, exp3, hds]   # names, or {name: {option: value}} for overrides;
                               # {hds: {rewards: [holistic]}} pins the rewards an agent runs with
rewards: [alignment]
backends:                      # label -> options of `make_backend` (and `backend:` = kind),
  toy5: {backend: toy, num_domains: 5, total_steps: 1000}
  pile: {task: pile22}         # or a named task (`mixgym.tasks`) and overrides of its options
baselines: [natural, uniform, {tempered: {tau: 0.5}}, oracle]   # natural and uniform always run
env: {steps_per_action: 10, objective: domain-mean}   # other `MixingEnv` options, for every cell
train_decisions: 2000          # proxy: decisions the agent learns for before evaluation
proxy: {}                      # proxy: backend options changed for training (e.g. a smaller model)
```

Every mistake (an unknown key, agent, reward, task, baseline, objective or backend kind; an
empty list; objective weights that do not match a backend's K) fails before anything runs,
naming the key and the allowed values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import numpy as np

from mixgym.envs.rewards import REWARDS
from mixgym.llm_backend import BACKENDS
from mixgym.llm_backend.base import BackendInfo
from mixgym.llm_backend.objectives import OBJECTIVES, make_objective
from mixgym.tasks import TASK_PRESETS, get_task

MODES = ("proxy", "non-proxy")
_KEYS = ("name", "mode", "seeds", "agents", "rewards", "backends", "baselines", "env", "train_decisions", "proxy")
_ENV_KEYS = ("action_map", "temperature", "eps", "steps_per_action", "eval_every", "reward_kwargs", "objective")
BASELINES = ("natural", "uniform", "tempered", "oracle")
"""Reference mixtures a grid can run beside its agents (agents of the same names)."""
ALWAYS = ("natural", "uniform")
"""Baselines every grid runs: every table shows both (the papers compare with natural, which
is uniform on a balanced corpus and far from it on The Pile)."""


def _known_agents() -> list[str]:
    from mixgym.agents import AGENTS

    return sorted(AGENTS)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: an agent with a reward on a backend, from one seed."""

    agent: str
    agent_options: dict[str, Any]
    reward: str
    backend_label: str
    backend_options: dict[str, Any]
    env_options: dict[str, Any]
    seed: int
    mode: str
    train_decisions: int
    proxy_options: dict[str, Any]

    @property
    def key(self) -> str:
        """A hash of everything that determines the cell's result: its cache key."""
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.agent}/{self.reward}/{self.backend_label}/seed{self.seed}"


@dataclass(frozen=True)
class BenchConfig:
    """A validated grid (see the module docstring for the YAML form).

    Attributes:
        name: label of the benchmark.
        mode: "proxy" (the agent learns for `train_decisions` decisions on the backend with
            `proxy` options applied, then acts deterministically on the target backend) or
            "non-proxy" (it learns online during the one target run, which is what is scored).
        seeds: run seeds; each cell uses one.
        agents: agent name -> option overrides for `make_agent`.
        rewards: reward names.
        backends: label -> backend options (``backend`` is the kind, default "toy"; ``task``
            a named task whose options the others override).
        baselines: baseline name -> its options (`BASELINES`; always natural and uniform).
        env: `MixingEnv` options shared by every cell.
        train_decisions: proxy mode's learning budget, in decisions.
        proxy: backend options replaced when training in proxy mode.
    """

    name: str
    mode: str
    seeds: tuple[int, ...]
    agents: dict[str, dict[str, Any]]
    rewards: tuple[str, ...]
    backends: dict[str, dict[str, Any]]
    env: dict[str, Any] = field(default_factory=dict)
    train_decisions: int = 2000
    proxy: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=lambda: {name: {} for name in ALWAYS})

    def cells(self) -> list[Cell]:
        """Every cell of the grid, plus one cell per baseline, backend and seed.

        The baselines (natural and uniform at least) are the references that "steps to reach
        a baseline's final loss" is measured against; a static mixture's trajectory does not
        depend on the reward, so one cell each suffices (the first reward).
        """
        cells = []
        for label, options in self.backends.items():
            for seed in self.seeds:
                for agent, agent_options in self.agents.items():
                    agent_options = dict(agent_options)
                    pinned = tuple(agent_options.pop("rewards", ()))
                    rewards = pinned or (self.rewards[:1] if agent in BASELINES else self.rewards)
                    for reward in rewards:
                        cells.append(self._cell(agent, agent_options, reward, label, options, seed))
                for baseline, baseline_options in self.baselines.items():
                    if baseline not in self.agents:
                        cells.append(self._cell(baseline, baseline_options, self.rewards[0], label, options, seed))
        return cells

    def _cell(self, agent: str, agent_options: dict[str, Any], reward: str, label: str, options: dict[str, Any], seed: int) -> Cell:
        return Cell(
            agent=agent,
            agent_options=dict(agent_options),
            reward=reward,
            backend_label=label,
            backend_options=dict(options),
            env_options=dict(self.env),
            seed=seed,
            mode=self.mode,
            train_decisions=self.train_decisions if self.mode == "proxy" else 0,
            proxy_options=dict(self.proxy) if self.mode == "proxy" else {},
        )


def _names(value: Any, key: str, allowed: list[str]) -> dict[str, dict[str, Any]]:
    """A list of names (or of one-key {name: options} mappings) or a {name: options} mapping,
    each name checked against `allowed`."""
    if isinstance(value, list):
        if not all(isinstance(item, str) or (isinstance(item, dict) and len(item) == 1) for item in value):
            raise ValueError(f"'{key}' lists names or one-key {{name: options}} mappings, got {value!r}")
        value = {name: options for item in value for name, options in (item.items() if isinstance(item, dict) else [(item, {})])}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"'{key}' must be a non-empty list or mapping of names; allowed: {', '.join(allowed)}")
    for name, options in value.items():
        if name not in allowed:
            raise ValueError(f"unknown {key[:-1]} {name!r} in '{key}'; allowed: {', '.join(allowed)}")
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options of {key[:-1]} {name!r} must be a mapping, got {options!r}")
    return {name: dict(options or {}) for name, options in value.items()}


def parse_config(raw: dict[str, Any]) -> BenchConfig:
    """Validate a grid given as a dict (the parsed YAML)."""
    if not isinstance(raw, dict):
        raise ValueError(f"a benchmark config is a mapping with keys {', '.join(_KEYS)}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the benchmark config; allowed: {', '.join(_KEYS)}")
    for key in ("agents", "rewards", "backends", "seeds"):
        if key not in raw:
            raise ValueError(f"the benchmark config needs '{key}'")
    mode = raw.get("mode", "proxy")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} in 'mode'; allowed: {', '.join(MODES)}")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"'seeds' must be a non-empty list of non-negative integers, got {seeds!r}")
    agents = _names(raw["agents"], "agents", _known_agents())
    rewards = list(_names(raw["rewards"], "rewards", sorted(REWARDS)))
    for name, options in agents.items():
        if "rewards" in options:
            _names(options["rewards"], f"agents.{name}.rewards", sorted(REWARDS))
    backends = raw["backends"]
    if not isinstance(backends, dict) or not backends:
        raise ValueError("'backends' must be a non-empty mapping: label -> {backend: toy|hf, ...options} or {task: NAME, ...}")
    checked: dict[str, dict[str, Any]] = {}
    for label, options in backends.items():
        options = dict(options or {})
        if "task" in options:
            if options["task"] not in TASK_PRESETS:
                raise ValueError(f"unknown task {options['task']!r} in 'backends.{label}'; allowed: {', '.join(TASK_PRESETS)}")
            options.setdefault("backend", TASK_PRESETS[options["task"]].backend)
        kind = options.setdefault("backend", "toy")
        if kind not in BACKENDS:
            raise ValueError(f"unknown backend {kind!r} in 'backends.{label}'; allowed: {', '.join(BACKENDS)}")
        checked[str(label)] = options
    env = dict(raw.get("env") or {})
    bad_env = sorted(set(env) - set(_ENV_KEYS))
    if bad_env:
        raise ValueError(f"unknown key(s) {bad_env} in 'env'; allowed: {', '.join(_ENV_KEYS)}")
    if "objective" in env:
        for label, options in checked.items():
            _check_objective(env["objective"], label, options)
    baselines = {**{name: {} for name in ALWAYS}, **_names(raw.get("baselines", list(ALWAYS)), "baselines", list(BASELINES))}
    if "oracle" in baselines:
        not_toy = [label for label, options in checked.items() if options["backend"] != "toy"]
        if not_toy:
            raise ValueError(f"baseline 'oracle' needs toy backends (its mixture is found by search); not toy: {not_toy}")
    from mixgym.agents import make_config

    for name, options in baselines.items():
        try:
            make_config(name, **options)
        except ValueError as error:
            raise ValueError(f"baseline {name!r} in 'baselines': {error}") from None
    train_decisions = raw.get("train_decisions", 2000)
    if not isinstance(train_decisions, int) or train_decisions < 1:
        raise ValueError(f"'train_decisions' must be an integer >= 1, got {train_decisions!r}")
    return BenchConfig(
        name=str(raw.get("name", "bench")),
        mode=mode,
        seeds=tuple(seeds),
        agents=agents,
        rewards=tuple(rewards),
        backends=checked,
        env=env,
        train_decisions=train_decisions,
        proxy=dict(raw.get("proxy") or {}),
        baselines=baselines,
    )


def _check_objective(objective: Any, label: str, options: dict[str, Any]) -> None:
    """Fail on an unknown objective name, or weights that do not fit backend `label`'s K
    (known without building it: a toy's domains, a corpus folder's entries)."""
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r} in 'env.objective'; allowed: {', '.join(OBJECTIVES)} or K weights")
        return
    k = _num_domains(options)
    try:
        make_objective(objective, BackendInfo(), k if k is not None else len(np.ravel(objective)))
    except ValueError as error:
        raise ValueError(f"'env.objective' for backend {label!r}: {error}") from None


def _num_domains(options: dict[str, Any]) -> int | None:
    """K of a backend's options when it is known without building the backend."""
    options = dict(options)
    kind = options.pop("backend")
    if "task" in options:
        options = get_task(options.pop("task")).backend_kwargs(options) if kind == "toy" else options
    if kind == "toy":
        from mixgym.llm_backend.toy import ToyConfig

        return ToyConfig(**{k: v for k, v in options.items() if k in ToyConfig.__dataclass_fields__}).num_domains
    corpus = options.get("corpus")
    if corpus is not None and Path(corpus).is_dir():
        from mixgym.llm_backend.corpus import CorpusError, _domain_entries

        try:
            return len(_domain_entries(Path(corpus)))
        except CorpusError:
            return None
    return None


def load_config(path: str | Path) -> BenchConfig:
    """Read and validate a YAML grid."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"benchmark config {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"benchmark config {str(path)!r} is not valid YAML: {error}") from None
    return parse_config(raw)
