"""AC-ODM: ``acodm`` (DDPG as the paper describes it) and ``acodm-frozen-actor`` (its released policy).

Source: Dang et al., "AC-ODM: Actor-Critic Online Data Mixing" (arXiv 2505.23878), code
DANG-ai/AC-ODM at e95863e: ``acodm_config/ddpg_1B.yml``, ``megatron/data/agent.py`` and
``megatron/training.py``. Both agents run with AC-ODM's sampling: one micro-batch per domain
per optimizer step, the rest drawn from the weights -- 22 of 144 micro-batches
(`ACODM_FORCED_FRACTION`, see `mixgym.llm_backend.base.draw_domains`) -- which
`mixgym.agents.compare.env_for` sets as the backend's ``forced_fraction`` unless the caller
gives one (it cannot change a backend instance the caller built; pass ``forced_fraction`` to
it then).

acodm -- DDPG. Every option's source is in its ``help`` (`ACODMConfig`). Deviations, and why:
- Width: AC-ODM's actor and critic have 5 hidden layers of 1024 units (agent.py:106-158);
  the default here is 5 x 256, because a toy run of 100 decisions does not need 5M
  parameters and 2 CPU cores cannot train them quickly. ``net_width=1024`` restores it.
- LayerNorm: AC-ODM's hidden blocks are Linear + LayerNorm + ReLU. SB3's MLP builder takes
  only an activation class, so the block is Linear + `LayerNormReLU` (layer normalisation
  without the learned gain and bias, then ReLU): same normalisation, 2 x 256 fewer
  parameters per layer.
- Output: AC-ODM's actor ends in a softmax (agent.py:125-126); SB3's in tanh, and the env's
  "softmax" action map turns the bounded action into a mixture (``softmax(a / 0.5)`` with a
  5% floor). Warm-up actions are `ActionMap.inverse`'s: mean-zero logits inside the bounds,
  so behaviour cloning does not saturate the tanh.
- Reward: AC-ODM's critic outputs a K-vector for the K-vector reward ``mean_std_norm(s)``
  (agent.py:89-99, 157); SB3 critics are scalar, so the env's scalar alignment reward is
  used, by default ``m . mean_std_norm(s)`` (`mixgym.envs.rewards.AlignmentReward`).
- Learning rate: AC-ODM's optimiser (lr 1e-4, weight decay 0.1) is overridden by an
  annealed schedule from 1e-2 to 1e-3 (agent.py:221-248); here a constant 1e-3 (its floor
  and SB3's DDPG default) with AdamW's weight decay 0.1.
- Warm-up: AC-ODM regresses its critic on (1 + gamma) r during the warm-up
  (agent.py:481-485); here the critic starts learning after it, from the buffer.
- Exploration: AC-ODM subtracts U[0, 1e-3) from each domain's weight (agent.py:558), about
  1e-3 in action units under the softmax map; here Gaussian noise of sigma 1e-3.
``freeze_actor=True`` keeps this DDPG's tanh actor at its initialisation: an ablation of the
learned policy, but not AC-ODM's released actor, whose softmax head puts its mixtures about
half as far from uniform (total variation about 0.14 against 0.26 under the softmax map at
K=5; `benchmarks/frozen_actor_tv.py`); that one is ``acodm-frozen-actor``.

acodm-frozen-actor -- what the released code runs. Its actor's optimiser is never stepped:
the warm-up back-propagates the behaviour-cloning loss into the actor and steps the critic's
engine (agent.py:474-477), and so does every update (agent.py:538-540); the target actor is
a copy of it (agent.py:193, 544). So after the warm-up (834 of 41667 steps acting with ODM's
smoothed-mean mixer, ``ddpg_1B.yml:23``, ``training.py:1266-1276``) the data weights at every
step are a randomly initialised AC-ODM actor -- 5 x [Linear(1024), LayerNorm, ReLU], then
Linear(K) and a softmax (agent.py:106-135) -- applied to the state, minus U[0, 1e-3) noise,
renormalised (agent.py:546-561; training.py:1639). `ReleasedActor` is that network with
PyTorch's default initialisation (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
LayerNorm gain 1 and bias 0), drawn in numpy from the agent's seed. Its input is the env's
observation with the progress entry multiplied by AC-ODM's ``iter_coe`` 100 (agent.py:375,
``ddpg_1B.yml:38``); AC-ODM's state has no held-out-loss block and 9 weight matrices where
mixgym's observation has 3, and z-scores samples where mixgym gives their share. What decides
where its mixtures sit is the softmax head over LayerNorm'd features, which is kept: its
mixtures on toy observations lie at total variation 0.14 (K=5) and 0.15 (K=22) from uniform;
the released network, built in PyTorch, gives 0.15 and 0.16 on random AC-ODM states, and this
one 0.14 and 0.16 on the same states (`benchmarks/frozen_actor_tv.py`, 20 actors each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DDPG
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import MixerConfig, as_json, register_mixer
from mixgym.agents.odm import BanditMixer, smoothed_mean_mixer, warmup_decisions
from mixgym.agents.sb3_presets import (
    BehaviourWarmup,
    SB3Agent,
    WarmupConfig,
    check_sb3_memory,
    freeze_actor,
    one_update_per_decision,
    prior_mixture,
    register_sb3,
    sb3_arguments,
)
from mixgym.resources import check_memory
from mixgym.validation import integer, number

ACODM_FORCED_FRACTION = 22 / 144
"""AC-ODM's forced share: one micro-batch per domain (``domain_num`` 1, ``ddpg_1B.yml:18``;
``training.py:395-398``) of 144 per step (1152 sequences in micro-batches of 8,
``acodm_config/models/1B.yml:19-21``), with the Pile's 22 domains."""

