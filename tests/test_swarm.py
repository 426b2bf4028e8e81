"""Swarms of static mixtures and the predictors scored on them: RegMix's draws, the toy swarm
(batched, resumable, the numbers of single runs), the real-LM swarm through bench cells, the
agreement report, and bad input."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixgym.bench.predictors import PREDICTORS, agreement, cross_validated, seed_noise
from mixgym.bench.swarm import SWARM_FILE, read_swarm, regmix_mixtures, report, run_swarm, swarm_mixtures
from mixgym.llm_backend.toy import ToyBackend
from mixgym.tasks import get_task

SMALL = {"total_steps": 200}


def test_regmix_draws_are_distinct_bounded_mixtures_and_reproducible() -> None:
    natural = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    draws = regmix_mixtures(natural, 40, random.Random(1))
    assert draws.shape == (40, 5) and np.allclose(draws.sum(axis=1), 1.0)
    assert np.all(draws <= np.minimum(natural * 15, 1.0) + 1e-9)  # RegMix's usage bound
    assert len({tuple(np.round(d, 6)) for d in draws}) == 40
    assert np.array_equal(draws, regmix_mixtures(natural, 40, random.Random(1)))
    spread = np.abs(draws - natural).sum(axis=1) / 2
    assert spread.min() < 0.15 and spread.max() > 0.5  # from near the prior to a few domains
    ids = [i for i, _, _ in swarm_mixtures(natural, 6)]
    assert ids == ["uniform", "natural", "tempered-0.5", "regmix-000", "regmix-001", "regmix-002"]


def test_a_toy_swarm_is_the_single_runs_and_resumes_without_redoing(tmp_path: Path) -> None:
    table = run_swarm("pile22", 5, 2, tmp_path, options=SMALL, progress=False)
    assert len(table) == 10 and set(table["seed"]) == {0, 1}
    row = table[(table["mixture_id"] == "regmix-001") & (table["seed"] == 1)].iloc[0]
    mixture = row[[c for c in table.columns if c.startswith("mixture/")]].to_numpy(dtype=float)
    single = ToyBackend(**get_task("pile22").backend_kwargs(SMALL))
    single.reset(1)
    single.train(mixture, 200)
    assert row["objective"] == single.objective()  # bit for bit
    losses = np.array(list(single.evaluate().values()))
    assert row["natural_loss"] == pytest.approx(float(single.info.domain_sizes / single.info.domain_sizes.sum() @ losses))
    epochs = row[[c for c in table.columns if c.startswith("epochs/")]].to_numpy(dtype=float)
    sizes = single.info.domain_sizes
    assert epochs @ sizes == 200 * single.config.batch_size  # every example trained on counted once
    assert np.all(epochs[mixture == 0] == 0) and row["tokens"] == 200 * single.config.batch_size * single.config.input_dim
    more = run_swarm("pile22", 5, 3, tmp_path / "other", options=SMALL, progress=False)
    assert len(more) == 15
    # a swarm stopped half-way (one shard of two done) completes the rest, nothing twice
    half = tmp_path / "half"
    run_swarm("pile22", 5, 2, half, options=SMALL, shard=(0, 2), progress=False)
    assert len(read_swarm(half / SWARM_FILE)) == 5
    full = run_swarm("pile22", 5, 2, half, options=SMALL, progress=False)
    assert len(full) == 10 and not full.duplicated(["mixture_id", "seed"]).any()
    pd.testing.assert_frame_equal(
        full.sort_values(["mixture_id", "seed"]).reset_index(drop=True)[["mixture_id", "seed", "objective"]],
        table.sort_values(["mixture_id", "seed"]).reset_index(drop=True)[["mixture_id", "seed", "objective"]],
    )
    with pytest.raises(ValueError, match=r"holds another swarm"):
        run_swarm("pile22", 6, 2, half, options=SMALL, progress=False)


def test_the_report_scores_every_predictor_on_held_out_mixtures(tmp_path: Path) -> None:
    run_swarm("pile22", 16, 2, tmp_path, options={"total_steps": 300}, progress=False)
    text = report(tmp_path / SWARM_FILE, folds=4)
    for name in PREDICTORS:
        assert f"| {name} | objective | 16 |" in text and f"| {name} | natural_loss | 16 |" in text
    assert "mixture effects / seed noise" in text
    scores = pd.read_csv(tmp_path / "agreement.csv")
    assert len(scores) == 2 * len(PREDICTORS)
    assert (tmp_path / "predicted_vs_measured.png").stat().st_size > 10_000
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert predictions.groupby(["predictor", "objective"]).size().eq(16).all()


def test_cross_validation_never_sees_the_held_out_mixture() -> None:
    seen: list[set] = []

    def spy(train_x, train_y, test_x):
        seen.append({tuple(x) for x in train_x} & {tuple(x) for x in test_x})
        return np.zeros(len(test_x))

    x = np.random.default_rng(0).dirichlet(np.ones(4), 12)
    cross_validated(spy, x, x[:, 0], folds=4)
    assert len(seen) == 4 and not any(seen)


def test_a_linear_truth_is_recovered_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(5), 30)
    table = pd.DataFrame({f"mixture/d{i}": x[:, i] for i in range(5)})
    table["objective"] = x @ np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    table["natural_loss"] = table["objective"]
    table["mixture_id"] = [f"m{i:02d}" for i in range(30)]
    results, _ = agreement(table, {"linear": PREDICTORS["linear"]}, objectives=("objective",), bootstrap=50)
    assert results[0].spearman[0] == pytest.approx(1.0) and results[0].pairwise[0] == 1.0 and results[0].top1[0] == 1.0
    assert np.isnan(seed_noise(table)["seed_sd"])  # one seed per mixture: no seed noise to measure


def _write(tmp_path: Path, table: pd.DataFrame) -> Path:
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    return path


def test_bad_swarm_tables_name_the_problem(tmp_path: Path) -> None:
    good = run_swarm("classic5", 4, 1, tmp_path / "ok", options={"total_steps": 50}, progress=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['objective'\]"):
        read_swarm(_write(tmp_path, good.drop(columns=["objective"])))
    broken = good.copy()
    broken.loc[2, "eval_loss/hard"] = np.nan
    with pytest.raises(ValueError, match=r"non-finite held-out loss in row\(s\) \[2\]"):
        read_swarm(_write(tmp_path, broken))
    skewed = good.copy()
    skewed.loc[1, "mixture/easy"] += 0.5
    with pytest.raises(ValueError, match=r"mixtures of row\(s\) \[1\] do not sum to 1"):
        read_swarm(_write(tmp_path, skewed))
    with pytest.raises(ValueError, match=r"has domains \['easy', .*\], the task has \['a', 'b'\]"):
        read_swarm(tmp_path / "ok" / SWARM_FILE, domains=["a", "b"])
    with pytest.raises(ValueError, match=r"4 mixtures in 2 folds hold out 2 per fold; agreement needs at least 3"):
        agreement(good, folds=2)
    with pytest.raises(ValueError, match=r"--mixtures must be an integer >= 3, got 2"):
        swarm_mixtures(np.full(5, 0.2), 2)
    with pytest.raises(ValueError, match=r"no swarm table at"):
        read_swarm(tmp_path / "nowhere.csv")


def test_cli_mistakes_are_one_line(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mixgym.cli", "swarm", *args], capture_output=True, text=True)

    bad = run("classic5", "--mixtures", "2", "--out", str(tmp_path))
    assert bad.returncode == 2 and "--mixtures" in bad.stderr and "Traceback" not in bad.stderr
    missing = run("report", str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no swarm table at" in missing.stderr
    unknown = run("pile23", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "unknown task 'pile23'" in unknown.stderr


@pytest.mark.slow
def test_a_real_lm_swarm_runs_as_bench_cells_and_resumes(tmp_path: Path) -> None:
    from mixgym.data import SAMPLE_CORPUS

    options = {
        "corpus": str(SAMPLE_CORPUS), "vocab_size": 4096, "total_steps": 4, "seq_len": 32, "micro_batch_size": 2,
        "grad_accumulation": 1, "eval_sequences": 2,
    }
    table = run_swarm("lm-small", 3, 1, tmp_path, options=options, workers=2, progress=False)
    assert len(table) == 3 and (tmp_path / "cells").is_dir()
    assert table["tokens"].eq(4 * 2 * 32).all() and table[[c for c in table if c.startswith("epochs/")]].gt(0).any().any()
    again = run_swarm("lm-small", 3, 1, tmp_path, options=options, workers=2, progress=False)
    pd.testing.assert_frame_equal(again, table)


def test_calibrate_writes_a_task_file_that_loads_as_a_toy_task_and_predicts(tmp_path: Path) -> None:
    import gymnasium as gym

    from mixgym.calibration import calibrate, read_task_file, write_task_file

    table = run_swarm("classic5", 8, 1, tmp_path, options={"total_steps": 150}, progress=False)
    calibration = calibrate(table, rounds=1, total_steps=100, progress=False)
    assert 0.2 <= calibration.explained <= 1.0
    path = write_task_file(calibration, tmp_path / "task.yaml")
    again = read_task_file(path)
    mixtures = table.groupby("mixture_id")[[c for c in table.columns if c.startswith("mixture/")]].first().to_numpy()
    assert np.array_equal(again.predict(mixtures), calibration.predict(mixtures))
    env = gym.make("mixgym/Mixing-v1", task=str(path))
    assert env.reset(seed=0)[0].shape == (31,) and env.unwrapped.domains == list(calibration.domains)
    code = subprocess.run(
        [sys.executable, "-m", "mixgym.cli", "calibrate", str(tmp_path / SWARM_FILE), "--out", str(tmp_path / "cli.yaml"), "--rounds", "1", "--steps", "100", "--no-progress"],
        capture_output=True, text=True,
    )
    assert code.returncode == 0 and "task file" in code.stdout and (tmp_path / "cli.yaml").is_file()
    (tmp_path / "bad.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match=r"could not determine a constructor|not a mixgym task file"):
        read_task_file(tmp_path / "bad.yaml")  # data only: safe_load never runs code


def test_a_calibration_that_explains_nothing_is_refused(tmp_path: Path) -> None:
    from mixgym.calibration import calibrate

    table = run_swarm("classic5", 6, 1, tmp_path, options={"total_steps": 60}, progress=False)
    rng = np.random.default_rng(0)
    for column in [c for c in table.columns if c.startswith("eval_loss/")]:
        table[column] = rng.normal(size=len(table))  # losses unrelated to the mixtures
    with pytest.raises(ValueError, match=r"did not converge: it explains .* of the per-domain variance .* no task file written"):
        calibrate(table, rounds=1, total_steps=50, progress=False)
