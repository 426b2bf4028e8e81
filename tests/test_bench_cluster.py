"""`mixgym bench` beyond one machine: the Ray engine gives the process engine's tables, shards
add up to the whole grid, and bad --shard / --engine input is refused clearly."""

import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mixgym.bench import parse_config, run_bench
from mixgym.bench.cells import run_cell
from mixgym.bench.execute import run_cells
from mixgym.cli import main

GRID = {
    "name": "cluster",
    "mode": "non-proxy",
    "seeds": [0, 1],
    "agents": ["exp3"],
    "rewards": ["alignment"],
    "backends": {"toy3": {"backend": "toy", "num_domains": 3, "total_steps": 60}},
    "env": {"steps_per_action": 10},
}
TIMING = ["wall_time", "reward_time"]


def _summary(folder: Path) -> pd.DataFrame:
    """summary.csv without the wall-clock columns (the only ones that may differ)."""
    table = pd.read_csv(folder / "summary.csv")
    return table.drop(columns=[c for c in table.columns if any(c.startswith(t) for t in TIMING)])


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid run by the process engine: 6 cells (exp3, natural and uniform, 2 seeds)."""
    out = tmp_path_factory.mktemp("whole")
    result = run_bench(parse_config(GRID), out, workers=1, progress=False)
    assert len(result.outcomes) == 6 and not result.failed
    return out


def test_two_shards_together_equal_the_whole_grid(whole: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    config = parse_config(GRID)
    ran = [run_bench(config, out, workers=1, progress=False, shard=(index, 2)) for index in range(2)]
    keys = [{o.cell.key for o in result.outcomes} for result in ran]
    assert len(keys[0]) == len(keys[1]) == 3 and not keys[0] & keys[1]  # disjoint halves
    assert all(o.status == "done" for result in ran for o in result.outcomes)
    for index in range(2):
        assert len(pd.read_csv(out / "shards" / f"{index}-of-2" / "results.csv")) == 3  # each shard's own table
    final = run_bench(config, out, workers=1, progress=False)  # every cell found in the cache
    assert {o.status for o in final.outcomes} == {"cached"} and {o.cell.key for o in final.outcomes} == keys[0] | keys[1]
    pd.testing.assert_frame_equal(_summary(out), _summary(whole), check_exact=True)
    assert _final_objectives(out) == _final_objectives(whole)  # bit for bit


@pytest.mark.parametrize("shard", ["2/2", "-1/2", "0/0", "1", "a/b"])
def test_a_shard_out_of_range_is_refused_before_any_work(tmp_path: Path, capsys, shard: str) -> None:
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(GRID))
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(config), "--out", str(tmp_path / "out"), f"--shard={shard}", "--no-progress"])
    assert exit_info.value.code == 2
    assert f"--shard must be I/N with 0 <= I < N (e.g. 0/4 .. 3/4), got '{shard}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_ray_engine_without_ray_names_the_extra(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(GRID))
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(config), "--out", str(tmp_path / "out"), "--engine", "ray", "--no-progress"])
    assert exit_info.value.code == 2
    assert 'pip install "mixgym[cluster]"' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", str(config), "--out", str(tmp_path / "out"), "--cpus-per-cell", "2"])
    assert "--cpus-per-cell, --gpus-per-cell and --attempts apply to --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@contextlib.contextmanager
def local_ray(monkeypatch: pytest.MonkeyPatch):
    """A local Ray of 2 CPUs under a short temporary folder, shut down afterwards."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle  # Ray's own copy

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the runners below, in Ray's workers
    scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    monkeypatch.setenv("RAY_TMPDIR", scratch)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=scratch)
    try:
        yield scratch
    finally:
        ray.shutdown()
        for number, handler in handlers.items():  # ray.init installs its own and leaves them
            signal.signal(number, handler)
        shutil.rmtree(scratch, ignore_errors=True)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _final_objectives(folder: Path) -> dict[str, float]:
    """Each cell's final objective, as written (JSON keeps every bit of a float)."""
    return {p.parent.name: json.loads(p.read_text())["final_objective"] for p in (folder / "cells").glob("*/summary.json")}


def _dies_once(cell, directory: Path, victim: str = "", marker: str | None = None):
    """`run_cell`, except that the first task of cell `victim` (every task of it, without a
    `marker` file to leave) SIGKILLs its own Ray worker."""
    if cell.label == victim and (marker is None or not os.path.exists(marker)):
        if marker is not None:
            Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return run_cell(cell, directory)