ENV_OPTIONS = {"reward": "alignment", "forced_fraction": ACODM_FORCED_FRACTION, "observation": "v0"}
"""AC-ODM's set-up (`mixgym.agents.base.AgentSpec.env_options`); "v0" is its state (per-domain
loss features, weight norms of three matrices, progress: agent.py's)."""


class LayerNormReLU(nn.Module):
    """Layer normalisation over the features (no learned gain or bias), then ReLU.

    AC-ODM's hidden block is Linear + LayerNorm + ReLU; SB3 builds its MLPs from an
    activation class alone, so this is that activation.
    """

    def forward(self, x: th.Tensor) -> th.Tensor:
        return F.relu(F.layer_norm(x, x.shape[-1:]))


@dataclass(frozen=True)
class ACODMConfig(WarmupConfig):
    """Options of ``acodm`` (DDPG as in AC-ODM)."""

    net_depth: int = field(default=5, metadata={"help": "hidden layers (AC-ODM: 5, agent.py:106-158)"})
    net_width: int = field(default=256, metadata={"help": "units per hidden layer (AC-ODM: 1024; small for the toy)"})
    layer_norm: bool = field(default=True, metadata={"help": "Linear + LayerNorm + ReLU blocks (AC-ODM) or plain ReLU"})
    batch_size: int = field(
        default=256, metadata={"help": "replay batch (DeepSpeed train_batch_size 256, agent.py:197)"}
    )
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Adam(W) rate of actor and critic (AC-ODM's annealed schedule ends at 1e-3)"}
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (AC-ODM: the LM's 0.1)"})
    noise_sigma: float = field(
        default=1e-3, metadata={"help": "Gaussian action noise (AC-ODM: -U[0, 1e-3) per weight, agent.py:558)"}
    )
    odm_smoothing: float = field(
        default=0.5, metadata={"help": "the warm-up ODM mixer's smoothing (acdom_1B_seed42.yml:10: 0.5)"}
    )
    behaviour_cloning: bool = field(
        default=True, metadata={"help": "fit the actor to ODM's actions during the warm-up (AC-ODM's paper)"}
    )
    freeze_actor: bool = field(
        default=False,
        metadata={
            "help": "never update DDPG's tanh actor (an ablation; AC-ODM's released softmax actor is acodm-frozen-actor)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("batch_size", self.batch_size, 1)
        number("learning_rate", self.learning_rate, maximum=1.0, above=0.0)  # Adam moves each weight ~lr a step
        number("weight_decay", self.weight_decay, 0.0, 1.0 / self.learning_rate)  # AdamW scales weights by 1 - lr * wd
        number("noise_sigma", self.noise_sigma, 0.0)
        number("odm_smoothing", self.odm_smoothing, 0.0, below=1.0)


def _odm_warmup(config: ACODMConfig | FrozenActorConfig, facts: EnvFacts, name: str) -> BanditMixer:
    """AC-ODM's warm-up mixer: ODM's smoothed mean from the prior, updating from the first step
    (``warmup_steps=0``, training.py:1269-1276)."""
    return smoothed_mean_mixer(prior_mixture(config.prior, facts, name), config.odm_smoothing, warmup_decisions=0)


def _build_acodm(name: str, env: gym.Env, config: ACODMConfig) -> SB3Agent:
    facts = EnvFacts.of(env)
    check_sb3_memory(name, config, config.batch_size, facts)
    k = facts.num_domains
    wrapped = BehaviourWarmup(env, _odm_warmup(config, facts, name))
    noise = NormalActionNoise(np.zeros(k), np.full(k, config.noise_sigma)) if config.noise_sigma > 0 else None
    policy_kwargs = {
        "net_arch": [config.net_width] * config.net_depth,
        "activation_fn": LayerNormReLU if config.layer_norm else nn.ReLU,
        "optimizer_class": th.optim.AdamW,
        "optimizer_kwargs": {"weight_decay": config.weight_decay},
    }
    arguments = sb3_arguments(
        name,
        DDPG,
        config,
        **one_update_per_decision(config, config.learning_rate, config.batch_size),
        action_noise=noise,
        policy_kwargs=policy_kwargs,
    )
    model = DDPG("MlpPolicy", wrapped, **arguments)
    if config.freeze_actor:
        freeze_actor(model)
    return SB3Agent(name, config, model, facts, wrapped)


register_sb3(
    "acodm",
    "AC-ODM: DDPG with an ODM warm-up",
    ACODMConfig,
    _build_acodm,
    lambda config, facts: _odm_warmup(config, facts, "acodm"),
    ENV_OPTIONS,
)


class ReleasedActor:
    """A randomly initialised AC-ODM actor, in numpy: `depth` x [Linear(width), LayerNorm,
    ReLU], Linear(K), softmax (DANG-ai/AC-ODM ``megatron/data/agent.py:106-135``).

    Weights and biases are drawn as PyTorch initialises ``nn.Linear`` (uniform in
    ±1/sqrt(fan_in)); LayerNorm has gain 1 and bias 0 (its initialisation) and eps 1e-5. The
    same seed and shapes give the same network on any platform, so a saved agent stores only
    its seed.
    """

    def __init__(self, input_dim: int, num_domains: int, width: int, depth: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        sizes = [input_dim] + [width] * depth + [num_domains]
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / np.sqrt(fan_in)
            weight = rng.uniform(-bound, bound, (fan_in, fan_out))
            self.layers.append((weight, rng.uniform(-bound, bound, fan_out)))

    def __call__(self, state: np.ndarray) -> np.ndarray:
        """The actor's mixture (softmax output) for one state vector."""
        h = np.asarray(state, dtype=np.float64)
        for weight, bias in self.layers[:-1]:
            h = h @ weight + bias
            h = np.maximum((h - h.mean()) / np.sqrt(h.var() + 1e-5), 0.0)
        weight, bias = self.layers[-1]
        logits = h @ weight + bias
        p = np.exp(logits - logits.max())
        return p / p.sum()


class ReleasedActorMixer:
    """AC-ODM's released policy: ODM's smoothed mean for the warm-up decisions of each run,
    then `ReleasedActor` on the observation, minus U[0, noise) per domain, renormalised
    (negative weights, possible only for a domain under `noise`, are set to 0)."""

    def __init__(
        self,
        actor: ReleasedActor,
        network_seed: int,
        warmup: BanditMixer,
        warmup_decisions: int,
        progress_index: int,
        progress_scale: float,
        noise: float,
        rng: np.random.Generator,
    ) -> None:
        self.actor = actor
        self.network_seed = network_seed
        self.warmup = warmup
        self.warmup_decisions = warmup_decisions
        self.progress_index = progress_index
        self.progress_scale = progress_scale
        self.noise = noise
        self.rng = rng
        self.decision = 0
        self.last = warmup.mixture()

    def reset(self, info: dict[str, Any]) -> None:
        self.warmup.reset(info)
        self.decision = 0

    def observe(self, info: dict[str, Any]) -> None:
        self.decision += 1
        if self.decision <= self.warmup_decisions:
            self.warmup.observe(info)

    def act(self, observation: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The mixture for `observation`; `deterministic`: the actor's, without the noise (and
        drawing nothing from the generator, so it leaves the run's noise stream as it was)."""
        if self.decision < self.warmup_decisions:
            self.last = self.warmup.mixture()
            return self.last.copy()
        state = np.array(observation, dtype=np.float64)
        state[self.progress_index] *= self.progress_scale
        noise = 0.0 if deterministic else self.rng.uniform(0.0, self.noise, len(self.last))
        weights = np.maximum(self.actor(state) - noise, 0.0)
        self.last = weights / weights.sum()
        return self.last.copy()

    def mixture(self) -> np.ndarray:
        """The mixture of the last `act` (the warm-up's before any)."""
        return self.last.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "network_seed": self.network_seed,
            "progress_index": self.progress_index,
            "decision": self.decision,
            "warmup": self.warmup.state_dict(),
            "rng": self.rng.bit_generator.state,
            "last": as_json(self.last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["network_seed"]) != self.network_seed or int(state["progress_index"]) != self.progress_index:
            raise ValueError("saved state is of another actor network")
        self.decision = int(state["decision"])
        self.warmup.load_state_dict(state["warmup"])
        self.rng.bit_generator.state = state["rng"]
        self.last = np.asarray(state["last"], dtype=np.float64)


@dataclass(frozen=True)
class FrozenActorConfig(MixerConfig):
    """Options of ``acodm-frozen-actor`` (AC-ODM's released, never-updated actor)."""

    net_width: int = field(default=1024, metadata={"help": "units per hidden layer (P_hidden_dim, ddpg_1B.yml:16)"})
    net_depth: int = field(default=5, metadata={"help": "hidden layers (agent.py:108-124)"})
    progress_scale: float = field(
        default=100.0, metadata={"help": "factor on the progress feature (iter_coe, ddpg_1B.yml:38; agent.py:375)"}
    )
    noise: float = field(default=1e-3, metadata={"help": "U[0, noise) subtracted per weight (agent.py:558)"})
    warmup_fraction: float = field(
        default=0.02, metadata={"help": "share of each run acting with ODM's mixer (834 of 41667 steps)"}
    )
    prior: str = field(
        default="natural", metadata={"help": "the warm-up mixer's start: 'natural' (the Pile's weights) or 'uniform'"}
    )
    odm_smoothing: float = field(
        default=0.5, metadata={"help": "the warm-up ODM mixer's smoothing (acdom_1B_seed42.yml:10: 0.5)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("net_width", "net_depth"):
            integer(name, getattr(self, name), 1)
        number("progress_scale", self.progress_scale, 0.0)
        number("noise", self.noise, 0.0, below=1.0)
        number("warmup_fraction", self.warmup_fraction, 0.0, below=1.0)
        if self.prior not in ("natural", "uniform"):
            raise ValueError(f"prior must be 'natural' or 'uniform', got {self.prior!r}")
        number("odm_smoothing", self.odm_smoothing, 0.0, below=1.0)


def _released_actor(config: FrozenActorConfig, facts: EnvFacts, network_seed: int, progress_index: int) -> ReleasedActorMixer:
    width, depth, inputs = config.net_width, config.net_depth, facts.observation_shape[0]
    weights = inputs * width + (depth - 1) * width * width + width * facts.num_domains
    check_memory(16 * weights, f"agent 'acodm-frozen-actor' (net_width={width}, net_depth={depth})", "use a smaller network")
    actor = ReleasedActor(facts.observation_shape[0], facts.num_domains, config.net_width, config.net_depth, network_seed)
    return ReleasedActorMixer(
        actor,
        network_seed,
        _odm_warmup(config, facts, "acodm-frozen-actor"),
        warmup_decisions(config.warmup_fraction, facts.num_decisions),
        progress_index,
        config.progress_scale,
        config.noise,
        np.random.default_rng([network_seed, 1]),
    )


def _build_frozen(env: gym.Env, config: FrozenActorConfig, facts: EnvFacts) -> ReleasedActorMixer:
    seed = config.seed if config.seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    progress = env.unwrapped.layout.slices()["progress"].start  # type: ignore[attr-defined]
    return _released_actor(config, facts, seed, progress)


def _restore_frozen(config: FrozenActorConfig, facts: EnvFacts, state: dict[str, Any]) -> ReleasedActorMixer:
    mixer = _released_actor(config, facts, int(state["network_seed"]), int(state["progress_index"]))
    mixer.load_state_dict(state)
    return mixer


register_mixer(
    "acodm-frozen-actor",
    "AC-ODM's released policy: a random softmax actor after an ODM warm-up",
    FrozenActorConfig,
    _build_frozen,
    _restore_frozen,
    ENV_OPTIONS,
)
