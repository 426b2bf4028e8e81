"""The `mixgym` command line: demo --quick, train/eval in both modes, help and errors."""

import re
import subprocess
import sys
import types

import numpy as np
import pytest

from mixgym import cli
from mixgym.agents import AGENTS, Results, load_agent
from mixgym.agents.compare import env_for
from mixgym.envs import MixingEnv
from mixgym.llm_backend import ToyBackend

SMALL_ENV = ["--env", "total_steps=60"]


def run(*argv: str) -> int:
    return cli.main(list(argv))


def test_demo_quick_writes_table_figure_and_results(tmp_path, capsys) -> None:
    assert run("demo", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    for name in cli.DEMO_AGENTS + ("oracle",):
        assert name in out
        assert Results.load(tmp_path / name).config["agent"] == name
    summary = (tmp_path / "summary.md").read_text()
    assert "regret vs oracle" in summary and summary.count("\n") == len(cli.DEMO_AGENTS) + 3
    assert "decisions to natural's final loss" in summary and "decisions to uniform's final loss" in summary
    assert "toy task mix-pilemix" in out and {"natural", "uniform"} <= set(cli.DEMO_AGENTS)
    assert len(Results.load(tmp_path / "natural").domains) == 9
    # regret only against an oracle that beats uniform beyond noise on the target seeds
    oracle_row = next(line for line in summary.splitlines() if line.startswith("| oracle |"))
    assert "oracle not separable from uniform" in oracle_row or "+0.0000 (+0.0%)" in oracle_row
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert load_agent(tmp_path / "acodm" / "policy.zip").name == "acodm"


def test_console_script_entry_point_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "mixgym.cli", "--help"], capture_output=True, text=True, check=True)
    assert all(command in out.stdout for command in ("demo", "train", "eval", "agents"))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("demo", ["--quick", "--out", "--reward", "proxy mode"]),
        ("train", ["--mode", "--env", "--option", "--decisions", "--save", "--tensorboard", "acodm-frozen-actor"]),
        ("eval", ["--agent", "--episodes", "--seed", "--results", "another"]),
        ("agents", ["name"]),
    ],
)
def test_every_command_has_complete_help(command: str, expected: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(command, "--help")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(item in text for item in expected), text


def test_train_proxy_then_eval_on_a_larger_model(tmp_path, capsys) -> None:
    policy = tmp_path / "hds.zip"
    options = ["-o", "net_width=16", "-o", "batch_size=8"]
    proxy = [*SMALL_ENV, "--env", "hidden_dim=8"]
    assert run("train", "hds", *proxy, *options, "--decisions", "18", "--save", str(policy), "--no-progress") == 0
    results = tmp_path / "eval"
    target = [*SMALL_ENV, "--env", "hidden_dim=48"]
    assert run("eval", str(policy), *target, "--episodes", "2", "--results", str(results)) == 0
    loaded = Results.load(results)
    assert loaded.config["agent"] == "hds" and len(loaded.final_objectives()) == 2
    assert "final held-out loss" in capsys.readouterr().out


def test_train_online_saves_the_policy_and_the_run(tmp_path) -> None:
    policy, folder = tmp_path / "odm.zip", tmp_path / "odm-run"
    assert run("train", "odm", "--mode", "online", *SMALL_ENV, "--save", str(policy), "--results", str(folder)) == 0
    assert load_agent(policy).name == "odm"
    assert Results.load(folder).config["mode"] == "online"


def test_train_with_tensorboard_logging(tmp_path) -> None:
    logs = tmp_path / "tb"
    save = str(tmp_path / "e.zip")
    logging = ["--tensorboard", str(logs), "--no-progress"]
    assert run("train", "exp3", *SMALL_ENV, "--decisions", "6", "--save", save, *logging) == 0
    assert any(path.name.startswith("events.out.tfevents") for path in logs.rglob("*"))


def test_eval_a_named_agent_with_options(tmp_path) -> None:
    folder = tmp_path / "fixed"
    options = ["-o", "mixture=[1, 1, 0, 1, 1]"]
    assert run("eval", "--agent", "fixed", *options, *SMALL_ENV, "--episodes", "1", "--results", str(folder)) == 0
    assert Results.load(folder).per_domain("mixture")["noise"].dropna().eq(0).all()


def test_agents_lists_options_with_sources(capsys) -> None:
    assert run("agents") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in AGENTS)
    assert run("agents", "acodm") == 0
    assert "ddpg_1B.yml" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "dqn"], r"unknown agent 'dqn'; known agents: acodm"),
        (["train", "odm", "-o", "smoothing=2"], "smoothing must be in"),
        (["eval", "missing.zip"], "no saved agent"),
        (["eval"], "either a saved POLICY or --agent"),
        (["agents", "dqn"], "unknown agent 'dqn'"),
    ],
)
def test_bad_input_exits_with_a_clear_message(argv: list[str], match: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_eval_refuses_a_policy_for_another_k(tmp_path, capsys) -> None:
    policy = tmp_path / "odm.zip"
    assert run("train", "odm", *SMALL_ENV, "--decisions", "3", "--save", str(policy), "--no-progress") == 0
    with pytest.raises(SystemExit):
        run("eval", str(policy), *SMALL_ENV, "--env", "num_domains=7", "--results", str(tmp_path / "eval"))
    assert "K=5 domains" in capsys.readouterr().err


def test_malformed_key_value_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit):
        run("train", "odm", "--env", "hidden_dim")
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_extension_commands_plug_in(monkeypatch) -> None:
    def add_cli(subparsers) -> None:
        parser = subparsers.add_parser("corpus", help="build corpora")
        parser.set_defaults(func=lambda args: 7)

    monkeypatch.setitem(sys.modules, "fake_corpus", types.SimpleNamespace(add_corpus_cli=add_cli))
    monkeypatch.setattr(cli, "EXTENSIONS", ("fake_corpus:add_corpus_cli",))
    assert run("corpus") == 7


