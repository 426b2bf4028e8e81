"""Tuned SB3 agents read rl_zoo3 hyper-parameter files, which rl_zoo3 itself uses (issue 12)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn

from mixgym.agents import load_agent, make_agent
from mixgym.agents.compare import env_for
from mixgym.agents.tuned import SHIPPED, TUNED_ENV, hyperparams_file, parse_policy_kwargs, read_hyperparams
from mixgym.envs import MixingEnv

SMALL = {"total_steps": 60, "steps_per_action": 10}


@pytest.mark.parametrize("algorithm", SHIPPED)
def test_tuned_preset_uses_the_shipped_file(algorithm: str) -> None:
    entry = yaml.safe_load(hyperparams_file(algorithm).read_text())[TUNED_ENV]
    agent = make_agent(f"{algorithm}-tuned", MixingEnv(reward="advantage", **SMALL), seed=0)
    model = agent.model
    read = [key for key in ("gamma", "learning_rate", "batch_size", "tau", "gradient_steps", "n_steps", "n_epochs", "gae_lambda", "ent_coef") if key in entry]
    assert {"gamma", "learning_rate", "batch_size"} <= set(read)
    for key in read:
        assert getattr(model, key) == entry[key], key
    policy_kwargs = entry["policy_kwargs"]
    policy_kwargs = parse_policy_kwargs(policy_kwargs) if isinstance(policy_kwargs, str) else policy_kwargs
    assert model.policy.net_arch == policy_kwargs["net_arch"]
    if "noise_type" in entry:
        assert isinstance(model.action_noise, NormalActionNoise) and np.allclose(model.action_noise._sigma, entry["noise_std"])


def test_gamma_and_learning_rate_overrides_and_bad_gamma() -> None:
    env = MixingEnv(reward="advantage", **SMALL)
    agent = make_agent("ppo-tuned", env, gamma=1.0, learning_rate=3e-4)
    assert agent.model.gamma == 1.0 and agent.model.learning_rate == 3e-4
    for bad in (0.0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=rf"gamma must be in \(0.0, 1.0\], got {bad!r}"):
            make_agent("ppo-tuned", env, gamma=bad)
    for preset in ("acodm", "hds"):
        with pytest.raises(ValueError, match=r"gamma must be in \(0.0, 1.0\], got 1.01"):
            make_agent(preset, env, gamma=1.01)
    with pytest.raises(ValueError, match="learning_rate must be > 0.0, got -1"):
        make_agent("ppo-tuned", env, learning_rate=-1)


def test_tuned_agents_learn_with_the_reward_they_were_tuned_with() -> None:
    assert SHIPPED == ("ppo",)
    assert env_for("ppo-tuned", SMALL).reward_fn.name == "advantage"
    assert env_for("ppo-tuned", {**SMALL, "reward": "eval_loss"}).reward_fn.name == "eval_loss"
    assert env_for("hds", SMALL).layout.features[-3:] == ("norm_z", "update_z", "progress")  # the paper's state


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    env = MixingEnv(reward="advantage", **SMALL)
    agent = make_agent("ppo-tuned", env, seed=1, gamma=0.97, sb3_kwargs={"n_steps": 20, "batch_size": 10})
    agent.learn(20)
    agent.save(tmp_path / "policy")
    loaded = load_agent(tmp_path / "policy.zip", env)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.config.gamma == 0.97 and loaded.model.gamma == 0.97


def test_bad_hyperparameter_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sac.yml"
    path.write_text(yaml.safe_dump({TUNED_ENV: {"policy": "MlpPolicy", "policy_kwargs": "dict(net_arch=[64], x=__import__('os'))"}}))
    with pytest.raises(ValueError, match=r"cannot read \"__import__\('os'\)\""):
        read_hyperparams(path, TUNED_ENV, 5)
    with pytest.raises(ValueError, match=r"has no entry 'mixgym/Other-v0'; its entries: \['mixgym/MixingAdvantage-v1'\]"):
        read_hyperparams(path, "mixgym/Other-v0", 5)
    path.write_text(yaml.safe_dump({TUNED_ENV: {"policy": "CnnPolicy"}}))
    with pytest.raises(ValueError, match="policy must be 'MlpPolicy', got 'CnnPolicy'"):
        read_hyperparams(path, TUNED_ENV, 5)
    path.write_text(yaml.safe_dump({TUNED_ENV: {"noise_type": "pink", "noise_std": 0.1}}))
    with pytest.raises(ValueError, match="unknown noise_type 'pink'"):
        read_hyperparams(path, TUNED_ENV, 5)
    with pytest.raises(ValueError, match="no tuned settings for algorithm 'ddpg'; tuned: ppo"):
        hyperparams_file("ddpg")
    with pytest.raises(ValueError, match="no tuned settings for algorithm 'sac'; tuned: ppo"):
        hyperparams_file("sac")


def test_rl_zoo3_policy_kwargs_strings_are_parsed_not_evaluated() -> None:
    text = "dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[64]))"
    parsed = parse_policy_kwargs(text)
    assert parsed == {"log_std_init": -2, "ortho_init": False, "activation_fn": nn.ReLU, "net_arch": {"pi": [256, 256], "vf": [64]}}
    assert parse_policy_kwargs("{'net_arch': (64, 64)}") == {"net_arch": (64, 64)}
    for bad, match in (("dict(a=open('x'))", "cannot read"), ("nn.Module", "cannot read"), ("[1, 2]", "must be a dict"), ("dict(", "not a Python")):
        with pytest.raises(ValueError, match=match):
            parse_policy_kwargs(bad)


def test_rl_zoo3_trains_with_the_shipped_file(tmp_path: Path) -> None:
    """``rl_zoo3.train -conf`` reads the same file (the search's output) and trains with it."""
    pytest.importorskip("rl_zoo3")
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", TUNED_ENV, "--gym-packages", "mixgym",
        "-conf", str(hyperparams_file("ppo")), "-n", "40", "-f", str(tmp_path), "--eval-freq", "-1",
        "--env-kwargs", "total_steps:100", "hidden_dim:16", "-params", "n_steps:20", "batch_size:10", "--seed", "0",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    entry = yaml.safe_load(hyperparams_file("ppo").read_text())[TUNED_ENV]
    for key in ("gamma", "learning_rate", "gae_lambda", "use_sde"):  # rl_zoo3 prints the settings it uses
        assert f"('{key}', {entry[key]!r})" in out.stdout, key
    assert next(tmp_path.glob("ppo/*/mixgym-MixingAdvantage-v1.zip")).exists()
