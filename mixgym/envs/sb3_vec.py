"""SB3VecEnv: the native toy vector env with stable-baselines3's `VecEnv` surface.

SB3's algorithms take a `VecEnv` whose ``step_wait`` returns the next episode's first
observation for a finished sub-environment and puts the last one in
``info["terminal_observation"]`` (``"TimeLimit.truncated"`` for a truncation): Gymnasium's
same-step autoreset. `SB3VecEnv` runs a `mixgym.envs.vector.ToyVectorEnv` in that mode and
converts its stacked info to SB3's list of dicts, so ``PPO(..., env=SB3VecEnv(64, ...))`` and
`mixgym.agents.make_agent` with ``n_envs`` train on N batched toy runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from mixgym.envs.vector import ToyVectorEnv


def _unstack(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-environment i's info from Gymnasium's stacked info (``_key`` masks, nested dicts)."""
    return {
        key: _unstack(value, i) if isinstance(value, dict) else value[i]
        for key, value in infos.items()
        if not key.startswith("_") and infos[f"_{key}"][i]
    }


class SB3VecEnv(VecEnv):
    """`num_envs` batched toy runs as an SB3 `VecEnv` (keywords are `MixingEnv`'s)."""

    def __init__(self, num_envs: int, **env_kwargs: Any) -> None:
        self.vector = ToyVectorEnv(num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
        self.envs = self.vector.envs
        super().__init__(self.vector.num_envs, self.vector.single_observation_space, self.vector.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        seeds = [None if s is None else int(s) for s in self._seeds]
        obs, _ = self.vector.reset(seed=seeds, options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async before step_wait"
        obs, rewards, terminated, truncated, infos = self.vector.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        per_env = [_unstack(infos, i) for i in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            info = per_env[i]
            final = info.pop("final_info")
            info.update(final)
            info["terminal_observation"] = info.pop("final_obs")
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, per_env

    def close(self) -> None:
        self.vector.close()

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)  # type: ignore[arg-type]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.envs[i], attr_name) for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        return [getattr(self.envs[i], method_name)(*method_args, **method_kwargs) for i in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [isinstance(self.envs[i], wrapper_class) for i in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [env.render() if env.render_mode == "rgb_array" else None for env in self.envs]

    def seed(self, seed: int | None = None) -> Sequence[None | int]:  # type: ignore[override]
        """Seeds for the next `reset`: ``seed + i`` for sub-environment i (SB3's convention)."""
        seeds: Iterable[int | None] = [None if seed is None else seed + i for i in range(self.num_envs)]
        self._seeds = list(seeds)
        return self._seeds
