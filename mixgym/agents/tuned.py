"""Tuned SB3 agents for benchmarking: ``ppo-tuned`` (and ``<algo>-tuned`` for every shipped file).

The papers' presets (`mixgym.agents.sb3_presets`: acodm, hds) keep the papers' numbers --
discount 0.95, AC-ODM's 5 x 1024 networks -- for fidelity. Those numbers were set for runs of
tens of thousands of decisions; a toy run has 100, and with the counterfactual ``advantage``
reward (`mixgym.envs.rewards.AdvantageReward`) the return that matters is the undiscounted sum
to the end of the run, which gamma 0.95 discounts to nothing beyond ~20 decisions. These
presets use settings found by a hyper-parameter search that anyone can rerun: rl_zoo3's
Optuna integration on ``mixgym/MixingAdvantage-v1``, training on a proxy toy (student width
16) and scoring on the target (width 32) by the mean return of deterministic episodes, which
under that reward is exactly the final advantage over the uniform mixture. The command and its
result are in ``benchmarks/tune.sh`` and BENCHMARKS.md.

The settings ship as rl_zoo3 hyper-parameter files, one per algorithm
(``mixgym/agents/hyperparams/<algo>.yml``, keyed by env id, rl_zoo3's format), so the same
numbers drive both this preset and rl_zoo3::

    python -m rl_zoo3.train --algo sac --env mixgym/MixingAdvantage-v1 --gym-packages mixgym \\
        -conf mixgym/agents/hyperparams/sac.yml

Read here: ``policy`` (``MlpPolicy`` only), SB3 constructor arguments, ``policy_kwargs`` (a
mapping, or rl_zoo3's string form ``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``, which
rl_zoo3 evaluates as Python; this reader parses it without evaluating anything: literals,
``dict(...)`` and a few ``nn`` activation classes only), and rl_zoo3's ``noise_type``/
``noise_std`` action noise. ``n_timesteps`` and ``env_kwargs`` are rl_zoo3's (its training budget and env options);
the preset acts on the env it is given and learns for what ``learn`` is asked.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from torch import nn

from mixgym.agents.base import EnvFacts
from mixgym.agents.sb3_presets import SB3Agent, SB3Config, register_sb3, sb3_arguments
from mixgym.validation import number

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
"""Where the rl_zoo3 hyper-parameter files live (``<algo>.yml``)."""
TUNED_ENV = "mixgym/MixingAdvantage-v1"
"""The env id the shipped settings were searched on (their key in the files)."""
_ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
"""Algorithms `benchmarks/tune.py` can search; a preset exists for each whose file is shipped
(only PPO's was searched: the compute budget of issue 12 did not stretch to SAC and TD3)."""
SHIPPED = tuple(a for a in _ALGORITHMS if (HYPERPARAMS_DIR / f"{a}.yml").is_file())
ENV_OPTIONS = {"reward": "advantage"}
"""The tuned presets' set-up (`mixgym.agents.base.AgentSpec.env_options`): the reward they were
tuned with (`mixgym.agents.compare.env_for` applies it unless another is given)."""
_NOISE = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}
_RL_ZOO_ONLY = ("n_timesteps", "env_kwargs", "n_envs", "normalize")
ACTIVATIONS = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "ELU": nn.ELU, "LeakyReLU": nn.LeakyReLU, "GELU": nn.GELU, "SiLU": nn.SiLU}
"""The activation classes a ``policy_kwargs`` string may name (as ``nn.X``)."""


def hyperparams_file(algorithm: str, must_exist: bool = True) -> Path:
    """The rl_zoo3 file of `algorithm` (one of `SHIPPED`; any of ppo, sac, td3 when it need not exist yet)."""
    if algorithm not in _ALGORITHMS or (must_exist and algorithm not in SHIPPED):
        raise ValueError(f"no tuned settings for algorithm {algorithm!r}; tuned: {', '.join(SHIPPED)}")
    return HYPERPARAMS_DIR / f"{algorithm}.yml"