def test_mixing_env_defaults_follow_the_agent() -> None:
    assert env_for("odm", {"total_steps": 20}).action_mapper.name == "simplex"
    env = env_for("hds", {"total_steps": 20})
    assert isinstance(env, MixingEnv) and env.action_mapper.name == "softmax" and env.reward_fn.name == "holistic"


def test_acodm_and_hds_force_their_papers_micro_batches_and_the_others_train_on_the_mixture_chosen() -> None:
    for agent in ("acodm", "acodm-frozen-actor", "hds"):
        assert env_for(agent, {"total_steps": 20}).backend.config.forced_fraction == 22 / 144
    for agent in ("odm", "exp3", "doremi", "uniform", "td3"):
        assert env_for(agent, {"total_steps": 20}).backend.config.forced_fraction == 0.0
    assert env_for("acodm", {"total_steps": 20, "forced_fraction": 0.0}).backend.config.forced_fraction == 0.0
    mine = ToyBackend(total_steps=20)
    assert env_for("acodm", {"backend": mine}).backend is mine and mine.config.forced_fraction == 0.0  # untouched
    # the env reports both mixtures: nearly one-hot chosen, 22/144 of the samples spread over
    # every domain of positive weight (a weight of 0 masks a domain out)
    env = env_for("hds", {"total_steps": 100}, action_map="simplex")
    env.reset(seed=0)
    info = env.step(np.array([1.0, 1e-6, 1e-6, 1e-6, 1e-6]))[4]
    assert info["mixture"][0] > 0.9999 and np.all(info["realised_mixture"][1:] >= 9 / 320)  # 49 of 320 forced
    plain = env_for("odm", {"total_steps": 100})
    plain.reset(seed=0)
    assert np.array_equal(plain.step(np.array([1.0, 0, 0, 0, 0]))[4]["realised_mixture"], [1.0, 0, 0, 0, 0])


