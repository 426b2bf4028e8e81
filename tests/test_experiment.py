"""Long runs lose nothing: kill a run, resume it, and get exactly the uninterrupted run."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixgym.checkpoint import CheckpointStore
from mixgym.experiment import ExperimentConfig, run_experiment
from mixgym.llm_backend.toy import ToyBackend

TOY = {"total_steps": 1200}  # 120 decisions


def table(directory: Path) -> pd.DataFrame:
    """The per-decision table without the wall-clock column (the only one allowed to differ)."""
    return pd.read_csv(directory / "decisions.csv").drop(columns=["wall_time"])


def train_command(agent: str, directory: Path, *extra: str) -> list[str]:
    env = [f"--env=total_steps={TOY['total_steps']}"]
    return [sys.executable, "-m", "mixgym.cli", "train", agent, "--mode", "online", *env, "--seed", "3",
            "--checkpoint-dir", str(directory), "--checkpoint-every", "5", "--save", str(directory / "policy.zip"),
            "--no-progress", *extra]  # fmt: skip


def start_and_signal_at(command: list[str], csv: Path, rows: int, signum: int) -> int:
    """Start `command`, send `signum` once its decisions.csv has `rows` rows; its exit code."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if csv.exists() and sum(1 for _ in csv.open()) > rows:
            process.send_signal(signum)
            break
        time.sleep(0.002)
    return process.wait(timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The reference runs, never interrupted."""
    tables = {}
    for agent in ("hds", "exp3"):
        directory = tmp_path_factory.mktemp(f"full-{agent}")
        subprocess.run(train_command(agent, directory), check=True, capture_output=True)
        tables[agent] = table(directory)
    return tables


@pytest.mark.parametrize("agent", ["hds", "exp3"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(agent, signum, uninterrupted, tmp_path) -> None:
    kill_at = int(np.random.default_rng([signum, len(agent)]).integers(15, 90))
    code = start_and_signal_at(train_command(agent, tmp_path), tmp_path / "decisions.csv", kill_at, signum)
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signal.SIGTERM)
    assert len(table(tmp_path)) < len(uninterrupted[agent])  # it really stopped early
    resumed = subprocess.run(train_command(agent, tmp_path, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(table(tmp_path), uninterrupted[agent])
    assert (tmp_path / "policy.zip").exists()


def stop_in_process_after(rows: int, csv: Path) -> None:
    """SIGTERM this process once `csv` has `rows` rows (run_experiment turns it into a clean stop)."""

    def watch() -> None:
        while not (csv.exists() and sum(1 for _ in csv.open()) > rows):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def test_a_truncated_checkpoint_is_skipped_and_the_run_still_ends_identically(tmp_path) -> None:
    config = ExperimentConfig("acodm", env={"total_steps": 600}, seed=1, checkpoint_every=4, agent_options={"net_width": 32})
    run_experiment(config, tmp_path / "full")
    stop_in_process_after(30, tmp_path / "cut" / "decisions.csv")
    stopped = run_experiment(config, tmp_path / "cut")
    assert stopped.status == "stopped" and stopped.signal == signal.SIGTERM
    store = CheckpointStore(tmp_path / "cut" / "checkpoints")
    newest = store.paths()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        resumed = run_experiment(config, tmp_path / "cut", resume=True)
    assert resumed.status == "finished"
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), table(tmp_path / "full"))


def test_stopping_during_the_behaviour_warm_up_resumes_exactly(tmp_path) -> None:
    config = ExperimentConfig(
        "acodm", env={"total_steps": 400}, seed=2, checkpoint_every=1, agent_options={"warmup_fraction": 0.25, "net_width": 32}
    )
    run_experiment(config, tmp_path / "full")
    stop_in_process_after(4, tmp_path / "cut" / "decisions.csv")  # the warm-up lasts 10 decisions
    assert run_experiment(config, tmp_path / "cut").decisions < 10
    run_experiment(config, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), table(tmp_path / "full"))


def test_the_hf_backend_round_trips(tmp_path) -> None:
    import torch

    torch.set_num_threads(1)
    env = {"backend": "hf", "model": "pythia-tiny", "total_steps": 24, "steps_per_action": 2, "seq_len": 32,
           "micro_batch_size": 2, "grad_accumulation": 2}  # fmt: skip
    config = ExperimentConfig("exp3", env=env, seed=0, checkpoint_every=2)
    run_experiment(config, tmp_path / "full")
    stop_in_process_after(5, tmp_path / "cut" / "decisions.csv")
    assert run_experiment(config, tmp_path / "cut").status == "stopped"
    run_experiment(config, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), table(tmp_path / "full"))


class PoisonedToy(ToyBackend):
    """A toy whose weights turn NaN at optimizer step 200: NaN injection."""

    def train(self, mixture, n_steps):
        if self.step >= 200:
            self._theta[0] = np.nan
        return super().train(mixture, n_steps)


def test_a_nan_stops_the_run_naming_step_and_domain_and_keeps_the_good_checkpoints(tmp_path) -> None:
    config = ExperimentConfig("uniform", env={"backend": PoisonedToy(total_steps=600)}, checkpoint_every=3)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at step 210 in domain\(s\) \['easy'"):
        run_experiment(config, tmp_path)
    payload, path = CheckpointStore(tmp_path / "checkpoints").load_latest()
    assert payload["decisions"] == 18 and np.isfinite(payload["env"]["snapshot"].eval_loss).all()
    code = subprocess.run(train_command("uniform", tmp_path / "cli", "--env", "learning_rate=8.0"), capture_output=True, text=True)
    assert code.returncode == 1 and "non-finite" in code.stdout


def test_resume_refuses_another_configuration_and_a_fresh_run_refuses_old_checkpoints(tmp_path) -> None:
    run_experiment(ExperimentConfig("uniform", env={"total_steps": 100}, checkpoint_every=2), tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        run_experiment(ExperimentConfig("uniform", env={"total_steps": 200}), tmp_path, resume=True)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_experiment(ExperimentConfig("uniform", env={"total_steps": 100}, checkpoint_every=2), tmp_path)
    with pytest.raises(ValueError, match="unknown agent 'sac'"):
        ExperimentConfig("sac")
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1, got 0"):
        ExperimentConfig("uniform", checkpoint_every=0)


@pytest.mark.parametrize(
    ("agent", "options"),
    [("acodm-frozen-actor", {"net_width": 32, "warmup_fraction": 0.1}), ("doremi", {"reference_loss": [0.1, 0.2, 1.0, 0.2, 0.1]})],
)
def test_the_released_acodm_actor_and_doremis_average_resume_exactly(agent, options, tmp_path) -> None:
    config = ExperimentConfig(agent, env={"total_steps": 400}, seed=4, checkpoint_every=3, agent_options=options)
    run_experiment(config, tmp_path / "full")
    stop_in_process_after(14, tmp_path / "cut" / "decisions.csv")  # past the frozen actor's 4-decision warm-up
    assert run_experiment(config, tmp_path / "cut").status == "stopped"
    run_experiment(config, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), table(tmp_path / "full"))
