"""Stock stable-baselines3 algorithms learn on the registered environment."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import mixgym  # noqa: F401  (registers the ids)


@pytest.mark.parametrize("algorithm", [SAC, DDPG, TD3, PPO])
def test_stock_algorithm_learns_a_few_hundred_steps(algorithm: type) -> None:
    env = gym.make("mixgym/Mixing-v0", total_steps=500)
    kwargs = {"n_steps": 100, "batch_size": 50} if algorithm is PPO else {"learning_starts": 50}
    model = algorithm("MlpPolicy", env, seed=0, device="cpu", **kwargs)
    model.learn(total_timesteps=300)
    assert model.num_timesteps >= 300
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)


def test_runs_under_subproc_vec_env() -> None:
    # fresh worker processes have not imported mixgym: the "mixgym:" prefix imports it there
    venv = make_vec_env("mixgym:mixgym/Mixing-v0", n_envs=2, vec_env_cls=SubprocVecEnv, env_kwargs={"total_steps": 50})
    model = SAC("MlpPolicy", venv, learning_starts=10, seed=0, device="cpu")
    model.learn(total_timesteps=40)
    obs = venv.reset()
    obs, rewards, dones, infos = venv.step(np.zeros((2, 5), dtype=np.float32))
    assert obs.shape == (2, 27) and np.all(np.isfinite(rewards))
    assert all(np.isclose(info["mixture"].sum(), 1.0) for info in infos)
    venv.close()
