"""skrl's PPO with its stock Gaussian policy on mixgym, by id, with no edit to either.

The policy samples beyond the action bounds (skrl's ``GaussianMixin`` defaults to
``clip_actions=False`` and leaves clipping to the environment, as Gymnasium's MuJoCo and
Pendulum environments do); `MixingEnv` clips (``out_of_bounds="clip"``, its default).

    python examples/clients/skrl_ppo.py [--timesteps 2000]
"""

import argparse

import gymnasium as gym
import torch
import torch.nn as nn
from skrl.agents.torch.ppo import PPO, PPO_CFG
from skrl.envs.wrappers.torch import wrap_env
from skrl.memories.torch import RandomMemory
from skrl.models.torch import DeterministicMixin, GaussianMixin, Model
from skrl.trainers.torch import SequentialTrainer

import mixgym  # noqa: F401  (registers mixgym/Mixing-v1)


class Policy(GaussianMixin, Model):
    def __init__(self, observation_space, action_space, device):
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
        GaussianMixin.__init__(self)
        self.net = nn.Sequential(nn.Linear(self.num_observations, 64), nn.Tanh(), nn.Linear(64, self.num_actions))
        self.log_std = nn.Parameter(torch.zeros(self.num_actions))

    def compute(self, inputs, role=""):
        return self.net(inputs["observations"]), {"log_std": self.log_std}


class Value(DeterministicMixin, Model):
    def __init__(self, observation_space, action_space, device):
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
        DeterministicMixin.__init__(self)
        self.net = nn.Sequential(nn.Linear(self.num_observations, 64), nn.Tanh(), nn.Linear(64, 1))

    def compute(self, inputs, role=""):
        return self.net(inputs["observations"]), {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=2000, help="environment steps (decisions) to train for")
    parser.add_argument("--total-steps", type=int, default=1000, help="optimizer steps of one toy run")
    args = parser.parse_args()
    env = wrap_env(gym.make("mixgym/Mixing-v1", total_steps=args.total_steps))
    spaces = {"observation_space": env.observation_space, "action_space": env.action_space, "device": env.device}
    models = {"policy": Policy(**spaces), "value": Value(**spaces)}
    memory = RandomMemory(memory_size=32, num_envs=env.num_envs, device=env.device)
    agent = PPO(models=models, memory=memory, cfg=PPO_CFG(rollouts=32, learning_epochs=4, mini_batches=2), **spaces)
    SequentialTrainer(env=env, agents=agent, cfg={"timesteps": args.timesteps, "headless": True}).train()


if __name__ == "__main__":
    main()
