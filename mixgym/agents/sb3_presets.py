"""Stock stable-baselines3 algorithms configured as the papers ran them: acodm, hds, td3, ppo.

Each preset builds an unmodified SB3 model (`SB3Agent.model`: DDPG, SAC, TD3 or PPO) and
adds only what the paper's loop has around its learner, through SB3's extension points:

- a behaviour warm-up (`BehaviourWarmup`, a Gymnasium wrapper): for the first 2% of the
  decisions ``learn`` is asked for, the environment acts with a behaviour mixer (AC-ODM: ODM's
  smoothed-mean bandit; HDS: a fixed prior mixture) instead of the agent, and says so in
  ``info["behaviour_action"]`` (the action, via `ActionMap.inverse`, that gives the mixer's
  mixture); SB3's ``learning_starts`` is set to the same count, so no gradient step is taken
  before the warm-up ends;
- a replay buffer (`BehaviourReplayBuffer`, SB3's ``replay_buffer_class``) that stores that
  executed action rather than the one SB3 sampled;
- for acodm, optionally, behaviour cloning of the actor to the warm-up actions
  (`BehaviourCloning`, an SB3 callback), as AC-ODM's paper intends.
After the warm-up, one gradient step per decision (``train_freq=1, gradient_steps=1``).

acodm -- DDPG as in AC-ODM (Dang et al., arXiv 2505.23878; DANG-ai/AC-ODM at e95863e,
``acodm_config/ddpg_1B.yml`` and ``megatron/data/agent.py``). Every option's source is in
its ``help`` (`ACODMConfig`). Deviations, and why:
- Width: AC-ODM's actor and critic have 5 hidden layers of 1024 units (agent.py:106-158);
  the default here is 5 x 256, because a toy run of 100 decisions does not need 5M
  parameters and 2 CPU cores cannot train them quickly. ``net_width=1024`` restores it.
- LayerNorm: AC-ODM's hidden blocks are Linear + LayerNorm + ReLU. SB3's MLP builder takes
  only an activation class, so the block is Linear + `LayerNormReLU` (layer normalisation
  without the learned gain and bias, then ReLU): same normalisation, 2 x 256 fewer
  parameters per layer.
- Output: AC-ODM's actor ends in a softmax; SB3's in tanh, and the env's "softmax" action
  map turns the bounded action into a mixture (``softmax(a / 0.5)`` with a 5% floor).
- Reward: AC-ODM's critic outputs a K-vector for a K-vector reward; SB3 critics are
  scalar, so the env's scalar alignment reward (``m . s``) is used.
- Learning rate: AC-ODM's optimiser (lr 1e-4, weight decay 0.1) is overridden by an
  annealed schedule from 1e-2 to 1e-3 (agent.py:221-248); here a constant 1e-3 (its floor
  and SB3's DDPG default) with AdamW's weight decay 0.1.
- Warm-up: AC-ODM regresses its critic on (1 + gamma) r during the warm-up
  (agent.py:481-485); here the critic starts learning after it, from the buffer.
- Exploration: AC-ODM subtracts U[0, 1e-3) from each domain's weight (agent.py:558), about
  1e-3 in action units under the softmax map; here Gaussian noise of sigma 1e-3.

acodm-frozen-actor -- the same, with the actor never updated (its parameters have
``requires_grad`` off, no behaviour cloning): in the released AC-ODM code the actor's
optimiser is never stepped (only ``model_engine_online_Q.step()`` exists, agent.py:477,
485, 535, 540), so its published policy may be its random initialisation. Comparing the
two tells whether the learned policy matters.

hds -- SAC as in the Holistic Data Scheduler (DANG-ai/LLM-Training-Holistic-Data-Schedule
at 4264a65, ``megatron/data/agent.py``): see `HDSConfig`. HDS's networks (per-domain
transformer encoders, agent.py:173-325) do not run as shipped (the constructor's arguments
do not match, agent.py:348-353); SB3's MLP (2 x 256) stands in. Its warm-up acts with the
static initial weights (HDS never updates its warm-up mixer).

td3, ppo -- SB3's defaults, for benchmarking.
"""

from __future__ import annotations