def test_plots_of_what_was_trained_on_draw_the_realised_mixture(tmp_path, monkeypatch) -> None:
    import matplotlib.axes

    from mixgym.agents.compare import Contender, compare
    from mixgym.bench import parse_config, run_bench

    drawn: list[np.ndarray] = []
    original = matplotlib.axes.Axes.stackplot
    monkeypatch.setattr(
        matplotlib.axes.Axes, "stackplot", lambda self, x, *ys, **kw: drawn.append(np.asarray(ys[0])) or original(self, x, *ys, **kw)
    )
    options = {"total_steps": 60, "forced_fraction": 0.5}
    nearly_one_hot = [1, 1e-9, 1e-9, 1e-9, 1e-9]  # forced examples skip domains of weight 0
    comparison = compare([Contender("fixed", overrides={"mixture": nearly_one_hot})], options, options, seeds=1, first_seed=0)
    comparison.plot(tmp_path / "demo.png")
    realised = comparison.results["fixed"].mixture_curve("realised_mixture").to_numpy().T
    assert any(d.shape == realised.shape and np.allclose(d, realised) for d in drawn)
    assert not np.allclose(realised[0], 1.0)  # forced examples: the realised mixture is not the one chosen
    drawn.clear()
    grid = {"mode": "non-proxy", "seeds": [0], "agents": {"fixed": {"mixture": [1, 1e-9, 1e-9]}}, "rewards": ["eval_loss"],
            "backends": {"toy3": {"num_domains": 3, "total_steps": 60, "forced_fraction": 0.5}}}
    run_bench(parse_config(grid), tmp_path / "bench", workers=1, progress=False)
    cells = [Results.load(p.parent) for p in (tmp_path / "bench").glob("cells/*/summary.json")]
    fixed = next(r for r in cells if r.config["agent"] == "fixed")
    acted = fixed.decisions[fixed.decisions["decision"] > 0]
    realised = acted[[f"realised_mixture/{d}" for d in fixed.domains]].to_numpy().T
    assert any(d.shape == realised.shape and np.allclose(d, realised) for d in drawn)


def test_train_doremi_static_and_print_doremis_time_averaged_mixture(tmp_path, capsys) -> None:
    policy = tmp_path / "doremi-static.zip"
    proxy = ["-o", "proxy={hidden_dim: 8, total_steps: 60}"]
    assert run("train", "doremi-static", "--mode", "online", *SMALL_ENV, *proxy, "--save", str(policy),
               "--results", str(tmp_path / "run"), "--no-progress") == 0
    assert load_agent(policy).name == "doremi-static"
    assert run("train", "doremi", "--mode", "online", *SMALL_ENV, "--save", str(tmp_path / "d.zip"),
               "--results", str(tmp_path / "d"), "--no-progress") == 0
    assert "time-averaged mixture (DoReMi's output): easy" in capsys.readouterr().out


