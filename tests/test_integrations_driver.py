"""MixtureDriver: the same observations and rewards as MixingEnv from the same inputs, a plain
PyTorch loop, acting and learning agents, exact resume, bad input."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytest
import torch

from mixgym.agents import make_agent
from mixgym.envs import MixingEnv
from mixgym.integrations import MixtureDataset, MixtureDriver
from mixgym.llm_backend.toy import ToyBackend



pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recording:
    """A backend that passes everything through and records what it reported, in call order."""

    def __init__(self, backend: ToyBackend) -> None:
        self.backend = backend
        self.calls: dict[str, list[Any]] = {"train": [], "evaluate": [], "weight_stats": [], "domain_gradients": []}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.backend, name)
        if name in self.calls:
            def record(*args: Any) -> Any:
                out = value(*args)
                self.calls[name].append(out)
                return out
            return record
        return value


class Replayed:
    """A weight tracker answering with recorded weight stats."""

    def __init__(self, stats: list[Any]) -> None:
        self.queue = deque(stats)

    def mark(self) -> None:
        pass

    def stats(self) -> Any:
        return self.queue.popleft()


@pytest.mark.parametrize("reward", ["eval_loss", "alignment", "holistic"])
def test_the_driver_gives_mixing_env_observations_and_rewards_from_the_same_inputs(reward: str) -> None:
    steps, every = 60, 10
    recording = Recording(ToyBackend(total_steps=steps))
    env = MixingEnv(backend=recording, reward=reward, action_map="simplex", steps_per_action=every)
    agent = make_agent("exp3", env, seed=0)
    obs, info = env.reset(seed=0)
    agent.reset_run(info)
    reference = []
    for _ in range(env.num_decisions):
        obs, r, *_, info = env.step(agent.predict(obs)[0])
        agent.observe(info)
        reference.append((obs, r, info))

    calls = recording.calls
    evals = deque(calls["evaluate"])
    gradients = deque(calls["domain_gradients"])
    driver = MixtureDriver(
        "exp3", recording.domains, total_steps=steps, steps_per_decision=every,
        evaluate=lambda: evals.popleft(), weights=Replayed(calls["weight_stats"]),
        gradients=(lambda: gradients.popleft()) if calls["domain_gradients"] else None,
        env_options={"reward": reward}, domain_sizes=recording.info.domain_sizes,
        objective_weights=recording.info.objective_weights, domain_kinds=recording.info.domain_kinds,
    )
    driver.start()
    for decision, stats in enumerate(calls["train"]):
        driver.observe(
            (decision + 1) * every, stats.train_loss, samples=stats.samples, tokens=stats.tokens,
            token_ids=stats.token_ids, learning_rate=stats.learning_rate, step_weight_norms=stats.step_weight_norms[1:],
        )
        obs, r, info = driver.last
        ref_obs, ref_r, ref_info = reference[decision]
        assert np.array_equal(obs, ref_obs) and r == ref_r
        assert info.keys() == ref_info.keys()
        for key, value in ref_info.items():
            assert np.array_equal(info[key], value, equal_nan=True), key


def rows(n: int, start: int) -> list[dict[str, list[int]]]:
    return [{"input_ids": [start + i, 1, 2, 3]} for i in range(n)]


def losses_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A stand-in for a model's per-example losses: the higher the domain index, the harder."""
    return 1.0 + 2.0 * batch["domain"].double() + 0.001 * (batch["input_ids"][:, 0] % 7).double()


def run_loop(driver: MixtureDriver, loader: Any, until: int, start: int = 0) -> None:
    for step, batch in enumerate(loader, start=start + 1):
        driver.observe(step, losses_of(batch), domains=batch["domain"])
        if step == until:
            break


def synthetic(agent: str = "exp3", learn: bool | None = None, workers: int = 0, **options: Any):
    data = MixtureDataset({"easy": rows(40, 100), "hard": rows(30, 200), "other": rows(20, 300)}, seed=1)
    loader = data.loader(batch_size=4, num_workers=workers)

    def evaluate() -> list[float]:  # a stand-in for the model's held-out losses: they fall as it trains
        return [1.0, 3.0 - 0.001 * data.accounting().position, 1.5]

    driver = MixtureDriver(agent, data, total_steps=120, steps_per_decision=10, evaluate=evaluate, learn=learn, seed=0, **options)
    return data, loader, driver


def test_exp3_steers_a_plain_loop_and_the_served_counts_follow_its_mixture() -> None:
    data, loader, driver = synthetic()
    first = driver.start()
    run_loop(driver, loader, 120)
    driver.close()
    mixtures = np.array([h["mixture"] for h in driver.history[1:]])
    realised = np.array([h["realised_mixture"] for h in driver.history[1:]])
    assert len(mixtures) == 12 and not np.allclose(mixtures[-1], first)
    assert mixtures[-1].argmax() == 2  # EXP3 samples the domain with the highest loss ("other") most
    # every decision's examples were drawn from the mixture chosen before it
    assert np.abs(realised[1:] - mixtures[:-1]).max() < 0.3
    assert np.abs(realised[4:].mean(0) - mixtures[3:-1].mean(0)).max() < 0.1
    assert data.accounting().examples.sum() == 480