import inspect
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from mixgym.agents.base import (
    AgentSpec,
    EnvFacts,
    load_agent,
    make_agent,
    make_config,
    metadata,
    register,
    write_metadata,
    zip_path,
)
from mixgym.agents.mixer import Mixer
from mixgym.agents.odm import smoothed_mean_mixer, warmup_decisions
from mixgym.agents.rollouts import (
    ResumableRolloutBuffer,
    RolloutTracker,
    full_rollout_length,
    restore_rollout,
    rollout_state,
    room_after_step,
)
from mixgym.agents.sb3_files import json_clean, load_weights, sign_zip, signed_here
from mixgym.agents.static import StaticMixer
from mixgym.checkpoint import to_bytes
from mixgym.resources import check_memory
from mixgym.envs.action_maps import ACTION_MAPS
from mixgym.trust import UntrustedFile
from mixgym.validation import check_field_types, integer, number

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"DDPG": DDPG, "SAC": SAC, "TD3": TD3, "PPO": PPO}

PAPER_REWARDS: dict[str, str] = {"acodm": "alignment", "acodm-frozen-actor": "alignment", "hds": "holistic"}
"""The env reward each paper trains its agent with (AC-ODM: gradient alignment; HDS: holistic)."""


class LayerNormReLU(nn.Module):
    """Layer normalisation over the features (no learned gain or bias), then ReLU.

    AC-ODM's hidden block is Linear + LayerNorm + ReLU; SB3 builds its MLPs from an
    activation class alone, so this is that activation.
    """

    def forward(self, x: th.Tensor) -> th.Tensor:
        return F.relu(F.layer_norm(x, x.shape[-1:]))


class BehaviourWarmup(gym.Wrapper):
    """For the next `remaining` decisions, act with `mixer` instead of the agent.

    The executed action -- the one `ActionMap.inverse` gives for the mixer's mixture -- goes
    to ``info["behaviour_action"]``; `BehaviourReplayBuffer` stores it. After the warm-up
    the wrapper passes actions through. The mixer follows runs: it is reset with the env.
    """

    def __init__(self, env: gym.Env, mixer: Mixer) -> None:
        super().__init__(env)
        self.mixer = mixer
        self.remaining = 0

    def start(self, decisions: int) -> None:
        """Act with the mixer for the next `decisions` decisions."""
        self.remaining = int(decisions)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.mixer.reset(info)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.remaining <= 0:
            return self.env.step(action)
        self.remaining -= 1
        behaviour = self.env.unwrapped.action_mapper.inverse(self.mixer.mixture())  # type: ignore[attr-defined]
        obs, reward, terminated, truncated, info = self.env.step(behaviour)
        self.mixer.observe(info)
        return obs, reward, terminated, truncated, {**info, "behaviour_action": behaviour}


class BehaviourReplayBuffer(ReplayBuffer):
    """SB3's replay buffer, storing ``info["behaviour_action"]`` where the env reports one.

    SB3 stores the action it sampled; during a behaviour warm-up the env executed another,
    and the critic must learn the value of what was done.
    """

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        executed = [info.get("behaviour_action") for info in infos]
        if any(a is not None for a in executed):
            action = np.array(action, copy=True)
            low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
            for i, a in enumerate(executed):
                if a is not None:
                    action[i] = 2.0 * (np.asarray(a) - low) / (high - low) - 1.0  # SB3 stores actions in [-1, 1]
        super().add(obs, next_obs, action, reward, done, infos)


class BehaviourCloning(BaseCallback):
    """During the warm-up, one step of the actor towards the behaviour actions per decision.

    AC-ODM's warm-up fits the actor to ODM's weights with an MSE loss (agent.py:474-475; the
    released code computes the loss but never steps the actor). Here: MSE between the actor's
    action and the stored (behaviour) action on a replay batch, with the actor's optimiser.
    """

    def _on_step(self) -> bool:
        model = self.model
        buffer = model.replay_buffer  # type: ignore[attr-defined]
        if "behaviour_action" not in self.locals["infos"][0] or buffer.size() == 0:
            return True
        batch = buffer.sample(model.batch_size)  # type: ignore[attr-defined]
        actor = model.actor  # type: ignore[attr-defined]
        loss = F.mse_loss(actor(batch.observations), batch.actions)
        actor.optimizer.zero_grad()
        loss.backward()
        actor.optimizer.step()
        self.logger.record("warmup/behaviour_cloning_loss", loss.item())
        return True


