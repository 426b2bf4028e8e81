"""`mixgym bench` beyond one machine: the Ray engine gives the process engine's tables, shards
add up to the whole grid, and bad --shard / --engine input is refused clearly."""

import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mixgym.bench import parse_config, run_bench
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
    pd.testing.assert_frame_equal(_summary(out), _summary(whole))


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
    assert "--cpus-per-cell and --gpus-per-cell apply to --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_ray_engine_gives_the_process_engines_summary(whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    from mixgym.bench.ray_engine import RayOptions

    scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    monkeypatch.setenv("RAY_TMPDIR", scratch)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=scratch)
    try:
        result = run_bench(parse_config(GRID), tmp_path / "ray", progress=False, engine="ray", ray=RayOptions(cpus_per_cell=1))
    finally:
        ray.shutdown()
        for number, handler in handlers.items():  # ray.init installs its own and leaves them
            signal.signal(number, handler)
        shutil.rmtree(scratch, ignore_errors=True)
    assert [o.status for o in result.outcomes] == ["done"] * 6, [o.error for o in result.outcomes]
    pd.testing.assert_frame_equal(_summary(tmp_path / "ray"), _summary(whole))
    with pytest.raises(ValueError, match="cpus_per_cell must be > 0"):
        RayOptions(cpus_per_cell=0)
