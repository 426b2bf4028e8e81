"""Agents on the toy env: they learn and act for real, updates match hand computations,
save/load round-trips, proxy transfer, and bad input fails clearly."""

import math
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mixgym.agents import AGENTS, MixtureLogger, Results, SB3Agent, evaluate, learn_online, load_agent, make_agent
from mixgym.agents.acodm import ReleasedActor
from mixgym.agents.doremi import doremi_update, reference_losses
from mixgym.agents.odm import BanditState, exp3_update, exploration_rate, smoothed_mean_mixer, smoothed_mean_update
from mixgym.envs import MixingEnv
from mixgym.llm_backend.oracle import oracle_mixture, schedule_objective

SMALL = {"total_steps": 60}  # 6 decisions of 10 optimizer steps
SB3 = {"acodm", "hds", "td3", "ppo", "ppo-tuned"}
TINY = {
    "acodm": {"net_width": 16, "net_depth": 2, "batch_size": 8},
    "acodm-frozen-actor": {"net_width": 16, "net_depth": 2},
    "hds": {"net_width": 16, "batch_size": 8},
    "td3": {"sb3_kwargs": {"learning_starts": 4, "batch_size": 8, "policy_kwargs": {"net_arch": [16]}}},
    "ppo": {"sb3_kwargs": {"n_steps": 8, "batch_size": 8, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}},
    "ppo-tuned": {"sb3_kwargs": {"n_steps": 8, "batch_size": 8, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}},
    "fixed": {"mixture": [4, 1, 0, 1, 1]},
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def env_for(name: str, **kwargs: object) -> MixingEnv:
    return MixingEnv(action_map=AGENTS[name].action_maps[0], **{**SMALL, **kwargs})


def actor_weights(agent: SB3Agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.model.actor.parameters()]


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_learns_then_acts_on_the_toy(name: str) -> None:
    env = env_for(name)
    agent = make_agent(name, env, seed=0, **TINY.get(name, {}))
    policy = agent.model.policy if name in SB3 else None
    before = [p.detach().clone() for p in policy.parameters()] if policy is not None else None
    assert agent.learn(16) is agent
    if policy is not None:
        after = list(policy.parameters())
        assert any(not torch.equal(b, a) for b, a in zip(before, after)), "learn() took no gradient step"
    results = evaluate(agent, env, episodes=2, seed=3)
    mixtures = results.per_domain("mixture").dropna()
    assert len(mixtures) == 2 * env.num_decisions
    assert np.allclose(mixtures.sum(axis=1), 1.0) and (mixtures.to_numpy() >= 0).all()
    start = results.decisions[results.decisions["decision"] == 0]["objective"].to_numpy()
    assert np.all(results.final_objectives() < start)  # the run trained: held-out loss fell


def test_agents_drive_envs_made_by_gymnasium_with_their_wrappers() -> None:
    env = gym.make("mixgym/Mixing-v0", action_map="simplex", total_steps=30)
    agent = make_agent("exp3", env, seed=0).learn(5, progress_bar=True)
    assert agent.num_timesteps == 5 and agent.facts.num_decisions == 3
    sac = make_agent("hds", gym.make("mixgym/Mixing-v0", total_steps=30), **TINY["hds"]).learn(4)
    assert sac.model.num_timesteps == 4


def test_acodm_warms_up_with_odm_then_its_actor_learns() -> None:
    env = env_for("acodm")
    agent = make_agent("acodm", env, seed=0, warmup_fraction=0.25, **TINY["acodm"])
    start = actor_weights(agent)
    agent.learn(16)  # warm-up: the first 4 decisions act with ODM
    buffer = agent.model.replay_buffer
    # ODM starts from the natural mixture (uniform here): the centred action 0, then its updates
    assert np.array_equal(buffer.actions[0, 0], np.zeros(5))
    assert np.abs(buffer.actions[:4, 0]).max() < 0.1  # near-uniform ODM mixtures: near-zero actions
    assert not np.allclose(buffer.actions[4:16, 0], buffer.actions[:4, 0].mean(axis=0))
    assert any(not torch.equal(a, b) for a, b in zip(start, actor_weights(agent)))


def test_acodm_behaviour_cloning_no_longer_saturates_the_tanh_actor() -> None:
    env = env_for("acodm", total_steps=400)
    agent = make_agent("acodm", env, seed=0, warmup_fraction=0.9, net_width=32, net_depth=2, batch_size=16)
    agent.learn(40)  # 36 warm-up decisions of behaviour cloning towards ODM's (centred) actions
    buffer = agent.model.replay_buffer
    observations = torch.as_tensor(buffer.observations[:36, 0])
    with torch.no_grad():
        actions = agent.model.actor(observations).numpy()
    # the former inverse put the behaviour actions on +1 and the cloned actor at a mean action of 0.96
    assert np.abs(actions).mean() < 0.3 and np.abs(buffer.actions[:36, 0]).max() < 0.99


def test_frozen_actor_is_acodms_released_softmax_actor_after_an_odm_warm_up(tmp_path) -> None:
    env = env_for("acodm-frozen-actor", total_steps=200)
    agent = make_agent("acodm-frozen-actor", env, seed=3, net_width=64, warmup_fraction=0.1)
    actor = ReleasedActor(env.observation_space.shape[0], 5, 64, 5, seed=3)
    obs, info = env.reset(seed=0)
    agent.reset_run(info)
    for decision in range(20):
        action = agent.predict(obs)[0]
        if decision < 2:  # warm-up: ODM's smoothed mean (from the natural mixture, uniform here)
            assert np.array_equal(action, agent.mixer.warmup.mixture().astype(np.float32))
        else:
            state = obs.astype(np.float64)
            state[-1] *= 100.0  # AC-ODM's iter_coe on the progress feature
            assert np.allclose(action, actor(state), atol=2e-3)  # minus U[0, 1e-3) noise, renormalised
        obs, _, _, _, info = env.step(action)
        agent.observe(info)
    assert agent.predict(obs)[0].sum() == pytest.approx(1.0, abs=1e-6)


def torch_policy_net(state_dim: int, k: int, width: int, seed: int) -> torch.nn.Module:
    """AC-ODM's PolicyNet (agent.py:106-127) with PyTorch's default initialisation."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for fan_in in [state_dim] + [width] * 4:
        layers += [torch.nn.Linear(fan_in, width), torch.nn.LayerNorm(width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, k), torch.nn.Softmax(dim=-1))


@pytest.mark.parametrize("k", [5, 22])
def test_frozen_actor_mixtures_sit_where_the_released_actors_do(k: int) -> None:
    """Total variation from uniform of random AC-ODM actors: ours (numpy) and PyTorch's, on the
    same random states (z-scores and progress x 100), about 0.14 at K=5 and 0.16 at K=22."""
    rng = np.random.default_rng(k)
    dim, ours, theirs = 4 * k + 7, [], []
    for seed in range(40):
        states = np.clip(rng.standard_normal((4, dim)), -3, 3)
        states[:, -1] = rng.uniform(0, 100, 4)
        actor = ReleasedActor(dim, k, 128, 5, seed)
        ours += [0.5 * np.abs(actor(x) - 1 / k).sum() for x in states]
        with torch.no_grad():
            mixtures = torch_policy_net(dim, k, 128, seed)(torch.as_tensor(states, dtype=torch.float32)).numpy()
        theirs += list(0.5 * np.abs(mixtures - 1 / k).sum(axis=1))
    assert 0.10 < np.mean(ours) < 0.19 and 0.10 < np.mean(theirs) < 0.19
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.025


def test_warm_up_runs_once_and_survives_saving_before_learning(tmp_path) -> None:
    env = env_for("acodm")
    fresh = make_agent("acodm", env, seed=0, warmup_fraction=0.25, **TINY["acodm"])
    fresh.save(tmp_path / "fresh.zip")
    loaded = load_agent(tmp_path / "fresh.zip", env)
    loaded.learn(8)
    assert loaded.model.learning_starts == 2 and loaded.warmed_up
    assert np.allclose(loaded.model.replay_buffer.actions[0, 0], env.action_mapper.inverse(np.full(5, 0.2)))
    loaded.learn(8)  # no second warm-up: SB3 would act at random before learning_starts
    assert loaded.model.learning_starts == 0
    td3 = make_agent("td3", env_for("td3"), seed=0)
    td3.learn(3)
    assert td3.model.learning_starts == 100  # SB3's default untouched


def test_hds_warm_up_acts_with_the_fixed_prior() -> None:
    env = env_for("hds")
    agent = make_agent("hds", env, seed=0, warmup_fraction=0.25, prior="uniform", **TINY["hds"])
    agent.learn(12)
    actions = agent.model.replay_buffer.actions[:3, 0]
    assert np.allclose(actions, env.action_mapper.inverse(np.full(5, 0.2)))


# ---------------------------------------------------------------- hand-computed updates
# K = 3, losses L = [1, 2, 0.5] at round t = 10 (all domains sampled), then L = [3, -, 1]
# at round t = 11 (domain 1 not sampled). eps_t = min(1/3, sqrt(ln 3 / (3 t))).
ROUNDS = [
    (10, np.array([1.0, 2.0, 0.5]), np.array([True, True, True])),
    (11, np.array([3.0, 9.9, 1.0]), np.array([True, False, True])),
]
EPS_10 = math.sqrt(math.log(3) / 30)  # 0.19136459866514058
EPS_11 = math.sqrt(math.log(3) / 33)  # 0.18245898573320857


def test_exploration_rate() -> None:
    assert exploration_rate(3, 1) == pytest.approx(1 / 3)  # sqrt(ln3/3) = 0.605 > 1/3
    assert exploration_rate(3, 10) == pytest.approx(EPS_10)
    assert exploration_rate(5, 8) == pytest.approx(0.2) and exploration_rate(5, 9) < 0.2
    with pytest.raises(ValueError, match="iteration.*0"):
        exploration_rate(3, 0)


def test_odm_smoothed_mean_update_matches_hand_computation() -> None:
    # R_d <- 0.5 R_d + 0.5 exp(L_d); pi = (1 - 3 eps_t) R / sum R + eps_t.
    # t=10: R = 0.5 e^[1, 2, 0.5] = [1.35914, 3.69453, 0.82436]
    # t=11: R = [0.5*1.35914 + 0.5 e^3, 3.69453, 0.5*0.82436 + 0.5 e] = [10.72234, 3.69453, 1.77132]
    expected = [[0.2898442912, 0.4590601573, 0.2510955515], [0.4822564434, 0.2857582869, 0.2319852697]]
    state = BanditState(np.full(3, -np.inf), np.full(3, 1 / 3), 1 / 3)
    for (t, losses, present), want, eps in zip(ROUNDS, expected, (EPS_10, EPS_11)):
        state = smoothed_mean_update(state, losses, present, t, smoothing=0.5)
        assert np.allclose(state.mixture, want, atol=1e-9) and state.eps == pytest.approx(eps)
    expected_r = [0.25 * math.e + 0.5 * math.exp(3), 0.5 * math.exp(2), 0.25 * math.exp(0.5) + 0.5 * math.e]
    assert np.allclose(np.exp(state.estimate), expected_r)


def test_exp3_update_matches_hand_computation() -> None:
    # R_d <- R_d + 0.1 L_d / pi_d; pi = (1 - 3 eps_t) softmax(eps_{t-1} R) + eps_t.
    # t=10: R = 0.1 [1, 2, 0.5] * 3 = [0.3, 0.6, 0.15]; exponent uses eps_9 ... = eps_0 = 1/3.
    # t=11: R += 0.1 [3, 0, 1] / pi_10; exponent uses eps_10.
    expected = [[0.330713557, 0.3453690149, 0.3239174281], [0.3466386427, 0.3286301391, 0.3247312182]]
    state = BanditState(np.zeros(3), np.full(3, 1 / 3), 1 / 3)
    for (t, losses, present), want in zip(ROUNDS, expected):
        state = exp3_update(state, losses, present, t, reward_scale=0.1)
        assert np.allclose(state.mixture, want, atol=1e-9)
    assert np.allclose(state.estimate, [0.3 + 0.3 / 0.330713557, 0.6, 0.15 + 0.1 / 0.3239174281])


def test_exp3_stays_finite_where_plain_exponentials_overflow() -> None:
    state = BanditState(np.array([5000.0, 0.0, 0.0]), np.full(3, 1 / 3), 1.0)  # exp(5000) overflows
    new = exp3_update(state, np.array([1.0, 1.0, 1.0]), np.ones(3, bool), 10, reward_scale=0.1)
    assert np.all(np.isfinite(new.mixture)) and new.mixture[0] == pytest.approx(1 - 2 * EPS_10)


def test_bandit_mixer_keeps_the_initial_mixture_during_warm_up_and_counts_optimizer_steps() -> None:
    natural = np.array([0.5, 0.3, 0.2])
    mixer = smoothed_mean_mixer(natural, smoothing=0.5, warmup_decisions=9)
    mixer.reset({})
    for decision in range(1, 10):
        mixer.observe({"train_loss": np.array([1.0, 2.0, 0.5]), "samples": np.array([1, 1, 1]), "step": decision})
        assert np.array_equal(mixer.mixture(), natural)
    # decision 10 at optimizer step 10: round t = 10
    mixer.observe({"train_loss": ROUNDS[0][1], "samples": np.array([1, 1, 1]), "step": 10})
    assert np.allclose(mixer.mixture(), [0.2898442912, 0.4590601573, 0.2510955515])


@pytest.mark.parametrize("name", ["odm", "exp3"])
def test_bandits_update_once_per_decision_with_t_in_optimizer_steps(name: str) -> None:
    """ODM's t is the LM step (training.py:1242-1267), not the decision: with 10 steps a
    decision, the first update uses t = 10 and the decision's per-domain mean losses."""
    env = env_for(name, total_steps=200)
    agent = make_agent(name, env, warmup_fraction=0.0, initial="uniform")
    _, info = env.reset(seed=0)
    agent.reset_run(info)
    _, _, _, _, info = env.step(agent.predict(None)[0])
    agent.observe(info)
    assert info["step"] == 10 and agent.mixer.state.eps == pytest.approx(math.sqrt(math.log(5) / 50))
    losses, pi = info["train_loss"], np.full(5, 0.2)
    eps = math.sqrt(math.log(5) / (5 * 10))
    if name == "odm":  # R = 0.5 exp(L); pi = (1 - 5 eps) R / sum R + eps
        r = 0.5 * np.exp(losses)
        want = (1 - 5 * eps) * r / r.sum() + eps
    else:  # R = 0.1 L / 0.2; pi = (1 - 5 eps) softmax(eps_0 R) + eps, eps_0 = 1/5
        r = 0.1 * losses / pi
        want = (1 - 5 * eps) * np.exp(r / 5) / np.exp(r / 5).sum() + eps
    assert np.allclose(agent.mixer.mixture(), want, atol=1e-12)
    _, _, _, _, info = env.step(agent.predict(None)[0])
    agent.observe(info)
    assert info["step"] == 20 and agent.mixer.state.eps == pytest.approx(math.sqrt(math.log(5) / 100))


def test_doremi_update_matches_hand_computation() -> None:
    # log w = log(1/3) + 1.0 * [0.2, 0, 0.5]; w = 0.999 softmax + 0.001 / 3
    new = doremi_update(np.full(3, 1 / 3), np.array([0.2, 0.0, 0.5]), eta=1.0, smoothing=1e-3)
    assert np.allclose(new, [0.3156155688, 0.2584645954, 0.4259198358], atol=1e-9)


def test_doremi_reference_is_a_uniform_run_and_noise_loses_weight() -> None:
    env = env_for("doremi", total_steps=200)
    reference = reference_losses(env, (7,))
    agent = make_agent("doremi", env, reference_seeds=(7,))
    assert np.array_equal(agent.mixer.reference, reference)
    results = evaluate(agent, env, episodes=1, seed=0)
    final = results.per_domain("mixture").iloc[-1]
    assert final["noise"] < 0.2  # the pure-noise domain has no learnable excess loss
    given = make_agent("doremi", env, reference_loss=[0.1, 0.2, 1.0, 0.2, 0.1])
    assert np.array_equal(given.mixer.reference, [0.1, 0.2, 1.0, 0.2, 0.1])


def test_doremi_reports_its_time_averaged_weights() -> None:
    env = env_for("doremi", total_steps=100)
    agent = make_agent("doremi", env, reference_loss=[0.1, 0.2, 1.0, 0.2, 0.1])
    results = evaluate(agent, env, episodes=1, seed=0)
    chosen = results.per_domain("mixture").dropna().to_numpy()  # w_0 .. w_9, each chosen before its update
    final = agent.mixer.mixture()  # w_10, after the last update
    # DoReMi's average includes the initial weights and every update's (trainer.py:157-160)
    expected = (chosen.sum(axis=0) + final) / (len(chosen) + 1)
    assert np.allclose(agent.mixer.time_averaged_mixture(), expected)
    assert np.allclose(results.final_report("time_averaged_mixture").to_numpy(), expected)
    assert results.final_report("nothing") is None
    online, _ = learn_online("doremi", env, seeds=[0], reference_loss=[0.1, 0.2, 1.0, 0.2, 0.1])
    assert np.allclose(online.final_report("time_averaged_mixture").to_numpy(), expected)


def test_doremi_static_is_the_published_protocol(tmp_path) -> None:
    target = env_for("doremi-static", total_steps=200)
    proxy = {"hidden_dim": 8, "total_steps": 200}
    agent = make_agent("doremi-static", target, proxy=proxy, eta=2.0)
    # by hand: reference on the natural mixture (uniform at K=5), a DoReMi proxy run, its average
    proxy_env = MixingEnv(action_map="simplex", reward="eval_loss", **proxy)
    reference = reference_losses(proxy_env, (12345,), mixture=np.full(5, 0.2))
    weights = np.full(5, 0.2)
    history = [weights]
    _, info = proxy_env.reset(seed=23456)
    done = False
    while not done:
        _, _, done, _, info = proxy_env.step(weights)
        weights = doremi_update(weights, np.maximum(info["eval_loss"] - reference, 0.0), 2.0, 1e-3)
        history.append(weights)
    expected = np.mean(history, axis=0)
    assert np.allclose(agent.predict(None)[0], expected / expected.sum(), atol=1e-6)
    results = evaluate(agent, target, episodes=1, seed=0)  # a static run of the target
    assert np.allclose(results.per_domain("mixture").dropna().std(), 0.0)
    agent.save(tmp_path / "doremi-static.zip")
    assert np.array_equal(load_agent(tmp_path / "doremi-static.zip", target).predict(None)[0], agent.predict(None)[0])
    with pytest.raises(ValueError, match="domains.*differ"):
        make_agent("doremi-static", target, proxy={"num_domains": 6, "total_steps": 200})


def test_static_agents() -> None:
    env = env_for("uniform")
    assert np.allclose(make_agent("natural", env).predict(None)[0], 0.2)  # equal domain sizes at K=5
    assert np.allclose(make_agent("fixed", env, mixture=[2, 1, 1, 0, 0]).predict(None)[0], [0.5, 0.25, 0.25, 0, 0])
    oracle = make_agent("oracle", env, search_seeds=(0, 1), n_random=2, rounds=1)
    assert oracle.predict(None)[0].sum() == pytest.approx(1.0, abs=1e-6)
    random = make_agent("random", env, seed=1)
    results = evaluate(random, env, episodes=1, seed=0)
    assert results.per_domain("mixture").dropna().std().min() > 0.01  # a fresh draw every decision


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_save_load_round_trip_gives_identical_actions(name: str, tmp_path) -> None:
    env = env_for(name)
    agent = make_agent(name, env, seed=0, **TINY.get(name, {}))
    agent.learn(8)
    agent.save(tmp_path / "policy")  # ".zip" is added, as SB3 does
    loaded = load_agent(tmp_path / "policy.zip", env)
    assert type(loaded) is type(agent) and loaded.name == name
    first, second = evaluate(agent, env, episodes=1, seed=5), evaluate(loaded, env, episodes=1, seed=5)
    mixture = [f"mixture/{d}" for d in env.domains]
    assert np.array_equal(first.decisions[mixture].to_numpy(), second.decisions[mixture].to_numpy(), equal_nan=True)
    assert type(agent).load(tmp_path / "policy", env).name == name


def test_frozen_tanh_actor_option_stays_frozen_after_loading(tmp_path) -> None:
    env = env_for("acodm")
    agent = make_agent("acodm", env, seed=0, freeze_actor=True, behaviour_cloning=False, **TINY["acodm"])
    agent.save(tmp_path / "frozen.zip")
    loaded = load_agent(tmp_path / "frozen.zip", env)
    before = actor_weights(loaded)
    critic = [p.detach().clone() for p in loaded.model.critic.parameters()]
    loaded.learn(12)
    assert all(torch.equal(a, b) for a, b in zip(before, actor_weights(loaded)))
    assert any(not torch.equal(a, b) for a, b in zip(critic, loaded.model.critic.parameters()))


def test_proxy_policy_transfers_to_a_larger_model(tmp_path) -> None:
    proxy = MixingEnv(hidden_dim=8, total_steps=100)
    target = MixingEnv(hidden_dim=64, total_steps=100)
    agent = make_agent("acodm", proxy, seed=0, **TINY["acodm"])
    agent.learn(40)  # four proxy runs
    agent.save(tmp_path / "acodm.zip")
    loaded = load_agent(tmp_path / "acodm.zip", target)
    assert loaded.model.get_env().envs[0].unwrapped.backend.config.hidden_dim == 64
    results = evaluate(loaded, target, episodes=2, seed=0)
    obs, _ = target.reset(seed=9)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    assert np.all(np.isfinite(results.final_objectives()))


def test_oracle_run_through_the_env_equals_schedule_objective_on_its_backend_seeds() -> None:
    env = env_for("oracle", total_steps=100)
    result = oracle_mixture(env.backend.config, seeds=(0, 1), n_random=2, rounds=1)
    finals = evaluate(make_agent("oracle", env, search_seeds=(0, 1), n_random=2, rounds=1), env, episodes=2, seed=100).final_objectives()
    # env.reset(seed=s) seeds the backend with the first draw of Gymnasium's np_random(s)
    backend_seeds = [int(np.random.default_rng(s).integers(2**31 - 1)) for s in (100, 101)]
    expected = [schedule_objective(env.backend, result.mixtures, (seed,)) for seed in backend_seeds]
    assert np.allclose(finals, expected, rtol=1e-9)


def test_results_save_and_load(tmp_path) -> None:
    env = env_for("odm", reward="holistic")
    results = evaluate(make_agent("odm", env), env, episodes=2, seed=0)
    columns = {"reward/alignment", "reward/holistic_vector/noise", "train_loss/hard", "eval_loss/easy", "tokens"}
    assert columns <= set(results.decisions)
    assert (results.decisions["wall_time"] >= 0).all() and results.decisions["tokens"].iloc[-1] > 0
    folder = results.save(tmp_path / "odm")
    again = Results.load(folder)
    assert again.config == results.config and again.config["agent"] == "odm"
    assert np.allclose(again.decisions.to_numpy(float), results.decisions.to_numpy(float), equal_nan=True)
    with pytest.raises(FileNotFoundError, match="decisions.csv"):
        Results.load(tmp_path / "nothing")


def test_online_mode_runs_one_learning_run_per_seed_on_the_evaluation_seeds() -> None:
    env = env_for("uniform")
    online, agents = learn_online("uniform", env, seeds=[3, 4])
    acted = evaluate(make_agent("uniform", env), env, episodes=2, seed=3)
    assert np.array_equal(online.final_objectives(), acted.final_objectives())  # same backend runs
    assert len(agents) == 2 and len(online.decisions) == 2 * (env.num_decisions + 1)
    rl, _ = learn_online("acodm", env_for("acodm"), seeds=[0], **TINY["acodm"])
    assert len(rl.decisions) == env.num_decisions + 1 and rl.config["mode"] == "online"


@pytest.mark.parametrize("name", ["odm", "td3"])
def test_mixture_logger_writes_mixture_and_losses_to_tensorboard(name: str, tmp_path) -> None:
    env = env_for(name)
    agent = make_agent(name, env, seed=0, tensorboard_log=str(tmp_path), **TINY.get(name, {}))
    agent.learn(6, callback=MixtureLogger())
    events = EventAccumulator(str(next(tmp_path.iterdir())))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"mixture/noise", "train_loss/easy", "eval_loss/hard", "mix/objective", "mix/final_objective"} <= tags
    assert len(events.Scalars("mixture/noise")) == 6
    assert "realised_mixture/noise" in tags  # what was trained on, beside what was chosen