@dataclass(frozen=True)
class SB3Config:
    """Options every SB3 preset has."""

    seed: int | None = field(
        default=None, metadata={"help": "seed of SB3 (networks, noise) and of the env's first run"}
    )
    verbose: int = field(default=0, metadata={"help": "SB3 verbosity"})
    tensorboard_log: str | None = field(default=None, metadata={"help": "TensorBoard folder for SB3's logger"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    sb3_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "further arguments of the SB3 constructor, given verbatim"}
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.seed is not None:  # a numpy integer becomes a Python one: Gymnasium takes no other
            object.__setattr__(self, "seed", integer("seed", self.seed, 0, 2**32 - 1))
        integer("verbose", self.verbose, 0, 2)
        try:
            kind = "auto" if self.device == "auto" else th.device(self.device).type
        except RuntimeError:
            kind = None
        if kind not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        bad = [key for key in self.sb3_kwargs if not isinstance(key, str)]
        if bad:
            raise TypeError(f"sb3_kwargs names SB3 arguments by string, got {bad}")


@dataclass(frozen=True)
class WarmupConfig(SB3Config):
    """Options of the presets with a behaviour warm-up (acodm, hds)."""

    net_width: int = field(default=256, metadata={"help": "units per hidden layer"})
    net_depth: int = field(default=2, metadata={"help": "hidden layers"})
    gamma: float = field(default=0.95, metadata={"help": "discount (ddpg_1B.yml:13; HDS agent.py)"})
    tau: float = field(default=0.001, metadata={"help": "soft target update rate (ddpg_1B.yml:14; HDS agent.py)"})
    buffer_size: int = field(default=10_000, metadata={"help": "replay buffer (AC-ODM/HDS pool_size 10000)"})
    warmup_fraction: float = field(
        default=0.02,
        metadata={"help": "share of learn()'s decisions acting with the behaviour mixer (834 of 41667 iterations)"},
    )
    prior: str = field(
        default="natural",
        metadata={"help": "behaviour's starting mixture: 'natural' (the corpus' proportions) or 'uniform'"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("net_width", "net_depth", "buffer_size"):
            integer(name, getattr(self, name), 1)
        number("gamma", self.gamma, 0.0, 1.0)
        number("tau", self.tau, 0.0, 1.0, above=0.0)
        number("warmup_fraction", self.warmup_fraction, 0.0, below=1.0)
        if self.prior not in ("natural", "uniform"):
            raise ValueError(f"prior must be 'natural' or 'uniform', got {self.prior!r}")


@dataclass(frozen=True)
class ACODMConfig(WarmupConfig):
    """Options of ``acodm`` and ``acodm-frozen-actor`` (DDPG as in AC-ODM)."""

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
        default=0.5, metadata={"help": "the warm-up ODM mixer's smoothing (AC-ODM's run config: 0.5)"}
    )
    behaviour_cloning: bool = field(
        default=True, metadata={"help": "fit the actor to ODM's actions during the warm-up (AC-ODM's paper)"}
    )
    freeze_actor: bool = field(
        default=False, metadata={"help": "never update the actor (the released AC-ODM code; acodm-frozen-actor)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("batch_size", self.batch_size, 1)
        number("learning_rate", self.learning_rate, maximum=1.0, above=0.0)  # Adam moves each weight ~lr a step
        number("weight_decay", self.weight_decay, 0.0, 1.0 / self.learning_rate)  # AdamW scales weights by 1 - lr * wd
        number("noise_sigma", self.noise_sigma, 0.0)
        number("odm_smoothing", self.odm_smoothing, 0.0, below=1.0)


@dataclass(frozen=True)
class HDSConfig(WarmupConfig):
    """Options of ``hds`` (SAC as in HDS)."""

    prior: str = field(
        default="natural",
        metadata={"help": "the warm-up's fixed mixture: 'natural' (HDS: the Pile's initial weights) or 'uniform'"},
    )
    batch_size: int = field(default=32, metadata={"help": "replay batch (HDS: train_micro_batch_size_per_gpu 32)"})
    learning_rate: float = field(
        default=1e-4, metadata={"help": "Adam rate of actor, critics and entropy coefficient (HDS: 1e-4)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("batch_size", self.batch_size, 1)
        number("learning_rate", self.learning_rate, maximum=1.0, above=0.0)  # Adam moves each weight ~lr a step


@dataclass(frozen=True)
class FrozenACODMConfig(ACODMConfig):
    """Options of ``acodm-frozen-actor``: acodm's, with the actor frozen."""

    freeze_actor: bool = field(default=True, metadata={"help": "never update the actor (the released AC-ODM code)"})
    behaviour_cloning: bool = field(default=False, metadata={"help": "no effect: the actor is frozen"})


class SB3Agent:
    """A stock SB3 model (`model`) with a preset's warm-up around its ``learn``.

    Attributes:
        name: the preset.
        config: its options.
        model: the SB3 model (DDPG, SAC, TD3 or PPO), unmodified.
        facts: the environment facts it was made for.
        warmed_up: whether the behaviour warm-up has run (it runs once, in the first learn).
    """

    def __init__(
        self,
        name: str,
        config: SB3Config,
        model: BaseAlgorithm,
        facts: EnvFacts,
        warmup: BehaviourWarmup | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.model = model
        self.facts = facts
        self._warmup = warmup
        self.warmed_up = warmup is None
        self._tracker = RolloutTracker() if isinstance(model, OnPolicyAlgorithm) else None

    def learn(
        self, total_timesteps: int, callback: MaybeCallback = None, progress_bar: bool = False, **learn_kwargs: Any
    ) -> SB3Agent:
        """SB3's ``learn``, the first call starting with the behaviour warm-up.

        Exactly `total_timesteps` decisions, on-policy models (PPO) included: they stop inside
        their last rollout, which is then not trained on (`mixgym.agents.rollouts`).
        """
        if not isinstance(total_timesteps, (int, np.integer)) or isinstance(total_timesteps, bool) or total_timesteps < 1:
            raise ValueError(f"total_timesteps must be an integer >= 1, got {total_timesteps!r}")
        callbacks = [] if callback is None else list(callback) if isinstance(callback, list) else [callback]
        if self._tracker is not None:
            callbacks.insert(0, self._tracker)  # first: it marks the decision in flight before others checkpoint it
        if isinstance(self.config, WarmupConfig):
            # SB3 acts at random before learning_starts: only the behaviour warm-up may delay
            # learning. A fresh learn after the warm-up starts learning at once; one that
            # continues (reset_num_timesteps=False, as a resumed experiment) keeps the count.
            if not self.warmed_up and self._warmup is not None:
                decisions = warmup_decisions(self.config.warmup_fraction, int(total_timesteps))
                self._warmup.start(decisions)
                self.model.learning_starts = decisions  # type: ignore[attr-defined]
            elif learn_kwargs.get("reset_num_timesteps", True):
                self.model.learning_starts = 0  # type: ignore[attr-defined]
            self.warmed_up = True
            cloning = getattr(self.config, "behaviour_cloning", False) and not self._frozen
            if cloning and self._warmup is not None and self._warmup.remaining > 0:
                callbacks.append(BehaviourCloning())
        self.model.learn(total_timesteps, callback=callbacks or None, progress_bar=progress_bar, **learn_kwargs)
        return self

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything ``learn`` needs to continue bit-identically (see `mixgym.experiment`):
        the SB3 model (SB3's own zip: networks, optimisers, counters, last observation), its
        replay buffer, the warm-up's progress and mixer, and the Monitor's running episode."""
        replay = getattr(self.model, "replay_buffer", None)
        monitor = self._monitor()
        return {
            "model": to_bytes(self._save_model),
            "replay_buffer": to_bytes(self.model.save_replay_buffer) if replay is not None else None,  # type: ignore[attr-defined]
            "rollout": None if self._tracker is None else rollout_state(self.model, self._tracker, self._tracker.locals),  # type: ignore[arg-type]
            "warmed_up": self.warmed_up,
            "warmup": None if self._warmup is None else {"remaining": self._warmup.remaining, "mixer": self._warmup.mixer.state_dict()},
            "monitor_rewards": None if monitor is None else list(monitor.rewards),
        }

    def _save_model(self, target: Any) -> None:
        if isinstance(self.model, OnPolicyAlgorithm):
            with full_rollout_length(self.model):
                self.model.save(target)
        else:
            self.model.save(target)

    @property
    def checkpoint_after_step(self) -> bool:
        """Whether a checkpoint may be taken in a callback's ``on_step``, the decision just
        taken included: for on-policy models while their rollout has room for it (see
        `mixgym.agents.rollouts`); off-policy models checkpoint at rollout starts only."""
        return self._tracker is not None and self._tracker.in_flight and room_after_step(self.model)  # type: ignore[arg-type]

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore `checkpoint_state`'s output onto this agent's environment (already reset).

        The model is rebuilt with SB3's ``load`` around the same vectorised environment,
        whose wrapped `MixingEnv` is restored separately."""
        model = type(self.model).load(
            io.BytesIO(state["model"]), env=self.model.get_env(), device=self.model.device, force_reset=False
        )
        if self._frozen:
            freeze_actor(model)
        if state["replay_buffer"] is not None:
            model.load_replay_buffer(io.BytesIO(state["replay_buffer"]))  # type: ignore[attr-defined]
        if state.get("rollout") is not None:
            restore_rollout(model, state["rollout"])  # type: ignore[arg-type]
        self.model = model
        self.warmed_up = bool(state["warmed_up"])
        if self._warmup is not None and state["warmup"] is not None:
            self._warmup.remaining = int(state["warmup"]["remaining"])
            self._warmup.mixer.load_state_dict(state["warmup"]["mixer"])
        monitor = self._monitor()
        if monitor is not None and state["monitor_rewards"] is not None:
            monitor.rewards = list(state["monitor_rewards"])
            monitor.needs_reset = False

    def _monitor(self) -> Monitor | None:
        env = self.model.get_env()
        inner = env.envs[0] if isinstance(env, DummyVecEnv) else None
        return inner if isinstance(inner, Monitor) else None

    @property
    def _frozen(self) -> bool:
        return bool(getattr(self.config, "freeze_actor", False))

    @property
    def num_timesteps(self) -> int:
        """Decisions the SB3 model has taken (SB3's counter)."""
        return int(self.model.num_timesteps)

    def get_env(self) -> Any:
        """The SB3 model's vectorised environment."""
        return self.model.get_env()

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``."""
        return self.model.predict(observation, state, episode_start, deterministic)

    def save(self, path: str | Path) -> None:
        """SB3's zip, plus the preset's ``mixgym.json``, signed by this installation
        (`mixgym.agents.sb3_files`)."""
        path = zip_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._save_model(path)
        algorithm = type(self.model).__name__
        rebuildable = json_clean(self.config.sb3_kwargs)
        meta = metadata(self.name, self.config, self.facts, algorithm=algorithm, warmed_up=self.warmed_up, rebuildable=rebuildable)
        write_metadata(path, meta)
        sign_zip(path)

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | None = None, trusted: bool = False) -> SB3Agent:
        """Load a saved SB3 preset (see `mixgym.agents.base.load_agent`)."""
        agent = load_agent(path, env, trusted=trusted)
        if not isinstance(agent, SB3Agent):
            raise ValueError(f"{str(path)!r} holds agent {type(agent).__name__}, not an SB3 preset")
        return agent


def freeze_actor(model: BaseAlgorithm) -> None:
    """Switch off the actor's gradients: its optimiser then never changes it."""
    for parameter in model.actor.parameters():  # type: ignore[attr-defined]
        parameter.requires_grad_(False)


def _sb3_arguments(name: str, algorithm: type[BaseAlgorithm], config: SB3Config, **preset: Any) -> dict[str, Any]:
    """The preset's constructor arguments, overridden by `sb3_kwargs`; unknown names are an error."""
    arguments = {
        "seed": config.seed,
        "verbose": config.verbose,
        "tensorboard_log": config.tensorboard_log,
        "device": config.device,
        **preset,
        **config.sb3_kwargs,
    }
    known = set(inspect.signature(algorithm.__init__).parameters) - {"self", "policy", "env"}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ValueError(
            f"agent {name!r}: sb3_kwargs names argument(s) {unknown} that {algorithm.__name__} does not have; "
            f"its arguments: {sorted(known)}"
        )
    return arguments


def _prior(config: WarmupConfig, facts: EnvFacts, name: str) -> np.ndarray:
    if config.prior == "uniform":
        return np.full(facts.num_domains, 1.0 / facts.num_domains)
    if facts.natural is None:
        raise ValueError(f"agent {name!r}: the backend reports no domain sizes; use prior='uniform'")
    return np.array(facts.natural)


def _behaviour(name: str, config: SB3Config, facts: EnvFacts) -> Mixer | None:
    """The warm-up's behaviour mixer: ODM's smoothed mean (acodm, AC-ODM runs it without its
    own warm-up), the fixed prior (hds), none (td3, ppo)."""
    if isinstance(config, ACODMConfig):
        return smoothed_mean_mixer(_prior(config, facts, name), config.odm_smoothing, warmup_decisions=0)
    if isinstance(config, HDSConfig):
        return StaticMixer(_prior(config, facts, name))
    return None


def _check_memory(name: str, config: ACODMConfig | HDSConfig, facts: EnvFacts) -> None:
    """Refuse networks, a replay buffer or a batch too large for the machine, before SB3 allocates
    them (an estimate: six networks of the preset's shape -- actor, critics, their targets -- with
    gradients and two Adam moments each; the buffer's observations, next observations, actions and
    scalars; one batch's inputs and activations)."""
    obs, k = int(np.prod(facts.observation_shape)), facts.num_domains
    width, depth = config.net_width, config.net_depth
    network = (obs + k) * width + (depth - 1) * width * width + width * (k + 1)
    needed = 6 * 16 * network + 4 * config.buffer_size * (2 * obs + k + 3) + 4 * config.batch_size * (2 * obs + k + 6 * width * depth)
    options = ", ".join(f"{n}={getattr(config, n)}" for n in ("net_width", "net_depth", "buffer_size", "batch_size"))
    check_memory(needed, f"agent {name!r} ({options}) on K={k} domains", "use a smaller network, buffer or batch")


def _build_acodm(name: str, env: gym.Env, config: ACODMConfig) -> SB3Agent:
    facts = EnvFacts.of(env)
    _check_memory(name, config, facts)
    k = facts.num_domains
    wrapped = BehaviourWarmup(env, _behaviour(name, config, facts))
    noise = NormalActionNoise(np.zeros(k), np.full(k, config.noise_sigma)) if config.noise_sigma > 0 else None
    policy_kwargs = {
        "net_arch": [config.net_width] * config.net_depth,
        "activation_fn": LayerNormReLU if config.layer_norm else nn.ReLU,
        "optimizer_class": th.optim.AdamW,
        "optimizer_kwargs": {"weight_decay": config.weight_decay},
    }
    arguments = _sb3_arguments(
        name,
        DDPG,
        config,
        **_one_update_per_decision(config),
        action_noise=noise,
        policy_kwargs=policy_kwargs,
    )
    model = DDPG("MlpPolicy", wrapped, **arguments)
    if config.freeze_actor:
        freeze_actor(model)
    return SB3Agent(name, config, model, facts, wrapped)


def _one_update_per_decision(config: ACODMConfig | HDSConfig) -> dict[str, Any]:
    """The off-policy settings AC-ODM and HDS share: their config's numbers, one gradient
    step per decision, no random start (the behaviour warm-up delays learning), and the
    replay buffer that stores the warm-up's executed actions."""
    return {
        "learning_rate": config.learning_rate,
        "buffer_size": config.buffer_size,
        "learning_starts": 0,
        "batch_size": config.batch_size,
        "tau": config.tau,
        "gamma": config.gamma,
        "train_freq": 1,
        "gradient_steps": 1,
        "replay_buffer_class": BehaviourReplayBuffer,
    }


def _build_hds(name: str, env: gym.Env, config: HDSConfig) -> SB3Agent:
    facts = EnvFacts.of(env)
    _check_memory(name, config, facts)
    wrapped = BehaviourWarmup(env, _behaviour(name, config, facts))
    arguments = _sb3_arguments(
        name,
        SAC,
        config,
        **_one_update_per_decision(config),
        ent_coef="auto",  # HDS: log_alpha starts at 0 (alpha 1 after the first update), target entropy -K
        target_entropy="auto",
        policy_kwargs={"net_arch": [config.net_width] * config.net_depth},
    )
    return SB3Agent(name, config, SAC("MlpPolicy", wrapped, **arguments), facts, wrapped)


def _build_default(name: str, algorithm: type[BaseAlgorithm], env: gym.Env, config: SB3Config) -> SB3Agent:
    preset = {"rollout_buffer_class": ResumableRolloutBuffer} if issubclass(algorithm, OnPolicyAlgorithm) else {}
    model = algorithm("MlpPolicy", env, **_sb3_arguments(name, algorithm, config, **preset))
    return SB3Agent(name, config, model, EnvFacts.of(env))


def _load(name: str) -> Any:
    def load(path: Path, meta: dict[str, Any], env: gym.Env | None, trusted: bool) -> SB3Agent:
        algorithm = ALGORITHMS.get(str(meta.get("algorithm")))
        if algorithm is None:
            raise ValueError(f"{str(path)!r}: unknown SB3 algorithm {meta.get('algorithm')!r}")
        if trusted or signed_here(path):
            return _load_with_sb3(name, algorithm, path, meta, env)
        return _rebuild(name, algorithm, path, meta, env)

    return load


def _load_with_sb3(name: str, algorithm: type[BaseAlgorithm], path: Path, meta: dict[str, Any], env: gym.Env | None) -> SB3Agent:
    """SB3's own ``load``: unpickles the file's ``data`` (only for trusted or self-signed files)."""
    saved = {key: value for key, value in meta["config"].items() if key != "sb3_kwargs"}
    config = make_config(name, **saved)
    facts = EnvFacts.of(env) if env is not None else EnvFacts.from_json(meta["env"])
    warmed_up = bool(meta.get("warmed_up", True))
    behaviour = _behaviour(name, config, facts) if env is not None and not warmed_up else None
    warmup = BehaviourWarmup(env, behaviour) if behaviour is not None else None
    try:
        model = algorithm.load(path, env=warmup or env, device=config.device)
    except (AssertionError, ValueError, KeyError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        # SB3 asserts when the zip has no "data" entry; the others come from torch and zipfile
        raise ValueError(f"{str(path)!r} holds a corrupt {algorithm.__name__} model: {error}") from None
    if getattr(config, "freeze_actor", False):
        freeze_actor(model)
    agent = SB3Agent(name, config, model, facts, warmup)
    agent.warmed_up = warmed_up
    return agent


def _rebuild(name: str, algorithm: type[BaseAlgorithm], path: Path, meta: dict[str, Any], env: gym.Env | None) -> SB3Agent:
    """The preset made afresh from ``mixgym.json``, weights read as tensors only
    (`mixgym.agents.sb3_files`): nothing in the file is unpickled."""
    trust = "If you trust the file, load it with trusted=True (mixgym eval --trust)"
    if env is None:
        raise UntrustedFile(
            f"{str(path)!r} was not saved by this installation, so it is loaded without unpickling anything, by "
            f"rebuilding the {name!r} preset on an environment: pass env=... . {trust}"
        )
    if not meta.get("rebuildable", True):
        raise UntrustedFile(
            f"{str(path)!r} was not saved by this installation and its SB3 arguments (sb3_kwargs) are Python objects "
            f"that only SB3's pickle-based load restores. {trust}"
        )
    options = dict(meta["config"], tensorboard_log=None)
    agent = make_agent(name, env, **options)
    if not isinstance(agent, SB3Agent) or type(agent.model) is not algorithm:
        raise ValueError(f"{str(path)!r} holds a {algorithm.__name__} model, but preset {name!r} makes another")
    load_weights(agent.model, path)
    agent.warmed_up = bool(meta.get("warmed_up", True))
    if agent.warmed_up and agent._warmup is not None:
        agent._warmup.start(0)
    return agent


def _register() -> None:
    maps = ACTION_MAPS
    presets: list[tuple[str, str, type, Any]] = [
        ("acodm", "AC-ODM: DDPG with an ODM warm-up", ACODMConfig, _build_acodm),
        ("acodm-frozen-actor", "AC-ODM with the actor never updated", FrozenACODMConfig, _build_acodm),
        ("hds", "HDS: SAC with a fixed-prior warm-up", HDSConfig, _build_hds),
        ("td3", "TD3 with SB3's defaults", SB3Config, lambda n, e, c: _build_default(n, TD3, e, c)),
        ("ppo", "PPO with SB3's defaults", SB3Config, lambda n, e, c: _build_default(n, PPO, e, c)),
    ]
    for name, summary, config, build in presets:
        register(
            AgentSpec(
                name,
                summary,
                config,
                lambda env, cfg, _n=name, _b=build: _b(_n, env, cfg),
                _load(name),
                maps,
            )
        )


_register()

__all__ = [
    "ALGORITHMS",
    "PAPER_REWARDS",
    "ACODMConfig",
    "BehaviourCloning",
    "BehaviourReplayBuffer",
    "BehaviourWarmup",
    "FrozenACODMConfig",
    "HDSConfig",
    "LayerNormReLU",
    "SB3Agent",
    "SB3Config",
]
