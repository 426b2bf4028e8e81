"""A benchmark grid: agents x rewards x backends x seeds, read from YAML and checked up front.

```yaml
name: toy                      # a label for the output folder and tables
mode: proxy                    # proxy | non-proxy (see `BenchConfig`)
seeds: [0, 1, 2]
agents: [uniform, exp3, hds]   # names, or {name: {option: value}} for overrides;
                               # {hds: {rewards: [holistic]}} pins the rewards an agent runs with
rewards: [alignment]
backends:                      # label -> options of `make_backend` (and `backend:` = kind),
  toy5: {backend: toy, num_domains: 5, total_steps: 1000}   # a backend may carry its own
  # `phases: [[300, [easy, hard]], [700, [easy, hard, noise]]]` (a continual task, MixingEnv)
  pile: {task: pile22}         # or a named task (`mixgym.tasks`) and overrides of its options
baselines: [natural, uniform, {tempered: {tau: 0.5}}, oracle]   # natural and uniform always run
env: {steps_per_action: 10, objective: domain-mean}   # other `MixingEnv` options, for every cell
train_decisions: 2000          # proxy: decisions the agent learns for before evaluation
proxy: {}                      # proxy: backend options changed for training (e.g. a smaller model)
```

Every mistake fails before anything runs, naming the key and the allowed values: an unknown
key, agent, reward, task, baseline, objective or backend kind; an empty list; a ``name`` that
is not a plain folder name (``../x`` or ``/tmp/x`` would write outside the output folder);
objective weights that do not match a backend's K; an agent, baseline, backend or ``env``
option of the wrong type or out of range, or one that does not fit the backend (a ``fixed``
mixture of the wrong length) -- each cell's agent and environment are checked as they will be
made (`validate`, which `run_bench` calls first: toy backends are built; for ``hf`` the
configuration and the corpus folder are checked without loading a model). Repeated seeds,
rewards, agents or baselines are merged, with a warning, and so are cells that come out
identical: each runs once.

Numbers follow YAML 1.2 (`mixgym.yaml12`): ``1e-3`` is a number, ``010`` is ten.

A cell's cache key hashes its whole configuration *and the content of every file it reads*
(`input_digest`: the corpus, a tokenizer or model folder, a model config file), so a corpus
changed in place is a new cell, never a stale cached result.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import numpy as np

from mixgym import yaml12
from mixgym.envs.rewards import REWARDS
from mixgym.llm_backend import BACKENDS
from mixgym.llm_backend.base import BackendInfo
from mixgym.llm_backend.objectives import OBJECTIVES, make_objective
from mixgym.tasks import TASK_PRESETS, get_task
from mixgym.validation import integer

MODES = ("proxy", "non-proxy")
_KEYS = ("name", "mode", "seeds", "agents", "rewards", "backends", "baselines", "env", "train_decisions", "proxy")
_ENV_KEYS = (
    "action_map", "temperature", "eps", "steps_per_action", "eval_every", "reward_kwargs", "objective", "observation",
    "budget", "phases",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
BASELINES = ("natural", "uniform", "tempered", "oracle")
"""Reference mixtures a grid can run beside its agents (agents of the same names)."""
ALWAYS = ("natural", "uniform")
"""Baselines every grid runs: every table shows both (the papers compare with natural, which
is uniform on a balanced corpus and far from it on The Pile)."""


def _known_agents() -> list[str]:
    from mixgym.agents import AGENTS
    from mixgym.agents.base import load_families

    load_families()
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
    inputs: str = ""
    """`input_digest` of the files the cell reads (empty for the toy backend)."""

    @property
    def key(self) -> str:
        """A hash of everything that determines the cell's result, the content of the files it
        reads included: its cache key."""
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
        a baseline's final loss" is measured against (see `runs`).
        """
        cells: dict[str, Cell] = {}
        for label, options in self.backends.items():
            digest = input_digest({**options, **self.proxy}) if self.mode == "proxy" else input_digest(options)
            for seed in self.seeds:
                for agent, agent_options, reward in self.runs():
                    cell = self._cell(agent, agent_options, reward, label, options, seed, digest)
                    cells.setdefault(cell.key, cell)  # identical cells run once
        return list(cells.values())

    def runs(self) -> list[tuple[str, dict[str, Any], str]]:
        """(agent, its options, reward) of every run on each backend and seed, the baselines
        included: an agent runs with its pinned rewards or the grid's (a baseline with the
        first only: a static mixture's trajectory does not depend on the reward)."""
        runs = []
        for agent, agent_options in self.agents.items():
            options = dict(agent_options)
            pinned = tuple(options.pop("rewards", ()))
            rewards = pinned or (self.rewards[:1] if agent in BASELINES else self.rewards)
            runs += [(agent, options, reward) for reward in dict.fromkeys(rewards)]
        runs += [(name, dict(options), self.rewards[0]) for name, options in self.baselines.items() if name not in self.agents]
        return runs

    def _cell(
        self, agent: str, agent_options: dict[str, Any], reward: str, label: str, options: dict[str, Any], seed: int, digest: str
    ) -> Cell:
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
            inputs=digest,
        )


