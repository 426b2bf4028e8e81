"""The HF backend on two processes (gloo, CPU): it trains the run one process trains, rank 0
drives the environment, checkpoints resume, and bad starts and lost processes end with a
clear error instead of a hang. What each process runs is in `tests/distributed_ranks.py`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))
import distributed_ranks as ranks  # noqa: E402

from mixgym.llm_backend.distributed import launch  # noqa: E402


def _results(outcomes: list[dict]) -> list:
    for rank, outcome in enumerate(outcomes):
        assert "result" in outcome, f"rank {rank}: {outcome.get('traceback', outcome)}"
    return [outcome["result"] for outcome in outcomes]


@pytest.fixture(scope="module")
def one_and_two() -> tuple[dict, list]:
    two = _results(launch(ranks.same_run))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one = ranks.reference_run()
    torch.set_num_threads(threads)
    return one, two


def test_losses_gradients_and_evaluations_equal_the_single_process_run(one_and_two) -> None:
    one, (two, _) = one_and_two
    for key in ("evaluate_at_start", "evaluate"):
        assert one[key] == pytest.approx(two[key], rel=1e-6), key  # 3 + 2 evaluation chunks combined
    a, b = one["train"], two["train"]
    np.testing.assert_array_equal(a.token_ids, b.token_ids)  # the same global micro-batches, in order
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.tokens == b.tokens and a.learning_rate == b.learning_rate
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-6)
    scale = np.abs(one["gradients"]).max()
    np.testing.assert_allclose(two["gradients"], one["gradients"], rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(two["weights"].norms, one["weights"].norms, rtol=1e-6)
    np.testing.assert_allclose(two["weights"].update_norms, one["weights"].update_norms, rtol=1e-4)


def test_parameters_equal_the_single_process_run_and_match_on_every_process(one_and_two) -> None:
    """To float rounding. AdamW divides each element's step by its own gradient scale, so
    where a gradient is a near-cancelling sum (a rare token's embedding row; the key bias,
    whose exact gradient is zero) rounding noise moves that element by up to a fraction of
    the learning rate: a handful of elements may differ by more than 1e-5, the model as a
    whole by less than 1e-5 relative."""
    one, (two, worker) = one_and_two
    for key in ("parameters_after_2", "parameters"):
        differences = np.concatenate([(two[key][name] - value).ravel() for name, value in one[key].items()])
        size = np.sqrt(sum(np.sum(value**2) for value in one[key].values()))
        assert np.linalg.norm(differences) <= 1e-5 * size, key
        assert np.mean(np.abs(differences) > 1e-5) <= 1e-5, key
    for name, value in two["parameters"].items():
        np.testing.assert_array_equal(worker["parameters"][name], value, err_msg=name)  # DDP keeps replicas equal
    assert worker["served"] >= 12  # every reset, train and evaluate went through rank 0's commands


def test_a_restored_checkpoint_replays_bit_identically_on_every_process(one_and_two) -> None:
    _, (two, _) = one_and_two
    assert two["ranks_in_state"] == 2  # each process's RNG and data positions
    np.testing.assert_array_equal(two["replayed"].train_loss, two["continued"].train_loss)
    np.testing.assert_array_equal(two["replayed"].token_ids, two["continued"].token_ids)


def test_a_three_decision_env_run_on_two_processes_equals_the_single_process_run(one_and_two) -> None:
    """Observations to 1e-3: they z-score losses that differ by 1e-2 between domains, which
    turns a loss's 1e-6 rounding difference into 1e-4."""
    one, (two, _) = one_and_two
    (obs_a, _), (obs_b, _) = one["env"][0], two["env"][0]
    np.testing.assert_allclose(obs_b, obs_a, atol=1e-3)
    for (obs_a, reward_a, *_, info_a), (obs_b, reward_b, *_, info_b) in zip(one["env"][1:], two["env"][1:]):
        np.testing.assert_allclose(obs_b, obs_a, atol=1e-3)
        assert reward_b == pytest.approx(reward_a, rel=1e-5)
        np.testing.assert_array_equal(info_b["mixture"], info_a["mixture"])
        np.testing.assert_array_equal(info_b["samples"], info_a["samples"])
        np.testing.assert_allclose(info_b["eval_loss"], info_a["eval_loss"], rtol=1e-5)
    assert len(two["env"]) == 4  # reset + 3 decisions