def read_hyperparams(path: str | Path, env_id: str, num_actions: int) -> dict[str, Any]:
    """SB3 constructor arguments from the entry `env_id` of an rl_zoo3 file at `path`."""
    entries = yaml.safe_load(Path(path).read_text())
    if not isinstance(entries, dict) or env_id not in entries:
        known = sorted(entries) if isinstance(entries, dict) else []
        raise ValueError(f"{str(path)!r} has no entry {env_id!r}; its entries: {known}")
    entry = dict(entries[env_id])
    policy = entry.pop("policy", "MlpPolicy")
    if policy != "MlpPolicy":
        raise ValueError(f"{str(path)!r}, {env_id!r}: policy must be 'MlpPolicy', got {policy!r}")
    for key in _RL_ZOO_ONLY:
        entry.pop(key, None)
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = parse_policy_kwargs(entry["policy_kwargs"])
    noise_type, noise_std = entry.pop("noise_type", None), float(entry.pop("noise_std", 0.0))
    if noise_type is not None:
        if noise_type not in _NOISE:
            raise ValueError(f"{str(path)!r}, {env_id!r}: unknown noise_type {noise_type!r}; known: {', '.join(_NOISE)}")
        entry["action_noise"] = _NOISE[noise_type](np.zeros(num_actions), np.full(num_actions, noise_std))
    return entry


def parse_policy_kwargs(text: str) -> dict[str, Any]:
    """rl_zoo3's ``policy_kwargs`` string, e.g. ``"dict(net_arch=[64], activation_fn=nn.ReLU)"``,
    read without evaluating it: Python literals, ``dict(...)`` calls and the activations in
    `ACTIVATIONS` (as ``nn.X``); anything else is an error naming it."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            return {kw.arg: value(kw.value) for kw in node.keywords if kw.arg is not None}
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nn":
            if node.attr in ACTIVATIONS:
                return ACTIVATIONS[node.attr]
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values) if k is not None}
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -node.operand.value
        if isinstance(node, ast.Constant):
            return node.value
        raise ValueError(
            f"policy_kwargs {text!r}: cannot read {ast.unparse(node)!r} (literals, dict(...) and "
            f"nn.{{{', '.join(ACTIVATIONS)}}} only; nothing is evaluated)"
        )

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise ValueError(f"policy_kwargs {text!r} is not a Python expression: {error.msg}") from None
    parsed = value(tree.body)
    if not isinstance(parsed, dict):
        raise ValueError(f"policy_kwargs {text!r} must be a dict(...) or a mapping")
    return parsed


@dataclass(frozen=True)
class TunedConfig(SB3Config):
    """Options of the tuned presets: the searched settings, two of them overridable."""

    entry: str = field(default=TUNED_ENV, metadata={"help": "which entry (env id) of the shipped rl_zoo3 file to use"})
    gamma: float | None = field(default=None, metadata={"help": "discount in (0, 1]; None: the file's (searched)"})
    learning_rate: float | None = field(default=None, metadata={"help": "Adam rate; None: the file's (searched)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gamma is not None:
            number("gamma", self.gamma, maximum=1.0, above=0.0)
        if self.learning_rate is not None:
            number("learning_rate", self.learning_rate, above=0.0)


def _build_tuned(name: str, algorithm: str, env: gym.Env, config: TunedConfig) -> SB3Agent:
    facts = EnvFacts.of(env)
    settings = read_hyperparams(hyperparams_file(algorithm), config.entry, facts.num_domains)
    settings.update({key: value for key in ("gamma", "learning_rate") if (value := getattr(config, key)) is not None})
    number(f"gamma of {config.entry!r} in {hyperparams_file(algorithm)}", settings.get("gamma", 0.99), maximum=1.0, above=0.0)
    cls = _ALGORITHMS[algorithm]
    model = cls("MlpPolicy", env, **sb3_arguments(name, cls, config, **settings))
    return SB3Agent(name, config, model, facts)


for _algorithm in SHIPPED:
    register_sb3(
        f"{_algorithm}-tuned",
        f"{_algorithm.upper()} with searched settings for the advantage reward (benchmarking)",
        TunedConfig,
        lambda name, env, config, _a=_algorithm: _build_tuned(name, _a, env, config),
        env_options=ENV_OPTIONS,
        vector=True,
    )

__all__ = [
    "ACTIVATIONS",
    "ENV_OPTIONS",
    "HYPERPARAMS_DIR",
    "SHIPPED",
    "TUNED_ENV",
    "TunedConfig",
    "hyperparams_file",
    "parse_policy_kwargs",
    "read_hyperparams",
]
