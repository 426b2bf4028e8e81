"""OP-Mix: the law fit, the proposal, the per-phase design, the agent end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mixgym.agents import evaluate, learn_online, load_agent, make_agent
from mixgym.agents.opmix import OpMixMixer, fit_law, propose
from mixgym.envs import MixingEnv

FAST = {"fit_restarts": 3, "lr_scale": 0.5, "probe_fraction": 0.05}


def test_fit_law_recovers_a_known_law() -> None:
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), 12)
    slopes = np.array([-1.5, 0.3, 0.1])
    y = np.exp(-1.0) + np.exp(x @ slopes)
    law = fit_law(x, y, own=0, restarts=5)
    assert np.allclose(law(x), y, atol=2e-3)
    assert law.loss < 1e-5
    with pytest.raises(ValueError, match="x of shape"):
        fit_law(x, y[:5], own=0)


def test_lbfgs_solves_many_problems_at_once() -> None:
    from mixgym.agents.opmix import lbfgs

    def rosenbrock(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = points[:, 0], points[:, 1]
        loss = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        grad = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], axis=1)
        return loss, grad

    starts = np.random.default_rng(0).uniform(-2, 2, (50, 2))
    assert np.allclose(lbfgs(rosenbrock, starts), 1.0, atol=1e-4)


def grid_minimum(slopes: np.ndarray, kl_reg: float, prior: np.ndarray, kl_map: np.ndarray | None) -> tuple[float, np.ndarray]:
    width = slopes.shape[1]
    best = (np.inf, None)
    ticks = np.linspace(0, 1, 201)
    for point in itertools.product(ticks, repeat=width - 1):
        if sum(point) > 1:
            continue
        x = np.array([*point, 1 - sum(point)])
        mapped = x if kl_map is None else kl_map @ x
        kl = np.sum(np.where(mapped > 0, mapped * np.log(np.maximum(mapped, 1e-300) / prior), 0))
        value = np.exp(slopes @ x).mean() + kl_reg * kl
        if value < best[0]:
            best = (value, x)
    return best


@pytest.mark.parametrize("width", [2, 3])
def test_propose_finds_the_convex_minimum(width: int) -> None:
    rng = np.random.default_rng(width)
    slopes = rng.normal(0, 1.5, (4, width))
    prior = np.full(width, 1 / width)
    value, x_grid = grid_minimum(slopes, 0.05, prior, None)
    x = propose(slopes, 0.05, prior)
    assert np.isclose(x.sum(), 1) and np.all(x >= 0)
    assert np.allclose(x, x_grid, atol=0.01)
    # with an expansion: the prior on three domains, x over two coordinates
    kl_map = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])
    prior3 = np.array([0.25, 0.25, 0.5])
    _, x_grid = grid_minimum(slopes[:, :2], 0.05, prior3, kl_map)
    assert np.allclose(propose(slopes[:, :2], 0.05, prior3, kl_map), x_grid, atol=0.01)
    # a huge KL weight returns the prior
    assert np.allclose(propose(slopes, 1e4, np.linspace(1, 2, width) / np.linspace(1, 2, width).sum()),
                       np.linspace(1, 2, width) / np.linspace(1, 2, width).sum(), atol=1e-3)


def test_design_of_the_first_phase_and_of_a_continual_phase() -> None:
    env = MixingEnv(total_steps=100, action_map="simplex", phases=[(50, ["easy", "hard"]), (50, ["easy", "hard", "noise"])])
    mixer: OpMixMixer = make_agent("opmix", env, seed=3, **FAST).mixer  # type: ignore[attr-defined]
    old = np.array([0.5, 0.5, 0, 0, 0])
    first = mixer.design(0, old)
    assert np.allclose(first.probes, [old, 0.1 * old + [0.9, 0, 0, 0, 0], 0.1 * old + [0, 0.9, 0, 0, 0]])
    assert first.candidates.shape == (12, 3) and np.allclose(first.candidates.sum(1), 1)
    assert np.array_equal(first.candidates, first.coordinates)
    assert np.allclose(first.prior, [0.5, 0.25, 0.25]) and first.kl_map is None
    assert first.own == [1, 2] and first.steps == 2  # 5% of a 50-step phase, rounded
    previous = np.array([0.7, 0.3, 0, 0, 0])
    second = mixer.design(1, previous)  # adds one domain: two probes, nine fixed points
    assert np.allclose(second.probes, [0.9 * previous + [0, 0, 0.1, 0, 0], 0.1 * previous + [0, 0, 0.9, 0, 0]])
    assert second.candidates.shape == (9, 2) and np.allclose(second.coordinates[:, 1], np.linspace(0.1, 0.9, 9))
    assert np.allclose(second.candidates @ second.probes, second.coordinates @ second.expansion.T)
    assert np.allclose(second.prior, [0.35, 0.15, 0.5, 0, 0]) and second.own == [0, 0, 1]
    assert second.steps == 12  # the continual probe fraction, 25% of 50


def test_opmix_remixes_after_the_prefix_and_charges_the_probes() -> None:
    env = MixingEnv(total_steps=200, action_map="simplex", reward="eval_loss")
    results = evaluate(make_agent("opmix", env, seed=0, **FAST), env, episodes=1, seed=5)
    rows = results.decisions
    before = rows[(rows["decision"] > 0) & (rows["step"] <= 40)]
    after = rows[rows["step"] > 40]
    assert np.allclose(before[[c for c in rows if c.startswith("mixture/")]].to_numpy(), 0.2)
    changed = after[[c for c in rows if c.startswith("mixture/")]].iloc[0].to_numpy()
    assert not np.allclose(changed, 0.2) and np.isclose(changed.sum(), 1)
    assert (before["whatif_compute"] == 0).all() and (after["whatif_compute"] > 0).all()
    assert np.allclose(after["compute"], after["step"] + after["whatif_compute"])


def test_opmix_runs_online_and_saves_and_loads(tmp_path) -> None:
    env = MixingEnv(total_steps=100, action_map="simplex")
    results, agents = learn_online("opmix", env, seeds=[1], **FAST)
    record = agents[0].mixer.history[0]
    assert record["run"] == 1 and record["phase"] == 0 and record["step"] == 20 and len(record["laws"]) == 5
    assert np.allclose(record["mixture"], results.per_domain("mixture").iloc[-1])
    path = tmp_path / "opmix.zip"
    agents[0].save(path)
    loaded = load_agent(path, env)
    assert np.allclose(loaded.predict(None)[0], agents[0].predict(None)[0])
    assert loaded.mixer.history == agents[0].mixer.history


def test_opmix_on_a_continual_task_uses_the_two_probe_variant() -> None:
    phases = [(60, ["easy", "hard", "conflict"]), (60, ["easy", "hard", "conflict", "redundant"])]
    env = MixingEnv(total_steps=120, action_map="simplex", phases=phases, reward="eval_loss")
    agent = make_agent("opmix", env, seed=0, **FAST)
    results = evaluate(agent, env, episodes=1, seed=2)
    first, second = agent.mixer.history
    assert first["step"] == 20 and len(first["probes"]) == 4
    assert second["step"] == 60 and len(second["probes"]) == 2 and len(second["candidates"]) == 9
    in_phase_two = results.decisions[results.decisions["step"] > 60]
    assert (in_phase_two["mixture/redundant"] > 0).all() and (in_phase_two["mixture/noise"] == 0).all()
    assert np.allclose(in_phase_two[[f"mixture/{d}" for d in ("easy", "hard", "conflict", "redundant")]].sum(axis=1), 1)


def test_opmix_is_refused_where_it_cannot_run() -> None:
    from mixgym.llm_backend import Signal
    from mixgym.llm_backend.toy import ToyBackend

    class NoWhatIf(ToyBackend):
        signals = ToyBackend.signals - {Signal.WHATIF}

    with pytest.raises(ValueError, match="which NoWhatIf does not provide"):
        make_agent("opmix", MixingEnv(backend=NoWhatIf(total_steps=100), action_map="simplex"))
    with pytest.raises(ValueError, match="plans .* reach the whole compute budget of 100"):
        make_agent("opmix", MixingEnv(total_steps=100, action_map="simplex", budget="compute"), probe_fraction=0.5)
    with pytest.raises(ValueError, match="needs an env with action_map"):
        make_agent("opmix", MixingEnv(total_steps=100))
    with pytest.raises(ValueError, match="method must be 'merge' or 'exact'"):
        make_agent("opmix", MixingEnv(total_steps=100, action_map="simplex"), method="mean")


def test_opmix_under_a_compute_budget_ends_early() -> None:
    env = MixingEnv(total_steps=400, action_map="simplex", budget="compute")
    results = evaluate(make_agent("opmix", env, seed=0, **FAST), env, episodes=1, seed=0)
    last = results.decisions.iloc[-1]
    assert 400 <= last["compute"] < 401 and last["step"] < 400 - 100


def test_opmix_from_the_cli_and_the_bench(tmp_path) -> None:
    from mixgym.bench import parse_config, run_bench
    from mixgym.cli import main

    save = tmp_path / "opmix.zip"
    args = ["train", "opmix", "--mode", "online", "--env", "total_steps=60", "--save", str(save), "--results", str(tmp_path / "r")]
    for key, value in FAST.items():
        args += ["--option", f"{key}={value}"]
    assert main(args) == 0 and save.exists()
    grid = parse_config(
        {
            "name": "t",
            "mode": "non-proxy",
            "seeds": [0],
            "agents": {"opmix": FAST},
            "rewards": ["eval_loss"],
            "backends": {"toy": {"total_steps": 60}},
        }
    )
    result = run_bench(grid, tmp_path / "bench", workers=1, progress=False)
    assert not result.failed
    row = result.summary.set_index("agent").loc["opmix"]
    assert row["whatif_compute_mean"] > 0 and row["objective_equal_compute_mean"] >= 0
    uniform = result.summary.set_index("agent").loc["uniform"]
    assert uniform["whatif_compute_mean"] == 0 and uniform["objective_equal_compute_mean"] == uniform["final_objective_mean"]
    headers = [line for line in (tmp_path / "bench" / "summary.md").read_text().splitlines() if line.startswith("| agent")]
    with_compute = [h for h in headers if "at equal compute" in h and "what-if compute (steps)" in h]
    assert len(headers) > 1 and len(with_compute) == 1  # only the env objective's table shows them


def test_a_resumed_experiment_reads_its_probes_from_disk(tmp_path, monkeypatch) -> None:
    import pandas as pd

    from mixgym.checkpoint import CheckpointStore
    from mixgym.experiment import ExperimentConfig, run_experiment
    from mixgym.llm_backend.toy import ToyBackend

    config = ExperimentConfig("opmix", {"total_steps": 100}, seed=0, agent_options=dict(FAST), checkpoint_every=1, keep=1000)
    run_experiment(config, tmp_path)
    full = pd.read_csv(tmp_path / "decisions.csv").drop(columns=["wall_time"])
    assert len(list((tmp_path / "whatif").glob("*.whatif"))) == 1
    # a crash just after the probes (the re-mix is decision 2, at step 20): only decision 1's checkpoint is left
    for path in CheckpointStore(tmp_path / "checkpoints").paths()[1:]:
        path.unlink()

    def train_probes_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the resumed run trained its probes again")

    monkeypatch.setattr(ToyBackend, "_simulate", train_probes_again)
    run_experiment(config, tmp_path, resume=True)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "decisions.csv").drop(columns=["wall_time"]), full)
