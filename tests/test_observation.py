"""Observation layouts: v0 kept bit for bit, v1's blocks, custom lists and bad input (issue 12)."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from mixgym.envs import MixingEnv
from mixgym.envs.features import FEATURES, LAYOUTS, TWIN_FEATURES, ObservationLayout
from mixgym.llm_backend import Signal, ToyBackend

V0_GOLDEN = Path(__file__).parent / "data" / "mixing_v0_observations.json"


def test_v0_observations_are_unchanged() -> None:
    """`mixgym/Mixing-v0` and `MixingHolistic-v0` observe what they did before v1 (values
    recorded from the code before issue 12 by `record_v0_observations` below), to float32
    rounding: the layout and every feature are the same; the toy's own arithmetic may change in
    the last bit (issue 11's per-step weight norms moved the norm z-scores by 3e-7)."""
    golden = json.loads(V0_GOLDEN.read_text())
    for env_id, expected in golden.items():
        observations = np.array(record_v0_observations(env_id), dtype=np.float32)
        assert observations.shape == (6, 4 * 5 + 2 * 3 + 1), env_id
        assert np.allclose(observations, np.array(expected, dtype=np.float32), rtol=0, atol=1e-5), env_id


def record_v0_observations(env_id: str) -> list[list[float]]:
    env = gym.make(env_id, total_steps=50)
    obs, _ = env.reset(seed=123)
    observations = [obs.tolist()]
    for action in np.random.default_rng(7).uniform(-1, 1, (5, 5)).astype(np.float32):
        observations.append(env.step(action)[0].tolist())
    return observations


def test_v1_blocks_mean_what_the_table_says() -> None:
    env = MixingEnv(reward="eval_loss", total_steps=50)
    k = 5
    assert env.observation_space.shape == (6 * k + 1,) and env.layout.features == LAYOUTS["v1"]
    parts = env.layout.slices()
    obs, info = env.reset(seed=0)
    assert np.allclose(obs[parts["mixture"]], 1 / k) and not obs[parts["cumulative"]].any()
    assert not obs[parts["share"]].any() and obs[parts["progress"]][0] == 0.0
    samples = np.zeros(k)
    for action in np.random.default_rng(0).uniform(-1, 1, (3, k)).astype(np.float32):
        obs, _, _, _, info = env.step(action)
        samples += info["samples"]
        assert np.allclose(obs[parts["mixture"]], info["mixture"], atol=1e-7)
        assert np.allclose(obs[parts["share"]], info["realised_mixture"], atol=1e-7)  # the realised mixture
        assert np.allclose(obs[parts["cumulative"]], samples / samples.sum(), atol=1e-7)
    assert not np.allclose(obs[parts["share"]], obs[parts["cumulative"]])
    assert obs[parts["progress"]][0] == pytest.approx(0.6)
    assert env.observation_space.contains(obs)


def test_v1_shows_the_baseline_twin_when_the_reward_runs_one() -> None:
    env = MixingEnv(reward="advantage", total_steps=50)
    assert env.observation_space.shape == (7 * 5 + 1,) and env.layout.features[-1] == "baseline_ratio"
    where = env.layout.slices()["baseline_ratio"]
    obs, info = env.reset(seed=0)
    initial = info["eval_loss"]
    assert np.allclose(obs[where], 1.0)  # the twin starts from the same model
    for _ in range(3):
        obs, _, _, _, info = env.step(np.array([1, -1, 0, 0.5, 0], dtype=np.float32))
        assert np.allclose(obs[where], info["reward/baseline_eval_loss"] / initial, atol=1e-6)
        assert not np.allclose(obs[where], obs[env.layout.slices()["eval_ratio"]])
    assert env.observation_space.contains(obs)
    with pytest.raises(ValueError, match="'baseline_ratio' needs a reward with a baseline twin, not 'eval_loss'"):
        MixingEnv(reward="eval_loss", observation=["v1", "baseline_ratio"], total_steps=50)
    assert MixingEnv(reward="advantage", observation="v0", total_steps=50).observation_space.shape == (27,)


def test_layouts_can_be_extended_and_listed_by_block() -> None:
    env = MixingEnv(observation=["v1", "norm_z", "update_z"], total_steps=30)
    assert env.observation_space.shape == (6 * 5 + 1 + 6,)
    assert list(env.layout.slices())[-2:] == ["norm_z", "update_z"]
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(np.zeros(5, dtype=np.float32))
    assert obs[env.layout.slices()["update_z"]].any()
    small = MixingEnv(observation=["eval_ratio", "progress"], total_steps=30)
    assert small.observation_space.shape == (6,)
    assert ObservationLayout(5, 3).size == 4 * 5 + 2 * 3 + 1  # the dataclass's default stays v0


@pytest.mark.parametrize(
    ("observation", "match"),
    [
        ("v2", r"unknown observation block or layout 'v2'; layouts: v0, v1; blocks: loss_z"),
        (["v1", "weights"], r"unknown observation block or layout 'weights'"),
        (["v1", "mixture"], r"repeats block\(s\) \['mixture'\]"),
        ([], r"names no block"),
    ],
)
def test_bad_observation_is_refused(observation, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixingEnv(observation=observation, total_steps=30)


class NoWeightsBackend(ToyBackend):
    signals = ToyBackend.signals - {Signal.WEIGHT_NORMS}


def test_weight_blocks_need_weight_norms_when_asked_by_name() -> None:
    with pytest.raises(ValueError, match=r"\['norm_z'\] need weight norms, which NoWeightsBackend does not report"):
        MixingEnv(backend=NoWeightsBackend(total_steps=30), observation=["v1", "norm_z"])
    env = MixingEnv(backend=NoWeightsBackend(total_steps=30), observation="v0")  # v0 as published: zeros
    obs, _ = env.reset(seed=0)
    assert not obs[env.layout.slices()["norm_z"]].any()


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_registered_ids_pin_their_layout(version: str) -> None:
    for env_id in (f"mixgym/Mixing-{version}", f"mixgym/MixingHolistic-{version}"):
        env = gym.make(env_id, total_steps=30)
        assert env.unwrapped.layout.features == LAYOUTS[version], env_id
    assert set(LAYOUTS["v0"]) | set(LAYOUTS["v1"]) | set(TWIN_FEATURES) == set(FEATURES)


@pytest.mark.parametrize("observation", [3, None, {"v1": 1}, ["v1", 2]])
def test_observation_of_the_wrong_type_is_refused(observation) -> None:
    with pytest.raises(TypeError, match="observation must be a layout name or a list of block/layout names, got"):
        MixingEnv(observation=observation, total_steps=30)
