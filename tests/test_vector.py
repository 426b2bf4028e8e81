"""The native vector env: bit-identical to Gymnasium's SyncVectorEnv of single envs, through
autoresets, for every reward, K=5 and K=22; the vector API's checks; copies; bad input."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import mixgym  # noqa: F401  (registers the ids)
from mixgym.envs.vector import ToyVectorEnv

CASES = {
    "alignment-v1": ("mixgym/Mixing-v1", {}),
    "alignment-v0": ("mixgym/Mixing-v0", {}),
    "holistic": ("mixgym/MixingHolistic-v1", {}),
    "eval_loss-every-2": ("mixgym/Mixing-v1", {"reward": "eval_loss", "eval_every": 2}),
    "advantage": ("mixgym/MixingAdvantage-v1", {}),
    "advantage_terminal": ("mixgym/Mixing-v1", {"reward": "advantage_terminal"}),
    "alignment-K22": ("mixgym/Mixing22-v1", {}),
    "holistic-K22": ("mixgym/Mixing22-v0", {"reward": "holistic"}),
    "advantage-K22": ("mixgym/MixingAdvantage22-v1", {}),
    "forced-fraction": ("mixgym/Mixing-v1", {"forced_fraction": 0.25}),
    "pile22-task": ("mixgym/MixingPile-v0", {}),
    "phases": ("mixgym/Mixing-v1", {"phases": [(30, ["easy", "hard", "noise"]), (40, ["easy", "hard", "noise", "redundant", "conflict"])]}),
    "compute-budget": ("mixgym/Mixing-v1", {"budget": "compute"}),
    "callable": ("mixgym/Mixing-v1", {"reward": lambda before, after, env: float(after.eval_loss.sum() - after.step_weight_norms.sum())}),
}


def rollout(envs: gym.vector.VectorEnv, steps: int, seed: int = 5) -> list:
    """Every number a vector env returns over `steps` random steps (actions from a fixed RNG)."""
    rng = np.random.default_rng(0)
    out = [envs.reset(seed=seed)]
    for _ in range(steps):
        actions = rng.uniform(-1.2, 1.2, envs.action_space.shape).astype(np.float32)
        out.append(envs.step(actions))
    return out


def assert_same(a, b) -> None:
    """Two nested results (tuples, dicts, arrays, numbers) equal to the last bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        x, y = np.asarray(a), np.asarray(b)
        assert x.dtype == y.dtype and x.shape == y.shape, (x.dtype, y.dtype, x.shape, y.shape)
        assert np.array_equal(x.view(np.uint8) if x.dtype.kind == "f" else x, y.view(np.uint8) if y.dtype.kind == "f" else y)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("case", sorted(CASES))
def test_vector_env_is_bit_identical_to_single_envs_through_autoresets(case: str, mode: AutoresetMode) -> None:
    env_id, kwargs = CASES[case]
    kwargs = {"total_steps": 70, **kwargs}  # 7 decisions: 16 steps pass two autoresets
    native = gym.make_vec(env_id, num_envs=3, autoreset_mode=mode, **kwargs)
    assert isinstance(native, ToyVectorEnv)
    reference = SyncVectorEnv([lambda: gym.make(env_id, **kwargs) for _ in range(3)], autoreset_mode=mode)
    assert native.observation_space == reference.observation_space and native.action_space == reference.action_space
    assert_same(rollout(native, 16), rollout(reference, 16))


def test_sub_env_i_is_the_single_env_seeded_seed_plus_i() -> None:
    envs = gym.make_vec("mixgym/Mixing22-v1", num_envs=4, total_steps=50)
    obs, _ = envs.reset(seed=11)
    single = gym.make("mixgym/Mixing22-v1", total_steps=50)
    first, _ = single.reset(seed=14)
    assert np.array_equal(obs[3], first)
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 22)).astype(np.float32)
    obs, rewards, *_ = envs.step(actions)
    alone, reward, *_ = single.step(actions[3])
    assert np.array_equal(obs[3], alone) and rewards[3] == reward


def test_max_episode_steps_truncates_as_time_limit() -> None:
    from gymnasium.wrappers import TimeLimit

    # Gymnasium's own TimeLimit: importing rl_zoo3 (as other tests do) patches gymnasium's with one
    # that adds SB3's "TimeLimit.truncated" key to the info
    time_limit = TimeLimit if TimeLimit.__module__.startswith("gymnasium") else TimeLimit.__mro__[1]
    native = gym.make_vec("mixgym/Mixing-v1", num_envs=2, total_steps=100, max_episode_steps=3)
    reference = SyncVectorEnv([lambda: time_limit(gym.make("mixgym/Mixing-v1", total_steps=100), 3) for _ in range(2)])
    results = rollout(native, 8)
    assert_same(results, rollout(reference, 8))
    assert results[3][3].all() and not results[3][2].any()