def _report_threads(cell, directory: Path) -> dict:
    from mixgym.resources import worker_threads

    return {"final_objective": 0.0, "threads": worker_threads()}


def _kills_the_raylet(cell, directory: Path, victim: str = "", scratch: str = ""):
    """`run_cell`, except that cell `victim` SIGKILLs the raylet (Ray's node manager) of the
    local Ray whose folder is `scratch` (no other Ray on the machine)."""
    if cell.label == victim:
        import psutil

        for process in psutil.process_iter(["name", "cmdline"]):
            if "raylet" in (process.info["name"] or "") and scratch in " ".join(process.info["cmdline"] or []):
                process.kill()
    return run_cell(cell, directory)


def test_the_ray_engine_survives_killed_workers_and_gives_the_process_engines_numbers_to_the_last_bit(
    whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixgym.bench.execute import cell_dir
    from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray
    from mixgym.resources import WORKER_THREADS, _openblas

    cells = parse_config(GRID).cells()
    once = functools.partial(_dies_once, victim=cells[1].label, marker=str(tmp_path / "killed"))
    always = functools.partial(_dies_once, victim=cells[0].label)  # every task of this cell dies
    for name in WORKER_THREADS:  # a user's shell that sets none of them ...
        monkeypatch.delenv(name, raising=False)
    blas = _openblas()
    if blas is not None:
        blas[0](2)  # ... and a driver whose BLAS runs two threads
    try:
        run_cells(cells[:2], tmp_path / "process-threads", _report_threads, workers=1, progress=False)
        with local_ray(monkeypatch):
            outcomes = run_cells_on_ray(cells, tmp_path / "ray", once, RayOptions(cpus_per_cell=1), progress=False)
            doomed = run_cells_on_ray(cells[:3], tmp_path / "doomed", always, RayOptions(attempts=2), progress=False)
            run_cells_on_ray(cells[:2], tmp_path / "ray-threads", _report_threads, RayOptions(), progress=False)
    finally:
        if blas is not None:
            blas[0](1)
    # a killed worker costs one retry of its cell; the grid completes with the process engine's numbers, bit for bit
    assert (tmp_path / "killed").exists()
    assert sorted(o.status for o in outcomes) == ["done"] * 6, [(o.cell.label, o.status, o.error) for o in outcomes]
    assert _final_objectives(tmp_path / "ray") == _final_objectives(whole)
    # a cell whose every worker dies fails alone, after its attempts, with their causes
    by_label = {o.cell.label: o for o in doomed}
    assert [by_label[c.label].status for c in cells[:3]] == ["failed", "done", "done"]
    assert "lost (2 attempts; last: WorkerCrashedError" in by_label[cells[0].label].error
    assert "attempt 2: WorkerCrashedError" in (by_label[cells[0].label].directory / "error.txt").read_text()
    # both engines' workers run with the same thread settings, whatever the driver's
    seen = [
        json.loads((cell_dir(tmp_path / folder, c) / "summary.json").read_text())["threads"]
        for folder in ("process-threads", "ray-threads")
        for c in cells[:2]
    ]
    assert all(threads == seen[0] for threads in seen), seen
    assert seen[0]["torch"] == 1 and seen[0]["blas"] in (1, None) and seen[0]["OPENBLAS_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="cpus_per_cell must be > 0"):
        RayOptions(cpus_per_cell=0)
    with pytest.raises(ValueError, match="attempts must be an integer >= 1, got 0"):
        RayOptions(attempts=0)


@pytest.mark.slow  # timing-dependent: on a loaded machine the grid once finished before the kill took effect
def test_a_dead_raylet_stops_the_grid_without_failing_a_cell_and_a_rerun_completes_it(
    whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray

    cells = parse_config(GRID).cells()
    with local_ray(monkeypatch) as scratch:
        killer = functools.partial(_kills_the_raylet, victim=cells[2].label, scratch=scratch)
        first = run_cells_on_ray(cells, tmp_path / "ray", killer, RayOptions(), progress=False)
    statuses = {o.cell.label: o.status for o in first}
    assert len(first) == 6 and "failed" not in statuses.values(), statuses
    assert "stopped" in statuses.values() and statuses[cells[-1].label] in ("skipped", "stopped")
    with local_ray(monkeypatch):  # the same command again: only what is missing runs
        second = run_cells_on_ray(cells, tmp_path / "ray", functools.partial(_dies_once), RayOptions(), progress=False)
    assert sorted(o.status for o in second if o.status != "cached") == ["done"] * sum(s != "done" for s in statuses.values())
    assert _final_objectives(tmp_path / "ray") == _final_objectives(whole)
