"""``--tensorboard DIR`` and ``--wandb PROJECT`` on ``mixgym eval`` and ``mixgym bench``."""

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mixgym.cli import main


def _scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return events.Tags()["scalars"], events


def test_eval_writes_each_run_to_tensorboard(tmp_path):
    code = main(["eval", "--agent", "exp3", "--episodes", "2", "--env", "total_steps=40",
                 "--results", str(tmp_path / "eval"), "--tensorboard", str(tmp_path / "tb")])
    assert code == 0
    runs = sorted(p.name for p in (tmp_path / "tb" / "exp3").iterdir())
    assert runs == ["seed100", "seed101"]
    tags, events = _scalars(tmp_path / "tb" / "exp3" / "seed100")
    assert {"mixgym/objective", "mixgym/mixture/easy", "mixgym/eval_loss/hard", "mixgym/reward"} <= set(tags)
    assert [e.step for e in events.Scalars("mixgym/mixture/easy")] == [1, 2, 3, 4]  # every decision


def test_wandb_offline_needs_no_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    code = main(["eval", "--agent", "uniform", "--episodes", "2", "--env", "total_steps=30",
                 "--results", str(tmp_path / "eval"), "--wandb", "mixgym-test"])
    assert code == 0
    offline = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(list(run.glob("*.wandb")) for run in offline)


def test_bench_writes_each_cell_to_tensorboard(tmp_path):
    config = {"name": "tb", "seeds": [0], "agents": ["odm"], "rewards": ["eval_loss"],
              "backends": {"toy": {"num_domains": 3, "total_steps": 30}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["bench", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress",
                 "--tensorboard", str(tmp_path / "tb")])
    assert code == 0
    for agent in ("odm", "natural", "uniform"):
        tags, _ = _scalars(tmp_path / "tb" / agent / "eval_loss" / "toy" / "seed0")
        assert "mixgym/objective" in tags
