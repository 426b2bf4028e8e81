"""``hds``: SAC as in the Holistic Data Scheduler.

Source: DANG-ai/LLM-Training-Holistic-Data-Schedule at 4264a65: ``megatron/data/agent.py``
(the agent and its reward), ``megatron/training.py`` (the loop), ``hds_config/ddpg_1B.yml``.
The reward is the env's ``"holistic"`` (`mixgym.envs.rewards.HolisticReward`: alignment
z-scored as HDS does, stability per optimizer step, diversity in the variant chosen); every
option's source is in its ``help`` (`HDSConfig`). Like AC-ODM, HDS gives every domain one
micro-batch per optimizer step, 22 of 144 (``training.py:387-391``, ``domain_num`` 1 in
``ddpg_1B.yml:18``; 1152 sequences in micro-batches of 8, ``hds_config/models/1B.yml:19-21``):
`mixgym.agents.compare.env_for` sets that as the backend's ``forced_fraction``
(`HDS_FORCED_FRACTION`) unless the caller gives one.

Deviations, and why:
- Networks: HDS's per-domain transformer encoders (agent.py:173-325) do not run as shipped
  (the constructor's arguments do not match, agent.py:348-353); SB3's MLP (2 x 256) stands in.
- Warm-up: HDS builds ODM's smoothed-mean mixer for its warm-up (``training.py:1267-1277``)
  but never updates it (its ``update_pools``, agent.py:432-521, has no ``group_update``), so
  its warm-up acts with the static initial weights; here the same fixed prior.
- Transitions: HDS stores one per optimizer step (agent.py:499-504); here one per decision
  of ``steps_per_action`` steps, its reward averaged over them where HDS's terms are
  per-step (stability).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
from stable_baselines3 import SAC

from mixgym.agents.base import EnvFacts
from mixgym.agents.sb3_presets import (
    BehaviourWarmup,
    SB3Agent,
    WarmupConfig,
    check_sb3_memory,
    one_update_per_decision,
    prior_mixture,
    register_sb3,
    sb3_arguments,
)
from mixgym.agents.static import StaticMixer
from mixgym.validation import integer, number

HDS_FORCED_FRACTION = 22 / 144
"""HDS's forced share: one micro-batch per domain per step (``training.py:387-391``) of 144."""


@dataclass(frozen=True)
class HDSConfig(WarmupConfig):
    """Options of ``hds`` (SAC as in HDS)."""

    prior: str = field(
        default="natural",
        metadata={"help": "the warm-up's fixed mixture: 'natural' (HDS: the Pile's initial weights) or 'uniform'"},
    )
    batch_size: int = field(
        default=32, metadata={"help": "replay batch (HDS: train_micro_batch_size_per_gpu 32, ddpg_1B.yml:11)"}
    )
    learning_rate: float = field(
        default=1e-4, metadata={"help": "Adam rate of actor, critics and entropy coefficient (HDS: 1e-4, agent.py:377-380)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("batch_size", self.batch_size, 1)
        number("learning_rate", self.learning_rate, maximum=1.0, above=0.0)  # Adam moves each weight ~lr a step


def _warmup(config: HDSConfig, facts: EnvFacts) -> StaticMixer:
    return StaticMixer(prior_mixture(config.prior, facts, "hds"))


def _build_hds(name: str, env: gym.Env, config: HDSConfig) -> SB3Agent:
    facts = EnvFacts.of(env)
    check_sb3_memory(name, config, config.batch_size, facts)
    wrapped = BehaviourWarmup(env, _warmup(config, facts))
    arguments = sb3_arguments(
        name,
        SAC,
        config,
        **one_update_per_decision(config, config.learning_rate, config.batch_size),
        ent_coef="auto",  # HDS: log_alpha starts at 0 (alpha 1 after the first update), target entropy -K (agent.py:337-338)
        target_entropy="auto",
        policy_kwargs={"net_arch": [config.net_width] * config.net_depth},
    )
    return SB3Agent(name, config, SAC("MlpPolicy", wrapped, **arguments), facts, wrapped)


register_sb3(
    "hds",
    "HDS: SAC with a fixed-prior warm-up",
    HDSConfig,
    _build_hds,
    _warmup,
    {"reward": "holistic", "forced_fraction": HDS_FORCED_FRACTION, "observation": "v0"},  # v0: HDS's state
)
