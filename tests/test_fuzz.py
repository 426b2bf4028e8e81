"""Constructors fuzzed with bad values: every one is refused by name or works, never a traceback from
inside numpy or torch, never a value accepted that fails later.

For each keyword of `MixingEnv`, `ToyBackend` and every agent's config, values are drawn by a seeded
generator from a pool of wrong types, boundary values, non-finite numbers and absurd sizes. A call
either raises `TypeError`/`ValueError` from mixgym's own code with the keyword's name in the message,
or succeeds; what succeeds must then run (a reset and two steps of the env; a short ``learn`` and a
``predict`` of the agent).
"""

import dataclasses
import re
import traceback
import zlib

import numpy as np
import pytest

from mixgym.agents import AGENTS, make_agent
from mixgym.agents.compare import env_for
from mixgym.envs import MixingEnv
from mixgym.llm_backend.toy import ToyBackend, ToyConfig

POOL = [
    True, False, None, "3", "abc", "", [], [1, 2], [0.5, 0.5, 0.5], (0.2, 0.3, 0.5), {}, {"a": 1}, -1, 0, 1, 2, 7,
    -0.5, 0.0, 0.5, 0.999, 1.0, 1.5, 1e-12, 1e12, 10**12, 2**70, float("nan"), float("inf"), -float("inf"),
    np.int64(3), np.float32(0.25), np.float64("nan"), np.bool_(True), object(),
]  # fmt: skip
SMALL = {"num_domains": 3, "total_steps": 40}


def refused_by_name(error: BaseException, name: str) -> bool:
    """A TypeError/ValueError raised by mixgym's own code whose message names `name`."""
    innermost = traceback.extract_tb(error.__traceback__)[-1].filename
    return isinstance(error, (TypeError, ValueError)) and name in str(error) and "/mixgym/" in innermost


def draws(names: list[str], count: int, seed: int) -> list[tuple[str, object]]:
    rng = np.random.default_rng(seed)
    return [(names[rng.integers(len(names))], POOL[rng.integers(len(POOL))]) for _ in range(count)]


def check(call, name: str, value: object, then=None) -> str:
    try:
        made = call()
    except Exception as error:  # noqa: BLE001 -- what kind it is, is the test
        assert refused_by_name(error, name), f"{name}={value!r}: {type(error).__name__}: {error}\n{traceback.format_exc()}"
        return "refused"
    if then is not None:
        try:
            then(made)
        except (FloatingPointError, ValueError) as error:  # a finite but absurd value (lr 1e12) may make the run diverge:
            if not re.search("NaN or inf|non-finite", str(error)):  # the env then stops it with its own named error
                pytest.fail(f"{name}={value!r} was accepted, then failed: {error}\n{traceback.format_exc()}")
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"{name}={value!r} was accepted, then failed: {type(error).__name__}: {error}\n{traceback.format_exc()}")
    return "accepted"


def run_env(env: MixingEnv) -> None:
    env.reset(seed=0)
    for _ in range(2):
        if env.step(env.action_space.sample())[2]:
            break


ENV_KEYWORDS = ["action_map", "temperature", "eps", "steps_per_action", "total_steps", "eval_every", "reward", "reward_kwargs",
                "info_timings", "render_mode", "num_domains", "hidden_dim", "batch_size", "task_seed", "observation", "budget", "phases"]  # fmt: skip


def test_mixing_env_keywords() -> None:
    outcomes = [check(lambda: MixingEnv(**{**SMALL, name: value}), name, value, run_env) for name, value in draws(ENV_KEYWORDS, 500, 0)]
    assert outcomes.count("refused") > 250 and outcomes.count("accepted") > 20


def test_advantage_reward_options() -> None:
    def make(name: str, value: object) -> MixingEnv:
        return MixingEnv(**SMALL, reward="advantage", reward_kwargs={name: value})

    outcomes = [check(lambda: make(name, value), name, value, run_env) for name, value in draws(["baseline", "terminal", "scale"], 120, 2)]
    assert outcomes.count("refused") > 50 and outcomes.count("accepted") > 10


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # absurd but finite sizes (domain_shift=1e12) overflow to NaN
def test_toy_backend_keywords() -> None:
    names = [f.name for f in dataclasses.fields(ToyConfig)]

    def use(backend: ToyBackend) -> None:
        backend.reset(1)
        backend.train(np.full(len(backend.domains), 1 / len(backend.domains)), 3)
        backend.evaluate(), backend.domain_gradients(), backend.weight_stats()

    def make(name: str, value: object) -> ToyBackend:
        return ToyBackend(**{"num_domains": 3, "total_steps": 40, name: value})

    outcomes = [check(lambda: make(name, value), name, value, use) for name, value in draws(names, 300, 1)]
    assert outcomes.count("refused") > 150 and outcomes.count("accepted") > 20


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_agent_options(agent, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an accepted tensorboard_log writes its folder here
    env = env_for(agent, SMALL)
    names = [f.name for f in dataclasses.fields(AGENTS[agent].config)]
    heavy = agent in ("acodm", "acodm-frozen-actor", "hds", "td3", "ppo", "oracle", "doremi")

    def use(made) -> None:
        made.learn(3)
        made.predict(env.reset(seed=0)[0])

    base = {"mixture": (0.2, 0.3, 0.5)} if agent == "fixed" else {"net_width": 16} if "net_width" in names else {}
    if agent == "oracle":  # its default search trains 30 seeds per candidate: too slow for 30 draws
        base = {"search_seeds": (0, 1)}
    for name, value in draws(names, 30 if heavy else 80, zlib.crc32(agent.encode())):
        check(lambda: make_agent(agent, env, **{**base, name: value}), name, value, use)


def test_bools_are_not_numbers() -> None:
    env = env_for("acodm", SMALL)
    calls = {
        "steps_per_action": lambda: MixingEnv(steps_per_action=True, **SMALL),
        "hidden_dim": lambda: ToyBackend(hidden_dim=True),
        "net_width": lambda: make_agent("acodm", env, net_width=True),
        "smoothing": lambda: make_agent("odm", env_for("odm", SMALL), smoothing=False),
        "seed": lambda: make_agent("uniform", env_for("uniform", SMALL), seed=np.bool_(True)),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} must be .*, got (np.)?(True|False)"):
            call()


def test_a_toy_task_too_large_for_the_machine_is_refused_with_its_estimate(monkeypatch) -> None:
    import mixgym.resources

    monkeypatch.setattr(mixgym.resources, "available_memory", lambda: 24 * 2**30)  # whatever this machine has
    with pytest.raises(ValueError, match=r"a toy task of K=1000 domains \(7041515 training examples; input_dim=16, .*\) needs about 140.0 GiB of memory, more than the 24.0 GiB available"):
        ToyBackend(num_domains=1000)
    with pytest.raises(ValueError, match="agent 'hds' .*buffer_size=1000000000.* needs about"):
        make_agent("hds", env_for("hds", SMALL), buffer_size=10**9)
