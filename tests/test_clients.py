"""The RL clients people use, each run the way its own docs run a custom Gymnasium env, by
id and with no edit: TorchRL's GymEnv, skrl's stock Gaussian PPO, Tianshou's SAC and watch
mode, RL Zoo3's train and enjoy (the README's commands)."""

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mixgym  # noqa: F401  (registers the ids)

pytestmark = pytest.mark.clients

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "clients"


def run(args: list[str], cwd: Path, timeout: int = 400) -> str:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_torchrl_gym_env_by_id_with_its_info_reader() -> None:
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    env = GymEnv("mixgym/MixingHolistic-v1", total_steps=60)  # retries without frameskip on our TypeError
    check_env_specs(env)
    env.auto_register_info_dict()  # TorchRL's info reader: every info key, at reset and step
    rollout = env.rollout(8)  # 6 decisions: stops at termination
    assert rollout["next", "done"][-1].item() and rollout.batch_size == (6,)
    assert rollout["next", "reward/holistic_vector"].shape == (6, 5)
    assert np.allclose(rollout["next", "mixture"].sum(-1).numpy(), 1.0)


def test_torchrl_num_envs_2_in_spawned_workers() -> None:
    out = run([sys.executable, str(EXAMPLES / "torchrl_rollout.py"), "--steps", "3", "--total-steps", "60"], ROOT)
    assert "two envs: (2, 3)" in out and "reward/alignment_scores" in out


def test_skrl_stock_gaussian_policy_sends_out_of_bounds_actions_that_the_env_clips() -> None:
    spec = importlib.util.spec_from_file_location("skrl_ppo", EXAMPLES / "skrl_ppo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from skrl.agents.torch.ppo import PPO, PPO_CFG
    from skrl.envs.wrappers.torch import wrap_env
    from skrl.memories.torch import RandomMemory
    from skrl.trainers.torch import SequentialTrainer

    logging.getLogger("skrl").setLevel(logging.WARNING)  # its handler outlives pytest's captured stream
    seen: list[np.ndarray] = []

    class Record(gym.ActionWrapper):
        def action(self, action):
            seen.append(np.asarray(action))
            return action

    env = wrap_env(Record(gym.make("mixgym/Mixing-v1", total_steps=200)))
    spaces = {"observation_space": env.observation_space, "action_space": env.action_space, "device": env.device}
    agent = PPO(
        models={"policy": example.Policy(**spaces), "value": example.Value(**spaces)},
        memory=RandomMemory(memory_size=16, num_envs=1, device=env.device),
        cfg=PPO_CFG(rollouts=16, learning_epochs=2, mini_batches=2),
        **spaces,
    )
    SequentialTrainer(env=env, agents=agent, cfg={"timesteps": 48, "headless": True, "disable_progressbar": True}).train()
    assert len(seen) == 48 and max(np.abs(a).max() for a in seen) > 1.0  # out of bounds, and no crash


def test_skrl_example_script_runs() -> None:
    run([sys.executable, str(EXAMPLES / "skrl_ppo.py"), "--timesteps", "40", "--total-steps", "100"], ROOT)


def test_tianshou_sac_then_watch_mode_prints_each_decision(tmp_path: Path) -> None:
    out = run([sys.executable, str(EXAMPLES / "tianshou_sac.py"), "--epochs", "1", "--steps-per-epoch", "10",
               "--total-steps", "50"], tmp_path)
    assert "step 50/50" in out and "eval loss" in out  # the watch episode, rendered as "human"


def test_rl_zoo3_train_and_enjoy_with_rendering(tmp_path: Path) -> None:
    common = ["--algo", "sac", "--env", "mixgym/Mixing-v1", "--gym-packages", "mixgym", "-f", "logs",
              "--env-kwargs", "total_steps:100"]
    run([sys.executable, "-m", "rl_zoo3.train", *common, "--conf-file", "mixgym.rl_zoo3", "-n", "120",
         "--eval-freq", "-1", "--hyperparams", "learning_starts:50"], tmp_path)
    assert (tmp_path / "logs" / "sac" / "mixgym-Mixing-v1_1" / "mixgym-Mixing-v1.zip").exists()
    out = run([sys.executable, "-m", "rl_zoo3.enjoy", *common, "-n", "10"], tmp_path)
    assert out.count("step 100/100") == 1 and "Mean reward" in out  # "human" mode: each decision once