def test_gymnasium_vector_checks_and_spaces() -> None:
    envs = gym.make_vec("mixgym/Mixing-v1", num_envs=3, total_steps=40)
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert all(info[f"_{key}"].all() for key in info if not key.startswith("_"))
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs) and rewards.dtype == np.float64
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_
    assert envs.call("num_decisions") == (4, 4, 4) and envs.get_attr("steps_per_action") == (10, 10, 10)
    envs.set_attr("eval_every", 2)
    assert envs.get_attr("eval_every") == (2, 2, 2)
    # a reset of some sub-envs only, as Gymnasium's reset_mask does
    mask = np.array([True, False, True])
    obs2, info2 = envs.reset(seed=[7, None, 9], options={"reset_mask": mask})
    assert np.array_equal(obs2[1], obs[1]) and info2["_step"].tolist() == [True, False, True]
    sync = gym.make_vec("mixgym/Mixing-v1", num_envs=2, vectorization_mode="sync", total_steps=40)
    assert isinstance(sync, SyncVectorEnv)  # Gymnasium's own vector envs stay one keyword away


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_mid_run_continues_bit_identically(how: str) -> None:
    envs = gym.make_vec("mixgym/MixingAdvantage-v1", num_envs=3, total_steps=60)
    rollout(envs, 3)
    twin = copy.deepcopy(envs) if how == "deepcopy" else pickle.loads(pickle.dumps(envs))
    rng = np.random.default_rng(3)
    for _ in range(9):  # through an autoreset
        actions = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
        assert_same(envs.step(actions), twin.step(actions))
    assert twin.runs is not envs.runs and twin.envs[0].backend._runs is twin.runs


def test_sb3_vec_env_checks_and_terminal_observation() -> None:
    from stable_baselines3.common.env_checker import check_env
    from stable_baselines3.common.vec_env import VecEnv

    from mixgym.envs.sb3_vec import SB3VecEnv

    vec = SB3VecEnv(num_envs=2, total_steps=30)
    assert isinstance(vec, VecEnv) and vec.num_envs == 2
    check_env(vec.envs[0], warn=True)  # each sub-env is the single env SB3's checker knows
    vec.seed(3)
    obs = vec.reset()
    assert obs.shape == (2, 31)
    for t in range(3):
        obs, rewards, dones, infos = vec.step(np.zeros((2, 5), dtype=np.float32))
    assert dones.all() and all("terminal_observation" in info for info in infos)
    assert infos[0]["TimeLimit.truncated"] is False
    assert not np.array_equal(obs[0], infos[0]["terminal_observation"])  # obs is the next episode's first
    assert vec.get_attr("steps_per_action") == [10, 10] and vec.env_method("render") == [None, None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, r"num_envs must be an integer >= 1, got 0"),
        ({"num_envs": 2.5}, r"num_envs must be an integer, got 2.5"),
        ({"num_envs": True}, r"num_envs must be an integer, got True"),
        ({"num_envs": 2, "autoreset_mode": "sometimes"}, r"unknown autoreset_mode 'sometimes'"),
        ({"num_envs": 2, "max_episode_steps": 0}, r"max_episode_steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_construction_names_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        ToyVectorEnv(**kwargs)


def test_bad_actions_name_the_problem() -> None:
    envs = ToyVectorEnv(num_envs=3, total_steps=40)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(3, 5\) \(num_envs, K\), got \(2, 5\)"):
        envs.step(np.zeros((2, 5)))
    bad = np.zeros((3, 5))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"actions of sub-environment\(s\) \[1\] are not finite"):
        envs.step(bad)


def test_other_backends_and_instances_are_refused_with_the_sync_alternative() -> None:
    from mixgym.llm_backend import ToyBackend

    with pytest.raises(ValueError, match=r"not backend 'hf'; use gymnasium.make_vec\(..., vectorization_mode='sync'\)"):
        ToyVectorEnv(num_envs=2, backend="hf")
    with pytest.raises(gym.error.Error, match=r"doesn't have a vector entry point"):  # the hf task has none
        gym.make_vec("mixgym/MixingPileLM-v0", num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=r"not backend a ToyBackend instance"):
        ToyVectorEnv(num_envs=2, backend=ToyBackend())


def test_a_diverging_sub_env_names_its_index_and_the_others_finish() -> None:
    envs = ToyVectorEnv(num_envs=3, total_steps=100)
    envs.reset(seed=0)
    envs.envs[1].backend._theta[:] = np.float32(1e30)  # sub-env 1 blows up
    with pytest.raises(FloatingPointError, match=r"sub-environment 1 of 3: non-finite training loss at step 10 in domain") as caught:
        envs.step(np.zeros((3, 5), dtype=np.float32))
    obs, rewards, terminated, truncated, info = caught.value.results
    assert info["_step"].tolist() == [True, False, True] and info["step"][[0, 2]].tolist() == [10, 10]


def test_make_agent_with_n_envs_learns_on_batched_runs() -> None:
    from mixgym.agents import make_agent
    from mixgym.envs import MixingEnv
    from mixgym.envs.sb3_vec import SB3VecEnv

    env = MixingEnv(reward="eval_loss", total_steps=40)
    agent = make_agent("ppo", env, n_envs=4, sb3_kwargs={"n_steps": 8, "batch_size": 16}, seed=0)
    vec = agent.get_env()
    assert isinstance(vec, SB3VecEnv) and vec.num_envs == 4
    assert vec.envs[0].reward_fn.name == "eval_loss" and vec.envs[0].backend.total_steps == 40
    agent.learn(64)
    assert agent.num_timesteps == 64
    action, _ = agent.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (5,)
    sac = make_agent("sac", SB3VecEnv(2, total_steps=40), sb3_kwargs={"learning_starts": 4}, seed=0)
    sac.learn(16)
    assert sac.num_timesteps == 16
    with pytest.raises(ValueError, match=r"agent 'hds' drives one env at a time \(n_envs=2\); agents that take n_envs: .*ppo"):
        make_agent("hds", env, n_envs=2)
    with pytest.raises(ValueError, match=r"agent 'uniform' drives one env at a time, not a SB3VecEnv"):
        make_agent("uniform", SB3VecEnv(2, action_map="simplex"))
    with pytest.raises(ValueError, match=r"n_envs must be an integer >= 1, got 0"):
        make_agent("ppo", env, n_envs=0)
