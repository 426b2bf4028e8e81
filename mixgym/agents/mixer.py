"""SB3's surface for agents that set the mixture directly: bandits, static mixtures, DoReMi.

A `Mixer` is the method itself -- a mixture that may change with what the environment
reports -- and knows nothing of SB3 or files. `MixerAgent` gives it the surface every agent
has (`mixgym.agents.base.Agent`): ``predict`` returns the current mixture as a "simplex"
action, ``learn`` drives the environment for some decisions (calling SB3 callbacks and
progress bars as SB3's own ``learn`` does), ``save``/``load`` write and read the mixer's
state. Per-domain losses reach the mixer through `InfoObserver`: the driver calls
``reset_run(info)`` after ``env.reset`` and ``observe(info)`` after each ``env.step``.

Why "learn" for a bandit: the mixer's state is one run's (ODM restarts with every
pretraining run), so ``learn`` is the non-proxy mode itself: the mixer adapts online during
the run it drives. Each ``learn`` call starts a fresh run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from mixgym.agents.base import (
    META_NAME,
    AgentSpec,
    EnvFacts,
    load_agent,
    make_config,
    metadata,
    register,
    write_metadata,
    zip_path,
)
from mixgym.validation import check_field_types, integer


@dataclass(frozen=True)
class MixerConfig:
    """Options every mixer agent has."""

    seed: int | None = field(default=None, metadata={"help": "seed of the runs `learn` starts (and of random draws)"})
    tensorboard_log: str | None = field(
        default=None, metadata={"help": "TensorBoard folder for `learn`'s SB3 logger (None: no logging)"}
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.seed is not None:  # a numpy integer becomes a Python one: Gymnasium takes no other
            object.__setattr__(self, "seed", integer("seed", self.seed, 0, 2**32 - 1))


class Mixer(Protocol):
    """A mixing method: the current mixture, updated from what the environment reports."""

    def reset(self, info: dict[str, Any]) -> None:
        """A new run starts (`info` from ``env.reset``)."""
        ...

    def observe(self, info: dict[str, Any]) -> None:
        """A decision finished (`info` from ``env.step``): update the mixture."""
        ...

    def mixture(self) -> np.ndarray:
        """The mixture for the next decision, shape (K,), sums to 1."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to act identically after a reload (JSON-serialisable)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`."""
        ...


@runtime_checkable
class ObservationMixer(Mixer, Protocol):
    """A mixer whose mixture is a function of the observation (a fixed policy network, such as
    AC-ODM's released actor, `mixgym.agents.acodm`)."""

    def act(self, observation: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The mixture for the next decision given the current observation; `deterministic`:
        without the method's exploration noise, a function of the observation (and the
        decision) that draws nothing from the mixer's generator."""
        ...


