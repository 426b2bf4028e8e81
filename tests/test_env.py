"""MixingEnv against Gymnasium's and SB3's contracts, and its handling of bad input."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mixgym
from mixgym.envs import ACTION_MAPS, REWARDS, MixingEnv
from mixgym.registration import ENV_PRESETS

SMALL = {"total_steps": 60, "steps_per_action": 10}


@pytest.mark.parametrize("reward", sorted(REWARDS))
@pytest.mark.parametrize("action_map", ACTION_MAPS)
def test_checkers_pass_for_every_reward_and_action_map(reward: str, action_map: str) -> None:
    env = MixingEnv(reward=reward, action_map=action_map, **SMALL)
    gym_check_env(env, skip_render_check=False)
    sb3_check_env(MixingEnv(reward=reward, action_map=action_map, **SMALL), warn=True)


@pytest.mark.parametrize("env_id", sorted(ENV_PRESETS))
def test_every_registered_id_makes_and_runs(env_id: str) -> None:
    env = gym.make(env_id, total_steps=30)
    gym_check_env(env.unwrapped)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward) and not truncated
    assert info["step"] == 30


def test_make_with_module_prefix_needs_no_import() -> None:
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('mixgym:mixgym/Mixing-v0', backend='toy', reward='holistic', num_domains=22, total_steps=20)\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(len(env.unwrapped.domains), obs.shape[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["22", str(4 * 22 + 2 * 3 + 1)]


def test_registration_is_idempotent() -> None:
    mixgym.register_envs()
    mixgym.register_envs()
    assert gym.spec("mixgym/Mixing-v0").entry_point == "mixgym.envs.mixing_env:MixingEnv"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode: str) -> None:
    envs = gym.make_vec("mixgym/Mixing-v0", num_envs=2, vectorization_mode=mode, total_steps=30, num_domains=4)
    obs, _ = envs.reset(seed=3)
    assert obs.shape == (2, 4 * 4 + 7)
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert reward.shape == (2,) and np.all(np.isfinite(reward))
    mixtures = np.stack(list(info["mixture"]))  # (2, K); Gymnasium 0.29 batches array values as objects
    assert mixtures.shape == (2, 4) and np.allclose(mixtures.sum(axis=1), 1.0)
    envs.close()


def rollout(env: MixingEnv, seed: int, actions: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated:
            break
    return observations, rewards


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_same_seed_same_actions_bit_identical(reward: str) -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 5)).astype(np.float32)
    first = rollout(MixingEnv(reward=reward, **SMALL), 7, actions)
    second = rollout(MixingEnv(reward=reward, **SMALL), 7, actions)
    assert all(np.array_equal(a, b) for a, b in zip(first[0], second[0]))
    assert first[1] == second[1]
    third = rollout(MixingEnv(reward=reward, **SMALL), 8, actions)
    assert not np.array_equal(first[0][-1], third[0][-1])


def test_info_has_every_promised_key() -> None:
    env = MixingEnv(reward="holistic", **SMALL)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(5, dtype=np.float32))
    for key, shape in {"mixture": (5,), "train_loss": (5,), "eval_loss": (5,), "samples": (5,)}.items():
        assert info[key].shape == shape
    assert np.isclose(info["mixture"].sum(), 1.0)
    assert np.allclose(info["mixture"], 0.2)  # a zero action under softmax is uniform
    assert info["samples"].sum() == 10 * 32 and info["tokens"] == 10 * 32 * 16 and info["step"] == 10
    assert {f"reward/{c}" for c in ("alignment", "diversity", "stability", "holistic_vector")} <= set(info)
    assert info["reward/holistic_vector"].shape == (5,) and isinstance(info["reward/stability"], np.float64)
    assert np.array_equal(info["realised_mixture"], info["samples"] / info["samples"].sum())


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_info_is_flat_numpy_with_the_same_keys_at_reset_and_step(reward: str) -> None:
    env = MixingEnv(reward=reward, info_timings=True, **SMALL)
    _, reset_info = env.reset(seed=0)
    _, _, _, _, step_info = env.step(np.zeros(5, dtype=np.float32))
    assert set(reset_info) == set(step_info)
    for key, value in step_info.items():
        assert isinstance(value, (np.ndarray, np.generic)), key  # numpy, not Python scalars or dicts
        assert np.shape(reset_info[key]) == np.shape(value), key
    assert np.allclose(reset_info["mixture"], 0.2) and not reset_info["samples"].any()
    assert not reset_info["realised_mixture"].any() and reset_info["step"] == 0
    assert all(not np.any(reset_info[k]) for k in reset_info if k.startswith("reward/"))
    assert env.reward_components.keys() == {k[len("reward/"):] for k in step_info if k.startswith("reward/")}


def test_episode_terminates_at_budget_with_a_short_last_decision() -> None:
    env = MixingEnv(total_steps=25, steps_per_action=10)
    env.reset(seed=0)
    steps = [env.step(np.zeros(5))[4]["step"] for _ in range(3)]
    assert steps == [10, 20, 25] and env.num_decisions == 3
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(np.zeros(5))


def test_eval_every_refreshes_held_out_loss_only_on_evaluation_decisions() -> None:
    env = MixingEnv(reward="eval_loss", eval_every=3, total_steps=100)
    env.reset(seed=0)
    infos = [env.step(np.zeros(5))[4] for _ in range(3)]
    assert [i["eval_fresh"] for i in infos] == [False, False, True]
    assert np.array_equal(infos[0]["eval_loss"], infos[1]["eval_loss"])
    assert not np.array_equal(infos[1]["eval_loss"], infos[2]["eval_loss"])


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([np.nan, 0, 0, 0, 0]), "NaN or inf"),
        (np.array([np.inf, 0, 0, 0, 0]), "NaN or inf"),
        (np.zeros(4), r"shape \(5,\)"),
        (np.zeros((5, 1)), r"shape \(5,\)"),
        ("abcde", "cannot be read"),
    ],
)
@pytest.mark.parametrize("out_of_bounds", ["clip", "raise"])
def test_bad_actions_raise_naming_the_action(action: object, match: str, out_of_bounds: str) -> None:
    env = MixingEnv(out_of_bounds=out_of_bounds, **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize("action_map", ACTION_MAPS)
def test_out_of_bounds_actions_are_clipped_by_default(action_map: str) -> None:
    wild = np.array([3.0, -7.0, 0.5, 1.2, -0.2], dtype=np.float32)
    clipped = np.clip(wild, 0.0 if action_map == "simplex" else -1.0, 1.0)
    mixtures = []
    for action in (wild, clipped):
        env = MixingEnv(action_map=action_map, **SMALL)
        env.reset(seed=0)
        mixtures.append(env.step(action)[4]["mixture"])
    assert np.array_equal(mixtures[0], mixtures[1])


def test_out_of_bounds_raise_names_clip_action() -> None:
    env = MixingEnv(out_of_bounds="raise", **SMALL)
    env.reset(seed=0)
    env.step(np.full(5, 1.0 + 1e-6, dtype=np.float32))  # within the tolerance
    with pytest.raises(ValueError, match=r"outside the action space.*gymnasium\.wrappers\.ClipAction"):
        env.step(np.full(5, 2.0))
    wrapped = gym.wrappers.ClipAction(MixingEnv(out_of_bounds="raise", **SMALL))
    wrapped.reset(seed=0)
    assert np.isclose(wrapped.step(np.full(5, 2.0))[4]["mixture"].sum(), 1.0)
    with pytest.raises(ValueError, match="out_of_bounds 'wrap'.*clip, raise"):
        MixingEnv(out_of_bounds="wrap")


def test_unknown_keywords_are_type_errors_worded_as_python_words_them() -> None:
    with pytest.raises(TypeError, match=r"^MixingEnv\(\) got an unexpected keyword argument 'frameskip'; known options: .*num_domains") as caught:
        gym.make("mixgym/Mixing-v0", frameskip=4)
    assert isinstance(caught.value, ValueError)  # what earlier versions raised
    assert "out_of_bounds" in str(caught.value) and "steps_per_action" in str(caught.value)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'frameskip' \(and 'fps'\); known options: .*seq_len"):
        MixingEnv(backend="hf", frameskip=4, fps=2)  # refused before torch is imported
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'num_domains'"):
        MixingEnv(backend=mixgym.llm_backend.ToyBackend(total_steps=50), num_domains=3)
    with pytest.raises(TypeError, match=r"^ToyBackend\(\) got an unexpected keyword argument 'lr'"):
        mixgym.llm_backend.ToyBackend(lr=0.1)


def test_render_human_prints_the_table_at_reset_and_step(capsys: pytest.CaptureFixture[str]) -> None:
    env = gym.make("mixgym/Mixing-v0", render_mode="human", total_steps=60)
    env.reset(seed=0)
    env.step(np.zeros(5, dtype=np.float32))
    assert env.render() is None
    printed = capsys.readouterr().out
    assert printed.count("step 0/60") == 1 and printed.count("step 10/60") == 1 and "conflict" in printed
    ansi = MixingEnv(render_mode="ansi", total_steps=60)
    ansi.reset(seed=0)
    ansi.step(np.zeros(5, dtype=np.float32))
    assert printed.splitlines()[-6:] == ansi.render().splitlines()


def test_simplex_action_is_normalised_and_zero_is_refused() -> None:
    env = MixingEnv(action_map="simplex", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="positive weight"):
        env.step(np.zeros(5))
    _, _, _, _, info = env.step(np.array([0.2, 0.2, 0, 0, 0]))
    assert np.array_equal(info["mixture"], [0.5, 0.5, 0, 0, 0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reward": "perplexity"}, "'perplexity'"),
        ({"backend": "jax"}, "'jax'"),
        ({"num_domains": 1}, "num_domains.*1"),
        ({"steps_per_action": 0}, "steps_per_action.*0"),
        ({"eval_every": 0}, "eval_every.*0"),
        ({"total_steps": -5}, "total_steps.*-5"),
        ({"action_map": "sigmoid"}, "'sigmoid'"),
        ({"temperature": 0.0}, "temperature.*0.0"),
        ({"eps": 1.5}, "eps.*1.5"),
        ({"reward": "holistic", "reward_kwargs": {"diversity": "entropy"}}, "'entropy'"),
        ({"reward": "alignment", "reward_kwargs": {"w_align": 2}}, "bad reward_kwargs for reward .alignment."),
        ({"learnng_rate": 0.1}, "learnng_rate"),
    ],
)
def test_bad_construction_raises_naming_the_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixingEnv(**kwargs)


def test_reward_needing_a_missing_signal_fails_at_construction() -> None:
    class LossOnlyBackend(mixgym.llm_backend.ToyBackend):
        signals = frozenset()

    with pytest.raises(ValueError, match="gradients.*does not provide"):
        MixingEnv(backend=LossOnlyBackend(total_steps=50), reward="alignment")
    env = MixingEnv(backend=LossOnlyBackend(total_steps=50), reward="eval_loss", observation="v0")
    obs, _ = env.reset(seed=0)
    assert not obs[env.layout.slices()["norm_z"]].any()  # no weight norms: documented zeros


def test_callable_reward_and_its_components() -> None:
    def share_of_first(before, after, env):
        return float(after.mixture[0]), {"first": float(after.mixture[0])}

    env = MixingEnv(reward=share_of_first, **SMALL)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array([1, -1, -1, -1, -1], dtype=np.float32))
    assert reward == info["reward/first"] == pytest.approx(info["mixture"][0]) and reward > 0.85
    assert "reward/first" not in env.reset(seed=0)[1]  # undeclared: it appears from the first step
    share_of_first.components = {"first": ()}  # declared: reset lists it too
    assert MixingEnv(reward=share_of_first, **SMALL).reset(seed=0)[1]["reward/first"] == 0


def test_non_finite_callable_reward_is_an_error() -> None:
    env = MixingEnv(reward=lambda before, after, env: float("nan"), **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.zeros(5))


def test_render_ansi() -> None:
    env = MixingEnv(render_mode="ansi", **SMALL)
    env.reset(seed=0)
    env.step(np.zeros(5))
    text = env.render()
    assert "step 10/60" in text and "conflict" in text


def test_timings_are_kept_on_the_env_and_in_info_on_request() -> None:
    env = MixingEnv(**SMALL)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(5))
    assert not any(k.startswith("timings") for k in info) and env.timings["last"]["train"] > 0
    env = MixingEnv(info_timings=True, **SMALL)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(5))
    env.step(np.zeros(5))
    assert info["timings/train"] > 0 and env.timings["total"]["train"] > info["timings/train"]


def test_render_rgb_array() -> None:
    env = MixingEnv(render_mode="rgb_array", **SMALL)
    env.reset(seed=0)
    env.step(np.array([1, -1, -1, -1, -1], dtype=np.float32))
    image = env.render()
    assert image.shape == (120, 24 * 5, 3) and image.dtype == np.uint8
    blue = (image == np.array([31, 119, 180], dtype=np.uint8)).all(axis=2)
    first, second = blue[:, :24].sum(), blue[:, 24:48].sum()
    assert first > 5 * second  # the favoured domain's bar is the tallest


def test_importing_mixgym_imports_neither_torch_nor_transformers() -> None:
    code = "import sys, mixgym, gymnasium; gymnasium.make('mixgym/Mixing-v0'); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("reward", ["holistic", "advantage"])  # advantage: the baseline twin resumes too
def test_env_state_dict_resumes_bit_identically(reward: str) -> None:
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 5)).astype(np.float32)
    env = MixingEnv(reward=reward, **SMALL)
    env.reset(seed=4)
    for action in actions[:3]:
        env.step(action)
    state = env.state_dict()
    expected = [env.step(action)[:2] for action in actions[3:]]
    resumed = MixingEnv(reward=reward, **SMALL)
    resumed.reset(seed=99)
    resumed.load_state_dict(state)
    got = [resumed.step(action)[:2] for action in actions[3:]]
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(expected, got))


def test_a_diverging_run_stops_naming_step_and_domain() -> None:
    env = MixingEnv(learning_rate=50.0, reward="eval_loss", total_steps=200)
    env.reset(seed=0)
    with pytest.raises(FloatingPointError, match=r"non-finite .* at step \d+ in domain"):
        for _ in range(20):
            env.step(np.zeros(5))
