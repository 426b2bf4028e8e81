"""Tianshou's high-level SAC on mixgym by id, then its watch mode (``render_mode="human"``,
which prints each decision's mixture and held-out losses; no pygame needed).

Needs ``pip install "tianshou[eval]"`` (the high-level API imports its evaluation tools).

    python examples/clients/tianshou_sac.py [--steps-per-epoch 1000 --epochs 5]
"""

import argparse

from tianshou.highlevel.config import OffPolicyTrainingConfig
from tianshou.highlevel.env import EnvFactoryRegistered, VectorEnvType
from tianshou.highlevel.experiment import ExperimentConfig, SACExperimentBuilder

import mixgym  # noqa: F401  (registers mixgym/Mixing-v1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=1000, help="environment steps (decisions) per epoch")
    parser.add_argument("--total-steps", type=int, default=1000, help="optimizer steps of one toy run")
    args = parser.parse_args()
    experiment = SACExperimentBuilder(
        EnvFactoryRegistered(task="mixgym/Mixing-v1", venv_type=VectorEnvType.DUMMY, total_steps=args.total_steps),
        ExperimentConfig(persistence_enabled=False, watch=True, watch_num_episodes=1, device="cpu"),
        OffPolicyTrainingConfig(
            max_epochs=args.epochs,
            epoch_num_steps=args.steps_per_epoch,
            num_training_envs=1,
            num_test_envs=1,
            batch_size=64,
            collection_step_num_env_steps=1,
            start_timesteps=min(100, args.steps_per_epoch // 2),
        ),
    ).build()
    experiment.run()


if __name__ == "__main__":
    main()