def test_mixture_logger_logs_the_realised_mixture_when_it_differs_from_the_chosen_one(tmp_path) -> None:
    env = env_for("fixed", forced_fraction=0.5)
    # forced examples go to the domains of positive weight (a weight of 0 masks a domain out)
    agent = make_agent("fixed", env, mixture=[1, 1e-9, 1e-9, 1e-9, 1e-9], tensorboard_log=str(tmp_path))
    agent.learn(3, callback=MixtureLogger())
    events = EventAccumulator(str(next(tmp_path.iterdir())))
    events.Reload()
    chosen = [e.value for e in events.Scalars("mixture/hard")]
    realised = [e.value for e in events.Scalars("realised_mixture/hard")]
    assert all(c < 1e-6 for c in chosen) and all(0.05 < r < 0.2 for r in realised)  # half spread evenly: 10%


# ---------------------------------------------------------------- bad input
def test_unknown_agent_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown agent 'dqn'.*acodm.*exp3.*uniform"):
        make_agent("dqn", env_for("uniform"))


def test_agent_on_an_env_with_another_action_map() -> None:
    with pytest.raises(ValueError, match=r"'odm' needs an env with action_map in \['simplex'\].*'softmax'"):
        make_agent("odm", MixingEnv(**SMALL))


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("odm", {"smothing": 0.5}, r"unknown option\(s\) \['smothing'\] for agent 'odm'"),
        ("odm", {"smoothing": 1.5}, "smoothing.*1.5"),
        ("exp3", {"reward_scale": -1}, "reward_scale.*-1"),
        ("fixed", {}, "mixture must have 5 entries"),
        ("acodm", {"odm_smoothing": 2}, r"agent 'acodm': odm_smoothing must be in \[0.0, 1.0\), got 2.0"),
        ("hds", {"gamma": 1.5}, r"gamma must be in \(0.0, 1.0\], got 1.5"),
        ("hds", {"gamma": 0.0}, r"gamma must be in \(0.0, 1.0\], got 0.0"),
        ("fixed", {"mixture": [1, -1, 0, 0, 0]}, "mixture weight must be >= 0.0, got -1.0"),
        ("random", {"concentration": 0}, "concentration.*0"),
        ("doremi", {"reference_loss": [1, 2]}, r"reference_loss must have 5 entries, one per domain \['easy'"),
        ("doremi", {"signal": "perplexity"}, "signal.*perplexity"),
        ("doremi-static", {"baseline": "zipf"}, "baseline.*zipf"),
        ("doremi-static", {"proxy_seeds": []}, "proxy_seeds"),
        ("doremi-static", {"proxy": {"action_map": "softmax"}}, "proxy env takes mixtures.*softmax"),
        ("acodm-frozen-actor", {"net_depth": 0}, "net_depth.*0"),
        ("acodm-frozen-actor", {"noise": 2.0}, "noise.*2.0"),
        ("acodm", {"net_width": 0}, "net_width.*0"),
        ("hds", {"prior": "zipf"}, "prior.*zipf"),
        ("td3", {"sb3_kwargs": {"lernrate": 1}}, r"sb3_kwargs names argument\(s\) \['lernrate'\] that TD3 does not have"),
    ],
)
def test_bad_options_raise_naming_the_value(name: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_agent(name, env_for(name), **options)


def test_loading_onto_an_env_with_another_k_or_action_map(tmp_path) -> None:
    for name in ("odm", "acodm"):
        agent = make_agent(name, env_for(name), seed=0, **TINY.get(name, {}))
        agent.save(tmp_path / name)
        with pytest.raises(ValueError, match=r"K=5 domains.*K=6"):
            load_agent(tmp_path / f"{name}.zip", env_for(name, num_domains=6))
    with pytest.raises(ValueError, match="trained with action_map='softmax'.*'normalize'"):
        load_agent(tmp_path / "acodm.zip", MixingEnv(action_map="normalize", **SMALL))


def test_missing_or_corrupt_saved_policy(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no saved agent"):
        load_agent(tmp_path / "absent.zip")
    (tmp_path / "garbage.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a saved mixgym agent"):
        load_agent(tmp_path / "garbage.zip")
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as archive:
        archive.writestr("data", "{}")
    with pytest.raises(ValueError, match="no mixgym.json"):
        load_agent(tmp_path / "foreign.zip")
    agent = make_agent("acodm", env_for("acodm"), seed=0, **TINY["acodm"])
    agent.save(tmp_path / "acodm.zip")
    with zipfile.ZipFile(tmp_path / "acodm.zip") as archive:
        meta = archive.read("mixgym.json")
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as archive:  # metadata intact, SB3 model gone
        archive.writestr("mixgym.json", meta)
    with pytest.raises(ValueError, match=r"lacks \[.policy.pth.*which a DDPG policy needs"):
        load_agent(tmp_path / "broken.zip", env_for("acodm"))
    odm = make_agent("odm", env_for("odm"))
    odm.save(tmp_path / "odm.zip")
    with zipfile.ZipFile(tmp_path / "odm.zip") as archive:
        text = archive.read("mixgym.json").decode().replace('"estimate"', '"estimat"')
    with zipfile.ZipFile(tmp_path / "odm-broken.zip", "w") as archive:
        archive.writestr("mixgym.json", text)
    with pytest.raises(ValueError, match="corrupt 'odm' state"):
        load_agent(tmp_path / "odm-broken.zip")


def test_learn_and_predict_refuse_bad_arguments() -> None:
    agent = make_agent("odm", env_for("odm"))
    with pytest.raises(ValueError, match="total_timesteps.*0"):
        agent.learn(0)
    with pytest.raises(ValueError, match="one observation"):
        agent.predict(np.zeros((2, 27)))
    with pytest.raises(ValueError, match="total_timesteps.*-3"):
        make_agent("acodm", env_for("acodm"), **TINY["acodm"]).learn(-3)


def test_a_policy_for_another_observation_layout_names_both_layouts_and_the_ids_that_fit(tmp_path) -> None:
    import gymnasium

    saved = make_agent("td3", gymnasium.make("mixgym/Mixing-v0", total_steps=40))
    saved.save(tmp_path / "td3.zip")
    with pytest.raises(ValueError) as error:
        load_agent(tmp_path / "td3.zip", gymnasium.make("mixgym/Mixing-v1", total_steps=40))
    message = str(error.value)
    assert "layout v0 (loss_z" in message and "layout is v1 (loss_z" in message
    assert "registered ids that match the policy: mixgym/Mixing-v0" in message
    with pytest.raises(ValueError, match=r"K=5 domains .* K=22.*ids that match the policy: mixgym/Mixing-v0"):
        load_agent(tmp_path / "td3.zip", gymnasium.make("mixgym/Mixing22-v0", total_steps=40))
