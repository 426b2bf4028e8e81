"""One way to make, save and load any agent: the `Agent` protocol, its registry, its file format.

Every agent -- a stock stable-baselines3 model behind a preset (`sb3_presets`), a bandit
(`odm`), a static mixture (`static`), online group reweighting (`doremi`) -- is made by
``make_agent(name, env, **overrides)`` and answers SB3's surface: ``learn``, ``predict``,
``save`` and ``load``. Agents that read what the environment reports after each decision
(bandits read per-domain training losses) also implement `InfoObserver`: whoever drives
the environment calls ``reset_run(info)`` after ``env.reset`` and ``observe(info)`` after
every ``env.step``. Their own ``learn`` and `mixgym.agents.runner.evaluate` do that; an SB3
model, which learns from rewards alone, does not need it.

Agents read the environment through its public API only (`EnvFacts`): the domain names,
the action map, decisions per run, and the backend's domain sizes (for "natural").

A saved agent is one zip file. SB3 agents write SB3's own zip; every agent adds a
``mixgym.json`` entry (`META_NAME`) saying which agent it is, for which K, domains, action
map and observation shape it was made, its options and, for agents that are not SB3
models, its state. `load_agent` reads that entry first, so a policy loaded onto an
environment with another K or action map, and a missing or corrupt file, fail with a
message that says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from mixgym.validation import integer

META_NAME = "mixgym.json"
FORMAT = "mixgym-agent"
FORMAT_VERSION = 1


@runtime_checkable
class Agent(Protocol):
    """SB3's surface, which every agent has (SB3 models have more)."""

    def learn(self, total_timesteps: int, callback: MaybeCallback = None, progress_bar: bool = False) -> Agent:
        """Learn for `total_timesteps` decisions on the agent's environment."""
        ...

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The action for `observation` (and a recurrent state, None here)."""
        ...

    def save(self, path: str | Path) -> None:
        """Write the agent to a zip file (".zip" is added to a path without a suffix)."""
        ...


@runtime_checkable
class InfoObserver(Protocol):
    """An agent that reads the environment's ``info`` (per-domain losses, samples)."""

    def reset_run(self, info: dict[str, Any]) -> None:
        """A new run (episode) starts; `info` is what ``env.reset`` returned."""
        ...

    def observe(self, info: dict[str, Any]) -> None:
        """A decision finished; `info` is what ``env.step`` returned."""
        ...