def test_a_lost_process_stops_rank_0_with_a_clear_error_and_its_last_checkpoint_resumes(tmp_path: Path) -> None:
    directory = tmp_path / "experiment"
    lost, dead = launch(ranks.lost_rank, directory=str(directory), die_after=3)
    assert dead == {"exitcode": 1}
    report = _results([lost])[0]
    assert report["failure"].startswith("RankLost: a process of the 2-process job was lost")
    assert "during train" in report["failure"] and "--resume" in report["failure"]
    assert report["checkpoint_decisions"] == 3  # the last checkpoint before the loss is complete

    resumed = _results(launch(ranks.resume, directory=str(directory)))[0]
    assert resumed["status"] == "finished"
    from mixgym.experiment import ExperimentConfig, run_experiment

    reference = run_experiment(ExperimentConfig(**ranks.experiment_options()), tmp_path / "one").results().decisions
    got = resumed["decisions"]
    assert list(got["decision"]) == list(reference["decision"]) == list(range(7))
    np.testing.assert_allclose(got["objective"], reference["objective"], rtol=1e-5)
    mixture = [c for c in reference.columns if c.startswith("mixture/")]
    np.testing.assert_allclose(got[mixture].to_numpy(float), reference[mixture].to_numpy(float), rtol=1e-4, atol=1e-6)


def test_a_process_that_stops_answering_times_out_on_rank_0(tmp_path: Path) -> None:
    lost, hung = launch(ranks.lost_rank, directory=str(tmp_path / "experiment"), die_after=2, hang_s=25.0, collective_timeout_s=20.0)
    report = _results([lost])[0]
    assert report["failure"].startswith("RankLost:") and "timeout 20 s" in report["failure"]
    assert report["checkpoint_decisions"] == 2
    assert hung == {"exitcode": 1}


def test_bad_starts_are_refused_on_every_process(tmp_path: Path) -> None:
    for errors in _results(launch(ranks.bad_starts)):
        assert "micro_batch_size=3" in errors["indivisible"] and "world size 2" in errors["indivisible"]
        for case in ("other_config", "other_job"):
            assert "started with different configurations" in errors[case] and "rank(s) [1] differ" in errors[case]


def test_torchrun_runs_train_and_eval_and_train_matches_one_process(tmp_path: Path) -> None:
    options = [
        "--mode", "online", "--no-progress", "--env", "backend=hf", "--env", "model=pythia-tiny", "--env", "seq_len=32",
        "--env", "micro_batch_size=4", "--env", "grad_accumulation=3", "--env", "total_steps=6", "--env", "steps_per_action=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [*torchrun, "-m", "mixgym.cli", "train", "exp3", *options, "--results", "two", "--save", "two.zip"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    from mixgym.cli import main

    assert main(["train", "exp3", *options, "--results", str(tmp_path / "one"), "--save", str(tmp_path / "one.zip")]) == 0
    a, b = pd.read_csv(tmp_path / "one" / "decisions.csv"), pd.read_csv(tmp_path / "two" / "decisions.csv")
    assert len(a) == len(b) == 4
    numbers = [c for c in a.columns if c != "wall_time"]
    np.testing.assert_allclose(b[numbers].to_numpy(float), a[numbers].to_numpy(float), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two.zip").exists()

    evaluation = subprocess.run(
        [*torchrun, "-m", "mixgym.cli", "eval", "two.zip", "--episodes", "1", *options[3:], "--results", "eval"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "eval" / "decisions.csv")) == 4  # the policy acted on the 2-process backend
