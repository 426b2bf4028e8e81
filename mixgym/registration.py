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

ENV_PRESETS: dict[str, dict[str, Any]] = {
    "mixgym/Mixing-v0": {},
    "mixgym/MixingHolistic-v0": {"reward": "holistic"},
    "mixgym/Mixing22-v0": {"num_domains": 22},
}
"""Registered ids and their default keyword arguments (any can be overridden in `make`)."""


def register_envs() -> None:
    """Register every id in `ENV_PRESETS` and every task's id (`mixgym.tasks.TASK_PRESETS`)
    that is not registered yet."""
    presets = {**ENV_PRESETS, **{task.env_id: {"task": name} for name, task in TASK_PRESETS.items()}}
    for env_id, kwargs in presets.items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs))