@dataclass(frozen=True)
class EnvFacts:
    """What an agent may know about its environment, read through the public API.

    Attributes:
        domains: the K domain names.
        action_map: the environment's action map ("softmax", "normalize" or "simplex").
        num_decisions: decisions in one run (episode).
        observation_shape: shape of one observation.
        natural: the backend's domain sizes normalised to a mixture, or None when the
            backend does not report sizes.
        observation_layout: the observation's feature blocks in order
            (`mixgym.envs.features`), or None (files saved before it was recorded).
    """

    domains: tuple[str, ...]
    action_map: str
    num_decisions: int
    observation_shape: tuple[int, ...]
    natural: tuple[float, ...] | None
    observation_layout: tuple[str, ...] | None = None

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    @classmethod
    def of(cls, env: gym.Env) -> EnvFacts:
        """Read the facts from a `MixingEnv`, possibly inside Gymnasium wrappers."""
        inner = env.envs[0].unwrapped if isinstance(env, VecEnv) and hasattr(env, "envs") else env.unwrapped  # type: ignore[attr-defined]
        if not all(hasattr(inner, name) for name in ("action_mapper", "domains", "num_decisions", "backend")):
            raise ValueError(f"agents drive a mixgym MixingEnv (possibly wrapped), got {type(inner).__name__}")
        sizes = np.asarray(inner.backend.info.domain_sizes, dtype=np.float64)
        natural = tuple((sizes / sizes.sum()).tolist()) if sizes.size and sizes.sum() > 0 else None
        layout = getattr(inner, "layout", None)
        return cls(
            domains=tuple(inner.domains),
            action_map=inner.action_mapper.name,
            num_decisions=int(inner.num_decisions),
            observation_shape=tuple(int(n) for n in env.observation_space.shape),
            natural=natural,
            observation_layout=tuple(layout.features) if layout is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON values (lists, not tuples), as they read back from a file."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvFacts:
        natural = data.get("natural")
        layout = data.get("observation_layout")
        return cls(
            domains=tuple(data["domains"]),
            action_map=str(data["action_map"]),
            num_decisions=int(data["num_decisions"]),
            observation_shape=tuple(data["observation_shape"]),
            natural=tuple(natural) if natural is not None else None,
            observation_layout=tuple(layout) if layout is not None else None,
        )


@dataclass(frozen=True)
class AgentSpec:
    """A registered agent.

    Attributes:
        name: the name `make_agent` takes.
        summary: one line for listings (`mixgym train --help`).
        config: the agent's options, a frozen dataclass whose fields carry their defaults
            and, in ``metadata["help"]``, what they mean and where the value comes from.
        build: makes the agent for an environment from a config.
        load: rebuilds a saved agent: ``load(path, metadata, env or None, trusted)``;
            `trusted` allows a loader to unpickle a file this installation did not sign
            (only SB3 presets ever unpickle; see `mixgym.agents.sb3_files`).
        action_maps: the action maps the agent can drive.
        env_options: `MixingEnv` options of the agent's paper set-up, applied by
            `mixgym.agents.compare.env_for` unless the caller gives them: the reward it
            learns from (AC-ODM: "alignment", HDS: "holistic") and backend options such as
            AC-ODM's and HDS's forced per-domain micro-batches (``forced_fraction``).
    """

    name: str
    summary: str
    config: type
    build: Callable[[gym.Env, Any], Agent]
    load: Callable[[Path, dict[str, Any], gym.Env | None, bool], Agent]
    action_maps: tuple[str, ...]
    env_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    vector: bool = False
    """Whether the agent can learn on several envs at once (SB3 models without a warm-up)."""


AGENTS: dict[str, AgentSpec] = {}
"""Every agent `make_agent` knows, by name; filled when `mixgym.agents` is imported."""


def register(spec: AgentSpec) -> None:
    """Add an agent to `AGENTS` (each module registers its agents when imported)."""
    if spec.name in AGENTS and AGENTS[spec.name] is not spec:
        raise ValueError(f"an agent named {spec.name!r} is already registered")
    AGENTS[spec.name] = spec


FAMILIES: dict[str, str] = {"syllabus": "mixgym.integrations.syllabus"}
"""Agents registered by a module outside `mixgym.agents`, named ``"<family>:<name>"``: the
module is imported (it registers them) the first time such a name is asked for, so that
importing `mixgym.agents` imports no integration. Registering needs no optional dependency;
making the agent does."""


def load_families() -> None:
    """Import every module in `FAMILIES`, so that `AGENTS` lists their agents too."""
    for module in FAMILIES.values():
        importlib.import_module(module)


def agent_spec(name: str) -> AgentSpec:
    """The registered agent `name`, or an error listing the known ones."""
    family = name.partition(":")[0] if ":" in name else None
    if name not in AGENTS and family in FAMILIES:
        importlib.import_module(FAMILIES[family])
    if name not in AGENTS:
        load_families()
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def make_config(name: str, **overrides: Any) -> Any:
    """Agent `name`'s config with `overrides` applied; unknown options are an error."""
    spec = agent_spec(name)
    known = {f.name: f for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for agent {name!r}; its options: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(spec.config)
    values = {key: _coerce(value, hints[key]) for key, value in overrides.items()}
    try:
        return spec.config(**values)
    except (TypeError, ValueError) as error:  # the config's own checks, named by the agent
        raise type(error)(f"agent {name!r}: {error}") from None


def check_per_domain(name: str, config: Any, domains: tuple[str, ...]) -> None:
    """Refuse an option with one value per domain (``metadata["per_domain"]``) whose length is
    not the environment's K."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("per_domain") and value is not None and len(value) != len(domains):
            raise ValueError(
                f"agent {name!r}: option {f.name} must have {len(domains)} entries, one per domain "
                f"{list(domains)}, got {list(value)!r}"
            )


def _coerce(value: Any, hint: Any) -> Any:
    """Lists become tuples where the option is a tuple (JSON and YAML give lists)."""
    if isinstance(value, list) and typing.get_origin(hint) is not list and tuple in _hint_types(hint):
        return tuple(value)
    return value


def _hint_types(hint: Any) -> set[type]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return set().union(*(_hint_types(arg) for arg in typing.get_args(hint)))
    return {origin or hint}


def option_help(name: str) -> list[tuple[str, str, str]]:
    """(option, default, help) for every option of agent `name`, for CLI help."""
    rows = []
    for f in dataclasses.fields(agent_spec(name).config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, repr(default), f.metadata.get("help", "")))
    return rows


def check_action_map(name: str, facts: EnvFacts, allowed: tuple[str, ...]) -> None:
    """Refuse an environment whose action map the agent cannot drive."""
    if facts.action_map not in allowed:
        raise ValueError(
            f"agent {name!r} needs an env with action_map in {list(allowed)}, but this env uses "
            f"{facts.action_map!r}; build it as MixingEnv(..., action_map={allowed[0]!r})"
        )


def make_agent(name: str, env: gym.Env, n_envs: int | None = None, **overrides: Any) -> Agent:
    """Make agent `name` for `env`, its options (`AgentSpec.config`) changed by `overrides`.

    With `n_envs`, an agent that can (`AgentSpec.vector`: the SB3 presets without a warm-up)
    learns on `n_envs` toy runs made like `env` and batched in one call
    (`mixgym.envs.sb3_vec.SB3VecEnv`); an SB3 `VecEnv` of mixgym envs can also be passed as
    `env` directly.

    >>> from mixgym.envs import MixingEnv
    >>> from mixgym.agents import make_agent
    >>> agent = make_agent("uniform", MixingEnv(action_map="simplex", total_steps=20))
    >>> agent.predict(None)[0]
    array([0.2, 0.2, 0.2, 0.2, 0.2], dtype=float32)
    """
    spec = agent_spec(name)
    config = make_config(name, **overrides)
    if n_envs is not None:
        from mixgym.envs.sb3_vec import SB3VecEnv

        integer("n_envs", n_envs, 1)
        if not spec.vector:
            able = ", ".join(sorted(n for n, s in AGENTS.items() if s.vector))
            raise ValueError(f"agent {name!r} drives one env at a time (n_envs={n_envs!r}); agents that take n_envs: {able}")
        env = SB3VecEnv(n_envs, **env.unwrapped.init_kwargs)  # type: ignore[assignment]
    if isinstance(env, VecEnv) and not spec.vector:
        raise ValueError(f"agent {name!r} drives one env at a time, not a {type(env).__name__}")
    facts = EnvFacts.of(env)
    check_action_map(name, facts, spec.action_maps)
    check_per_domain(name, config, facts.domains)
    return spec.build(env, config)


def metadata(name: str, config: Any, facts: EnvFacts, **extra: Any) -> dict[str, Any]:
    """The ``mixgym.json`` entry of a saved agent."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "agent": name,
        "config": dataclasses.asdict(config),
        "env": facts.to_json(),
        **extra,
    }


def zip_path(path: str | Path) -> Path:
    """`path`, with ".zip" added when it has no suffix (as SB3's ``save`` does)."""
    path = Path(path)
    return path if path.suffix else path.with_suffix(".zip")


def write_metadata(path: Path, meta: dict[str, Any], mode: str = "a") -> None:
    """Write the ``mixgym.json`` entry into the zip at `path`: added to it (mode "a", after
    SB3 wrote its zip) or as the whole file (mode "w")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, mode) as archive:
        archive.writestr(META_NAME, json.dumps(meta, indent=1, default=str))


def read_metadata(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The resolved path and ``mixgym.json`` of a saved agent; clear errors if there is none."""
    given = Path(path)
    resolved = given if given.exists() else zip_path(given)
    if not resolved.exists():
        raise FileNotFoundError(f"no saved agent at {str(given)!r}")
    if not resolved.is_file():
        raise ValueError(f"{str(resolved)!r} is not a regular file, so not a saved agent")
    try:
        with zipfile.ZipFile(resolved) as archive:
            meta = json.loads(archive.read(META_NAME))
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{str(resolved)!r} is not a saved mixgym agent (not a readable zip: {error})") from None
    except KeyError:
        raise ValueError(f"{str(resolved)!r} is not a saved mixgym agent: it has no {META_NAME} entry") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(resolved)!r} has a corrupt {META_NAME}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "agent" not in meta or "env" not in meta:
        raise ValueError(f"{str(resolved)!r} has a {META_NAME} that is not a mixgym agent's")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{str(resolved)!r} has a {META_NAME} with format version {version!r}, not an integer")
    if version > FORMAT_VERSION:
        raise ValueError(f"{str(resolved)!r} was written by a newer mixgym (format version {version})")
    try:
        EnvFacts.from_json(meta["env"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{str(resolved)!r} has a {META_NAME} whose 'env' field is malformed ({type(error).__name__}: {error}): "
            f"got {meta['env']!r}; the file is damaged or was not written by mixgym"
        ) from None
    return resolved, meta


def check_compatible(meta: dict[str, Any], env: gym.Env, path: Path) -> EnvFacts:
    """Refuse an env the saved agent cannot act on: another K, action map or observation."""
    saved = EnvFacts.from_json(meta["env"])
    facts = EnvFacts.of(env)
    if saved.num_domains != facts.num_domains:
        raise ValueError(
            f"{str(path)!r} holds a policy for K={saved.num_domains} domains {list(saved.domains)}, "
            f"but this env has K={facts.num_domains}: {list(facts.domains)}{_matching(saved)}"
        )
    if saved.action_map != facts.action_map:
        raise ValueError(
            f"{str(path)!r} was trained with action_map={saved.action_map!r}; this env uses "
            f"{facts.action_map!r}, under which the same action is another mixture"
        )
    layouts_differ = None not in (saved.observation_layout, facts.observation_layout) and (
        saved.observation_layout != facts.observation_layout
    )
    if saved.observation_shape != facts.observation_shape or layouts_differ:
        raise ValueError(
            f"{str(path)!r} holds a policy for observation layout {_layout_name(saved)}, shape "
            f"{saved.observation_shape}; this env's layout is {_layout_name(facts)}, shape "
            f"{facts.observation_shape}{_matching(saved)}"
        )
    if saved.domains != facts.domains:
        warnings.warn(
            f"{str(path)!r} was trained on domains {list(saved.domains)}; acting on {list(facts.domains)} "
            "position by position",
            stacklevel=3,
        )
    return facts


def mismatch(meta: dict[str, Any], env: gym.Env) -> str:
    """What differs between the env a saved agent was made for and `env`, with the ids that fit it."""
    saved, facts = EnvFacts.from_json(meta["env"]), EnvFacts.of(env)
    return (
        f"made for K={saved.num_domains}, action map {saved.action_map!r}, observation layout {_layout_name(saved)}; "
        f"this env has K={facts.num_domains}, action map {facts.action_map!r}, observation layout "
        f"{_layout_name(facts)}{_matching(saved)}"
    )


def _layout_name(facts: EnvFacts) -> str:
    """A layout as its name (``v0``, ``v1``) and blocks, or "unrecorded" for old files."""
    from mixgym.envs.features import LAYOUTS

    if facts.observation_layout is None:
        return "unrecorded"
    names = [name for name, blocks in LAYOUTS.items() if blocks == facts.observation_layout]
    blocks = ", ".join(facts.observation_layout)
    return f"{names[0]} ({blocks})" if names else f"[{blocks}]"


def _matching(saved: EnvFacts) -> str:
    """"; ids that match: ..." -- the registered ids whose K and observation layout are the policy's."""
    from mixgym.registration import matching_ids

    ids = matching_ids(saved.num_domains, saved.observation_layout)
    if ids:
        return f"; registered ids that match the policy: {', '.join(ids)}"
    return f"; make the env with the policy's K and observation=[{', '.join(saved.observation_layout or ())}]"


def load_agent(path: str | Path, env: gym.Env | None = None, trusted: bool = False) -> Agent:
    """Load any saved agent; with `env`, check that it fits and attach it.

    Loading runs no code from the file unless it is `trusted` (or signed by this
    installation): mixer agents are JSON; SB3 presets from elsewhere are rebuilt from their
    options and their tensors (`mixgym.agents.sb3_files`), which needs `env`.
    """
    resolved, meta = read_metadata(path)
    spec = agent_spec(meta["agent"])
    if env is not None:
        check_compatible(meta, env, resolved)
    return spec.load(resolved, meta, env, trusted)
