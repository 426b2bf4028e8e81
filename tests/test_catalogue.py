"""The task catalogue's domains behave as named, old tasks keep their data, the oracle is
re-scored, the leaderboard's statistics, and RL agents that never update say so."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from mixgym.agents import make_agent
from mixgym.agents.compare import Comparison, table_rows
from mixgym.agents.sb3_presets import ZeroUpdateWarning
from mixgym.bench.leaderboard import leaderboard, load_runs, normalised_scores
from mixgym.envs import MixingEnv
from mixgym.llm_backend.oracle import rescore, search_schedule, seed_objectives
from mixgym.llm_backend.toy import DomainSpec, ToyBackend, ToyConfig, _make_task
from mixgym.tasks import CATALOGUE_DOMAINS, TASK_PRESETS, get_task

D = DomainSpec


def test_todays_tasks_keep_their_data_and_fingerprints() -> None:
    # checksums and fingerprints of main before the catalogue's options existed
    cases = {
        "classic5": (ToyConfig(), "ebe33911ad8a889e380f1c13bc3b6377", "6c4c9cdbfe629d9b"),
        "pile22": (ToyConfig(**get_task("pile22").backend_options), "4bb8564fa05231fec7d92b9ce28da4e5", "3712db38e0894241"),
        "K=30": (ToyConfig(num_domains=30, task_seed=3), "b2ca549994c728ef5d965b38ce9bca5c", "d5fcae93709dbc83"),
        # and the catalogue's Pile-like task as its gap table (BENCHMARKS.md) was measured on
        "mix-pilemix": (ToyConfig(**get_task("mix-pilemix").backend_options), "88e90bf5c2e937a432d7cba9cfe939a3", "bae4c568682290a6"),
    }
    for name, (config, checksum, fingerprint) in cases.items():
        assert (_make_task(config).checksum, config.fingerprint()) == (checksum, fingerprint), name


def _rows(task, config: ToyConfig, k: int) -> np.ndarray:
    start, size = task.offsets[k], task.sizes[k]
    return task.train[start : start + size]


def test_a_duplicate_is_copies_of_its_sources_first_examples_and_a_pool_repeats() -> None:
    config = ToyConfig(
        domains=(D("code", "hard", 1.5, 0.05, 1000), D("prose", "easy", 0.5, 0.05, 600, pool=40), D("dup", "duplicate", 1.5, 0.05, 3000, "code", share=0.05))
    )
    task = _make_task(config)
    code, prose, dup = (_rows(task, config, k) for k in range(3))
    assert len(np.unique(dup, axis=0)) == 50 and np.array_equal(np.unique(dup, axis=0), np.unique(code[:50], axis=0))
    assert len(np.unique(prose, axis=0)) == 40 and len(prose) == 600
    assert ToyBackend(config).info.domain_sizes.tolist() == [1000, 600, 3000]  # the natural share counts repeats
    assert MixingEnv(domains=config.domains, total_steps=10).objective.weights[2] == 0  # a duplicate is not scored


def test_a_contradiction_survives_the_domain_tag() -> None:
    # the same inputs and tag as its source, the opposite target: a model that learns one fails the other
    config = ToyConfig(domains=(D("forum", "easy", 0.5, 0.05, 3000), D("spam", "contradict", 0.5, 0.05, 3000, "forum")), total_steps=300)
    backend = ToyBackend(config)
    backend.reset(0)
    backend.train(np.array([1.0, 0.0]), 300)
    losses = backend.evaluate()
    assert losses["forum"] < 0.5 < 2.0 < losses["spam"]
    task = _make_task(config)
    forum, spam = _rows(task, config, 0), _rows(task, config, 1)
    d = config.input_dim
    assert np.array_equal(forum[:, d : d + 3], spam[:, d : d + 3])  # one tag


def test_a_crawl_carries_its_own_tag_and_some_signal() -> None:
    config = ToyConfig(domains=(D("crawl", "crawl", 1.0, 0.2, 4000, share=0.5), D("prose", "easy", 0.5, 0.05, 2000)), total_steps=300)
    rows = _rows(_make_task(config), config, 0)
    assert np.all(rows[:, config.input_dim] == config.domain_tag)
    backend = ToyBackend(config)
    backend.reset(0)
    backend.train(np.array([1.0, 0.0]), 300)
    assert backend.evaluate()["prose"] < 1.0  # the crawl's signal teaches the domain it crawled


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: D("a", "easy", 0.5, 0.05, 100, pool=0), r"pool \(distinct examples\) must be .*got 0"),
        (lambda: D("a", "easy", 0.5, 0.05, 100, pool=101), r"pool .*got 101"),
        (lambda: D("d", "duplicate", 0.5, 0.05, 100, share=1.5), r"share must be .*got 1.5"),
        (lambda: D("a", "easy", 0.5, 0.05, 100, share=0.5), "only kinds duplicate and crawl take a share"),
        (lambda: ToyConfig(num_domains=1), r"num_domains must be .*got 1"),
        (lambda: ToyConfig(domains=(D("a", "easy", 0.5, 0.05, 100),)), "at least 2 domains, got 1"),
        (lambda: search_schedule(ToyConfig(num_domains=2, total_steps=10), seeds=(0,)), r"at least 2 distinct run seeds.*\(0,\)"),
        (lambda: make_agent("oracle", MixingEnv(total_steps=20), search_seeds=(3, 3)), r"at least 2 distinct run seeds, got \(3, 3\)"),
    ],
)
def test_bad_task_and_search_options_are_named(build, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_catalogue_tasks_are_registered_with_the_vector_entry_point() -> None:
    assert {f"mix-{name}" for name in CATALOGUE_DOMAINS} <= set(TASK_PRESETS)
    envs = gym.make_vec("mixgym/MixingCatalogueCrawl-v0", num_envs=2, total_steps=20)
    obs, _ = envs.reset(seed=0)
    assert obs.shape[0] == 2
    envs.close()
    other = MixingEnv(task="mix-crawl", task_seed=1, total_steps=20)  # another task instance
    assert other.backend.config.task_seed == 1


def test_rescore_compares_on_fresh_seeds_with_a_confidence_interval() -> None:
    config = ToyConfig(domains=CATALOGUE_DOMAINS["junk"], total_steps=200)
    no_junk = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])
    result = rescore(config, no_junk, seeds=tuple(range(100, 110)))
    values = seed_objectives(config, np.stack([no_junk[None], np.full((1, 4), 0.25)]), tuple(range(100, 110)))
    assert result.gap == pytest.approx(float((values[1] - values[0]).mean()))
    assert result.half_width > 0 and result.separable  # dropping the junk domain beats uniform beyond noise
    assert not rescore(config, np.full(4, 0.25), seeds=(100, 101, 102)).separable


def test_search_starts_include_drop_one_and_never_lose_to_them_on_its_seeds() -> None:
    config = ToyConfig(domains=CATALOGUE_DOMAINS["junk"], total_steps=100)
    result = search_schedule(config, seeds=(0, 1), n_random=0, rounds=1, use_cache=False)
    drop_junk = seed_objectives(config, np.array([[[1 / 3, 1 / 3, 1 / 3, 0.0]]]), (0, 1)).mean()
    assert result.objective <= drop_junk + 1e-3  # the drop-one start has logit -8, not exactly 0


def _comparison(oracle: list[float], uniform: list[float], updates: dict[str, int]) -> Comparison:
    from mixgym.agents.runner import Results

    def results(finals: list[float]) -> Results:
        fake = Results.__new__(Results)
        fake.final_objectives = lambda: np.array(finals)  # type: ignore[method-assign]
        fake.decisions_to_reach = lambda target: None  # type: ignore[method-assign]
        return fake

    names = {"natural": uniform, "uniform": uniform, "oracle": oracle, "ppo": uniform}
    return Comparison({n: results(v) for n, v in names.items()}, {n: "act" for n in names}, {n: 0.0 for n in names}, updates)


def test_the_demo_table_shows_regret_only_for_a_separable_oracle_and_marks_untrained_agents() -> None:
    losing = _comparison([0.52, 0.49, 0.51], [0.50, 0.50, 0.50], {"ppo": 0})
    rows = {row[0]: row for row in table_rows(losing.summary())}
    assert rows["oracle"][3] == "oracle not separable from uniform"
    assert "ppo (0 updates: untrained)" in rows
    winning = _comparison([0.40, 0.41, 0.40], [0.50, 0.52, 0.50], {"ppo": 5})
    rows = {row[0]: row for row in table_rows(winning.summary())}
    assert rows["uniform"][3].startswith("+0.1") and "ppo" in rows


@pytest.mark.parametrize(("agent", "options"), [("ppo", {"n_steps": 64, "batch_size": 16}), ("sac", {"learning_starts": 100}), ("td3", {"learning_starts": 20})])
def test_an_rl_agent_that_makes_no_update_warns_at_once(agent: str, options: dict) -> None:
    env = MixingEnv(total_steps=200)  # 20 decisions
    model = make_agent(agent, env, seed=0, sb3_kwargs=options)
    with pytest.warns(ZeroUpdateWarning, match=f"agent {agent!r} makes zero gradient updates"):
        model.learn(20)
    assert model.updates == 0


def test_an_rl_agent_that_learns_counts_its_updates() -> None:
    env = MixingEnv(total_steps=200)
    model = make_agent("sac", env, seed=0, sb3_kwargs={"learning_starts": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroUpdateWarning)
        model.learn(20)
    assert model.updates == 15


def _grid(tmp_path, objective: str = "domain-mean"):
    rng = np.random.default_rng(0)
    rows = []
    for task, effect in (("mix-a", 0.1), ("mix-b", 0.05)):
        for instance in (0, 1):
            for seed in range(5):
                base = 1.0 + 0.01 * rng.standard_normal()
                finals = {"uniform": base, "oracle": base - effect, "good": base - 0.8 * effect, "bad": base + effect}
                for agent, final in finals.items():
                    rows.append({"agent": agent, "backend": f"{task}@{instance}", "seed": seed, "objective": objective, "final_objective": final})
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_leaderboard_normalises_per_task_and_aggregates_with_rliable(tmp_path) -> None:
    board = leaderboard(load_runs([_grid(tmp_path)]), reps=200)
    table = board.table.set_index("agent")
    assert table.loc["oracle", "iqm"] == pytest.approx(1.0, abs=0.05) and table.loc["uniform", "iqm"] == pytest.approx(0.0, abs=0.05)
    assert table.loc["good", "iqm"] == pytest.approx(0.8, abs=0.05) and table.loc["good", "beats"] == 2
    assert table.loc["bad", "beats"] == 0 and table.loc["good", "poi"] > 0.9
    assert table.loc["good", "iqm_low"] <= table.loc["good", "iqm"] <= table.loc["good", "iqm_high"]
    text = board.markdown()
    assert "IQM [95% CI]" in text and "2 of 2" in text
    runs = load_runs([_grid(tmp_path)])
    losing = runs[runs["task"] == "mix-b"].assign(backend=lambda r: r["backend"].str.replace("mix-b", "mix-c"), task="mix-c")
    losing.loc[losing["agent"] == "oracle", "final_objective"] += 0.2
    board = leaderboard(pd.concat([runs, losing]), reps=200)
    assert board.tasks == ["mix-a", "mix-b"] and "left out: mix-c (on mix-c@0 the oracle" in board.markdown()
    with pytest.raises(ValueError, match="task .mix-c. has no normalised score: on mix-c@. the oracle"):
        normalised_scores(pd.concat([runs, losing]))
    assert board.plot(tmp_path / "board.png").stat().st_size > 0


def test_leaderboard_refuses_a_column_of_mixed_objectives_or_without_baselines(tmp_path) -> None:
    first = _grid(tmp_path)
    mixed = tmp_path / "other"
    mixed.mkdir()
    _grid(mixed, objective="worst-domain")
    with pytest.raises(ValueError, match=r"task column 'mix-a' mixes objectives \['domain-mean', 'worst-domain'\]"):
        normalised_scores(load_runs([first, mixed / "results.csv"]))
    runs = load_runs([first])
    with pytest.raises(ValueError, match=r"task instance 'mix-a@0' has no oracle runs"):
        normalised_scores(runs[~((runs["backend"] == "mix-a@0") & (runs["agent"] == "oracle"))])


def test_a_bench_grid_marks_an_untrained_agent_and_the_leaderboard_reads_grids(tmp_path, capsys) -> None:
    import yaml

    from mixgym.cli import main

    grid = {
        "name": "catalogue-tiny",
        "mode": "non-proxy",
        "seeds": [0],
        "agents": ["sac"],  # SB3's learning_starts=100 > 10 decisions: no gradient update
        "rewards": ["eval_loss"],
        "backends": {"mix-junk@0": {"task": "mix-junk", "task_seed": 0, "total_steps": 100}},
        "baselines": ["natural", "uniform"],
        "env": {"steps_per_action": 10},
    }
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    assert main(["bench", str(config), "--out", str(out), "--workers", "1", "--no-progress"]) == 0  # cells run in processes
    assert "sac (0 updates: untrained)" in capsys.readouterr().out
    board = tmp_path / "board"
    board.mkdir()
    _grid(board)  # a grid's results.csv, as the bench writes it
    assert main(["leaderboard", str(board), "--plot", str(tmp_path / "board.png"), "--reps", "100"]) == 0
    printed = capsys.readouterr().out
    oracle = next(line for line in printed.splitlines() if line.startswith("| oracle | "))
    assert "beats uniform (90% CI)" in printed and "| 2 of 2 |" in oracle


def test_the_bench_report_names_backends_whose_oracle_is_not_separable_from_uniform() -> None:
    from mixgym.bench.report import _oracle_not_separable

    rows = []
    for backend, oracle in (("clear", [0.40, 0.41, 0.39]), ("noisy", [0.52, 0.47, 0.50])):
        for seed, (o, u) in enumerate(zip(oracle, [0.50, 0.51, 0.49])):
            rows += [{"backend": backend, "seed": seed, "agent": "oracle", "final_objective": o}]
            rows += [{"backend": backend, "seed": seed, "agent": "uniform", "final_objective": u}]
    assert _oracle_not_separable(pd.DataFrame(rows)) == ["noisy"]
