"""Shared machinery of the stable-baselines3 presets, and the presets without a paper: td3, ppo.

The published methods live in their own files and register through `register_sb3`:
`mixgym.agents.acodm` (AC-ODM's DDPG; its released frozen actor is a mixer there) and
`mixgym.agents.hds` (HDS's SAC). Each preset builds an unmodified SB3 model
(`SB3Agent.model`: DDPG, SAC, TD3 or PPO) and adds only what the paper's loop has around its
learner, through SB3's extension points:

- a behaviour warm-up (`BehaviourWarmup`, a Gymnasium wrapper): for the first 2% of the
  decisions ``learn`` is asked for, the environment acts with a behaviour mixer (AC-ODM: ODM's
  smoothed-mean bandit; HDS: a fixed prior mixture) instead of the agent, and says so in
  ``info["behaviour_action"]`` (the centred action, via `ActionMap.inverse`, that gives the
  mixer's mixture); SB3's ``learning_starts`` is set to the same count, so no gradient step
  is taken before the warm-up ends;
- a replay buffer (`BehaviourReplayBuffer`, SB3's ``replay_buffer_class``) that stores that
  executed action rather than the one SB3 sampled;
- optionally, behaviour cloning of the actor to the warm-up actions (`BehaviourCloning`, an
  SB3 callback), as AC-ODM's paper intends.
After the warm-up, one gradient step per decision (``train_freq=1, gradient_steps=1``).

td3, ppo -- SB3's defaults, for benchmarking.
"""

from __future__ import annotations

import inspect
import io
import warnings
import zipfile
from collections.abc import Callable
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
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from mixgym.agents.base import (
    AgentSpec,
    EnvFacts,
    load_agent,
    make_agent,
    make_config,
    mismatch,
    metadata,
    register,
    write_metadata,
    zip_path,
)
from mixgym.agents.mixer import Mixer
from mixgym.agents.odm import warmup_decisions
from mixgym.agents.rollouts import (
    ResumableRolloutBuffer,
    RolloutTracker,
    full_rollout_length,
    restore_rollout,
    rollout_state,
    room_after_step,
)
from mixgym.agents.sb3_files import json_clean, load_weights, sign_zip, signed_here
from mixgym.checkpoint import to_bytes
from mixgym.envs.action_maps import ACTION_MAPS
from mixgym.resources import check_memory
from mixgym.trust import UntrustedFile
from mixgym.validation import check_field_types, integer, number

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"DDPG": DDPG, "SAC": SAC, "TD3": TD3, "PPO": PPO}

Behaviour = Callable[[Any, EnvFacts], "Mixer | None"]
"""``behaviour(config, facts)``: a preset's warm-up mixer for an environment, or None."""


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

    AC-ODM's warm-up fits the actor to ODM's weights with an MSE loss (DANG-ai/AC-ODM
    ``megatron/data/agent.py:474-475``; the released code computes the loss but never steps
    the actor). Here: MSE between the actor's action and the stored (behaviour) action on a
    replay batch, with the actor's optimiser. The stored actions are `ActionMap.inverse`'s,
    centred and inside the bounds, so the tanh actor is not pushed into saturation.
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
        number("gamma", self.gamma, maximum=1.0, above=0.0)
        number("tau", self.tau, 0.0, 1.0, above=0.0)
        number("warmup_fraction", self.warmup_fraction, 0.0, below=1.0)
        if self.prior not in ("natural", "uniform"):
            raise ValueError(f"prior must be 'natural' or 'uniform', got {self.prior!r}")


class ZeroUpdateWarning(UserWarning):
    """An RL agent's ``learn`` makes no gradient update: its policy is its initialisation."""


