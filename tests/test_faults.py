"""Hostile and careless input on the paths added lately: each is a named error or documented
behaviour, never a raw traceback from a library and never a silent change of the run."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mixgym.agents import load_agent, make_agent
from mixgym.agents.compare import env_for
from mixgym.envs import MixingEnv
from mixgym.experiment import ExperimentConfig, run_experiment

SMALL = {"total_steps": 60, "steps_per_action": 10}


# ---------------------------------------------------------------- rewards, action maps, the toy


@pytest.mark.parametrize("returned", [None, "0.5", np.array([1.0, 2.0]), 1 + 2j, True, (0.5, 3)])
def test_a_reward_callable_that_returns_no_real_number_is_named(returned) -> None:
    env = MixingEnv(reward=lambda before, after, env: returned, **SMALL)
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"reward <function .*> returned .* at step 10: a reward must return a real number"):
        env.step(env.action_space.sample())


def test_a_reward_callable_may_return_numpy_scalars_and_one_element_arrays() -> None:
    for returned in (np.float32(0.25), np.array([0.25]), (0.25, {"part": 1.0})):
        env = MixingEnv(reward=lambda before, after, env, r=returned: r, **SMALL)
        env.reset(seed=0)
        assert env.step(env.action_space.sample())[1] == 0.25


def test_a_temperature_too_small_for_the_softmax_is_named() -> None:
    with pytest.raises(ValueError, match=r"temperature must be >= 1e-06, got 1e-320"):
        MixingEnv(temperature=1e-320, **SMALL)
    MixingEnv(temperature=1e-6, **SMALL)  # the floor itself works


@pytest.mark.parametrize("name", ["domain_tag", "domain_shift", "conflict_offset"])
def test_toy_input_scales_that_overflow_are_refused_up_front(name: str) -> None:
    from mixgym.llm_backend.toy import ToyBackend

    with pytest.raises(ValueError, match=rf"{name} must be in \[-1000000.0, 1000000.0\], got 1e\+16"):
        ToyBackend(**{name: 1e16})


# ---------------------------------------------------------------- saved agents, checkpoints, the CLI


def test_a_mixer_zip_with_a_bad_env_field_is_named(tmp_path: Path) -> None:
    agent = make_agent("uniform", env_for("uniform", SMALL))
    agent.save(tmp_path / "good.zip")
    with zipfile.ZipFile(tmp_path / "good.zip") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    (meta_name,) = [name for name in entries if name.endswith(".json")]
    for i, env_field in enumerate([7, {"domains": 3}, "x"]):
        meta = json.loads(entries[meta_name])
        meta["env"] = env_field
        with zipfile.ZipFile(tmp_path / f"bad{i}.zip", "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, json.dumps(meta) if name == meta_name else data)
        with pytest.raises(ValueError, match=rf"bad{i}.zip' has a .* whose 'env' field is malformed .*damaged or was not written by mixgym"):
            load_agent(tmp_path / f"bad{i}.zip")


@pytest.mark.parametrize("option", [" total_steps =40", "total steps=40", "total_steps =40"])
def test_an_env_option_with_spaces_in_its_name_is_refused(capsys, option: str) -> None:
    from mixgym.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "uniform", "--env", option])
    assert exit_info.value.code == 2
    assert "is not a plain name: write KEY=VALUE without spaces" in capsys.readouterr().err


def test_a_trusted_checkpoint_that_is_not_an_experiments_state_is_named(tmp_path: Path) -> None:
    from mixgym.checkpoint import CheckpointStore, CorruptCheckpoint

    config = ExperimentConfig("uniform", env=dict(SMALL), checkpoint_every=1)
    run_experiment(config, tmp_path)
    store = CheckpointStore(tmp_path / "checkpoints")
    payload, path = store.load_latest()
    for crafted in ({"decisions": 2}, [1, 2], {**payload, "env": {"backend": {}}}):
        body = pickle.dumps(crafted)  # an unsigned file (the format before signing): loaded only when trusted
        path.write_bytes(b"MIXGYM-CHECKPOINT-1\n" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        with pytest.raises(CorruptCheckpoint, match="does not hold (a mixgym experiment's|this experiment's) state"):
            run_experiment(config, tmp_path, resume=True, trust_checkpoint=True)


def test_the_stale_lock_warning_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".mixgym.lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": 0, "command": "x"}))
    run = subprocess.run(
        [sys.executable, "-m", "mixgym.cli", "train", "uniform", "--env", "total_steps=20", "--checkpoint-dir", str(tmp_path),
         "--save", str(tmp_path / "p.zip")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if "recovered the lock" in line]
    assert len(warning) == 1 and warning[0].startswith("mixgym train: warning: recovered the lock"), run.stderr
    assert "warnings.warn" not in run.stderr  # no stray source line


def test_the_frozen_actors_deterministic_prediction_is_a_function_of_the_observation() -> None:
    env = env_for("acodm-frozen-actor", SMALL)
    agent = make_agent("acodm-frozen-actor", env, seed=0, net_width=16, net_depth=2, warmup_fraction=0.0)
    obs, _ = env.reset(seed=0)
    first, _ = agent.predict(obs, deterministic=True)
    again, _ = agent.predict(obs, deterministic=True)
    assert np.array_equal(first, again)
    noisy = [agent.predict(obs)[0] for _ in range(2)]  # exploration noise, drawn from the agent's generator
    assert not np.array_equal(noisy[0], noisy[1])
    assert np.array_equal(agent.predict(obs, deterministic=True)[0], first)


# ---------------------------------------------------------------- full disks


def _full_disk_after(monkeypatch: pytest.MonkeyPatch, module, calls: int) -> None:
    """Make `module`'s os.fsync fail with ENOSPC after `calls` successful calls (as a full disk
    reports a write that did not fit)."""
    real, seen = os.fsync, [0]

    def fsync(fd: int) -> None:
        seen[0] += 1
        if seen[0] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(module.os, "fsync", fsync)


@pytest.mark.parametrize("calls", [12, 13, 14])  # the disk fills up at the table's, the checkpoint's or the folder's fsync
def test_a_full_disk_during_a_checkpoint_is_named_keeps_the_old_ones_and_the_run_resumes(tmp_path: Path, monkeypatch, calls: int) -> None:
    import pandas as pd

    from mixgym import checkpoint
    from mixgym.checkpoint import CheckpointStore, CheckpointWriteFailed

    config = ExperimentConfig("exp3", env={"total_steps": 200, "steps_per_action": 10}, seed=1, checkpoint_every=5)
    run_experiment(config, tmp_path / "clean")
    with monkeypatch.context() as patch:
        _full_disk_after(patch, checkpoint, calls)
        with pytest.raises(CheckpointWriteFailed, match=r"cannot write .*No space left on device.*earlier checkpoints are intact \(checkpoint-"):
            run_experiment(config, tmp_path / "full")
    store = CheckpointStore(tmp_path / "full" / "checkpoints")
    assert store.paths() and store.load_latest() is not None  # intact
    assert not [p for p in store.directory.iterdir() if ".tmp-" in p.name]  # no half-written file
    assert run_experiment(config, tmp_path / "full", resume=True).status == "finished"
    clean, resumed = (pd.read_csv(tmp_path / d / "decisions.csv").drop(columns=["wall_time"]) for d in ("clean", "full"))
    pd.testing.assert_frame_equal(clean, resumed, check_exact=True)


def _full_disk_once(cell, directory: Path, marker: str = "", cut_at: int = 0):
    """`run_cell` on a disk that fills up during the cell's first attempt, after `cut_at` fsyncs:
    every later fsync and text write of that (forked, short-lived) process fails."""
    from mixgym.bench.cells import run_cell

    if not os.path.exists(marker):
        Path(marker).touch()
        real, calls = os.fsync, [0]

        def fsync(fd: int) -> None:
            calls[0] += 1
            if calls[0] > cut_at:
                Path.write_text = no_space  # from now on nothing fits
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        def no_space(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.fsync = fsync
    return run_cell(cell, directory)


def test_a_full_disk_during_a_bench_cell_fails_that_cell_with_a_named_error_and_a_rerun_completes_it(tmp_path: Path) -> None:
    import functools

    from mixgym.bench import parse_config
    from mixgym.bench.execute import run_cells

    grid = parse_config({"seeds": [0], "agents": ["exp3"], "rewards": ["alignment"],
                         "backends": {"toy3": {"backend": "toy", "num_domains": 3, "total_steps": 40}}, "env": {"steps_per_action": 10}})
    cells = grid.cells()[:1]
    runner = functools.partial(_full_disk_once, marker=str(tmp_path / "filled"), cut_at=3)
    (first,) = run_cells(cells, tmp_path / "out", runner, workers=1, progress=False)
    # the cell fails (not retried as if its process had died), named, and the grid goes on
    assert first.status == "failed" and "error.txt could not be written (is the disk full?)" in first.error, first
    (second,) = run_cells(cells, tmp_path / "out", runner, workers=1, progress=False)  # space again: the rerun
    assert second.status == "done"
    (clean,) = run_cells(cells, tmp_path / "clean", functools.partial(_full_disk_once, marker=str(tmp_path / "filled")), workers=1, progress=False)
    summaries = [json.loads((o.directory / "summary.json").read_text())["final_objective"] for o in (second, clean)]
    assert summaries[0] == summaries[1]


def test_a_full_disk_while_writing_error_txt_does_not_take_the_grid_down(tmp_path: Path, monkeypatch) -> None:
    from mixgym.bench.execute import write_note

    target = tmp_path / "cell.partial" / "error.txt"

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", no_space)
    assert write_note(target, "the cell failed") is False


# ---------------------------------------------------------------- the HF backend's configuration

HF_TINY = {"seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 1, "total_steps": 4}


@pytest.fixture
def hf_backend():
    pytest.importorskip("transformers")
    from mixgym.llm_backend.hf import HFBackend

    return HFBackend


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": "x"}, r"learning_rate must be a number, got 'x' \(str\)"),
        ({"betas": 0.9}, r"betas must be a tuple .*, got 0.9 \(float\)"),
        ({"micro_batch_size": 2.5}, r"micro_batch_size must be an integer, got 2.5"),
    ],
)
def test_hf_options_of_the_wrong_type_are_named(hf_backend, options: dict, message: str) -> None:
    from mixgym.llm_backend.hf import HFConfig

    with pytest.raises(TypeError, match=message):
        HFConfig(**options)
    assert HFConfig(betas=[0.9, 0.99]).betas == (0.9, 0.99)  # YAML's lists still read


def test_a_hidden_size_the_heads_cannot_split_is_named(hf_backend, tmp_path: Path) -> None:
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 6,
                                  "intermediate_size": 128, "vocab_size": 4096}))
    with pytest.raises(ValueError, match="the model's hidden size 64 is not divisible by its number of attention heads 6"):
        hf_backend(model=str(config), **HF_TINY)


def test_garbage_model_weights_are_named(hf_backend, tmp_path: Path) -> None:
    from mixgym.llm_backend.hf import preset_config

    folder = tmp_path / "model"
    preset_config("pythia-tiny", 4096).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors file" * 10)
    with pytest.raises(ValueError, match=r"cannot load the model weights in .*model' \(.*\): the files are damaged"):
        hf_backend(model=str(folder), **HF_TINY)


def test_a_tokenizer_cache_that_is_a_file_is_refused(hf_backend, tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(ValueError, match=r"the tokenizer_cache folder '.*cache' exists and is not a folder"):
        hf_backend(tokenizer_cache=str(tmp_path / "cache"), vocab_size=300, **HF_TINY)


def test_an_hf_model_too_large_for_the_machine_is_refused_with_its_estimate(hf_backend, monkeypatch) -> None:
    import mixgym.resources
    from mixgym.llm_backend.hf import HFConfig, preset_config
    from mixgym.llm_backend.hf_memory import estimate_memory, parameter_count

    big = preset_config("pythia-tiny", 4096)
    big.hidden_size, big.num_hidden_layers, big.intermediate_size = 4096, 32, 16384  # a 7B-like shape
    assert 6e9 < parameter_count(big) < 8e9
    assert estimate_memory(big, 8, 128) > 5 * 4 * parameter_count(big)  # weights, grads, moments, previous weights
    monkeypatch.setattr(mixgym.resources, "available_memory", lambda: 16 * 2**30)
    with pytest.raises(ValueError, match=r"model .* needs about 1\d\d\.\d GiB of memory, more than the 16.0 GiB available"):
        hf_backend(HFConfig(model=big, **HF_TINY))


# ---------------------------------------------------------------- corpora


def test_a_corpus_file_that_is_not_utf8_and_rows_without_text_are_named(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from mixgym.llm_backend.corpus import CorpusError, load_corpus

    (tmp_path / "a.jsonl").write_bytes(b'{"text": "hello caf\xe9 world"}\n{"text": "more text here"}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "one doc"}\n{"text": "two doc"}\n')
    with pytest.raises(CorpusError, match=r"domain 'a': '.*a.jsonl' is not UTF-8: line 1 has byte 0xe9 at column 20"):
        load_corpus(tmp_path)
    (tmp_path / "a.jsonl").write_text('{"text": "hello world"}\n{"title": "no text"}\n{"text": "more text here"}\n')
    with pytest.raises(CorpusError, match=r"domain 'a': document 1 of .* has no string 'text' \(got None\)"):
        load_corpus(tmp_path)
    (tmp_path / "a.jsonl").write_text('{"text": "hello world"}\n{"text": ""}\n{"text": "more text here"}\n')
    assert len(load_corpus(tmp_path).domains) == 2  # an empty document is skipped, as documented