@pytest.mark.parametrize(("agent", "learn", "workers"), [("exp3", None, 2), ("td3", True, 0)])
def test_resume_continues_the_run_exactly(agent: str, learn: bool | None, workers: int) -> None:
    options = {"agent_options": {"sb3_kwargs": {"learning_starts": 3, "batch_size": 4}}} if agent == "td3" else {}
    _, loader, driver = synthetic(agent, learn, workers, **options)
    driver.start()
    run_loop(driver, loader, 120)
    driver.close()
    uninterrupted = [(h["step"], h["mixture"], h["reward"]) for h in driver.history]

    _, loader, driver = synthetic(agent, learn, workers, **options)
    driver.start()
    run_loop(driver, loader, 47)
    state = driver.state_dict()
    driver.close()

    _, loader, resumed = synthetic(agent, learn, workers, **options)
    resumed.load_state_dict(state)
    run_loop(resumed, loader, 120, start=47)
    resumed.close()
    continued = [(h["step"], h["mixture"], h["reward"]) for h in resumed.history]
    assert len(continued) == len(uninterrupted) == 13
    for (s1, m1, r1), (s2, m2, r2) in zip(uninterrupted, continued):
        assert s1 == s2 and np.array_equal(m1, m2) and np.array_equal(r1, r2, equal_nan=True)
    if agent == "td3":
        assert len({tuple(np.round(m, 6)) for _, m, _ in continued[1:]}) > 3  # it explores and learns


def test_the_agent_has_its_own_random_states() -> None:
    def loop_stream_after(agent: str, **options: Any) -> tuple[torch.Tensor, float]:
        torch.manual_seed(123)
        np.random.seed(5)
        _, loader, driver = synthetic(agent, **options)
        driver.start()
        run_loop(driver, loader, 30)
        driver.close()
        return torch.rand(3), np.random.rand()

    # an SB3 agent learning online (network init, exploration noise, replay sampling) leaves the
    # loop's random streams exactly where an agent that draws nothing leaves them
    learning = loop_stream_after("td3", learn=True, agent_options={"sb3_kwargs": {"learning_starts": 2}})
    static = loop_stream_after("uniform")
    assert torch.equal(learning[0], static[0]) and learning[1] == static[1]


def test_bad_input_to_the_driver() -> None:
    data = MixtureDataset({"a": rows(4, 0), "b": rows(4, 10)})
    data.loader(batch_size=2)
    with pytest.raises(ValueError, match="unknown agent 'nope'"):
        MixtureDriver("nope", data, 10, evaluate=lambda: [1, 1])
    with pytest.raises(ValueError, match="at least 2 distinct domains"):
        MixtureDriver("uniform", ["a"], 10, evaluate=lambda: [1])
    driver = MixtureDriver("uniform", data, 10, steps_per_decision=5, evaluate=lambda: {"a": 1.0})
    with pytest.raises(ValueError, match="no held-out loss for domain\\(s\\) \\['b'\\]"):
        driver.start()
    driver = MixtureDriver("uniform", data, 10, steps_per_decision=5, evaluate=lambda: [1.0, 1.0])
    driver.start()
    with pytest.raises(RuntimeError, match="not the dataset's stream"):
        driver.observe(1, [1.0], domains=[1])  # one example reported, the bound loader serves 2 a step
    driver = MixtureDriver("uniform", ["a", "b"], 10, steps_per_decision=5, evaluate=lambda: [1.0, 1.0])
    driver.start()
    with pytest.raises(ValueError, match="one entry per example"):
        driver.observe(1, [1.0, 2.0, 3.0], domains=[0, 1])
    with pytest.raises(ValueError, match="domain indices must be in \\[0, 2\\)"):
        driver.observe(1, [1.0], domains=[5])
    with pytest.raises(ValueError, match="skipped the decision at step 5"):
        driver.observe(7, [1.0, 1.0], samples=[1, 1])
    driver.observe(1, {"a": 1.0, "b": 2.0}, samples=[1, 1])
    with pytest.raises(ValueError, match="steps must increase"):
        driver.observe(1, [1.0, 1.0], samples=[1, 1])
    with pytest.raises(ValueError, match="unknown domain\\(s\\) \\['z'\\]"):
        driver.observe(2, {"z": 1.0}, samples=[1, 1])


def test_an_env_over_your_own_loop_refuses_to_be_copied() -> None:
    """A copy would be cut off from the loop that trains the model and never see another step."""
    import copy
    import pickle

    _, _, driver = synthetic()
    driver.start()
    for attempt in (copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match=r"cannot be copied or pickled: its run lives in your loop; save driver.state_dict"):
            attempt(driver.env)
    driver.close()