def _names(value: Any, key: str, allowed: list[str]) -> dict[str, dict[str, Any]]:
    """A list of names (or of one-key {name: options} mappings) or a {name: options} mapping,
    each name checked against `allowed`."""
    if isinstance(value, list):
        if not all(isinstance(item, str) or (isinstance(item, dict) and len(item) == 1) for item in value):
            raise ValueError(f"'{key}' lists names or one-key {{name: options}} mappings, got {value!r}")
        _warn_repeats(value, key)
        value = {name: options for item in value for name, options in (item.items() if isinstance(item, dict) else [(item, {})])}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"'{key}' must be a non-empty list or mapping of names; allowed: {', '.join(allowed)}")
    for name, options in value.items():
        if not isinstance(name, str) or name not in allowed:
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
    name = raw.get("name", "bench")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"'name' must be a plain folder name (letters, digits, '.', '_', '-'; not starting with '.' or "
            f"'-'), got {name!r}: it names the output folder runs/<name>"
        )
    mode = raw.get("mode", "proxy")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} in 'mode'; allowed: {', '.join(MODES)}")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"'seeds' must be a non-empty list of non-negative integers, got {seeds!r}")
    for seed in seeds:
        integer("'seeds' entry", seed, 0, 2**32 - 1)
    _warn_repeats(seeds, "seeds")
    agents = _names(raw["agents"], "agents", _known_agents())
    rewards = list(_names(raw["rewards"], "rewards", sorted(REWARDS)))
    for agent, options in agents.items():  # not `name`: that is the grid's
        if "rewards" in options:
            _names(options["rewards"], f"agents.{agent}.rewards", sorted(REWARDS))
    backends = raw["backends"]
    if not isinstance(backends, dict) or not backends:
        raise ValueError("'backends' must be a non-empty mapping: label -> {backend: toy|hf, ...options} or {task: NAME, ...}")
    checked: dict[str, dict[str, Any]] = {}
    for label, options in backends.items():
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"'backends.{label}' must be a mapping of backend options, got {options!r}")
        options = dict(options or {})
        if "task" in options:
            if options["task"] not in TASK_PRESETS:
                raise ValueError(f"unknown task {options['task']!r} in 'backends.{label}'; allowed: {', '.join(TASK_PRESETS)}")
            options.setdefault("backend", TASK_PRESETS[options["task"]].backend)
        kind = options.setdefault("backend", "toy")
        if kind not in BACKENDS:
            raise ValueError(f"unknown backend {kind!r} in 'backends.{label}'; allowed: {', '.join(BACKENDS)}")
        checked[str(label)] = options
    for key in ("env", "proxy"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ValueError(f"'{key}' must be a mapping of options, got {raw[key]!r}")
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
    train_decisions = integer("'train_decisions'", raw.get("train_decisions", 2000), 1)
    config = BenchConfig(
        name=name,
        mode=mode,
        seeds=tuple(dict.fromkeys(seeds)),
        agents=agents,
        rewards=tuple(rewards),
        backends=checked,
        env=env,
        train_decisions=train_decisions,
        proxy=dict(raw.get("proxy") or {}),
        baselines=baselines,
    )
    from mixgym.agents.base import make_config

    for agent, options in agents.items():  # types and ranges of every agent option
        make_config(agent, **{k: v for k, v in options.items() if k != "rewards"})
    for baseline, options in baselines.items():
        try:
            make_config(baseline, **options)
        except (TypeError, ValueError) as error:
            raise type(error)(f"baseline {baseline!r} in 'baselines': {error}") from None
    return config


def _warn_repeats(values: list[Any], key: str) -> None:
    repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        warnings.warn(f"'{key}' repeats {', '.join(repeated)}: merged, each runs once", stacklevel=3)


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
        from mixgym.llm_backend.corpus import CorpusError, domain_files

        try:
            return len(domain_files(Path(corpus)))
        except CorpusError:
            return None
    return None


def load_config(path: str | Path) -> BenchConfig:
    """Read and validate a YAML grid."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"benchmark config {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"benchmark config {str(path)!r} is not a regular file")
    try:
        raw = yaml12.load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"benchmark config {str(path)!r} is not valid YAML: {error}") from None
    return parse_config(raw)


def validate(config: BenchConfig, progress: bool = False) -> None:
    """Check, before anything runs, that every cell's agent and environment can be made
    (`run_bench` calls it; `parse_config` checks what needs no file or backend).

    Agent options are checked by the agent's config (types, ranges). Each backend (and, in
    proxy mode, the proxy) is checked with every reward and agent it runs: a toy backend is
    built as the cell will build it (cheap: no model of torch's); an ``hf`` backend's
    configuration, corpus folder and environment options are checked without loading a model
    or a tokenizer. Per-domain agent options must match the backend's K, and an agent's action
    map the environment's. With `progress`, a bar counts the checks (building many toy
    backends takes minutes on a large grid).
    """
    from tqdm.auto import tqdm

    from mixgym.agents.base import check_action_map, check_per_domain, make_config

    runs = [(agent, make_config(agent, **options), reward) for agent, options, reward in config.runs()]
    checks = []
    for label, backend in config.backends.items():
        variants = {"backends." + label: backend}
        if config.mode == "proxy" and config.proxy:
            variants[f"backends.{label} with 'proxy'"] = {**backend, **config.proxy}
        checks += [(where, options, run) for where, options in variants.items() for run in runs]
    for where, options, (agent, agent_config, reward) in tqdm(checks, desc="checking the grid", disable=not progress):
        try:
            domains, action_map = _environment(agent, {**config.env, **options}, reward)
            check_action_map(agent, _Facts(domains, action_map), _action_maps(agent))
            check_per_domain(agent, agent_config, domains)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where}, reward {reward!r}: {error}") from None


@dataclass(frozen=True)
class _Facts:
    """The two environment facts `check_action_map` reads."""

    domains: tuple[str, ...]
    action_map: str


def _action_maps(agent: str) -> tuple[str, ...]:
    from mixgym.agents.base import agent_spec

    return agent_spec(agent).action_maps


def _environment(agent: str, options: dict[str, Any], reward: str) -> tuple[tuple[str, ...], str]:
    """(domains, action map) of the environment a cell of `agent` makes from `options`, checked."""
    from mixgym.agents.compare import env_for

    options = dict(options)
    if options.get("backend", "toy") == "toy":
        env = env_for(agent, {**options, "reward": reward})
        return tuple(env.domains), env.action_mapper.name
    if agent == "oracle":
        raise ValueError("the oracle is the toy backend's best static mixture; it cannot run on an 'hf' backend")
    from mixgym.envs.action_maps import ActionMap
    from mixgym.envs.mixing_env import BUDGETS
    from mixgym.envs.phases import parse_phases
    from mixgym.envs.rewards import make_reward
    from mixgym.llm_backend.corpus import domain_files
    from mixgym.llm_backend.hf import HFConfig

    env_options = {k: options.pop(k) for k in list(options) if k in _ENV_KEYS}
    options.pop("backend")
    if "task" in options:
        options = get_task(options.pop("task")).backend_kwargs(options)
    unknown = sorted(set(options) - set(HFConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown HFBackend option(s) {unknown}; known: {sorted(HFConfig.__dataclass_fields__)}")
    hf = HFConfig(**options)
    domains = tuple(domain_files(_corpus(hf.corpus)))
    action_map = env_options.get("action_map", _action_maps(agent)[0])
    ActionMap(action_map, len(domains), env_options.get("temperature", 0.5), env_options.get("eps", 0.05))
    reward_kwargs = env_options.get("reward_kwargs") or {}
    if not isinstance(reward_kwargs, dict):
        raise TypeError(f"reward_kwargs must be a mapping of the reward's options, got {reward_kwargs!r}")
    make_reward(reward, **reward_kwargs)
    for key in ("steps_per_action", "eval_every"):
        integer(key, env_options.get(key, 1), 1)
    budget = env_options.get("budget", "steps")
    if not isinstance(budget, str) or budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if "phases" in env_options:
        parse_phases(env_options["phases"], domains, hf.total_steps)
    return domains, action_map


def _corpus(corpus: str | Path | None) -> Path:
    from mixgym.data import SAMPLE_CORPUS

    return Path(corpus).expanduser() if corpus is not None else SAMPLE_CORPUS


def input_digest(options: dict[str, Any]) -> str:
    """A short SHA-256 of the content of every file a backend made with `options` reads: the
    corpus files, and a tokenizer or model given as a path (a folder: every file in it). Empty
    for the toy backend, which reads none."""
    if options.get("backend", "toy") == "toy":
        return ""
    from mixgym.llm_backend.corpus import domain_files
    from mixgym.llm_backend.hf import PRESETS

    roots: list[tuple[str, Path, list[Path]]] = []
    corpus = _corpus(options.get("corpus"))
    roots.append(("corpus", corpus, sorted(p for paths in domain_files(corpus).values() for p in paths)))
    for key in ("tokenizer", "model"):
        value = options.get(key)
        if isinstance(value, (str, Path)) and value not in PRESETS and Path(value).expanduser().exists():
            path = Path(value).expanduser()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            roots.append((key, path, files))
    digest = hashlib.sha256()
    for key, root, files in roots:
        for file in files:
            digest.update(f"\0{key}\0{file.relative_to(root) if file != root else file.name}\0".encode())
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:16]
