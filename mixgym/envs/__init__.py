"""The environment: `MixingEnv`, its action maps, observation features and rewards."""

from mixgym.envs.action_maps import ACTION_MAPS, ActionMap
from mixgym.envs.mixing_env import MixingEnv
from mixgym.envs.rewards import REWARDS, RewardResult, Snapshot

__all__ = ["ACTION_MAPS", "REWARDS", "ActionMap", "MixingEnv", "RewardResult", "Snapshot"]
