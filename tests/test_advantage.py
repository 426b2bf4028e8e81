"""The counterfactual advantage reward and its baseline twin (issue 12)."""

import numpy as np
import pytest

from mixgym.envs import MixingEnv
from mixgym.llm_backend import Signal, ToyBackend

SMALL = {"total_steps": 60, "steps_per_action": 10}


def episode(env: MixingEnv, seed: int, actions: np.ndarray) -> tuple[list[float], list[dict]]:
    _, info = env.reset(seed=seed)
    rewards, infos = [], [info]
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        if terminated:
            break
    assert terminated
    return rewards, infos


@pytest.mark.parametrize("reward", ["advantage", "advantage_terminal"])
@pytest.mark.parametrize("baseline", ["uniform", "natural", (0.1, 0.5, 0.0, 0.2, 0.2)])
@pytest.mark.parametrize("eval_every", [1, 4])
def test_undiscounted_return_is_the_final_advantage(reward: str, baseline, eval_every: int) -> None:
    env = MixingEnv(reward=reward, reward_kwargs={"baseline": baseline}, eval_every=eval_every, total_steps=95)
    actions = np.random.default_rng(3).uniform(-1, 1, (10, 5)).astype(np.float32)
    rewards, infos = episode(env, 11, actions)
    final = infos[-1]
    # the advantage, recomputed from the two runs' held-out losses at the end
    weights = env.objective.weights
    baseline_objective = float(weights @ env._evaluate(env.twin))
    agent_objective = float(weights @ env._evaluate(env.backend))
    assert agent_objective == float(final["objective"])
    assert baseline_objective == float(final["reward/baseline_objective"])
    assert abs(baseline_objective - agent_objective) > 1e-3  # the test means something
    assert sum(rewards) == pytest.approx(baseline_objective - agent_objective, abs=1e-12, rel=1e-9)
    assert float(final["reward/advantage"]) == baseline_objective - agent_objective
    if reward == "advantage_terminal":
        assert all(r == 0.0 for r in rewards[:-1])
    else:
        assert sum(r != 0.0 for r in rewards) > 1  # paid along the way


def test_twin_is_bit_identical_to_a_separate_baseline_run() -> None:
    """The twin replays what a plain run on the reference mixture does with the same seed."""
    mixture = np.array([0.1, 0.4, 0.05, 0.25, 0.2])
    agent_env = MixingEnv(reward="advantage", reward_kwargs={"baseline": tuple(mixture)}, **SMALL)
    baseline_env = MixingEnv(reward="eval_loss", action_map="simplex", **SMALL)
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 5)).astype(np.float32)
    _, agent_infos = episode(agent_env, 5, actions)
    _, baseline_infos = episode(baseline_env, 5, np.tile(mixture, (6, 1)))
    assert np.array_equal(baseline_infos[0]["eval_loss"], agent_infos[0]["eval_loss"])  # same initial model
    for agent_info, baseline_info in zip(agent_infos[1:], baseline_infos[1:]):
        assert np.array_equal(agent_info["reward/baseline_eval_loss"], baseline_info["eval_loss"])
        assert agent_info["reward/baseline_objective"] == baseline_info["objective"]
    twin, plain = agent_env.twin.state_dict(), baseline_env.backend.state_dict()
    assert np.array_equal(twin["theta"], plain["theta"]) and twin["rng"] == plain["rng"]


def test_an_agent_playing_the_baseline_earns_exactly_zero() -> None:
    """Common random numbers: the same mixture on the same draws is the same run."""
    env = MixingEnv(reward="advantage", action_map="simplex", **SMALL)
    rewards, infos = episode(env, 2, np.ones((6, 5)))
    assert rewards == [0.0] * 6 and float(infos[-1]["reward/advantage"]) == 0.0


def test_common_random_numbers_cut_the_noise_of_a_comparison() -> None:
    """The advantage of a fixed good mixture over uniform varies far less across seeds than
    the difference between independent runs does: what makes the reward learnable."""
    good = np.array([0.2, 0.36, 0.02, 0.23, 0.18])
    env = MixingEnv(reward="advantage", action_map="simplex", total_steps=300)
    paired = [sum(episode(env, seed, np.tile(good, (30, 1)))[0]) for seed in range(6)]
    uniform_env = MixingEnv(reward="eval_loss", action_map="simplex", total_steps=300)
    good_finals = [float(episode(env, s, np.tile(good, (30, 1)))[1][-1]["objective"]) for s in range(6)]
    uniform_finals = [float(episode(uniform_env, s + 50, np.ones((30, 5)))[1][-1]["objective"]) for s in range(6)]
    unpaired = np.subtract(uniform_finals, good_finals)
    assert np.mean(paired) > 0
    assert np.std(paired) < 0.5 * np.std(unpaired)


def test_twin_time_is_counted_apart() -> None:
    env = MixingEnv(reward="advantage", info_timings=True, **SMALL)
    _, info = env.reset(seed=0)
    assert info["timings/twin"] == 0.0
    _, _, _, _, info = env.step(np.zeros(5, dtype=np.float32))
    assert info["timings/twin"] > 0 and env.timings["total"]["twin"] > 0
    plain = MixingEnv(reward="eval_loss", **SMALL)
    plain.reset(seed=0)
    plain.step(np.zeros(5, dtype=np.float32))
    assert plain.timings["last"]["twin"] == 0.0


