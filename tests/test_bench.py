"""`mixgym bench`: a grid end to end through the CLI, caching, crashing cells, bad configs."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mixgym.bench import load_config, parse_config, run_bench
from mixgym.bench.cells import run_cell
from mixgym.bench.config import input_digest, validate
from mixgym.bench.execute import cell_dir, partial_dir, run_cells
from mixgym.bench.report import write_report
from mixgym.cli import main
from mixgym.runlock import FolderInUse, RunLock

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
    backends = {**GRID["backends"], "diverging": {"num_domains": 3, "total_steps": 100, "learning_rate": 8.0}}
    out = tmp_path / "out"
    assert main(["bench", str(write(tmp_path, dict(GRID, backends=backends))), "--out", str(out), "--workers", "2", "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "FAILED exp3/alignment/diverging/seed0" in printed and "| exp3 | alignment | toy3 | 1 |" in printed
    reported = re.findall(r"details: (\S+error.txt)", printed)  # exp3, uniform and natural diverge
    assert len(reported) == 3 and all("FloatingPointError: non-finite" in Path(p).read_text() for p in reported)


def test_bad_cells_fail_before_anything_runs(tmp_path: Path) -> None:
    grid = parse_config(dict(GRID, agents={"fixed": {"mixture": [1.0, 0.0]}}))  # 2 weights for 3 domains
    with pytest.raises(ValueError, match=r"backends.toy3, reward 'alignment': agent 'fixed': option mixture must have 3 entries"):
        run_bench(grid, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out" / "cells").exists()
    hf = parse_config(dict(GRID, backends={"lm": {"backend": "hf", "corpus": str(tmp_path / "nowhere")}}))
    with pytest.raises(ValueError, match="backends.lm, reward 'alignment': corpus folder .*nowhere' does not exist"):
        run_bench(hf, tmp_path / "out", workers=1, progress=False)
    with pytest.raises(TypeError, match="agent 'odm': smoothing must be a number, got 'high'"):
        parse_config(dict(GRID, agents={"odm": {"smoothing": "high"}}))
    with pytest.raises(ValueError, match="backends.toy3.*hidden_dim must be an integer >= 1, got 0"):
        run_bench(parse_config(dict(GRID, backends={"toy3": {"num_domains": 3, "hidden_dim": 0}})), tmp_path / "out", progress=False)


def test_an_hf_backend_in_phases_is_checked_before_anything_runs(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("code", "prose"):
        (corpus / f"{name}.txt").write_text(f"{name} one\n\n{name} two\n")

    def lm(**options) -> dict:
        return dict(GRID, backends={"lm": {"backend": "hf", "corpus": str(corpus), "total_steps": 20, **options}})

    validate(parse_config(lm(phases=[[10, ["code"]], [10, ["code", "prose"]]], budget="compute")))
    with pytest.raises(ValueError, match=r"backends.lm, reward 'alignment': phases\[1\]: unknown domain\(s\) \['poetry'\]"):
        validate(parse_config(lm(phases=[[10, ["code"]], [10, ["poetry"]]])))
    with pytest.raises(ValueError, match=r"add up to 15, but the run's budget is total_steps=20"):
        validate(parse_config(lm(phases=[[10, ["code"]], [5, ["prose"]]])))
    with pytest.raises(ValueError, match="backends.lm, reward 'alignment': unknown budget 'flops'"):
        validate(parse_config(lm(budget="flops")))


@pytest.mark.parametrize("name", ["../../escape", "/tmp/escape", ".hidden", "a/b", ""])
def test_a_name_cannot_leave_the_output_folder(name: str) -> None:
    with pytest.raises(ValueError, match="'name' must be a plain folder name"):
        parse_config(dict(GRID, name=name))


def test_the_grid_keeps_its_name_whatever_its_agents_are_called() -> None:
    assert parse_config(dict(GRID, name="mine", agents={"odm": {}, "exp3": {"rewards": ["alignment"]}})).name == "mine"


def test_repeated_seeds_and_agents_are_merged_and_the_report_survives(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="'seeds' repeats 0: merged"):
        grid = parse_config(dict(GRID, seeds=[0, 0], agents=["exp3", "exp3", "uniform"]))
    keys = [cell.key for cell in grid.cells()]
    assert len(keys) == len(set(keys)) == 3  # exp3, uniform and natural (always run)
    result = run_bench(grid, tmp_path / "out", workers=2, progress=False)
    assert sorted(o.status for o in result.outcomes) == ["done"] * 3 and len(result.summary) == 3
    assert run_bench(grid, tmp_path / "out", workers=2, progress=False).markdown == result.markdown  # and again, cached


def test_one_bench_per_output_folder(tmp_path: Path) -> None:
    with RunLock(tmp_path / "out"):
        with pytest.raises(FolderInUse, match="in use by another mixgym process"):
            run_bench(parse_config(GRID), tmp_path / "out", workers=1, progress=False)


def test_the_cache_key_follows_the_content_of_the_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("code", "prose"):
        (corpus / f"{name}.txt").write_text(f"{name} one\n\n{name} two\n")
    grid = parse_config(dict(GRID, backends={"lm": {"backend": "hf", "corpus": str(corpus)}}))
    before = {cell.label: cell.key for cell in grid.cells()}
    stamp = (corpus / "code.txt").stat()
    (corpus / "code.txt").write_text("CODE one\n\ncode two\n")  # same size, same time: only the content differs
    os.utime(corpus / "code.txt", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    after = {cell.label: cell.key for cell in grid.cells()}
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)
    assert input_digest({"backend": "toy", "num_domains": 3}) == ""


def die_once(cell, directory: Path) -> dict:
    """A cell runner whose process is killed (as by the out-of-memory killer) the first time it runs seed 1."""
    marker = directory.parent.parent / f"killed-{cell.key}"
    if cell.seed == 1 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return run_cell(cell, directory)


def always_die(cell, directory: Path) -> dict:
    if cell.seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_cell(cell, directory)


def test_a_killed_worker_is_retried_and_the_grid_completes(tmp_path: Path) -> None:
    cells = parse_config(dict(GRID, seeds=[0, 1, 2])).cells()
    outcomes = run_cells(cells, tmp_path, die_once, workers=2, progress=False)
    assert sorted(o.status for o in outcomes) == ["done"] * 9  # exp3, natural and uniform, 3 seeds
    assert len(list(tmp_path.glob("killed-*"))) == 3 and not list(tmp_path.glob("cells/*.partial"))
    summary, _ = write_report(outcomes, tmp_path)
    assert summary["seeds"].tolist() == [3, 3, 3]


def test_a_cell_whose_process_dies_twice_is_failed_with_a_real_error_file(tmp_path: Path) -> None:
    cells = parse_config(dict(GRID, seeds=[0, 1])).cells()
    outcomes = run_cells(cells, tmp_path, always_die, workers=2, progress=False)
    failed = [o for o in outcomes if o.status == "failed"]
    assert sorted(o.cell.seed for o in failed) == [1, 1, 1] and sum(o.status == "done" for o in outcomes) == 3
    for outcome in failed:
        assert "killed by signal 9 (SIGKILL)" in outcome.error
        assert "out-of-memory killer" in (outcome.directory / "error.txt").read_text()


def test_ctrl_c_stops_the_grid_cleanly_with_a_partial_report_and_a_rerun_finishes(tmp_path: Path) -> None:
    # cells of 100 decisions (hds takes a gradient step at each); the oracle's search is short: 100 steps
    grid = dict(GRID, seeds=[0, 1, 2], agents=["hds"], env={"steps_per_action": 1})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mixgym.cli", "bench", str(write(tmp_path, grid)), "--out", str(out), "--workers", "2", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(out.glob("cells/*/summary.json")):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # to the bench only, as a scheduler would send SIGTERM
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped:" in stdout and "| natural |" in stdout  # the first baseline cell finished
    finished = list(out.glob("cells/*/summary.json"))
    assert 1 <= len(finished) < 9 and (out / "summary.md").exists()  # hds, natural and uniform, 3 seeds
    assert list(out.glob("cells/*.partial/checkpoints/*.ckpt"))  # the interrupted cells checkpointed
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("cells/*/summary.json"))) == 9 and not list(out.glob("cells/*.partial"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"agents": ["sac-ultra"]}, "unknown agent 'sac-ultra' in 'agents'; allowed: .*exp3"),
        ({"rewards": ["perplexity"]}, "unknown reward 'perplexity' in 'rewards'; allowed: advantage, advantage_terminal, alignment, eval_loss, holistic"),
        ({"backends": {"x": {"backend": "jax"}}}, "unknown backend 'jax' in 'backends.x'; allowed: toy, hf"),
        ({"seed": [0]}, r"unknown key\(s\) \['seed'\].*allowed: name, mode, seeds"),
        ({"agents": []}, "'agents' must be a non-empty"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"mode": "offline"}, "unknown mode 'offline'"),
        ({"env": {"reward": "holistic"}}, r"unknown key\(s\) \['reward'\] in 'env'"),
        ({"agents": {"hds": {"rewards": ["loss"]}}}, "unknown agents.hds.reward 'loss'"),
        ({"baselines": ["best"]}, "unknown baseline 'best' in 'baselines'; allowed: natural, uniform, tempered, oracle"),
        ({"baselines": {"tempered": {"tau": 0}}}, "baseline 'tempered' in 'baselines': agent 'tempered': tau .* must be > 0.0, got 0"),
        ({"baselines": {"tempered": {"tau": -1.0}}}, r"tau \(1 is natural, towards 0 uniform\) must be > 0.0, got -1.0"),
        ({"backends": {"x": {"task": "pile23"}}}, "unknown task 'pile23' in 'backends.x'; allowed: classic5, pile22, hf-pile, lm-small"),
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
        config = load_config(path)
        if all(options["backend"] == "toy" for options in config.backends.values()):  # hf ones need their corpus built
            validate(config)
            assert config.cells(), path


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
    # 100 decisions, stopped after 25: the cell cannot finish before the stop reaches it, however fast the machine
    grid = parse_config({**GRID, "agents": ["hds"], "backends": {"toy3": {"num_domains": 3, "total_steps": 1000}}})
    run_bench(grid, tmp_path / "full", workers=1, progress=False)
    hds = next(c for c in grid.cells() if c.agent == "hds")
    csv = partial_dir(tmp_path / "cut", hds) / "decisions.csv"

    def stop_later() -> None:
        while not (csv.exists() and sum(1 for _ in csv.open()) > 25):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_later, daemon=True).start()
    stopped = run_bench(grid, tmp_path / "cut", workers=1, progress=False)
    assert stopped.stopped and "stopped" in {o.status for o in stopped.outcomes if o.cell.agent == "hds"}
    assert list((csv.parent / "checkpoints").glob("*.ckpt"))
    assert not run_bench(grid, tmp_path / "cut", workers=1, progress=False).stopped
    full = pd.read_csv(cell_dir(tmp_path / "full", hds) / "decisions.csv").drop(columns=["wall_time"])
    resumed = pd.read_csv(cell_dir(tmp_path / "cut", hds) / "decisions.csv").drop(columns=["wall_time"])
    pd.testing.assert_frame_equal(resumed, full)


def test_an_output_folder_that_is_a_file_is_refused_first(tmp_path: Path, capsys) -> None:
    (tmp_path / "out").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(write(tmp_path, GRID)), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert re.match(r"mixgym bench: error: the bench output folder '.*out' exists and is not a folder", capsys.readouterr().err)


def test_doremi_static_runs_from_the_bench_and_doremi_reports_its_time_average(tmp_path: Path) -> None:
    proxy = {"num_domains": 3, "total_steps": 100, "hidden_dim": 8}
    grid = dict(GRID, agents={"doremi-static": {"proxy": proxy}, "doremi": {}}, rewards=["eval_loss"])
    result = run_bench(parse_config(grid), tmp_path, workers=1, progress=False)
    assert not result.failed and set(result.summary["agent"]) == {"doremi-static", "doremi", "natural", "uniform"}
    summaries = {o.cell.agent: json.loads((o.directory / "summary.json").read_text()) for o in result.outcomes}
    averaged = summaries["doremi"]["time_averaged_mixture"]
    assert set(averaged) == {"easy", "hard", "noise"} and sum(averaged.values()) == pytest.approx(1.0)
    assert "time_averaged_mixture" not in summaries["doremi-static"]


def test_reports_stay_readable_at_k22_and_tables_group_by_backend(tmp_path: Path) -> None:
    import matplotlib.image

    agents = ["odm"]
    grid = parse_config({"seeds": [0], "agents": agents, "rewards": ["eval_loss"],
                         "backends": {"k22": {"num_domains": 22, "total_steps": 20}, "k5": {"num_domains": 5, "total_steps": 20}}})
    result = run_bench(grid, tmp_path, workers=1, progress=False)
    for name, most in (("mixtures.png", 2200), ("final_loss.png", 2200), ("loss_vs_tokens.png", 1600)):
        height, width = matplotlib.image.imread(tmp_path / name).shape[:2]
        assert width <= most, (name, width)  # bounded, where it grew with K x agents (4,840 px before)
    tables = [block for block in result.markdown.split("\n\n") if block.startswith("| agent")]
    for table in tables:  # every table holds one backend's rows
        backends = {line.split(" | ")[2] for line in table.splitlines()[2:]}
        assert len(backends) == 1, backends
    assert "backend k22" in result.markdown and "backend k5" in result.markdown
