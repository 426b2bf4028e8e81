"""ODM's two online mixers, ``odm`` (smoothed mean) and ``exp3``: domains are bandit arms.

Source: Albalak et al., "Efficient Online Data Mixing for Language Model Pre-Training"
(arXiv 2312.02406), code alon-albalak/online-data-mixing, file
`megatron/data/data_sampling_utils.py` (commit edbfdad). The arm's reward is the domain's mean
training loss in the batch: a domain the model still finds hard is sampled more.

When it updates, and t. ODM updates after every optimizer step (``update_frequency`` 1) with
that step's per-domain mean losses, ``t`` = the optimizer steps taken since the start of the
run, warm-up included (``megatron/training.py``: ``iteration += 1`` at line 1242, then
``group_update(iteration, ...)`` at line 1267; the warm-up loop at lines 1047-1056 counts the
same ``iteration``). Here the mixture is fixed for a decision of several steps, so the update
runs once per decision, with the decision's per-domain mean losses, and ``t`` is the
backend's optimizer step at the end of the decision (``info["step"]``), as in ODM -- not the
number of decisions, which would keep the floor far higher (at K=5 and 10 steps a decision,
eps after 100 decisions is 0.057 counted in decisions, 0.018 in steps: floors of 28% and 9%).

Exploration rate (both mixers, `exploration_rate`): eps_t = min(1/K, sqrt(ln K / (K t))),
starting at eps_0 = 1/K. While eps_t = 1/K (t <= K ln K: eight optimizer steps at K=5) the
mixture is exactly uniform; each domain keeps at least eps_t.

``odm`` -- `SmoothedMeanWeightUpdater.group_update` (lines 501-528), the method the README
names as the paper's: for each domain d in the batch,
``R_d <- a R_d + (1 - a) exp(L_d)`` (no importance weight; R starts at 0), then
``pi = (1 - K eps_t) R / sum(R) + eps_t`` -- linear normalisation: the code multiplies R by
eps_{t-1} in numerator and denominator, which cancels, so only eps_t matters here.
``exp3`` -- `Exp3WeightUpdater.group_update` (lines 421-453): for each domain d in the batch,
``R_d <- R_d + s L_d / pi_d`` (importance-weighted by the mixture that drew the batch; s is
the code's "reward / 10"), then ``pi = (1 - K eps_t) softmax(eps_{t-1} R) + eps_t``: the
exponent uses the previous rate eps_{t-1}, the floor the new one (``prev_eps`` vs ``eps``).

Both compute in log space (the code exponentiates directly: ``exp(L)`` and ``exp(eps R)``
overflow for large losses or long runs); `odm` keeps log R, `exp3` takes a log-sum-exp.
Both start from the natural mixture (the Pile's weights in ODM) and keep it, without
updates, for a warm-up of 2% of the run's decisions (ODM's scripts: 2,000 of 100,000 steps,
`scripts/train_1B_ema_0.5smoothing.sh`, `alon_configs/models/1B.yml`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import MixerConfig, as_json, register_mixer
from mixgym.validation import number


def exploration_rate(num_domains: int, iteration: int) -> float:
    """ODM's eps_t = min(1/K, sqrt(ln K / (K t))) for round t >= 1."""
    if iteration < 1:
        raise ValueError(f"iteration (bandit round) must be >= 1, got {iteration!r}")
    return min(1.0 / num_domains, math.sqrt(math.log(num_domains) / (num_domains * iteration)))


@dataclass(frozen=True)
class BanditState:
    """A bandit mixer's state between rounds.

    Attributes:
        estimate: per-domain reward estimate: log R for `odm` (-inf while a domain's R is
            0), the cumulative importance-weighted reward R for `exp3`.
        mixture: the current mixture pi.
        eps: the exploration rate of the last update (eps_0 = 1/K).
    """

    estimate: np.ndarray
    mixture: np.ndarray
    eps: float


def _logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + math.log(float(np.exp(x - top).sum()))


def smoothed_mean_update(
    state: BanditState, losses: np.ndarray, present: np.ndarray, iteration: int, smoothing: float
) -> BanditState:
    """One round of ODM's smoothed-mean mixer (see the module docstring), in log space.

    Args:
        state: the state before the round.
        losses: per-domain mean training loss this round, shape (K,).
        present: which domains were in the batch; the others keep their estimate.
        iteration: the round t >= 1.
        smoothing: a in [0, 1), the weight of the old estimate.
    """
    k = len(losses)
    eps = exploration_rate(k, iteration)
    with np.errstate(divide="ignore"):  # log 0 = -inf is the estimate of a domain not seen yet
        log_old = math.log(smoothing) + state.estimate if smoothing > 0 else np.full(k, -np.inf)
    estimate = np.where(present, np.logaddexp(log_old, math.log1p(-smoothing) + losses), state.estimate)
    share = np.exp(estimate - _logsumexp(estimate))
    return BanditState(estimate, (1 - k * eps) * share + eps, eps)


def exp3_update(
    state: BanditState, losses: np.ndarray, present: np.ndarray, iteration: int, reward_scale: float
) -> BanditState:
    """One round of ODM's EXP3 mixer (see the module docstring), softmax in log space.

    Args:
        state: the state before the round (its mixture drew this round's batch).
        losses: per-domain mean training loss this round, shape (K,).
        present: which domains were in the batch; only they gain reward.
        iteration: the round t >= 1.
        reward_scale: s, multiplies the loss (ODM: 1/10).
    """
    k = len(losses)
    eps = exploration_rate(k, iteration)
    gain = np.where(present, reward_scale * losses / state.mixture, 0.0)
    estimate = state.estimate + gain
    logits = state.eps * estimate
    share = np.exp(logits - _logsumexp(logits))
    return BanditState(estimate, (1 - k * eps) * share + eps, eps)