class MixerAgent:
    """A `Mixer` with SB3's surface (see the module docstring).

    Attributes:
        name: the registered agent name.
        config: the agent's options.
        mixer: the method.
        facts: the environment facts it was made for.
        num_timesteps: decisions taken by the last ``learn`` (read by SB3 callbacks).
        logger: the SB3 logger of the last ``learn``.
    """

    action_maps: ClassVar[tuple[str, ...]] = ("simplex",)

    def __init__(self, name: str, config: MixerConfig, mixer: Mixer, facts: EnvFacts, env: gym.Env | None = None):
        self.name = name
        self.config = config
        self.mixer = mixer
        self.facts = facts
        self.num_timesteps = 0
        self.logger: Logger = configure_logger(verbose=0)
        self._env: VecEnv | None = None
        self._last_obs: np.ndarray | None = None
        if env is not None:
            self.set_env(env)

    def set_env(self, env: gym.Env) -> None:
        """Attach the environment that ``learn`` drives (no run is in progress on it yet)."""
        self._env = DummyVecEnv([lambda: env])
        self._last_obs = None
        self.attach(env)

    def attach(self, env: gym.Env) -> None:
        """Tell a mixer that queries its run (OP-Mix's what-if probes) which env it acts on;
        `mixgym.agents.runner.evaluate` calls this for the env it evaluates on."""
        attach = getattr(self.mixer, "attach", None)
        if attach is not None:
            attach(env.unwrapped)

    def get_env(self) -> VecEnv | None:
        """The attached environment, vectorised as SB3 models keep theirs."""
        return self._env

    def reset_run(self, info: dict[str, Any]) -> None:
        self.mixer.reset(info)

    def report(self) -> dict[str, np.ndarray]:
        """What the method reports besides its mixture, as ``info``-style keys
        ``"agent/<name>"`` (DoReMi: its time-averaged weights); none for most mixers.
        `learn` and `mixgym.agents.runner.evaluate` add them to each decision's ``info``, so
        they reach callbacks and the per-decision table."""
        report = getattr(self.mixer, "report", None)
        return {} if report is None else {f"agent/{key}": value for key, value in report().items()}

    def observe(self, info: dict[str, Any]) -> None:
        self.mixer.observe(info)

    def predict(
        self,
        observation: np.ndarray | None,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The current mixture as a "simplex" action; the observation is used only by an
        `ObservationMixer`.

        For a mixer that is not an `ObservationMixer`, `deterministic` changes nothing: the
        mixture is the method's output (a random mixture is drawn from the agent's own seeded
        generator either way). An `ObservationMixer` leaves out its exploration noise when
        `deterministic`, so that the same observation gives the same mixture (SB3's contract).
        """
        if observation is not None and np.ndim(observation) > 1:
            raise ValueError(
                f"agent {self.name!r} follows one run at a time; predict takes one observation, "
                f"got a batch of shape {np.shape(observation)}"
            )
        if isinstance(self.mixer, ObservationMixer):
            if observation is None:
                raise ValueError(f"agent {self.name!r} acts on the observation; predict got None")
            return self.mixer.act(np.asarray(observation, dtype=np.float64), deterministic).astype(np.float32), state
        return self.mixer.mixture().astype(np.float32), state

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        progress_bar: bool = False,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
    ) -> MixerAgent:
        """Drive the attached environment for `total_timesteps` decisions.

        From a fresh run by default; with ``reset_num_timesteps=False`` (as in SB3) the run in
        progress continues and the decision count goes on from where it was -- how a
        checkpointed experiment resumes. The mixer adapts as it goes; episodes that end are
        reset (and the mixer with them). Callbacks see SB3's locals (``infos``, ``rewards``,
        ``dones``), as with an SB3 model.
        """
        if not isinstance(total_timesteps, (int, np.integer)) or total_timesteps < 1:
            raise ValueError(f"total_timesteps must be an integer >= 1, got {total_timesteps!r}")
        env = self._env
        if env is None:
            raise ValueError(f"agent {self.name!r} has no environment; load it with env=... or call set_env")
        self.logger = configure_logger(0, self.config.tensorboard_log, tb_log_name)
        if reset_num_timesteps or self._last_obs is None:
            self.num_timesteps = 0
            env.seed(self.config.seed)
            self._last_obs = env.reset()
            self.reset_run(env.reset_infos[0])
        end = self.num_timesteps + int(total_timesteps)
        callbacks = _as_callback(callback, progress_bar)
        callbacks.init_callback(self)  # type: ignore[arg-type]
        callbacks.on_training_start(locals(), globals())
        callbacks.on_rollout_start()
        while self.num_timesteps < end:
            actions = self.predict(self._last_obs[0])[0][None]
            self._last_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += 1
            self.observe(infos[0])
            infos[0].update(self.report())
            if dones[0]:
                self.reset_run(env.reset_infos[0])
            callbacks.update_locals(locals())
            if not callbacks.on_step():
                break
        callbacks.on_rollout_end()
        callbacks.on_training_end()
        return self

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything `learn` needs to continue bit-identically (see `mixgym.experiment`)."""
        return {"mixer": self.mixer.state_dict(), "num_timesteps": self.num_timesteps, "last_obs": self._last_obs}

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore `checkpoint_state`'s output; the environment is restored separately."""
        self.mixer.load_state_dict(state["mixer"])
        self.num_timesteps = int(state["num_timesteps"])
        self._last_obs = state["last_obs"]

    def save(self, path: str | Path) -> None:
        """Write the agent (its options and the mixer's state) to a zip file."""
        meta = metadata(self.name, self.config, self.facts, state=self.mixer.state_dict())
        write_metadata(zip_path(path), meta, mode="w")

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | None = None, trusted: bool = False) -> MixerAgent:
        """Load a saved mixer agent (any kind; see `mixgym.agents.base.load_agent`)."""
        agent = load_agent(path, env, trusted=trusted)
        if not isinstance(agent, MixerAgent):
            raise ValueError(f"{str(path)!r} holds agent {type(agent).__name__}, not a mixer agent")
        return agent


def _as_callback(callback: MaybeCallback, progress_bar: bool) -> BaseCallback:
    """SB3's callback conventions: None, a callback, a list of them; plus the progress bar."""
    if callback is None:
        callbacks: list[BaseCallback] = []
    elif isinstance(callback, list):
        callbacks = list(callback)
    elif isinstance(callback, BaseCallback):
        callbacks = [callback]
    else:
        raise ValueError(f"callback must be an SB3 BaseCallback, a list of them or None, got {callback!r}")
    if progress_bar:
        callbacks.append(ProgressBarCallback())
    return CallbackList(callbacks)


def register_mixer(
    name: str,
    summary: str,
    config: type,
    build: Callable[[gym.Env, Any, EnvFacts], Mixer],
    restore: Callable[[Any, EnvFacts, dict[str, Any]], Mixer],
    env_options: dict[str, Any] | None = None,
) -> None:
    """Register a mixer agent.

    Args:
        name: agent name.
        summary: one line for listings.
        config: its options (a `MixerConfig` subclass).
        build: ``build(env, config, facts) -> Mixer`` for a fresh agent on `env`.
        restore: ``restore(config, facts, state) -> Mixer`` from a saved state.
        env_options: `MixingEnv` options of the paper's set-up (`AgentSpec.env_options`).
    """

    def make(env: gym.Env, cfg: MixerConfig) -> MixerAgent:
        facts = EnvFacts.of(env)
        return MixerAgent(name, cfg, build(env, cfg, facts), facts, env)

    def load(path: Path, meta: dict[str, Any], env: gym.Env | None, trusted: bool) -> MixerAgent:
        # JSON only, trusted or not; where to write logs is the loader's choice, not the file's
        cfg = make_config(name, **dict(meta["config"], tensorboard_log=None))
        facts = EnvFacts.from_json(meta["env"])
        if "state" not in meta:
            raise ValueError(f"{str(path)!r}: its {META_NAME} has no mixer state")
        try:
            mixer = restore(cfg, facts, meta["state"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{str(path)!r} holds a corrupt {name!r} state: {error!r}") from None
        return MixerAgent(name, cfg, mixer, facts, env)

    register(AgentSpec(name, summary, config, make, load, MixerAgent.action_maps, dict(env_options or {})))


def as_json(array: np.ndarray) -> list[float]:
    """A float array as a JSON list (infinities survive Python's json)."""
    return [float(x) for x in np.asarray(array, dtype=np.float64)]
