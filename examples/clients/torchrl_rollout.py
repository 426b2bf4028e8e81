"""TorchRL's ``GymEnv`` on mixgym by id: one env, then two in worker processes
(``num_envs=2``), with TorchRL's info reader turning every ``info`` key into a tensor.

TorchRL starts its workers with "spawn": they import this script (so ``import mixgym``
registers the ids there too). Where the main module does not import mixgym (a notebook, a
test runner), use the id ``"mixgym:mixgym/Mixing-v1"``, which imports it in each worker.

    python examples/clients/torchrl_rollout.py [--steps 20]
"""

import argparse

from torchrl.envs import GymEnv
from torchrl.envs.utils import check_env_specs

import mixgym  # noqa: F401  (registers mixgym/Mixing-v1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="decisions per rollout")
    parser.add_argument("--total-steps", type=int, default=1000, help="optimizer steps of one toy run")
    args = parser.parse_args()
    env = GymEnv("mixgym/Mixing-v1", total_steps=args.total_steps)
    check_env_specs(env)
    env.auto_register_info_dict()
    rollout = env.rollout(args.steps)
    print("one env:", dict(rollout.batch_size and {"batch": tuple(rollout.batch_size)}),
          "final objective", float(rollout["next", "objective"][-1]))
    batched = GymEnv("mixgym/Mixing-v1", num_envs=2, total_steps=args.total_steps)
    rollout = batched.rollout(args.steps)
    print("two envs:", tuple(rollout.batch_size), "info keys:", sorted(k for k in rollout["next"].keys() if "/" in k))
    batched.close()


if __name__ == "__main__":
    main()