def test_a_state_with_a_twin_does_not_load_into_an_env_without_one() -> None:
    env = MixingEnv(reward="advantage", **SMALL)
    env.reset(seed=4)
    plain = MixingEnv(reward="eval_loss", **SMALL)
    plain.reset(seed=0)
    with pytest.raises(ValueError, match="state and environment disagree on the baseline twin"):
        plain.load_state_dict(env.state_dict())


@pytest.mark.parametrize(
    ("baseline", "match"),
    [
        ((0.5, 0.5), r"K=5 weights .*\(0\.5, 0\.5\)"),
        ((0.5, -0.1, 0.2, 0.2, 0.2), r"non-negative, got \(0\.5, -0\.1"),
        ((0.0, 0.0, 0.0, 0.0, 0.0), r"all zero: \(0\.0, 0\.0"),
        ((0.2, float("nan"), 0.2, 0.2, 0.2), r"finite and non-negative, got \(0\.2, nan"),
        ("proportional", r"unknown baseline 'proportional'; choose one of uniform, natural"),
    ],
)
def test_bad_baselines_are_refused_naming_the_value(baseline, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixingEnv(reward="advantage", reward_kwargs={"baseline": baseline}, **SMALL)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"terminal": "yes"}, "terminal must be True or False, got 'yes'"),
        ({"terminal": 1}, "terminal must be True or False, got 1"),
        ({"scale": True}, "reward_kwargs scale must be a number, got True"),
        ({"scale": 0.0}, r"reward_kwargs scale must be > 0.0, got 0.0"),
        ({"baseline": ("0.2", 0.2, 0.2, 0.2, 0.2)}, r"baseline mixture's weights must be numbers, got \('0.2'"),
        ({"baseline": 5}, "baseline must be 'uniform' or 'natural' or K mixture weights, got 5"),
    ],
)
def test_bad_options_are_refused_by_type_and_range(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):  # a TypeError of the reward arrives as make_reward's ValueError
        MixingEnv(reward="advantage", reward_kwargs=options, **SMALL)


class NoTwinBackend(ToyBackend):
    """A backend that cannot replay its run (as one spread over machines may not)."""

    signals = ToyBackend.signals - {Signal.TWIN}


def test_a_backend_without_a_twin_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"reward 'advantage' needs the backend signal\(s\) twin, which NoTwinBackend"):
        MixingEnv(backend=NoTwinBackend(total_steps=60), reward="advantage")
    MixingEnv(backend=NoTwinBackend(total_steps=60), reward="eval_loss")  # other rewards still work


def test_natural_baseline_follows_domain_sizes() -> None:
    env = MixingEnv(reward="advantage", reward_kwargs={"baseline": "natural"}, num_domains=8, total_steps=20)
    sizes = env.backend.info.domain_sizes
    assert np.allclose(env.baseline_mixture, sizes / sizes.sum()) and not np.allclose(env.baseline_mixture, 1 / 8)


@pytest.mark.usefixtures("one_torch_thread")
def test_hf_twin_replays_the_run_and_costs_a_second_model() -> None:
    """The HF backend's twin: same initial weights, same data and plan draws, its own model;
    it records no per-domain gradients (the agent's run does: gradient_mode "training")."""
    pytest.importorskip("transformers")
    options = {"model": "pythia-tiny", "seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 3}
    env = MixingEnv(backend="hf", reward="advantage", action_map="simplex", total_steps=6, steps_per_action=2, **options)
    assert env.twin.model is not env.backend.model and env.twin._streams[0] is not env.backend._streams[0]
    assert env.twin._streams[0].chunks is env.backend._streams[0].chunks  # tokenised data shared, not copied
    assert env.backend._gradients is not None and env.twin._gradients is None
    rewards, infos = episode(env, 3, np.ones((3, 5)))  # the agent plays the baseline (uniform)
    assert rewards == [0.0] * 3
    skewed = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    rewards, infos = episode(env, 3, np.tile(skewed, (3, 1)))
    assert sum(rewards) == pytest.approx(float(infos[-1]["reward/advantage"]), abs=1e-12)
    assert float(infos[-1]["reward/advantage"]) != 0.0
    plain = MixingEnv(backend="hf", reward="eval_loss", action_map="simplex", total_steps=6, steps_per_action=2, **options)
    _, plain_infos = episode(plain, 3, np.ones((3, 5)))
    for agent_info, baseline_info in zip(infos[1:], plain_infos[1:]):
        assert np.array_equal(agent_info["reward/baseline_eval_loss"], baseline_info["eval_loss"])


def test_scale_multiplies_the_reward_not_the_components() -> None:
    actions = np.random.default_rng(2).uniform(-1, 1, (6, 5)).astype(np.float32)
    plain, _ = episode(MixingEnv(reward="advantage", **SMALL), 1, actions)
    scaled, infos = episode(MixingEnv(reward="advantage", reward_kwargs={"scale": 100.0}, **SMALL), 1, actions)
    assert scaled == pytest.approx([100.0 * r for r in plain], rel=1e-12, abs=1e-15)
    assert sum(scaled) == pytest.approx(100.0 * float(infos[-1]["reward/advantage"]), rel=1e-9)
    for bad in (0.0, -1.0, float("inf"), "10"):
        with pytest.raises(ValueError, match="reward_kwargs scale must be (a number|> 0.0|a finite number), got"):
            MixingEnv(reward="advantage", reward_kwargs={"scale": bad}, **SMALL)
