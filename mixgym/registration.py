"""Gymnasium ids of mixgym, registered when `mixgym` is imported.

Gymnasium 1.x loads no entry-point plugins, so registration runs at import; it is
idempotent (HighwayEnv's pattern). ``gymnasium.make("mixgym:mixgym/Mixing-v1")`` imports
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


def matching_ids(num_domains: int, features: tuple[str, ...] | None) -> list[str]:
    """The registered ids whose env has `num_domains` domains and observation blocks `features`
    (None: any layout), for error messages that say which id a saved policy fits."""
    from mixgym.envs.features import resolve_features

    presets = {**ENV_PRESETS, **{task.env_id: {"task": name} for name, task in TASK_PRESETS.items()}}
    found = []
    for env_id, kwargs in presets.items():
        task = TASK_PRESETS.get(kwargs.get("task", ""))
        if task is not None:
            options = task.backend_options
            k = options["num_domains"] if options.get("num_domains") else len(options.get("domains") or ())
        else:
            k = kwargs.get("num_domains", 5)
        blocks = resolve_features(kwargs.get("observation", "v1"), twin=kwargs.get("reward") == "advantage")
        if k == num_domains and (features is None or tuple(blocks) == tuple(features)):
            found.append(env_id)
    return found


def register_envs() -> None:
    """Register every id in `ENV_PRESETS` and every task's id (`mixgym.tasks.TASK_PRESETS`)
    that is not registered yet; toy ids with `VECTOR_ENTRY_POINT` (`mixgym.envs.vector`)."""
    presets = {**ENV_PRESETS, **{task.env_id: {"task": name} for name, task in TASK_PRESETS.items()}}
    toy = set(ENV_PRESETS) | {task.env_id for task in TASK_PRESETS.values() if task.backend == "toy"}
    for env_id, kwargs in presets.items():
        if env_id not in registry:
            vector = VECTOR_ENTRY_POINT if env_id in toy else None
            register(id=env_id, entry_point=ENTRY_POINT, vector_entry_point=vector, kwargs=dict(kwargs))
