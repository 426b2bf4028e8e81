"""Copies of a live run (`copy.deepcopy`, pickle) continue bit-identically to the original,
for every reward, on the toy and the HF backend; toy pickles carry the task's seed, not its data."""

import copy
import pickle
import subprocess
import sys
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import pytest

import mixgym  # noqa: F401  (registers the ids)
from mixgym.envs import REWARDS, MixingEnv
from mixgym.llm_backend import ToyBackend

COPIES: dict[str, Callable[[Any], Any]] = {"deepcopy": copy.deepcopy, "pickle": lambda env: pickle.loads(pickle.dumps(env))}


def continue_run(env: gym.Env, actions: np.ndarray) -> list[tuple]:
    return [env.step(action) for action in actions]


def assert_same_steps(expected: list[tuple], got: list[tuple]) -> None:
    for (obs, reward, terminated, truncated, info), (obs2, reward2, terminated2, truncated2, info2) in zip(expected, got):
        assert np.array_equal(obs, obs2) and reward == reward2 and (terminated, truncated) == (terminated2, truncated2)
        assert info.keys() == info2.keys()
        for key, value in info.items():
            assert np.array_equal(value, info2[key]), key


def copies_continue_like_the_original(make_env: Callable[[], gym.Env], k_steps: int, more: int, num_domains: int) -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (k_steps + more, num_domains)).astype(np.float32)
    env = make_env()
    env.reset(seed=3)
    for action in actions[:k_steps]:
        env.step(action)
    copies = {name: make_copy(env) for name, make_copy in COPIES.items()}
    expected = continue_run(env, actions[k_steps:])
    for name, twin in copies.items():
        assert_same_steps(expected, continue_run(twin, actions[k_steps:]))
    # and the original's held-out loss really moved: a frozen copy would not pass the comparison
    assert not np.array_equal(expected[0][4]["eval_loss"], expected[-1][4]["eval_loss"])


@pytest.mark.parametrize("reward", sorted(REWARDS))
@pytest.mark.parametrize("num_domains", [5, 22])
def test_toy_copies_continue_bit_identically(reward: str, num_domains: int) -> None:
    copies_continue_like_the_original(
        lambda: MixingEnv(reward=reward, num_domains=num_domains, total_steps=200), 4, 8, num_domains
    )


def test_copies_of_a_made_env_keep_its_wrappers() -> None:
    env = gym.make("mixgym/MixingHolistic-v0", total_steps=100, max_episode_steps=8)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    for make_copy in COPIES.values():
        twin = make_copy(env)
        assert type(twin) is type(env) and isinstance(twin.unwrapped.backend, ToyBackend)
    actions = np.zeros((7, 5), dtype=np.float32)
    twin = pickle.loads(pickle.dumps(env))
    expected = continue_run(env, actions)
    assert_same_steps(expected, continue_run(twin, actions))
    assert expected[-1][3] is True  # TimeLimit's count travelled: 1 + 7 steps reach max_episode_steps=8


def test_a_toy_copy_learns_apart_from_its_original() -> None:
    env = MixingEnv(reward="eval_loss", total_steps=300)
    env.reset(seed=0)
    env.step(np.zeros(5, dtype=np.float32))
    twin = copy.deepcopy(env)
    start = twin.unwrapped.backend.evaluate()
    for _ in range(10):
        twin.step(np.zeros(5, dtype=np.float32))
    assert sum(twin.backend.evaluate().values()) < 0.9 * sum(start.values())
    assert env.backend.evaluate() == start  # the original did not move with its copy
    for backend in (env.backend, twin.backend):  # views intact on both sides: each run its own store
        assert np.shares_memory(backend._params[0], backend._runs.theta)
    assert not np.shares_memory(env.backend._runs.theta, twin.backend._runs.theta)


def test_a_toy_pickle_carries_the_seed_not_the_data() -> None:
    env = MixingEnv(reward="holistic", num_domains=22, total_steps=100)
    env.reset(seed=0)
    env.step(np.zeros(22, dtype=np.float32))
    blob = pickle.dumps(env)
    assert len(blob) < 1_000_000  # the task's data alone is 34 MB at K=22
    assert env.backend._task.train.nbytes > 20 * len(blob)


def test_a_toy_pickle_continues_in_a_fresh_process(tmp_path) -> None:
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 5)).astype(np.float32)
    env = MixingEnv(reward="alignment", total_steps=200)
    env.reset(seed=9)
    env.step(actions[0])
    (tmp_path / "env.pkl").write_bytes(pickle.dumps(env))
    np.save(tmp_path / "actions.npy", actions[1:])
    code = (
        "import pickle, sys, numpy as np\n"
        f"env = pickle.loads(open({str(tmp_path / 'env.pkl')!r}, 'rb').read())\n"
        f"actions = np.load({str(tmp_path / 'actions.npy')!r})\n"
        "rewards = [env.step(a)[1] for a in actions]\n"
        "print(' '.join(repr(r) for r in rewards))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert [float(r) for r in out.stdout.split()] == [env.step(a)[1] for a in actions[1:]]


def test_a_state_from_different_task_data_is_refused() -> None:
    backend = ToyBackend(total_steps=50)
    state = backend.state_dict()
    state["data_checksum"] = "0" * 32
    with pytest.raises(ValueError, match="task_seed=0 differs"):
        ToyBackend(total_steps=50).load_state_dict(state)


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_hf_copies_continue_bit_identically(reward: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")  # the hf extra (absent from `make test-gym029`'s venv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        copies_continue_like_the_original(
            lambda: MixingEnv(
                backend="hf", model="gpt2-tiny", reward=reward, total_steps=24, steps_per_action=2,
                seq_len=32, micro_batch_size=2, grad_accumulation=3,
            ),
            2,
            3,
            5,
        )
    finally:
        torch.set_num_threads(threads)