def planned_updates(model: BaseAlgorithm, total_timesteps: int) -> int:
    """Gradient-update rounds SB3 will make in ``learn(total_timesteps)`` from a fresh count (an
    upper bound for off-policy models; 0 is exact): PPO trains after each full rollout of
    ``n_steps * n_envs`` decisions (`mixgym.agents.rollouts`: a last partial one is not trained
    on); DDPG/TD3/SAC train after `learning_starts` decisions, every ``train_freq``."""
    envs = max(1, int(getattr(model, "n_envs", 1) or 1))
    if isinstance(model, OnPolicyAlgorithm):
        return (total_timesteps // (model.n_steps * envs)) * int(getattr(model, "n_epochs", 1))
    after = total_timesteps - int(getattr(model, "learning_starts", 0))
    gradient_steps = int(getattr(model, "gradient_steps", 1))
    freq = getattr(model, "train_freq", None)
    every = int(getattr(freq, "frequency", 1) or 1)
    return 0 if gradient_steps == 0 else max(0, after) // every * max(gradient_steps, 1)  # -1: one per decision


def zero_update_message(name: str, model: BaseAlgorithm, total_timesteps: int) -> str:
    """Why agent `name` will make no gradient update in `total_timesteps` decisions."""
    if isinstance(model, OnPolicyAlgorithm):
        return (
            f"agent {name!r} makes zero gradient updates: its rollout of n_steps={model.n_steps} x {model.n_envs} env(s) "
            f"is longer than the {total_timesteps} decisions it learns for; lower n_steps or learn for more decisions"
        )
    return (
        f"agent {name!r} makes zero gradient updates: learning_starts={getattr(model, 'learning_starts', 0)} "
        f"(gradient_steps={getattr(model, 'gradient_steps', 1)}) is not below the {total_timesteps} decisions it "
        "learns for; lower learning_starts or learn for more decisions"
    )


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
        fresh = learn_kwargs.get("reset_num_timesteps", True)
        if fresh and planned_updates(self.model, int(total_timesteps)) == 0:
            warnings.warn(zero_update_message(self.name, self.model, int(total_timesteps)), ZeroUpdateWarning, stacklevel=2)
        self.model.learn(total_timesteps, callback=callbacks or None, progress_bar=progress_bar, **learn_kwargs)
        return self

    @property
    def updates(self) -> int:
        """Gradient-update rounds the model has made (SB3's ``_n_updates``, saved with it: a
        resumed run counts the updates before its checkpoint too); 0 means the policy is its
        initialisation."""
        return int(getattr(self.model, "_n_updates", 0))

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


def sb3_arguments(name: str, algorithm: type[BaseAlgorithm], config: SB3Config, **preset: Any) -> dict[str, Any]:
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


def prior_mixture(prior: str, facts: EnvFacts, name: str) -> np.ndarray:
    """A warm-up's starting mixture: "natural" (the corpus' proportions) or "uniform"."""
    if prior == "uniform":
        return np.full(facts.num_domains, 1.0 / facts.num_domains)
    if facts.natural is None:
        raise ValueError(f"agent {name!r}: the backend reports no domain sizes; use prior='uniform'")
    return np.array(facts.natural)


def one_update_per_decision(config: WarmupConfig, learning_rate: float, batch_size: int) -> dict[str, Any]:
    """The off-policy settings AC-ODM and HDS share: their config's numbers, one gradient
    step per decision, no random start (the behaviour warm-up delays learning), and the
    replay buffer that stores the warm-up's executed actions."""
    return {
        "learning_rate": learning_rate,
        "buffer_size": config.buffer_size,
        "learning_starts": 0,
        "batch_size": batch_size,
        "tau": config.tau,
        "gamma": config.gamma,
        "train_freq": 1,
        "gradient_steps": 1,
        "replay_buffer_class": BehaviourReplayBuffer,
    }


def check_sb3_memory(name: str, config: WarmupConfig, batch_size: int, facts: EnvFacts) -> None:
    """Refuse networks, a replay buffer or a batch too large for the machine, before SB3 allocates
    them (an estimate: six networks of the preset's shape -- actor, critics, their targets -- with
    gradients and two Adam moments each; the buffer's observations, next observations, actions and
    scalars; one batch's inputs and activations)."""
    obs, k = int(np.prod(facts.observation_shape)), facts.num_domains
    width, depth = config.net_width, config.net_depth
    network = (obs + k) * width + (depth - 1) * width * width + width * (k + 1)
    needed = 6 * 16 * network + 4 * config.buffer_size * (2 * obs + k + 3) + 4 * batch_size * (2 * obs + k + 6 * width * depth)
    options = f"net_width={width}, net_depth={depth}, buffer_size={config.buffer_size}, batch_size={batch_size}"
    check_memory(needed, f"agent {name!r} ({options}) on K={k} domains", "use a smaller network, buffer or batch")


def _build_default(name: str, algorithm: type[BaseAlgorithm], env: gym.Env, config: SB3Config) -> SB3Agent:
    preset = {"rollout_buffer_class": ResumableRolloutBuffer} if issubclass(algorithm, OnPolicyAlgorithm) else {}
    model = algorithm("MlpPolicy", env, **sb3_arguments(name, algorithm, config, **preset))
    return SB3Agent(name, config, model, EnvFacts.of(env))


def _load(name: str, behaviour: Behaviour) -> Any:
    def load(path: Path, meta: dict[str, Any], env: gym.Env | None, trusted: bool) -> SB3Agent:
        algorithm = ALGORITHMS.get(str(meta.get("algorithm")))
        if algorithm is None:
            raise ValueError(f"{str(path)!r}: unknown SB3 algorithm {meta.get('algorithm')!r}")
        if trusted or signed_here(path):
            return _load_with_sb3(name, behaviour, algorithm, path, meta, env)
        return _rebuild(name, algorithm, path, meta, env)

    return load


def _load_with_sb3(
    name: str, behaviour: Behaviour, algorithm: type[BaseAlgorithm], path: Path, meta: dict[str, Any], env: gym.Env | None
) -> SB3Agent:
    """SB3's own ``load``: unpickles the file's ``data`` (only for trusted or self-signed files)."""
    saved = {key: value for key, value in meta["config"].items() if key != "sb3_kwargs"}
    config = make_config(name, **saved)
    facts = EnvFacts.of(env) if env is not None else EnvFacts.from_json(meta["env"])
    warmed_up = bool(meta.get("warmed_up", True))
    mixer = behaviour(config, facts) if env is not None and not warmed_up else None
    warmup = BehaviourWarmup(env, mixer) if mixer is not None else None
    try:
        model = algorithm.load(path, env=warmup or env, device=config.device)
    except (AssertionError, ValueError, KeyError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        if env is not None and "spaces do not match" in str(error):  # SB3's check of the env: not corruption
            raise ValueError(f"{str(path)!r} holds a model for another env: {mismatch(meta, env)} ({error})") from None
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
    agent = make_agent(name, env, **dict(meta["config"], tensorboard_log=None))
    if not isinstance(agent, SB3Agent) or type(agent.model) is not algorithm:
        raise ValueError(f"{str(path)!r} holds a {algorithm.__name__} model, but preset {name!r} makes another")
    load_weights(agent.model, path)
    agent.warmed_up = bool(meta.get("warmed_up", True))
    return agent


def register_sb3(
    name: str,
    summary: str,
    config: type,
    build: Callable[[str, gym.Env, Any], SB3Agent],
    behaviour: Behaviour = lambda config, facts: None,
    env_options: dict[str, Any] | None = None,
    vector: bool = False,
) -> None:
    """Register an SB3 preset.

    Args:
        name: agent name.
        summary: one line for listings.
        config: its options (an `SB3Config` subclass).
        build: ``build(name, env, config) -> SB3Agent``.
        behaviour: its warm-up mixer (for rebuilding a saved agent whose warm-up has not run).
        env_options: `MixingEnv` options of the paper's set-up (`AgentSpec.env_options`).
        vector: it learns on several envs at once (`AgentSpec.vector`; no behaviour warm-up).
    """
    register(
        AgentSpec(
            name,
            summary,
            config,
            lambda env, cfg: build(name, env, cfg),
            _load(name, behaviour),
            ACTION_MAPS,
            dict(env_options or {}),
            vector,
        )
    )


register_sb3("td3", "TD3 with SB3's defaults", SB3Config, lambda n, e, c: _build_default(n, TD3, e, c), vector=True)
register_sb3("ppo", "PPO with SB3's defaults", SB3Config, lambda n, e, c: _build_default(n, PPO, e, c), vector=True)
register_sb3("sac", "SAC with SB3's defaults (hds is SAC with HDS's settings)", SB3Config, lambda n, e, c: _build_default(n, SAC, e, c), vector=True)

__all__ = [
    "ALGORITHMS",
    "BehaviourCloning",
    "BehaviourReplayBuffer",
    "BehaviourWarmup",
    "SB3Agent",
    "SB3Config",
    "WarmupConfig",
    "check_sb3_memory",
    "freeze_actor",
    "one_update_per_decision",
    "prior_mixture",
    "register_sb3",
    "sb3_arguments",
]