Update = Callable[[BanditState, np.ndarray, np.ndarray, int], BanditState]


class BanditMixer:
    """Runs an update function once per decision after a warm-up on the initial mixture,
    with t = the backend's optimizer step (``info["step"]``)."""

    def __init__(self, update: Update, initial: BanditState, warmup_decisions: int) -> None:
        self._update = update
        self._initial = initial
        self.warmup_decisions = warmup_decisions
        self.state = initial
        self.decision = 0

    def reset(self, info: dict[str, Any]) -> None:
        self.state = self._initial
        self.decision = 0

    def observe(self, info: dict[str, Any]) -> None:
        self.decision += 1
        if self.decision > self.warmup_decisions:
            losses = np.asarray(info["train_loss"], dtype=np.float64)
            present = np.asarray(info["samples"]) > 0
            self.state = self._update(self.state, losses, present, int(info["step"]))

    def mixture(self) -> np.ndarray:
        return self.state.mixture.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "estimate": as_json(self.state.estimate),
            "mixture": as_json(self.state.mixture),
            "eps": self.state.eps,
            "decision": self.decision,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = len(self._initial.mixture)
        estimate = np.asarray(state["estimate"], dtype=np.float64)
        mixture = np.asarray(state["mixture"], dtype=np.float64)
        if estimate.shape != (k,) or mixture.shape != (k,):
            raise ValueError(f"saved bandit state is not for K={k} domains")
        self.state = BanditState(estimate, mixture, float(state["eps"]))
        self.decision = int(state["decision"])


@dataclass(frozen=True)
class BanditConfig(MixerConfig):
    """Options shared by `odm` and `exp3`."""

    warmup_fraction: float = field(
        default=0.02,
        metadata={
            "help": "share of the run's decisions on the initial mixture before updates (ODM: 2,000 of 100,000 steps)"
        },
    )
    initial: str = field(
        default="natural", metadata={"help": "initial mixture: 'natural' (ODM: the Pile's weights) or 'uniform'"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        number("warmup_fraction", self.warmup_fraction, 0.0, below=1.0)
        if self.initial not in ("natural", "uniform"):
            raise ValueError(f"initial must be 'natural' or 'uniform', got {self.initial!r}")


@dataclass(frozen=True)
class OdmConfig(BanditConfig):
    """Options of ``odm``."""

    smoothing: float = field(
        default=0.5,
        metadata={"help": "a, weight of the old estimate (ODM's 1B scripts: 0.5; its constructor default: 0.9)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        number("smoothing", self.smoothing, 0.0, below=1.0)


@dataclass(frozen=True)
class Exp3Config(BanditConfig):
    """Options of ``exp3``."""

    reward_scale: float = field(
        default=0.1,
        metadata={"help": "s, the loss's scale as a reward (ODM divides by 10 'so that it doesn't explode')"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        number("reward_scale", self.reward_scale, above=0.0)


def initial_mixture(config: BanditConfig, facts: EnvFacts, agent: str) -> np.ndarray:
    """The mixture a bandit starts from (and keeps during its warm-up)."""
    if config.initial == "uniform":
        return np.full(facts.num_domains, 1.0 / facts.num_domains)
    if facts.natural is None:
        raise ValueError(f"agent {agent!r}: the backend reports no domain sizes; use initial='uniform'")
    return np.array(facts.natural)


def smoothed_mean_mixer(initial: np.ndarray, smoothing: float, warmup_decisions: int) -> BanditMixer:
    """ODM's smoothed-mean mixer starting from `initial` (R = 0, eps_0 = 1/K)."""
    k = len(initial)
    start = BanditState(np.full(k, -np.inf), np.asarray(initial, dtype=np.float64), 1.0 / k)
    return BanditMixer(partial(smoothed_mean_update, smoothing=smoothing), start, warmup_decisions)


def exp3_mixer(initial: np.ndarray, reward_scale: float, warmup_decisions: int) -> BanditMixer:
    """ODM's EXP3 mixer starting from `initial` (R = 0, eps_0 = 1/K)."""
    k = len(initial)
    start = BanditState(np.zeros(k), np.asarray(initial, dtype=np.float64), 1.0 / k)
    return BanditMixer(partial(exp3_update, reward_scale=reward_scale), start, warmup_decisions)


def warmup_decisions(fraction: float, decisions: int) -> int:
    """The first `fraction` of a run's `decisions`, rounded."""
    return int(round(fraction * decisions))


def _build_odm(env: gym.Env | None, config: OdmConfig, facts: EnvFacts) -> BanditMixer:
    initial = initial_mixture(config, facts, "odm")
    return smoothed_mean_mixer(initial, config.smoothing, warmup_decisions(config.warmup_fraction, facts.num_decisions))


def _build_exp3(env: gym.Env | None, config: Exp3Config, facts: EnvFacts) -> BanditMixer:
    initial = initial_mixture(config, facts, "exp3")
    return exp3_mixer(initial, config.reward_scale, warmup_decisions(config.warmup_fraction, facts.num_decisions))


def _restorer(build: Callable[[gym.Env | None, Any, EnvFacts], BanditMixer]) -> Callable[..., BanditMixer]:
    def restore(config: BanditConfig, facts: EnvFacts, state: dict[str, Any]) -> BanditMixer:
        mixer = build(None, config, facts)
        mixer.load_state_dict(state)
        return mixer

    return restore


register_mixer("odm", "ODM's smoothed-mean bandit (the paper's method)", OdmConfig, _build_odm, _restorer(_build_odm))
register_mixer("exp3", "ODM's EXP3 bandit", Exp3Config, _build_exp3, _restorer(_build_exp3))
