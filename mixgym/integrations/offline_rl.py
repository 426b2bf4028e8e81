"""Offline RL on recorded mixing runs: TorchRL's behaviour cloning and TD3+BC on a Minari dataset.

The data is what ``mixgym record`` writes (`mixgym.integrations.minari_datasets`); TorchRL's
`MinariExperienceReplay` reads it from the local Minari root (``load_from_local_minari``),
and TorchRL's losses train on it -- nothing hand-written but the two small networks:

- ``"bc"``: `torchrl.objectives.BCLoss` (L2 regression of the recorded actions).
- ``"td3bc"``: `torchrl.objectives.TD3BCLoss` (Fujimoto & Gu 2021, "A Minimalist Approach to
  Offline Reinforcement Learning": TD3 whose actor loss adds a BC term, alpha = 2.5, policy
  noise 0.2 clipped at 0.5, the actor updated every second step, targets by Polyak averaging
  with tau = 0.005: the paper's settings).

On a dataset recorded with the ``"simplex"`` action map (mixers: the action is the mixture) the
actor ends in a softmax, so every action it takes is a mixture; on a ``"softmax"`` one (SB3
policies: actions in [-1, 1]) in a tanh. The result, `OfflinePolicy`, acts through
`mixgym.agents.evaluate` like any agent.

>>> import os, tempfile
>>> os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp()
>>> from mixgym.integrations.minari_datasets import record
>>> _ = record("random", "mixgym/classic5/random-v0", episodes=2, env_options={"total_steps": 30})
>>> policy = train_offline("mixgym/classic5/random-v0", method="bc", steps=20)
>>> action = policy.predict(np.zeros(policy.observation_dim, dtype=np.float32))[0]
>>> action.shape, round(float(action.sum()), 4)
((5,), 1.0)
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.error import DependencyNotInstalled
from torch import nn

METHODS = ("bc", "td3bc")


def _hidden(inputs: int, width: int) -> list[nn.Module]:
    return [nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()]


@dataclass
class OfflinePolicy:
    """A policy trained offline: ``predict`` as every agent has (deterministic).

    Attributes:
        name: ``"offline-bc"`` or ``"offline-td3bc"``.
        actor: the trained network (observation -> action).
        observation_dim: the observation's length.
        losses: the last training loss of each kind (``loss_bc``, ``loss_actor``, ...).
    """

    name: str
    actor: nn.Module
    observation_dim: int
    losses: dict[str, float]

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        with torch.no_grad():
            action = self.actor(torch.as_tensor(np.asarray(observation, dtype=np.float32)))
        return action.numpy().astype(np.float32), state


def train_offline(
    dataset_id: str,
    method: str = "td3bc",
    steps: int = 2000,
    batch_size: int = 256,
    width: int = 64,
    learning_rate: float = 3e-4,
    seed: int = 0,
) -> OfflinePolicy:
    """Train `method` (one of `METHODS`) for `steps` minibatch updates on Minari dataset `dataset_id`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    try:
        import minari
        from torchrl.data import Bounded
        from torchrl.data.datasets import MinariExperienceReplay
        from torchrl.modules import Actor, ValueOperator
        from torchrl.objectives import BCLoss, SoftUpdate, TD3BCLoss
    except ImportError as error:
        raise DependencyNotInstalled(
            f'offline RL needs minari and torchrl ({error.name} is missing): pip install "mixgym[minari]" torchrl'
        ) from error
    torch.manual_seed(seed)
    space = minari.load_dataset(dataset_id).action_space
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    num_actions = int(np.prod(space.shape))
    with tempfile.TemporaryDirectory(prefix="mixgym-torchrl-") as root:
        quiet = logging.getLogger("torchrl")
        level, quiet.level = quiet.level, logging.WARNING  # TorchRL logs every field it converts at INFO
        try:
            data = MinariExperienceReplay(dataset_id, batch_size=batch_size, root=root, load_from_local_minari=True)
        finally:
            quiet.setLevel(level)
        sample = data.sample()
        observation_dim = int(sample["observation"].shape[-1])
        squash = nn.Softmax(dim=-1) if float(space.low.min()) >= 0.0 else nn.Tanh()
        network = nn.Sequential(*_hidden(observation_dim, width), nn.Linear(width, num_actions), squash)
        actor = Actor(network, spec=Bounded(low, high, (num_actions,)))
        if method == "bc":
            loss = BCLoss(actor, loss_function="l2")
            parts = {"loss_bc": torch.optim.Adam(actor.parameters(), lr=learning_rate)}
            updater = None
        else:
            critic = nn.Sequential(*_hidden(observation_dim + num_actions, width), nn.Linear(width, 1))
            qvalue = ValueOperator(_Concat(critic), in_keys=["observation", "action"])
            loss = TD3BCLoss(actor, qvalue, action_spec=actor.spec, alpha=2.5, policy_noise=0.2, noise_clip=0.5)
            parts = {
                "loss_actor": torch.optim.Adam(loss.actor_network_params.values(True, True), lr=learning_rate),
                "loss_qvalue": torch.optim.Adam(loss.qvalue_network_params.values(True, True), lr=learning_rate),
            }
            updater = SoftUpdate(loss, tau=0.005)
        losses: dict[str, float] = {}
        for step in range(int(steps)):
            batch = _float32(data.sample())
            values = loss(batch)
            for key, optimizer in parts.items():
                if key == "loss_actor" and step % 2:  # TD3's delayed actor update
                    continue
                optimizer.zero_grad()
                values[key].backward(retain_graph=True)
                optimizer.step()
                losses[key] = float(values[key].detach())
            if updater is not None:
                updater.step()
    return OfflinePolicy(f"offline-{method}", network.eval(), observation_dim, losses)


class _Concat(nn.Module):
    """A critic over (observation, action)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([observation, action], -1))


def _float32(batch: Any) -> Any:
    """Rewards and losses are float64 in the dataset; the networks are float32."""
    batch = batch.exclude("info", ("next", "info"))
    return batch.apply(lambda x: x.float() if x.is_floating_point() else x)
