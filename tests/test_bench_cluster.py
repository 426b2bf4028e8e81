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
        yield ray
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


def test_the_ray_engine_gives_the_process_engines_numbers_to_the_last_bit_and_survives_a_killed_worker(
    whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray

    cells = parse_config(GRID).cells()
    victim = cells[1].label
    runner = functools.partial(_dies_once, victim=victim, marker=str(tmp_path / "killed"))
    with local_ray(monkeypatch):
        outcomes = run_cells_on_ray(cells, tmp_path / "ray", runner, RayOptions(cpus_per_cell=1), progress=False)
    assert (tmp_path / "killed").exists(), [(o.cell.label, o.status, o.error) for o in outcomes]  # the victim's first worker died
    assert sorted(o.status for o in outcomes) == ["done"] * 6, [(o.cell.label, o.status, o.error) for o in outcomes]
    assert _final_objectives(tmp_path / "ray") == _final_objectives(whole)  # bit for bit
    with pytest.raises(ValueError, match="cpus_per_cell must be > 0"):
        RayOptions(cpus_per_cell=0)
    with pytest.raises(ValueError, match="attempts must be an integer >= 1, got 0"):
        RayOptions(attempts=0)


def test_a_cell_whose_workers_keep_dying_fails_alone_with_its_causes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray

    cells = parse_config(GRID).cells()[:3]
    runner = functools.partial(_dies_once, victim=cells[0].label)  # dies every time
    with local_ray(monkeypatch):
        outcomes = {o.cell.label: o for o in run_cells_on_ray(cells, tmp_path / "ray", runner, RayOptions(attempts=2), progress=False)}
    assert [outcomes[c.label].status for c in cells] == ["failed", "done", "done"]
    assert "lost (2 attempts" in outcomes[cells[0].label].error
    assert "attempt 2: " in (outcomes[cells[0].label].directory / "error.txt").read_text()


def test_every_engine_pins_the_same_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray
    from mixgym.bench.execute import cell_dir
    from mixgym.resources import WORKER_THREADS, _openblas

    cells = parse_config(GRID).cells()[:2]
    for name in WORKER_THREADS:  # a user's shell that sets none of them
        monkeypatch.delenv(name, raising=False)
    blas = _openblas()
    if blas is not None:
        blas[0](2)  # and a parent process whose BLAS runs two threads
    try:
        run_cells(cells, tmp_path / "process", _report_threads, workers=1, progress=False)
        with local_ray(monkeypatch):
            run_cells_on_ray(cells, tmp_path / "ray", _report_threads, RayOptions(), progress=False)
    finally:
        if blas is not None:
            blas[0](1)
    seen = [json.loads((cell_dir(tmp_path / engine, c) / "summary.json").read_text())["threads"] for engine in ("process", "ray") for c in cells]
    assert all(threads == seen[0] for threads in seen), seen
    assert seen[0]["torch"] == 1 and seen[0]["blas"] in (1, None) and seen[0]["OPENBLAS_NUM_THREADS"] == "1"
