"""`mixgym bench`: a grid end to end through the CLI, caching, crashing cells, bad configs."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mixgym.bench import load_config, parse_config, run_bench
from mixgym.cli import main

GRID = {
    "name": "tiny",
    "mode": "non-proxy",
    "seeds": [0],
    "agents": ["exp3"],
    "rewards": ["alignment"],
    "backends": {"toy3": {"backend": "toy", "num_domains": 3, "total_steps": 100}},
    "env": {"steps_per_action": 10},
}


def write(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_two_cell_grid_runs_through_the_cli_and_a_rerun_skips_finished_cells(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["bench", str(write(tmp_path, GRID)), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| exp3 | alignment | toy3 | 1 |" in printed and "| uniform |" in printed and "| natural |" in printed
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["agent"]) == ["exp3", "natural", "uniform"]
    assert results["regret"].notna().all() and (results["final_objective"] > 0).all()
    uniform = results[results["agent"] == "uniform"].iloc[0]
    assert uniform["domain-mean/steps_to_uniform"] == 100 and uniform["domain-mean/saved_vs_uniform"] == 0.0
    assert (results["domain-mean/final"] == results["final_objective"]).all()
    for name in ("summary.md", "summary.csv", "loss_vs_tokens.png", "mixtures.png", "final_loss.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/summary.json")}
    assert len(stamps) == 3
    again = run_bench(load_config(out / "config.yaml"), out, workers=1, progress=False)
    assert {o.status for o in again.outcomes} == {"cached"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/summary.json")} == stamps


def test_a_crashing_cell_is_reported_and_the_others_finish(tmp_path: Path, capsys) -> None:
    grid = dict(GRID, agents={"fixed": {"mixture": [1.0, 0.0]}})  # 2 weights for 3 domains: fails in the cell
    out = tmp_path / "out"
    assert main(["bench", str(write(tmp_path, grid)), "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "FAILED fixed/alignment/toy3/seed0" in printed and "| uniform |" in printed
    failed = [p for p in out.glob("cells/*/error.txt")]
    assert len(failed) == 1 and "mixture" in failed[0].read_text()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"agents": ["sac-ultra"]}, "unknown agent 'sac-ultra' in 'agents'; allowed: .*exp3"),
        ({"rewards": ["perplexity"]}, "unknown reward 'perplexity' in 'rewards'; allowed: alignment, eval_loss, holistic"),
        ({"backends": {"x": {"backend": "jax"}}}, "unknown backend 'jax' in 'backends.x'; allowed: toy, hf"),
        ({"seed": [0]}, r"unknown key\(s\) \['seed'\].*allowed: name, mode, seeds"),
        ({"agents": []}, "'agents' must be a non-empty"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"mode": "offline"}, "unknown mode 'offline'"),
        ({"env": {"reward": "holistic"}}, r"unknown key\(s\) \['reward'\] in 'env'"),
        ({"agents": {"hds": {"rewards": ["loss"]}}}, "unknown agents.hds.reward 'loss'"),
        ({"baselines": ["best"]}, "unknown baseline 'best' in 'baselines'; allowed: natural, uniform, tempered, oracle"),
        ({"baselines": {"tempered": {"tau": 0}}}, "baseline 'tempered' in 'baselines': tau must be a positive"),
        ({"baselines": {"tempered": {"tau": -1.0}}}, "tau must be a positive finite number"),
        ({"backends": {"x": {"task": "pile23"}}}, "unknown task 'pile23' in 'backends.x'; allowed: classic5, pile22, hf-pile"),
        ({"env": {"objective": "loss"}}, "unknown objective 'loss' in 'env.objective'; allowed: domain-mean, natural, worst-domain"),
        ({"env": {"objective": [1, 1]}}, "'env.objective' for backend 'toy3': objective weights must have 3 entries"),
        ({"env": {"objective": [0, 0, 0]}}, "have a positive sum"),
        (
            {"backends": {"lm": {"task": "hf-pile", "corpus": "c"}}, "baselines": ["oracle"]},
            r"baseline 'oracle' needs toy backends .*not toy: \['lm'\]",
        ),
    ],
)
def test_an_invalid_config_fails_before_anything_runs(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_config({**GRID, **change})


def test_shipped_configs_are_valid() -> None:
    for path in sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml")):
        assert load_config(path).cells(), path


def test_an_agent_can_be_pinned_to_its_own_reward() -> None:
    grid = parse_config({**GRID, "agents": {"hds": {"rewards": ["holistic"]}, "exp3": {}}, "rewards": ["alignment", "eval_loss"]})
    labels = sorted(cell.label for cell in grid.cells())
    assert labels == [
        "exp3/alignment/toy3/seed0",
        "exp3/eval_loss/toy3/seed0",
        "hds/holistic/toy3/seed0",
        "natural/alignment/toy3/seed0",
        "uniform/alignment/toy3/seed0",
    ]
    assert all("rewards" not in cell.agent_options for cell in grid.cells())


def test_a_task_grid_reports_every_objective_against_natural_and_uniform(tmp_path: Path) -> None:
    grid = parse_config(
        {
            **GRID,
            "seeds": [0, 1],
            "agents": ["exp3"],
            "backends": {"pile": {"task": "pile22", "total_steps": 100}},
            "baselines": {"tempered": {"tau": 0.3}},
            "env": {"steps_per_action": 10, "objective": "worst-domain"},
        }
    )
    assert sorted({c.agent for c in grid.cells()}) == ["exp3", "natural", "tempered", "uniform"]
    result = run_bench(grid, tmp_path, workers=1, progress=False)
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 8 and set(results["objective"]) == {"worst-domain"}
    assert (results["worst-domain/final"] == results["final_objective"]).all()
    for objective in ("domain-mean", "natural"):
        for reference in ("natural", "uniform"):
            own = results[results["agent"] == reference]
            assert (own[f"{objective}/steps_to_{reference}"] <= 100).all(), (objective, reference)
            assert (own[f"{objective}/saved_vs_{reference}"] == 0).all()  # a baseline saves nothing on itself
    natural, uniform = (results[results["agent"] == name].set_index("seed") for name in ("natural", "uniform"))
    assert (natural["tv_uniform"] > 0.4).all() and (uniform["tv_uniform"] < 0.1).all() and (natural["tv_natural"] < 0.1).all()
    assert (natural["natural/final"] < uniform["natural/final"]).all()  # natural wins on its own objective
    text = (tmp_path / "summary.md").read_text()
    assert text.count("| agent |") == 3 and "worst-domain (the env's objective)" in text
    assert "% steps saved vs natural" in text and "% steps saved vs uniform" in text and "| tempered |" in text
    assert result.summary["seeds"].tolist() == [2, 2, 2, 2]


def test_a_stopped_grid_resumes_its_cells_from_their_checkpoints(tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    from mixgym.bench.execute import cell_dir
    from mixgym.experiment import RunStopped

    grid = parse_config({**GRID, "agents": ["hds"], "backends": {"toy3": {"num_domains": 3, "total_steps": 500}}})
    run_bench(grid, tmp_path / "full", workers=1, progress=False)
    hds = next(c for c in grid.cells() if c.agent == "hds")
    csv = cell_dir(tmp_path / "cut", hds) / "decisions.csv"

    def stop_later() -> None:
        while not (csv.exists() and sum(1 for _ in csv.open()) > 25):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_later, daemon=True).start()
    with pytest.raises(RunStopped):
        run_bench(grid, tmp_path / "cut", workers=1, progress=False)
    assert list((csv.parent / "checkpoints").glob("*.ckpt"))
    run_bench(grid, tmp_path / "cut", workers=1, progress=False)
    full = pd.read_csv(cell_dir(tmp_path / "full", hds) / "decisions.csv").drop(columns=["wall_time"])
    pd.testing.assert_frame_equal(pd.read_csv(csv).drop(columns=["wall_time"]), full)


def test_doremi_static_runs_from_the_bench_and_doremi_reports_its_time_average(tmp_path: Path) -> None:
    proxy = {"num_domains": 3, "total_steps": 100, "hidden_dim": 8}
    grid = dict(GRID, agents={"doremi-static": {"proxy": proxy}, "doremi": {}}, rewards=["eval_loss"])
    result = run_bench(parse_config(grid), tmp_path, workers=1, progress=False)
    assert not result.failed and set(result.summary["agent"]) == {"doremi-static", "doremi", "natural", "uniform"}
    summaries = {o.cell.agent: json.loads((o.directory / "summary.json").read_text()) for o in result.outcomes}
    averaged = summaries["doremi"]["time_averaged_mixture"]
    assert set(averaged) == {"easy", "hard", "noise"} and sum(averaged.values()) == pytest.approx(1.0)
    assert "time_averaged_mixture" not in summaries["doremi-static"]
