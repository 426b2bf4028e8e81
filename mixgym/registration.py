"""Gymnasium ids of mixgym, registered when `mixgym` is imported.

Gymnasium 1.x loads no entry-point plugins, so registration runs at import; it is
idempotent (HighwayEnv's pattern). ``gymnasium.make("mixgym:mixgym/Mixing-v0")`` imports
`mixgym` on demand, so it works without an explicit import.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

from mixgym.tasks import TASK_PRESETS

ENTRY_POINT = "mixgym.envs.mixing_env:MixingEnv"
VECTOR_ENTRY_POINT = "mixgym.envs.vector:ToyVectorEnv"
"""Toy ids' ``vector_entry_point``: ``gymnasium.make_vec(id, num_envs=N)`` batches N runs."""

ENV_PRESETS: dict[str, dict[str, Any]] = {
    "mixgym/Mixing-v0": {"observation": "v0"},
    "mixgym/MixingHolistic-v0": {"reward": "holistic", "observation": "v0"},
    "mixgym/Mixing22-v0": {"num_domains": 22, "observation": "v0"},
    "mixgym/Mixing-v1": {"observation": "v1"},
    "mixgym/MixingHolistic-v1": {"reward": "holistic", "observation": "v1"},
    "mixgym/Mixing22-v1": {"num_domains": 22, "observation": "v1"},
    "mixgym/MixingAdvantage-v1": {"reward": "advantage", "reward_kwargs": {"scale": 100.0}, "observation": "v1"},
    "mixgym/MixingAdvantage22-v1": {
        "reward": "advantage",
        "reward_kwargs": {"scale": 100.0},
        "num_domains": 22,
        "observation": "v1",
    },
}
"""Registered ids and their default keyword arguments (any can be overridden in `make`).

``-v0`` ids keep the observation layout they were published with (``observation="v0"``,
AC-ODM/HDS's state); ``-v1`` ids use the v1 layout (previous mixture, data seen so far, no
weight norms; see `mixgym.envs.features`). ``MixingAdvantage`` pays the counterfactual
advantage over a uniform baseline twin (`mixgym.envs.rewards.AdvantageReward`), times 100 (an
episode's return is then the final advantage in hundredths of a loss unit)."""


def register_envs() -> None:
    """Register every id in `ENV_PRESETS` and every task's id (`mixgym.tasks.TASK_PRESETS`)
    that is not registered yet; toy ids with `VECTOR_ENTRY_POINT` (`mixgym.envs.vector`)."""
    presets = {**ENV_PRESETS, **{task.env_id: {"task": name} for name, task in TASK_PRESETS.items()}}
    toy = set(ENV_PRESETS) | {task.env_id for task in TASK_PRESETS.values() if task.backend == "toy"}
    for env_id, kwargs in presets.items():
        if env_id not in registry:
            vector = VECTOR_ENTRY_POINT if env_id in toy else None
            register(id=env_id, entry_point=ENTRY_POINT, vector_entry_point=vector, kwargs=dict(kwargs))