def test_corpus_build_through_the_cli_is_loadable_with_datasets(tmp_path) -> None:
    import json

    from mixgym.llm_backend.corpus import load_corpus

    out = tmp_path / "corpus"
    assert run("corpus", "build", str(out), "--sources", "python", "--max-bytes", "60000", "--vocab-size", "512") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "python" in json.dumps(manifest)
    corpus = load_corpus(out)
    assert corpus.names == ["python"] and len(corpus.domains[0].train) > 0


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "odm", "--seed", "-1"], r"argument --seed: must be an integer in \[0, 4294967295\], got -1"),
        (["--threads", "0", "train", "odm"], "argument --threads: must be an integer >= 1, got 0"),
        (["train", "odm", "--decisions", "0"], "argument --decisions: must be an integer >= 1, got 0"),
        (["train", "odm", "--checkpoint-every", "1.5"], "argument --checkpoint-every: expected an integer, got '1.5'"),
        (["eval", "--agent", "odm", "--episodes", "0"], "argument --episodes: must be an integer >= 1, got 0"),
        (["bench", "grid.yaml", "--workers", "0"], "argument --workers: must be an integer >= 1, got 0"),
        (["train", "odm", "--resume", "--restart"], "argument --restart: not allowed with argument --resume"),
    ],
)
def test_bad_numbers_and_flags_are_refused_by_the_parser(argv: list[str], match: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 2 and re.search(match, capsys.readouterr().err)


def test_values_are_yaml_1_2_numbers() -> None:
    assert [cli._key_value(f"x={text}")[1] for text in ("1e-3", "1e4", "010", "0x10", "inf", "-inf", "yes", "[1, 2e1]")] == [
        0.001, 10000.0, 10, 16, float("inf"), float("-inf"), "yes", [1, 20.0]]  # fmt: skip
    assert cli._key_value("x=nan")[1] != cli._key_value("x=nan")[1]  # NaN


def refuse_work(*args, **kwargs):
    raise AssertionError("work started before the output paths were checked")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "odm", "--save", "{dir}"], "the --save policy file '.*' is a folder, not a file"),
        (["train", "odm", "--save", "{file}/policy.zip"], "the folder of the --save policy file '.*' exists and is not a folder"),
        (["train", "odm", "--mode", "online", "--results", "{file}"], "the --results folder '.*' exists and is not a folder"),
        (["train", "odm", "--checkpoint-dir", "{file}"], "the --checkpoint-dir folder '.*' exists and is not a folder"),
        (["train", "odm", "--tensorboard", "{file}"], "the --tensorboard folder '.*' exists and is not a folder"),
        (["train", "odm", "--save", "/proc/mixgym-test/policy.zip"], "cannot create the folder of the --save policy file '/proc/mixgym-test'"),
        (["eval", "--agent", "odm", "--results", "{file}"], "the --results folder '.*' exists and is not a folder"),
        (["demo", "--out", "{file}"], "the --out folder '.*' exists and is not a folder"),
        (["train", "odm", "--resume"], "--resume, --restart, --trust-checkpoint and --strict-whatif-cache apply to a --checkpoint-dir"),
    ],
)
def test_output_paths_are_checked_before_any_work(argv: list[str], match: str, tmp_path, monkeypatch, capsys) -> None:
    import mixgym.agents
    import mixgym.agents.compare

    for module in (mixgym.agents, mixgym.agents.compare):  # nothing may be built before the check
        for name in ("make_agent", "learn_online", "compare", "env_for"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse_work)
    (tmp_path / "file").write_text("")
    argv = [a.format(dir=tmp_path, file=tmp_path / "file") for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        run(*argv, "--save", str(tmp_path / "p.zip")) if argv[0] == "train" and "--save" not in argv else run(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(f"^mixgym {argv[0]}: error: {match}", err) and len(err.strip().splitlines()) == 1, err


def test_os_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys) -> None:
    import errno

    import mixgym.checkpoint

    real = mixgym.checkpoint.atomic_write_bytes

    def full_disk(path, data) -> None:  # the disk fills up when the first checkpoint is written
        if path.name.startswith("checkpoint-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(mixgym.checkpoint, "atomic_write_bytes", full_disk)
    argv = ["train", "odm", *SMALL_ENV, "--checkpoint-dir", str(tmp_path / "run"), "--checkpoint-every", "2",
            "--save", str(tmp_path / "p.zip"), "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and re.match(
        r"mixgym train: error: \[Errno 28\] cannot write checkpoint '.*checkpoint-0+2.ckpt' \(No space left on device\); "
        r"the earlier checkpoints are intact \(none\): free space and resume .* \(--debug", err
    )
    with pytest.raises(OSError, match="No space left"):
        run(*argv, "--restart", "--debug")
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))


def test_eval_refuses_a_fifo_as_policy(tmp_path, capsys) -> None:
    import os

    os.mkfifo(tmp_path / "policy.zip")
    with pytest.raises(SystemExit):
        run("eval", str(tmp_path / "policy.zip"), "--results", str(tmp_path / "out"))
    assert "is not a regular file" in capsys.readouterr().err
