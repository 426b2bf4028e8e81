"""Syllabus curricula as mixing agents (`mixgym.integrations.syllabus`), through the public API."""

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("syllabus")

from mixgym.agents import evaluate, load_agent, make_agent  # noqa: E402
from mixgym.agents.base import AGENTS, load_families  # noqa: E402
from mixgym.envs import MixingEnv  # noqa: E402
from mixgym.integrations.syllabus import (  # noqa: E402
    CurriculumMixer,
    curriculum_agent,
    domain_task_space,
    import_syllabus,
    mixer_curriculum,
)

syllabus = import_syllabus()  # a plain `import syllabus.curricula` would make numpy raise on warnings suite-wide


def test_importing_syllabus_leaves_numpys_error_handling_alone():
    before = np.geterr()
    import_syllabus()
    assert np.geterr() == before

NAMES = ["syllabus:domain-randomization", "syllabus:learning-progress", "syllabus:plr"]


def _env(total_steps=100):
    return MixingEnv(action_map="simplex", total_steps=total_steps)


def test_domains_are_a_discrete_task_space():
    space = domain_task_space(["a", "b", "c"])
    assert space.num_tasks == 3
    assert space.decode(1) == "b" and space.encode("c") == 2


def test_named_curricula_are_listed_with_the_other_agents():
    load_families()
    assert set(NAMES) <= set(AGENTS)


@pytest.mark.parametrize("name", NAMES)
def test_curriculum_drives_a_run_and_reloads_identically(name, tmp_path):
    env = _env()
    agent = make_agent(name, env)
    results = evaluate(agent, env, episodes=1, seed=0)
    mixture = agent.predict(None)[0]
    assert mixture.shape == (5,) and np.isclose(mixture.sum(), 1.0) and (mixture >= 0).all()
    assert np.isfinite(results.final_objectives()).all()
    if name != "syllabus:domain-randomization":  # the adaptive curricula moved away from uniform
        assert not np.allclose(mixture, 0.2)
    agent.save(tmp_path / "agent.zip")
    loaded = load_agent(tmp_path / "agent.zip", env)
    np.testing.assert_allclose(loaded.predict(None)[0], mixture)


def test_updates_reach_the_curriculum_per_domain():
    env = _env(40)
    agent = make_agent("syllabus:plr", env)
    evaluate(agent, env, episodes=1, seed=0)
    history = agent.mixer.history
    assert len(history) == env.num_decisions
    assert all(len(record["score"]) == 5 for record in history)
    sampler = agent.mixer.curriculum.sampler
    assert not sampler.unseen_task_weights.any()  # every domain trained, so every domain scored


def test_any_stock_curriculum_object_is_an_agent():
    env = _env(60)
    space = domain_task_space(env.domains)
    agent = curriculum_agent(
        lambda: syllabus.curricula.OnlineLearningProgress(space, update_interval=5), env, signal="loss"
    )
    evaluate(agent, env, episodes=1, seed=1)
    assert np.isclose(agent.predict(None)[0].sum(), 1.0)
    wrong = domain_task_space(["a", "b"])
    with pytest.raises(ValueError, match="task space has 2 tasks"):
        curriculum_agent(syllabus.curricula.DomainRandomization(wrong), env)


def test_bad_options_say_what_is_wrong():
    with pytest.raises(ValueError, match="signal must be one of"):
        make_agent("syllabus:plr", _env(), signal="reward")
    with pytest.raises(ValueError, match="unknown agent 'syllabus:nope'"):
        make_agent("syllabus:nope", _env())


def test_one_curriculum_follows_the_runs_of_a_vector_env():
    envs = gym.vector.SyncVectorEnv([lambda: _env(50)] * 2)
    space = domain_task_space(envs.envs[0].domains)
    mixer = CurriculumMixer(lambda: syllabus.curricula.OnlineLearningProgress(space, update_interval=10), 5)
    _, infos = envs.reset(seed=0)
    unbatch = lambda i: {key: value[i] for key, value in infos.items() if not key.startswith("_")}  # noqa: E731
    mixer.reset(unbatch(0))
    mixer.start_run(unbatch(1), env_id=1)
    for _ in range(envs.envs[0].num_decisions):
        _, _, _, _, infos = envs.step(np.stack([mixer.mixture()] * 2))
        for i in range(2):
            mixer.observe(unbatch(i), env_id=i)
    assert [record["env"] for record in mixer.history][:4] == [0, 1, 0, 1]
    assert len(mixer.history) == 2 * envs.envs[0].num_decisions
    restored = CurriculumMixer(mixer._build, 5)
    restored.load_state_dict(mixer.state_dict())
    np.testing.assert_allclose(restored.mixture(), mixer.mixture())


def test_a_mixgym_mixer_is_a_syllabus_curriculum():
    env = _env(60)
    agent = make_agent("odm", env, warmup_fraction=0.0)
    curriculum = mixer_curriculum(agent)
    assert isinstance(curriculum, syllabus.core.Curriculum)
    _, info = env.reset(seed=0)
    agent.reset_run(info)
    start = np.array(curriculum._sample_distribution())
    for _ in range(3):
        _, reward, term, trunc, info = env.step(np.array(curriculum._sample_distribution()))
        curriculum.update_on_step(0, None, reward, term, trunc, info, 0.0)
    assert not np.allclose(curriculum._sample_distribution(), start)
    assert len(curriculum.sample(k=4)) == 4


def test_the_command_line_lists_and_runs_syllabus_agents(tmp_path, capsys):
    from mixgym.cli import main

    assert main(["agents", "syllabus:plr"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert 'pip install "mixgym[syllabus]"' in out and "temperature" in out
    assert main(["eval", "--agent", "syllabus:learning-progress", "--episodes", "1", "--env", "total_steps=30",
                 "--results", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "decisions.csv").is_file()
