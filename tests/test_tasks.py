"""Named tasks (classic5, pile22, hf-pile), the objectives they are scored on, and the
tempered-natural baseline: registered ids, the structure that makes mixing matter, bad input."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mixgym.agents import make_agent
from mixgym.envs import MixingEnv
from mixgym.llm_backend.base import BackendInfo
from mixgym.llm_backend.objectives import OBJECTIVES, all_objectives, make_objective
from mixgym.llm_backend.toy import ToyBackend
from mixgym.bench.report import total_variation
from mixgym.tasks import PILE22_DOMAINS, PILE_WEIGHTS, TASK_PRESETS, get_task

TOY_TASKS = [name for name, preset in TASK_PRESETS.items() if preset.backend == "toy"]


@pytest.mark.parametrize("name", TOY_TASKS)
def test_every_toy_task_id_is_registered_versioned_and_passes_the_checker(name: str) -> None:
    preset = get_task(name)
    assert preset.env_id.startswith("mixgym/") and preset.env_id.endswith("-v0")
    env = gym.make(preset.env_id, total_steps=30)
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    terminated = False
    while not terminated:
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward)
    assert info["step"] == 30 and env.unwrapped.objective.name == preset.objective == "domain-mean"
    assert {"natural", "uniform"} <= set(preset.baselines)


def test_hf_task_is_registered_and_says_how_to_build_its_corpus() -> None:
    preset = get_task("hf-pile")
    assert preset.env_id in gym.registry and gym.spec(preset.env_id).kwargs == {"task": "hf-pile"}
    with pytest.raises(ValueError, match="task 'hf-pile' needs the backend option corpus=.*mixgym corpus build .*--keep-skew"):
        gym.make(preset.env_id)


def natural_total_variation(sizes: np.ndarray) -> float:
    return total_variation(sizes / sizes.sum(), np.full(len(sizes), 1 / len(sizes)))


def test_pile22_has_the_piles_skew_and_structure() -> None:
    assert len(PILE_WEIGHTS) == 22 and abs(sum(PILE_WEIGHTS.values()) - 100) < 0.1
    sizes = np.array([d.size for d in PILE22_DOMAINS], dtype=float)
    assert np.allclose(sizes / sizes.sum(), np.array(list(PILE_WEIGHTS.values())) / sum(PILE_WEIGHTS.values()), atol=2e-4)
    assert natural_total_variation(sizes) >= 0.4
    kinds = {d.kind for d in PILE22_DOMAINS}
    assert kinds == {"easy", "hard", "noise", "redundant", "conflict", "related"}
    examples_per_domain_per_run = 1000 * 32 / 22  # the uniform mixture over a 1,000-step run
    assert sum(examples_per_domain_per_run > 5 * d.size for d in PILE22_DOMAINS) >= 3  # small domains repeat
    env = MixingEnv(task="pile22", total_steps=20)
    info = env.backend.info
    assert info.domain_kinds == tuple(d.kind for d in PILE22_DOMAINS)
    assert env.objective.weights[env.domains.index("junk")] == 0  # junk is not scored


def test_on_pile22_the_objective_decides_between_natural_and_uniform() -> None:
    backend = ToyBackend(domains=PILE22_DOMAINS)
    info, k = backend.info, len(backend.domains)
    natural = info.domain_sizes / info.domain_sizes.sum()
    scores = {}
    for name, mixture in (("natural", natural), ("uniform", np.full(k, 1 / k))):
        losses = []
        for seed in (0, 1, 2):
            backend.reset(seed)
            backend.train(mixture, backend.total_steps)
            losses.append(list(backend.evaluate().values()))
        scores[name] = {o: make_objective(o, info, k)(np.mean(losses, axis=0)) for o in OBJECTIVES}
    assert scores["natural"]["domain-mean"] > 1.1 * scores["uniform"]["domain-mean"]  # the papers' objective
    assert scores["natural"]["natural"] < scores["uniform"]["natural"]  # validation on the natural mixture
    assert scores["natural"]["worst-domain"] > scores["uniform"]["worst-domain"]


def test_objectives_score_what_they_say_and_leave_junk_out() -> None:
    info = BackendInfo(domain_sizes=np.array([6.0, 3.0, 1.0, 10.0]), domain_kinds=("text", "text", "noise", "duplicate"))
    losses = np.array([1.0, 2.0, 9.0, 0.1])
    assert make_objective("domain-mean", info)(losses) == pytest.approx(1.5)
    assert make_objective("natural", info)(losses) == pytest.approx((6 * 1 + 3 * 2) / 9)
    assert make_objective("worst-domain", info)(losses) == 2.0
    assert make_objective([0, 0, 1, 1], info)(losses) == pytest.approx(4.55)  # explicit weights score what they weigh
    rows = np.stack([losses, 2 * losses])
    assert np.allclose(make_objective("worst-domain", info)(rows), [2.0, 4.0])
    assert set(all_objectives(info, 4)) == set(OBJECTIVES)
    assert set(all_objectives(BackendInfo(), 4)) == {"domain-mean", "worst-domain"}  # no sizes: no "natural"
    assert make_objective(None, BackendInfo(objective_weights=np.array([1.0, 0, 0, 0])), 4)(losses) == 1.0


@pytest.mark.parametrize(
    ("objective", "match"),
    [
        ("mean", "unknown objective 'mean'; choose one of domain-mean, natural, worst-domain or give 5 weights"),
        ([1.0, 2.0], r"objective weights must have 5 entries \(one per domain\), got \[1.0, 2.0\]"),
        ([0, 0, 0, 0, 0], "have a positive sum"),
        ([1, -1, 1, 1, 1], "non-negative"),
        ([1, float("nan"), 1, 1, 1], "finite"),
        (["a"] * 5, "objective weights must be 5 numbers"),
    ],
)
def test_bad_objectives_fail_when_the_env_is_made(objective: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixingEnv(objective=objective, total_steps=20)


def test_env_objective_drives_info_and_the_eval_loss_reward() -> None:
    env = MixingEnv(task="pile22", objective="worst-domain", reward="eval_loss", total_steps=40)
    _, info = env.reset(seed=0)
    scored = env.objective.weights > 0
    assert info["objective"] == info["eval_loss"][scored].max()
    before = info["objective"]
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == pytest.approx(before - info["objective"]) and info["objective"] == info["eval_loss"][scored].max()
    natural = MixingEnv(task="pile22", objective="natural", total_steps=40)
    _, info = natural.reset(seed=0)
    sizes = natural.backend.info.domain_sizes * scored
    assert info["objective"] == pytest.approx(sizes @ info["eval_loss"] / sizes.sum())


def test_unknown_task_and_a_task_on_the_wrong_backend_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown task 'pile23'; known tasks: classic5, pile22, hf-pile"):
        MixingEnv(task="pile23")
    with pytest.raises(ValueError, match="task 'pile22' runs on the 'toy' backend, not 'hf'"):
        MixingEnv(task="pile22", backend="hf")
    assert len(MixingEnv(task="classic5", total_steps=20).domains) == 5
    assert MixingEnv(task="pile22", hidden_dim=8, total_steps=20).backend.config.hidden_dim == 8  # overrides


def test_tempered_natural_lies_between_natural_and_uniform() -> None:
    env = MixingEnv(task="pile22", action_map="simplex", total_steps=20)
    sizes = env.backend.info.domain_sizes
    natural = sizes / sizes.sum()
    mixtures = {tau: make_agent("tempered", env, tau=tau).predict(np.zeros(1))[0] for tau in (1.0, 0.5, 1e-6)}
    assert np.allclose(mixtures[1.0], natural)
    assert np.allclose(mixtures[1e-6], 1 / 22, atol=1e-4)
    assert natural_total_variation(sizes ** 0.5) < natural_total_variation(sizes)
    assert np.allclose(mixtures[0.5], sizes**0.5 / (sizes**0.5).sum())
    sharp = make_agent("tempered", env, tau=1e300).predict(np.zeros(1))[0]  # no overflow: the largest domain
    assert sharp[np.argmax(sizes)] == pytest.approx(1.0) and np.isfinite(sharp).all()
    for tau in (0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"tau \(1 is natural, towards 0 uniform\) must be > 0.0, got"):
            make_agent("tempered", env, tau=tau)
    with pytest.raises(TypeError, match="tau must be a number, got True"):
        make_agent("tempered", env, tau=True)


def test_hf_pile_runs_on_a_built_corpus(tmp_path: Path) -> None:
    from mixgym.llm_backend.corpus import build_corpus

    corpus = tmp_path / "corpus"
    build_corpus(
        corpus, sources=["python", "licenses"], max_bytes_per_domain=60_000, keep_skew=True, scan_bytes=600_000,
        noise_bytes=20_000, duplicate_bytes=20_000, vocab_size=300, log=lambda message: None,
    )
    env = gym.make("mixgym/MixingPileLM-v0", corpus=str(corpus), total_steps=4, seq_len=32, micro_batch_size=2,
                   grad_accumulation=2, steps_per_action=2)
    inner = env.unwrapped
    assert inner.domains == ["duplicate", "licenses", "noise", "python"]
    assert inner.backend.info.domain_kinds == ("duplicate", "text", "noise", "text")
    assert list(inner.objective.weights) == [0.0, 0.5, 0.0, 0.5]  # the injected junk is not scored
    obs, info = env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and info["objective"] == pytest.approx(info["eval_loss"][[1, 3]].mean())
