"""Gymnasium ids of mixgym, registered when `mixgym` is imported.

Gymnasium 1.x loads no entry-point plugins, so registration runs at import; it is
idempotent (HighwayEnv's pattern). ``gymnasium.make("mixgym:mixgym/Mixing-v0")`` imports
`mixgym` on demand, so it works without an explicit import.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

ENTRY_POINT = "mixgym.envs.mixing_env:MixingEnv"

ENV_PRESETS: dict[str, dict[str, Any]] = {
    "mixgym/Mixing-v0": {},
    "mixgym/MixingHolistic-v0": {"reward": "holistic"},
    "mixgym/Mixing22-v0": {"num_domains": 22},
}
"""Registered ids and their default keyword arguments (any can be overridden in `make`)."""


def register_envs() -> None:
    """Register every id in `ENV_PRESETS` that is not registered yet."""
    for env_id, kwargs in ENV_PRESETS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs))
