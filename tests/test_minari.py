"""Mixing runs as Minari datasets (`mixgym record`) and TorchRL's offline RL on them."""

import sys

import numpy as np
import pytest

minari = pytest.importorskip("minari")

from gymnasium.error import DependencyNotInstalled  # noqa: E402

from mixgym.agents import evaluate  # noqa: E402
from mixgym.cli import main  # noqa: E402
from mixgym.envs import MixingEnv  # noqa: E402
from mixgym.integrations.minari_datasets import record  # noqa: E402


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_recorded_runs_load_with_minari():
    record("odm", "mixgym/classic5/odm-v0", task="classic5", episodes=2, seed=7, env_options={"total_steps": 50})
    dataset = minari.load_dataset("mixgym/classic5/odm-v0")
    assert dataset.total_episodes == 2 and dataset.total_steps == 10
    meta = dataset.storage.metadata
    assert meta["algorithm_name"] == "odm"
    assert meta["mixgym"]["task"] == "classic5" and meta["mixgym"]["seeds"] == [7, 8]
    assert meta["mixgym"]["domains"] == ["easy", "hard", "noise", "redundant", "conflict"]
    assert "mixgym_version" in meta["mixgym"]
    assert [m["seed"] for m in dataset.storage.get_episode_metadata([0, 1])] == [7, 8]
    episode = next(dataset.iterate_episodes())
    assert episode.observations.shape[0] == 6 and episode.actions.shape == (5, 5)
    assert episode.terminations[-1] and not episode.terminations[:-1].any()
    np.testing.assert_allclose(episode.infos["mixture"][1:], episode.actions, rtol=1e-6)  # the mixture chosen
    assert episode.infos["train_loss"].shape == (6, 5) and episode.infos["eval_loss"].shape == (6, 5)
    assert "reward.alignment" in episode.infos  # the reward's components, "/" written "."
    env = dataset.recover_environment()
    assert env.spec.id == "mixgym/MixingClassic-v0" and env.unwrapped.num_decisions == 5


def test_a_recorded_run_is_the_run_evaluate_sees():
    record("exp3", "mixgym/classic5/exp3-v0", episodes=1, seed=3, env_options={"total_steps": 40})
    episode = next(minari.load_dataset("mixgym/classic5/exp3-v0").iterate_episodes())
    env = MixingEnv(task="classic5", action_map="simplex", total_steps=40)
    from mixgym.agents import make_agent

    results = evaluate(make_agent("exp3", env), env, episodes=1, seed=3)
    np.testing.assert_allclose(results.final_objectives()[0], episode.infos["objective"][-1])


def test_record_command(capsys):
    code = main(["record", "uniform", "--task", "pile22", "--episodes", "1", "--out", "mixgym/pile22/uniform-v0",
                 "--env", "total_steps=20", "--no-progress"])
    assert code == 0
    assert "minari.load_dataset('mixgym/pile22/uniform-v0')" in " ".join(capsys.readouterr().out.split())
    assert minari.load_dataset("mixgym/pile22/uniform-v0").observation_space.shape[0] > 22


def test_missing_minari_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(DependencyNotInstalled, match=r'mixgym\[minari\]'):
        record("uniform", "mixgym/classic5/none-v0", episodes=1)


@pytest.mark.parametrize("method", ["bc", "td3bc"])
def test_offline_rl_trains_on_a_recorded_dataset_and_acts(method):
    pytest.importorskip("torchrl")
    from mixgym.integrations.offline_rl import train_offline

    record("random", "mixgym/classic5/random-v0", episodes=2, env_options={"total_steps": 40})
    policy = train_offline("mixgym/classic5/random-v0", method=method, steps=30, batch_size=16)
    assert policy.name == f"offline-{method}" and np.isfinite(list(policy.losses.values())).all()
    env = MixingEnv(task="classic5", action_map="simplex", total_steps=40)
    results = evaluate(policy, env, episodes=1, seed=0)
    assert np.isfinite(results.final_objectives()).all()
    action = policy.predict(np.zeros(policy.observation_dim, dtype=np.float32))[0]
    assert (action >= 0).all() and np.isclose(action.sum(), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="method must be one of"):
        train_offline("mixgym/classic5/random-v0", method="cql")
