"""Long runs lose nothing: kill a run, resume it, and get exactly the uninterrupted run."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixgym.checkpoint import CheckpointStore, NoValidCheckpoint
from mixgym.experiment import ExperimentConfig, run_experiment
from mixgym.llm_backend.toy import ToyBackend
from mixgym.runlock import FolderInUse, RunLock

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
    with pytest.raises(ValueError, match="unknown agent 'sac-typo'"):
        ExperimentConfig("sac-typo")
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1, got 0"):
        ExperimentConfig("uniform", checkpoint_every=0)
    with pytest.raises(TypeError, match="keep must be an integer, got True"):
        ExperimentConfig("uniform", keep=True)
    with pytest.raises(ValueError, match="resume and restart exclude each other"):
        run_experiment(ExperimentConfig("uniform"), tmp_path, resume=True, restart=True)


# ---------------------------------------------------------------- one writer per folder


def test_a_second_resume_of_a_running_folder_is_refused_and_the_first_finishes_intact(tmp_path) -> None:
    command = [*train_command("exp3", tmp_path), "--env", "total_steps=20000"]  # 2,000 decisions: time to collide
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    csv = tmp_path / "decisions.csv"
    while first.poll() is None and not (csv.exists() and sum(1 for _ in csv.open()) > 10):
        time.sleep(0.01)
    second = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert first.poll() is None, "the first run ended before the second started: make it longer"
    assert second.returncode == 2, second.stderr
    assert re.search(rf"mixgym train: error: .* is in use by another mixgym process \(PID {first.pid} on ", second.stderr)
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert list(table(tmp_path)["decision"]) == list(range(2001))  # every decision once, in order, under its header
    assert not (tmp_path / ".mixgym.lock").exists()


def test_a_lock_left_by_a_dead_process_is_recovered_with_a_warning(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".mixgym.lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": 0, "command": "mixgym train"}))
    with pytest.warns(UserWarning, match=rf"recovered the lock .* left by a process that is gone \(PID {dead} on"):
        run_experiment(ExperimentConfig("uniform", env={"total_steps": 60}), tmp_path)
    with RunLock(tmp_path):  # held: an in-process second writer is refused too
        with pytest.raises(FolderInUse, match=f"PID {os.getpid()}"):
            run_experiment(ExperimentConfig("uniform", env={"total_steps": 60}), tmp_path, resume=True)


# ---------------------------------------------------------------- the table and the checkpoints agree


@pytest.fixture
def stopped_run(tmp_path) -> tuple[ExperimentConfig, Path]:
    """An exp3 run stopped after 40 decisions (checkpoint at 40), and its uninterrupted twin."""
    config = ExperimentConfig("exp3", env={"total_steps": 800}, seed=4, checkpoint_every=10)
    run_experiment(config, tmp_path / "full")
    stop_in_process_after(40, tmp_path / "cut" / "decisions.csv")
    assert run_experiment(config, tmp_path / "cut").status == "stopped"
    return config, tmp_path


def test_rows_beyond_the_checkpoint_are_dropped_and_the_run_ends_identically(stopped_run) -> None:
    config, root = stopped_run
    with open(root / "cut" / "decisions.csv", "a") as handle:  # rows the checkpoint does not count
        handle.write("0,4,41,410,0,0,0,0\r\n" * 3)
    run_experiment(config, root / "cut", resume=True)
    pd.testing.assert_frame_equal(table(root / "cut"), table(root / "full"))


@pytest.mark.parametrize("damage", ["deleted", "truncated", "edited"])
def test_a_damaged_table_is_an_error_naming_the_gap_not_a_silent_loss(stopped_run, damage) -> None:
    config, root = stopped_run
    csv = root / "cut" / "decisions.csv"
    checkpoint = CheckpointStore(root / "cut" / "checkpoints").paths()[-1].name
    lines = csv.read_text().splitlines(keepends=True)
    written = len(lines) - 1
    if damage == "deleted":
        csv.unlink()
        match = rf"holds 0 decision rows, but {checkpoint} was taken after \d+: rows 1 to \d+ are missing"
    elif damage == "truncated":
        csv.write_text("".join(lines[:16]))
        match = rf"holds 15 decision rows, but {checkpoint} was taken after \d+: rows 16 to \d+ are missing"
    else:
        csv.write_text("".join(lines[:5]) + lines[5].replace(",", ";", 1) + "".join(lines[6:]))
        match = f"was changed after {checkpoint} was taken"
    assert written >= 40
    with pytest.raises(ValueError, match=match + r".*--restart"):
        run_experiment(config, root / "cut", resume=True)
    assert run_experiment(config, root / "cut", restart=True).status == "finished"
    pd.testing.assert_frame_equal(table(root / "cut"), table(root / "full"))


def test_when_every_checkpoint_is_corrupt_resume_says_so_instead_of_restarting(stopped_run) -> None:
    config, root = stopped_run
    folder = root / "cut" / "checkpoints"
    for path in CheckpointStore(folder).paths():
        path.write_bytes(path.read_bytes()[:500])
    (folder / ".checkpoint-00000050.ckpt.tmp-4242").write_bytes(b"half a checkpoint")  # a write that was killed
    rows_before = len(table(root / "cut"))
    with pytest.warns(UserWarning, match="skipping"), pytest.raises(NoValidCheckpoint, match="every checkpoint .* is unreadable.*--restart"):
        run_experiment(config, root / "cut", resume=True)
    assert len(table(root / "cut")) == rows_before  # nothing was wiped
    assert not list(folder.glob(".*.tmp-*"))  # stale temporary files are cleaned
    with pytest.raises(ValueError, match="already holds checkpoints: continue it .* or start over"):
        run_experiment(config, root / "cut")
    run_experiment(config, root / "cut", restart=True)
    pd.testing.assert_frame_equal(table(root / "cut"), table(root / "full"))


def test_domain_names_with_commas_quotes_and_newlines_survive_a_resume(tmp_path) -> None:
    from mixgym.llm_backend.toy import DomainSpec

    names = ['code, "python"', "web\nforums", "books"]
    domains = tuple(DomainSpec(n, kind, 1.0, 0.1, 500) for n, kind in zip(names, ("easy", "hard", "noise")))

    config = ExperimentConfig("odm", env={"backend": ToyBackend(domains=domains, total_steps=400)}, checkpoint_every=3)
    run_experiment(config, tmp_path / "full")
    stop_in_process_after(12, tmp_path / "cut" / "decisions.csv")
    assert run_experiment(config, tmp_path / "cut").status == "stopped"
    run_experiment(config, tmp_path / "cut", resume=True)
    full = table(tmp_path / "full")
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), full)
    assert list(full["decision"]) == list(range(41)) and f"mixture/{names[1]}" in full.columns


# ---------------------------------------------------------------- on-policy agents stop where asked

PPO = {"sb3_kwargs": {"n_steps": 32, "batch_size": 16, "n_epochs": 2}}


def test_ppo_learns_exactly_the_decisions_asked_for_and_checkpoints_where_asked(tmp_path) -> None:
    config = ExperimentConfig("ppo", env={"total_steps": 2000}, decisions=70, checkpoint_every=10, keep=10)
    result = run_experiment(config, tmp_path)  # PPO's default rollout is 2,048 decisions
    assert result.decisions == 70 and table(tmp_path)["decision"].max() == 70 and len(table(tmp_path)) == 71
    assert [p.name for p in CheckpointStore(tmp_path / "checkpoints").paths()] == [f"checkpoint-{d:08d}.ckpt" for d in range(10, 80, 10)]


@pytest.mark.parametrize("stop_at", [21, 31, 50])  # inside a rollout, on the decision that completes one, and later
def test_ppo_stopped_inside_a_rollout_resumes_bit_identically(tmp_path, stop_at) -> None:
    import torch

    config = ExperimentConfig("ppo", env={"total_steps": 1000}, seed=1, checkpoint_every=7, agent_options=PPO)
    full = run_experiment(config, tmp_path / "full")
    stop_in_process_after(stop_at, tmp_path / "cut" / "decisions.csv")
    stopped = run_experiment(config, tmp_path / "cut")
    # the signal comes from a thread that a loaded machine may run late: a few decisions, never a rollout (32)
    assert stopped.status == "stopped" and stop_at - 1 <= stopped.decisions <= stop_at + 4
    resumed = run_experiment(config, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), table(tmp_path / "full"))
    expected, got = full.agent.model.policy.state_dict(), resumed.agent.model.policy.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # the same gradient steps on the same rollouts


def test_ppo_on_the_command_line_runs_exactly_decisions_and_stops_on_sigterm(tmp_path) -> None:
    command = [sys.executable, "-m", "mixgym.cli", "train", "ppo", "--env", "total_steps=3000", "--decisions", "95",
               "--checkpoint-dir", str(tmp_path), "--checkpoint-every", "10", "--save", str(tmp_path / "p.zip"), "--no-progress"]  # fmt: skip
    assert start_and_signal_at(command, tmp_path / "decisions.csv", 40, signal.SIGTERM) == 128 + signal.SIGTERM
    assert 39 <= table(tmp_path)["decision"].max() <= 44  # the signal came after decision 39: a late signal, never a rollout-sized overrun
    assert subprocess.run([*command, "--resume"], capture_output=True).returncode == 0
    assert table(tmp_path)["decision"].max() == 95


@pytest.mark.parametrize("resume_from", [32, 48])  # where a 32-decision rollout completes, and half-way through one
def test_ppo_resumes_identically_from_any_checkpoint(tmp_path, resume_from) -> None:
    import shutil

    config = ExperimentConfig("ppo", env={"total_steps": 900}, seed=2, checkpoint_every=16, keep=10, agent_options=PPO)
    run_experiment(config, tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    store = CheckpointStore(tmp_path / "cut" / "checkpoints")
    assert [int(p.stem.split("-")[1]) for p in store.paths()] == list(range(16, 91, 16))
    for path in store.paths():
        if int(path.stem.split("-")[1]) > resume_from:
            path.unlink()
    run_experiment(config, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(table(tmp_path / "cut"), table(tmp_path / "full"))


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
