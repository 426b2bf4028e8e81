"""Static baselines: uniform, natural, tempered, fixed, random (Dirichlet each decision), oracle.

Every online mixing method must beat these to matter. ``natural`` samples in proportion to
the domains' sizes (the Pile's default weights are of this kind); ``tempered`` samples in
proportion to size^tau, between natural (tau = 1) and uniform (tau -> 0), the temperature
sampling of multilingual pretraining (mT5's alpha = 0.3, XLM's 0.5-0.7); ``oracle`` is the toy
backend's best static mixture, found by search (`mixgym.llm_backend.oracle.oracle_mixture`),
the yardstick of regret. ``random`` draws a fresh Dirichlet mixture every decision, the
floor any policy should clear. All drive an env with ``action_map="simplex"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import MixerConfig, as_json, register_mixer
from mixgym.llm_backend.base import SPLITS, normalised_mixture
from mixgym.validation import integer, number
from mixgym.llm_backend.oracle import SEARCH_SEEDS, oracle_mixture
from mixgym.llm_backend.toy import ToyBackend


class StaticMixer:
    """The same mixture at every decision."""

    def __init__(self, mixture: np.ndarray) -> None:
        self._mixture = np.asarray(mixture, dtype=np.float64)

    def reset(self, info: dict[str, Any]) -> None:
        """A static mixture ignores what the run reports."""

    def observe(self, info: dict[str, Any]) -> None:
        """A static mixture ignores what the run reports."""

    def mixture(self) -> np.ndarray:
        return self._mixture.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"mixture": as_json(self._mixture)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._mixture = normalised_mixture(state["mixture"], len(self._mixture), "saved mixture")


def restore_static(config: MixerConfig, facts: EnvFacts, state: dict[str, Any]) -> StaticMixer:
    """A saved static mixture (any agent that acts with one)."""
    return StaticMixer(normalised_mixture(state["mixture"], facts.num_domains, "saved mixture"))


@dataclass(frozen=True)
class FixedConfig(MixerConfig):
    """Options of the ``fixed`` agent."""

    mixture: tuple[float, ...] = field(
        default=(),
        metadata={"help": "the mixture, K non-negative weights (divided by their sum); required", "per_domain": True},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for weight in self.mixture:
            number("mixture weight", weight, 0.0)


@dataclass(frozen=True)
class TemperedConfig(MixerConfig):
    """Options of the ``tempered`` agent."""

    tau: float = field(
        default=0.5, metadata={"help": "temperature: mixture proportional to size^tau (1: natural, towards 0: uniform)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        number("tau (1 is natural, towards 0 uniform)", self.tau, above=0.0)


def tempered_mixture(natural: np.ndarray, tau: float) -> np.ndarray:
    """``natural ** tau``, normalised: the natural mixture flattened (tau < 1) or sharpened.

    Computed in log space, so a large tau gives the largest domain(s), not inf / inf."""
    logs = np.log(np.asarray(natural, dtype=np.float64))
    weights = np.exp(tau * (logs - logs.max()))
    return weights / weights.sum()


@dataclass(frozen=True)
class RandomConfig(MixerConfig):
    """Options of the ``random`` agent."""

    concentration: float = field(
        default=1.0, metadata={"help": "Dirichlet concentration of every domain (1: uniform over the simplex)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        number("concentration", self.concentration, above=0.0)


@dataclass(frozen=True)
class OracleConfig(MixerConfig):
    """Options of the ``oracle`` agent: the arguments of the toy's oracle search."""

    search_seeds: tuple[int, ...] = field(
        default=SEARCH_SEEDS, metadata={"help": "run seeds the search averages over, at least 2 (oracle_mixture's default: 0-29)"}
    )
    n_random: int = field(default=8, metadata={"help": "random Dirichlet starts of the search (besides the structured ones)"})
    rounds: int = field(default=8, metadata={"help": "coordinate-search rounds"})
    search_split: str = field(
        default="eval",
        metadata={"help": "rows the search scores candidates on: 'eval' (the rows that score runs) or 'validation' (disjoint ones)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(set(self.search_seeds)) < 2:
            raise ValueError(f"search_seeds must name at least 2 distinct run seeds, got {self.search_seeds!r}")
        for seed in self.search_seeds:
            integer("search_seeds entry", seed, 0, 2**32 - 1)
        integer("n_random", self.n_random, 0, 100_000)  # each start is one evaluation of len(search_seeds) runs
        integer("rounds", self.rounds, 0, 10_000)
        if not isinstance(self.search_split, str) or self.search_split not in SPLITS:
            raise ValueError(f"search_split must be one of {', '.join(SPLITS)}, got {self.search_split!r}")


class DirichletMixer:
    """A fresh Dirichlet(concentration) mixture at every decision, from a seeded generator."""

    def __init__(self, num_domains: int, concentration: float, seed: int | None) -> None:
        self._alpha = np.full(num_domains, concentration)
        self._rng = np.random.default_rng(seed)
        self._mixture = self._rng.dirichlet(self._alpha)

    def reset(self, info: dict[str, Any]) -> None:
        self._mixture = self._rng.dirichlet(self._alpha)

    def observe(self, info: dict[str, Any]) -> None:
        self._mixture = self._rng.dirichlet(self._alpha)

    def mixture(self) -> np.ndarray:
        return self._mixture.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"mixture": as_json(self._mixture), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._mixture = normalised_mixture(state["mixture"], len(self._alpha), "saved mixture")
        self._rng.bit_generator.state = state["rng"]


def _restore_random(config: RandomConfig, facts: EnvFacts, state: dict[str, Any]) -> DirichletMixer:
    mixer = DirichletMixer(facts.num_domains, config.concentration, config.seed)
    mixer.load_state_dict(state)
    return mixer


def _uniform(env: gym.Env, config: MixerConfig, facts: EnvFacts) -> StaticMixer:
    return StaticMixer(np.full(facts.num_domains, 1.0 / facts.num_domains))


def _natural(env: gym.Env, config: MixerConfig, facts: EnvFacts) -> StaticMixer:
    if facts.natural is None:
        raise ValueError("agent 'natural' needs the backend's domain sizes, and this backend reports none")
    return StaticMixer(np.array(facts.natural))


def _tempered(env: gym.Env, config: TemperedConfig, facts: EnvFacts) -> StaticMixer:
    return StaticMixer(tempered_mixture(_natural(env, config, facts).mixture(), config.tau))


def _fixed(env: gym.Env, config: FixedConfig, facts: EnvFacts) -> StaticMixer:
    return StaticMixer(normalised_mixture(config.mixture, facts.num_domains, "agent 'fixed': option mixture"))


def _random(env: gym.Env, config: RandomConfig, facts: EnvFacts) -> DirichletMixer:
    return DirichletMixer(facts.num_domains, config.concentration, config.seed)


def _oracle(env: gym.Env, config: OracleConfig, facts: EnvFacts) -> StaticMixer:
    backend = env.unwrapped.backend  # type: ignore[attr-defined]
    if not isinstance(backend, ToyBackend):
        raise ValueError(
            "agent 'oracle' needs the toy backend (its best static mixture is found by search), "
            f"got {type(backend).__name__}"
        )
    result = oracle_mixture(
        backend.config, seeds=config.search_seeds, n_random=config.n_random, rounds=config.rounds, split=config.search_split
    )
    return StaticMixer(result.mixture)


register_mixer("uniform", "the uniform mixture", MixerConfig, _uniform, restore_static)
register_mixer("natural", "proportional to the backend's domain sizes", MixerConfig, _natural, restore_static)
register_mixer("tempered", "proportional to domain size^tau (option tau, default 0.5)", TemperedConfig, _tempered, restore_static)
register_mixer("fixed", "a given mixture (option mixture=[...])", FixedConfig, _fixed, restore_static)
register_mixer("random", "a fresh Dirichlet mixture every decision", RandomConfig, _random, _restore_random)
register_mixer("oracle", "the toy backend's best static mixture, by search", OracleConfig, _oracle, restore_static)
