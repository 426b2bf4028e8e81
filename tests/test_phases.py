"""Phases whose domain set grows: validation, masking, the availability mask, fixed shapes."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mixgym.envs import MixingEnv
from mixgym.envs.phases import parse_phases

DOMAINS = ["easy", "hard", "noise", "redundant", "conflict"]
TWO_PHASES = [(40, ["easy", "hard"]), {"steps": 60, "domains": ["easy", "hard", "conflict"]}]


@pytest.mark.parametrize(
    "phases,match",
    [
        ([(40, ["easy", "nope"]), (60, DOMAINS)], r"phases\[0\]: unknown domain\(s\) \['nope'\]"),
        ([(40, []), (60, DOMAINS)], r"phases\[0\] domains must be a non-empty list"),
        ([(40, ["easy"]), (50, DOMAINS)], r"add up to 90, but the run's budget is total_steps=100"),
        ([(0, ["easy"]), (100, DOMAINS)], r"phases\[0\] steps must be an integer >= 1"),
        ([(40, ["easy", "easy"]), (60, DOMAINS)], "listed twice"),
        ([{"steps": 100}], "exactly the keys 'steps' and 'domains'"),
        ([], "non-empty list"),
        ("easy", "non-empty list"),
        ([(True, DOMAINS)], r"phases\[0\] steps must be an integer, got True"),
    ],
)
def test_bad_phases_are_refused_at_construction(phases, match) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        MixingEnv(total_steps=100, phases=phases)


def test_parse_phases_gives_starts_and_masks() -> None:
    phases = parse_phases(TWO_PHASES, DOMAINS, 100)
    assert [(p.start, p.end) for p in phases] == [(0, 40), (40, 100)]
    assert phases[1].domains == ("easy", "hard", "conflict")
    assert phases[0].available.tolist() == [True, True, False, False, False]


def test_mixture_is_masked_and_the_observation_carries_the_mask() -> None:
    env = MixingEnv(total_steps=100, steps_per_action=15, phases=TWO_PHASES, action_map="simplex")
    plain = MixingEnv(total_steps=100, action_map="simplex")
    assert env.observation_space.shape[0] == plain.observation_space.shape[0] + 5
    obs, info = env.reset(seed=0)
    assert obs[-5:].tolist() == [1, 1, 0, 0, 0] and info["phase"] == 0
    assert np.allclose(info["mixture"], [0.5, 0.5, 0, 0, 0]) and info["available"].tolist() == [1, 1, 0, 0, 0]
    steps, masks = [], []
    done = False
    while not done:
        obs, _, done, _, info = env.step(np.full(5, 0.2, dtype=np.float32))
        steps.append(int(info["step"]))
        masks.append(obs[-5:].tolist())
        if info["step"] <= 40:
            assert np.allclose(info["mixture"], [0.5, 0.5, 0, 0, 0])
            assert info["samples"][2:].sum() == 0
        else:
            assert np.allclose(info["mixture"], [1 / 3, 1 / 3, 0, 0, 1 / 3])
    # decisions never straddle the phase boundary at step 40
    assert steps == [15, 30, 40, 55, 70, 85, 100] and env.num_decisions == 7
    assert masks[2] == [1, 1, 0, 0, 1] and masks[1] == [1, 1, 0, 0, 0]
    assert "phase" not in plain.reset(seed=0)[1]


def test_an_action_on_unavailable_domains_only_is_an_error() -> None:
    env = MixingEnv(total_steps=100, phases=TWO_PHASES, action_map="simplex")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"no weight on the domains of the current phase \['easy', 'hard'\]"):
        env.step(np.array([0, 0, 1, 0, 0], dtype=np.float32))


def test_what_if_probes_must_stay_in_the_phase() -> None:
    env = MixingEnv(total_steps=100, phases=TWO_PHASES)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"weight domain\(s\) \['noise'\] outside the current phase"):
        env.what_if(np.array([[0.5, 0.3, 0.2, 0, 0]]), 5, np.ones((1, 1)))


def test_checkers_pass_with_phases() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = MixingEnv(total_steps=100, phases=TWO_PHASES)
    check_env(env, skip_render_check=True)
    sb3_check_env(MixingEnv(total_steps=100, phases=TWO_PHASES))


def test_an_sb3_agent_learns_across_phases_with_a_fixed_shape() -> None:
    from mixgym.agents import learn_online

    env = MixingEnv(total_steps=100, phases=TWO_PHASES, reward="eval_loss")
    results, _ = learn_online("td3", env, seeds=[0], sb3_kwargs={"learning_starts": 2, "policy_kwargs": {"net_arch": [16]}})
    acted = results.decisions[results.decisions["decision"] > 0]
    assert len(acted) == env.num_decisions
    assert (acted.loc[acted["step"] <= 40, ["mixture/noise", "mixture/redundant", "mixture/conflict"]] == 0).all().all()


def test_forced_draws_skip_the_masked_domains() -> None:
    # AC-ODM/HDS's one micro-batch per domain goes to the domains of the phase only
    env = MixingEnv(total_steps=100, phases=TWO_PHASES, forced_fraction=22 / 144, action_map="simplex")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.full(5, 0.2, dtype=np.float32))
    assert info["samples"][2:].sum() == 0 and info["samples"][:2].min() > 0


def test_hf_forces_no_micro_batch_onto_a_masked_domain() -> None:
    from mixgym.llm_backend.hf import HFBackend

    backend = HFBackend(model="pythia-tiny", total_steps=4, seq_len=32, micro_batch_size=1, grad_accumulation=3, forced_fraction=1.0)
    stats = backend.train(np.array([0.5, 0.5, 0.0, 0.0, 0.0]), 3)
    assert stats.samples[2:].sum() == 0 and stats.samples[:2].min() >= 4
    stats = backend.train(np.full(5, 0.2), 2)  # six micro-batches, all forced: at least one per domain
    assert stats.samples.min() >= 1


def test_the_advantage_reward_s_twin_sees_the_same_phases() -> None:
    """An agent that plays the baseline (uniform) earns exactly 0 in every phase: its twin's
    uniform mixture is masked by the phase as the agent's is."""
    env = MixingEnv(reward="advantage", action_map="simplex", total_steps=100, steps_per_action=10, phases=TWO_PHASES)
    env.reset(seed=0)
    for _ in range(10):
        _, reward, terminated, _, info = env.step(np.full(5, 0.2, dtype=np.float32))
        assert reward == 0.0 and float(info["reward/advantage"]) == 0.0
    assert terminated
