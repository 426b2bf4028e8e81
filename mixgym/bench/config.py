"""A benchmark grid: agents x rewards x backends x seeds, read from YAML and checked up front.

```yaml
name: toy                      # a label for the output folder and tables
mode: proxy                    # proxy | non-proxy (see `BenchConfig`)
seeds: [0, 1, 2]
agents: [uniform, exp3, hds]   # names, or {name: {option: value}} for overrides;
                               # {hds: {rewards: [holistic]}} pins the rewards an agent runs with
rewards: [alignment]
backends:                      # label -> options of `make_backend` (and `backend:` = kind);
  toy5: {backend: toy, num_domains: 5, total_steps: 1000}   # a backend may carry its own
  # `phases: [[300, [easy, hard]], [700, [easy, hard, noise]]]` (a continual task, MixingEnv)
env: {steps_per_action: 10}    # other `MixingEnv` options, shared by every cell
train_decisions: 2000          # proxy: decisions the agent learns for before evaluation
proxy: {}                      # proxy: backend options changed for training (e.g. a smaller model)
```

Every mistake (an unknown key, agent, reward or backend kind; an empty list) fails before
anything runs, naming the key and the allowed values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixgym.envs.rewards import REWARDS
from mixgym.llm_backend import BACKENDS

MODES = ("proxy", "non-proxy")
_KEYS = ("name", "mode", "seeds", "agents", "rewards", "backends", "env", "train_decisions", "proxy")
_ENV_KEYS = ("action_map", "temperature", "eps", "steps_per_action", "eval_every", "reward_kwargs", "budget", "phases")


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
        backends: label -> backend options (``backend`` is the kind, default "toy").
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

    def cells(self) -> list[Cell]:
        """Every cell of the grid, plus a "uniform" baseline per backend and seed.

        The uniform run is the reference that "decisions to reach uniform's final loss" is
        measured against; its trajectory does not depend on the reward, so one suffices.
        """
        cells = []
        for label, options in self.backends.items():
            for seed in self.seeds:
                for agent, agent_options in self.agents.items():
                    agent_options = dict(agent_options)
                    pinned = tuple(agent_options.pop("rewards", ()))
                    rewards = pinned or (self.rewards[:1] if agent == "uniform" else self.rewards)
                    for reward in rewards:
                        cells.append(self._cell(agent, agent_options, reward, label, options, seed))
                if "uniform" not in self.agents:
                    cells.append(self._cell("uniform", {}, self.rewards[0], label, options, seed))
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
    """A list of names or a {name: options} mapping, each name checked against `allowed`."""
    if isinstance(value, list):
        value = {name: {} for name in value}
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
        raise ValueError("'backends' must be a non-empty mapping: label -> {backend: toy|hf, ...options}")
    checked: dict[str, dict[str, Any]] = {}
    for label, options in backends.items():
        options = dict(options or {})
        kind = options.setdefault("backend", "toy")
        if kind not in BACKENDS:
            raise ValueError(f"unknown backend {kind!r} in 'backends.{label}'; allowed: {', '.join(BACKENDS)}")
        checked[str(label)] = options
    env = dict(raw.get("env") or {})
    bad_env = sorted(set(env) - set(_ENV_KEYS))
    if bad_env:
        raise ValueError(f"unknown key(s) {bad_env} in 'env'; allowed: {', '.join(_ENV_KEYS)}")
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
    )


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
