"""The `mixgym` command line: ``demo``, ``train``, ``eval`` and ``agents``.

- ``mixgym demo`` compares natural, uniform, random, odm, exp3, doremi, acodm and hds on the
  catalogue's Pile-like toy task ``mix-pilemix`` (a noisy crawl and its duplicate, junk, a
  contradicting domain, a primer, a data-constrained domain; the RL agents in proxy mode: they
  learn on a smaller toy model, then act on the target over 5 seeds) against the oracle
  static mixture (regret only where the oracle beats uniform beyond noise); prints a table,
  writes a PNG.
- ``mixgym train AGENT`` learns a policy -- proxy mode (many runs on the given backend) or
  online (non-proxy: during one run) -- and saves it; ``mixgym eval`` runs a saved policy
  (or a named agent) on a backend and saves every decision (`mixgym.agents.runner.Results`).
- ``mixgym agents`` lists every agent and its options with their defaults and sources.
- ``mixgym record AGENT --task T --episodes N --out NAME`` writes the runs as a Minari dataset
  (`mixgym.integrations.minari_datasets`).

``train`` and ``eval`` also run as the processes of a torchrun job (``torchrun
--nproc_per_node=G -m mixgym.cli train ...`` with ``--env backend=hf``): rank 0 runs the
command, the others serve its backend (`mixgym.llm_backend.distributed`).

Other packages add subcommands through `EXTENSIONS` (see there).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from gymnasium.error import DependencyNotInstalled
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mixgym import yaml12
from mixgym.paths import output_file, output_folder

EXTENSIONS: tuple[str, ...] = (
    "mixgym.bench:add_bench_cli",
    "mixgym.bench.swarm:add_swarm_cli",
    "mixgym.calibration:add_calibrate_cli",
    "mixgym.llm_backend.corpus:add_corpus_cli",
    "mixgym.integrations.minari_datasets:add_record_cli",
    "mixgym.bench.leaderboard:add_leaderboard_cli",
)
"""Subcommands defined in other modules, as ``"module:function"``. Each function is called
with the subparsers object (``argparse._SubParsersAction``) and adds its own command, setting
``func`` (called with the parsed arguments, returning an exit code) as the commands here do.
The corpus tools plug in by adding ``"mixgym.llm_backend.corpus:add_corpus_cli"``; modules
are imported only when the parser is built."""

DEMO_AGENTS = ("natural", "uniform", "random", "odm", "exp3", "doremi", "acodm", "hds")
RL_AGENTS = ("acodm", "hds", "td3", "ppo")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of ``mixgym demo`` (full, and ``--quick`` for tests).

    Attributes:
        total_steps: optimizer steps per toy run (10 per decision).
        seeds: target runs per agent.
        train_decisions: decisions the RL agents learn for on the proxy.
        proxy_hidden_dim: the proxy toy model's width.
        target_hidden_dim: the target toy model's width.
        rl_overrides: options given to the RL agents.
        oracle_search: options of the oracle's search (`mixgym.agents.static.OracleConfig`).
        task: the toy task (`mixgym.tasks`).
    """

    total_steps: int
    seeds: int
    train_decisions: int
    proxy_hidden_dim: int
    target_hidden_dim: int
    rl_overrides: dict[str, Any] = field(default_factory=dict)
    oracle_search: dict[str, Any] = field(default_factory=dict)
    task: str = "mix-pilemix"


DEMO = DemoSettings(
    total_steps=400,
    seeds=5,
    train_decisions=2000,
    proxy_hidden_dim=16,
    target_hidden_dim=32,
    oracle_search={"n_random": 0, "rounds": 3},
)
QUICK = DemoSettings(
    total_steps=200,
    seeds=2,
    train_decisions=200,
    proxy_hidden_dim=8,
    target_hidden_dim=16,
    rl_overrides={"net_width": 32},
    oracle_search={"search_seeds": (0, 1), "n_random": 0, "rounds": 1},
)


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML 1.2 (numbers, booleans, lists, null, strings;
    `mixgym.yaml12`: ``1e-3`` is a number, ``010`` is ten)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if not key.isidentifier():  # ' total_steps ' would be read as another option than the user meant, or silently fixed
        raise argparse.ArgumentTypeError(f"the option name {key!r} in {text!r} is not a plain name: write KEY=VALUE without spaces")
    try:
        return key.strip(), yaml12.load(value)
    except yaml12.yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r}: {reason}") from None


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {value}")
        return value

    return parse


SEED = int_at_least(0, 2**32 - 1)
"""Seeds are numpy's: 0 to 2**32 - 1."""


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _set_threads(threads: int) -> None:
    """Small networks on CPU run fastest on one thread; more contend on a shared machine."""
    import torch

    torch.set_num_threads(threads)


def demo(args: argparse.Namespace) -> int:
    """Compare the demo agents on the toy backend; print the table, write the PNG."""
    from mixgym.agents.compare import HEADER, Contender, compare, markdown, table_rows

    console = Console()
    out = output_folder(args.out, "--out folder")
    settings = QUICK if args.quick else DEMO
    started = time.perf_counter()
    _set_threads(args.threads)
    common = {"task": settings.task, "total_steps": settings.total_steps}
    target = {**common, "hidden_dim": settings.target_hidden_dim}
    proxy = {**common, "hidden_dim": settings.proxy_hidden_dim}
    contenders = [
        Contender(name, "proxy", dict(settings.rl_overrides, seed=args.seed), reward=args.reward)
        if name in RL_AGENTS
        else Contender(name, "act", {"seed": args.seed} if name == "random" else {})
        for name in DEMO_AGENTS
    ] + [Contender("oracle", "act", dict(settings.oracle_search))]
    console.print(
        f"toy task {settings.task}: target model width {settings.target_hidden_dim}, proxy {settings.proxy_hidden_dim}, "
        f"{settings.total_steps} optimizer steps = {settings.total_steps // 10} decisions per run, "
        f"{settings.seeds} target seeds; RL agents learn {settings.train_decisions} decisions on the proxy; "
        "objective: mean held-out loss over the domains (junk left out)"
    )
    with _progress(console) as progress:
        hook = lambda label, total: partial(progress.advance, progress.add_task(label, total=total))  # noqa: E731
        comparison = compare(
            contenders,
            target,
            proxy,
            seeds=settings.seeds,
            train_decisions=settings.train_decisions,
            save_dir=out,
            progress=hook,
        )
    summary = comparison.summary()
    table = Table(title="target runs: final held-out loss (lower is better)")
    for column in HEADER:
        table.add_column(column)
    for row in table_rows(summary):
        table.add_row(*row)
    console.print(table)
    (out / "summary.md").write_text(markdown(summary) + "\n")
    figure = comparison.plot(out / "demo.png")
    console.print(f"figure: {figure}; per-decision results under {out}/; total {time.perf_counter() - started:.0f} s")
    return 0


def train(args: argparse.Namespace) -> int:
    """Learn a policy in proxy or online mode and save it."""
    from mixgym.agents import MixtureLogger, learn_online, make_agent
    from mixgym.agents.compare import env_for

    console = Console()
    save = output_file(args.save or f"{args.agent}.zip", "--save policy file")
    if args.checkpoint_dir:
        output_folder(args.checkpoint_dir, "--checkpoint-dir folder")
    elif args.resume or args.restart or args.trust_checkpoint or args.strict_whatif_cache:
        raise ValueError("--resume, --restart, --trust-checkpoint and --strict-whatif-cache apply to a --checkpoint-dir")
    elif args.mode == "online":
        output_folder(args.results or f"{args.agent}-online", "--results folder")
    _set_threads(args.threads)
    options = dict(args.option)
    callback = None
    if args.tensorboard:
        options["tensorboard_log"] = str(output_folder(args.tensorboard, "--tensorboard folder"))
        callback = MixtureLogger()
    start = time.perf_counter()
    if args.checkpoint_dir:
        return _train_checkpointed(args, options, save, console)
    env = env_for(args.agent, dict(args.env))
    if args.mode == "proxy":
        decisions = args.decisions or 30 * env.unwrapped.num_decisions
        agent = make_agent(args.agent, env, seed=args.seed, **options)
        agent.learn(decisions, callback=callback, progress_bar=args.progress)
        agent.save(save)
        seconds = time.perf_counter() - start
        console.print(f"{args.agent}: learned {decisions} decisions{_updates(agent)} in {seconds:.1f} s; saved {save}")
        return 0
    with _progress(console) as progress:
        task = progress.add_task(args.agent, total=env.unwrapped.num_decisions) if args.progress else None
        tick = partial(progress.advance, task) if task is not None else None
        results, agents = learn_online(args.agent, env, [args.seed], on_decision=tick, callback=callback, **options)
    agents[0].save(save)
    folder = results.save(args.results or f"{args.agent}-online")
    averaged = results.final_report("time_averaged_mixture")
    if averaged is not None:
        weights = ", ".join(f"{d} {w:.3f}" for d, w in averaged.items())
        console.print(f"{args.agent}: time-averaged mixture (DoReMi's output): {weights}")
    console.print(
        f"{args.agent}: one online run{_updates(agents[0])}, final held-out loss {results.final_objectives()[0]:.4f} "
        f"({time.perf_counter() - start:.1f} s); policy {save}, per-decision results {folder}/"
    )
    return 0


def _updates(agent: Any) -> str:
    """", N gradient updates" for an RL agent (with a warning when N is 0); "" for the others."""
    if not hasattr(agent, "updates"):
        return ""
    return f", {agent.updates} gradient updates" + (" (none: the policy is its initialisation)" if agent.updates == 0 else "")


def _train_checkpointed(args: argparse.Namespace, options: dict[str, Any], save: Path, console: Console) -> int:
    """`train` through `mixgym.experiment`: checkpoints, --resume, a clean stop on signals."""
    from mixgym.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(
        agent=args.agent,
        env=dict(args.env),
        seed=args.seed,
        decisions=args.decisions if args.mode == "proxy" else None,
        agent_options=options,
        checkpoint_every=args.checkpoint_every,
        keep=args.keep,
    )
    try:
        result = run_experiment(
            config,
            args.checkpoint_dir,
            resume=args.resume,
            restart=args.restart,
            trust_checkpoint=args.trust_checkpoint,
            strict_whatif_cache=args.strict_whatif_cache,
        )
    except FloatingPointError as error:
        console.print(f"stopped: {error}; the checkpoints in {args.checkpoint_dir} before it are intact")
        return 1
    if result.status == "stopped":
        console.print(
            f"{args.agent}: stopped by signal {result.signal} after {result.decisions} decisions; "
            f"continue with the same command and --resume"
        )
        return 128 + int(result.signal or 0)
    result.agent.save(save)
    console.print(f"{args.agent}: {result.decisions} decisions; policy {save}; per-decision table {result.directory}/")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """Run a saved policy or a named agent on a backend and save every decision."""
    from mixgym.agents import evaluate, load_agent, make_agent
    from mixgym.agents.base import read_metadata
    from mixgym.agents.compare import env_for

    console = Console()
    if (args.policy is None) == (args.agent is None):
        raise ValueError("give either a saved POLICY or --agent NAME")
    if args.policy is not None and args.option:
        raise ValueError("-o/--option applies to --agent; a saved policy keeps its options")
    if args.trust and args.policy is None:
        raise ValueError("--trust applies to a saved POLICY")
    meta = read_metadata(args.policy)[1] if args.policy is not None else None
    name = meta["agent"] if meta is not None else args.agent
    results_folder = output_folder(args.results or f"{name}-eval", "--results folder")
    _set_threads(args.threads)
    if meta is not None:
        env = env_for(name, dict(args.env), action_map=meta["env"]["action_map"])
        agent = load_agent(args.policy, env, trusted=args.trust)
    else:
        name = args.agent
        env = env_for(name, dict(args.env))
        agent = make_agent(name, env, **dict(args.option))
    with _progress(console) as progress:
        task = progress.add_task(name, total=args.episodes * env.unwrapped.num_decisions)
        tick = partial(progress.advance, task)
        results = evaluate(agent, env, episodes=args.episodes, seed=args.seed, on_decision=tick)
    finals = results.final_objectives()
    folder = results.save(results_folder)
    _track(args, results.decisions, name, results.config)
    console.print(
        f"{name}: final held-out loss {finals.mean():.4f} ± {finals.std():.4f} over {args.episodes} run(s) "
        f"(seeds {args.seed}..{args.seed + args.episodes - 1}); per-decision results {folder}/"
    )
    return 0


def _track(args: argparse.Namespace, table: Any, run: str, config: dict[str, Any]) -> None:
    """``--tensorboard DIR`` and ``--wandb PROJECT``: the per-decision table to the trackers."""
    from mixgym.tracking import log_table

    tensorboard = output_folder(args.tensorboard, "--tensorboard folder") if args.tensorboard else None
    log_table(table, run, tensorboard=tensorboard, wandb_project=args.wandb, config=config)


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tensorboard DIR`` and ``--wandb PROJECT`` (eval and bench)."""
    parser.add_argument(
        "--tensorboard", default=None, metavar="DIR",
        help="write every run's per-decision mixture, losses, objective and reward to TensorBoard under DIR",
    )
    parser.add_argument(
        "--wandb", default=None, metavar="PROJECT",
        help='the same to Weights & Biases project PROJECT (pip install "mixgym[wandb]"; WANDB_MODE=offline: no network)',
    )


def _serve_command(args: argparse.Namespace) -> None:
    """A rank > 0 of a torchrun job: build the environment `args` describes, as rank 0 does
    (its backend is this process's replica of the run), and serve rank 0's commands."""
    from mixgym.agents.base import read_metadata
    from mixgym.agents.compare import env_for
    from mixgym.llm_backend.distributed import serve

    _set_threads(args.threads)
    name = args.agent if args.command == "train" or args.policy is None else read_metadata(args.policy)[1]["agent"]
    serve(env_for(name, dict(args.env)).unwrapped.backend)


def _distributed(args: argparse.Namespace) -> int:
    """Run `train` or `eval` as one process of a torchrun job (module docstring)."""
    from mixgym.llm_backend.distributed import RankLost, session

    if args.command not in ("train", "eval"):
        raise ValueError(f"only train and eval run under torchrun, not {args.command}")
    backend = dict(args.env).get("backend", "toy")
    if backend != "hf":
        raise ValueError(f"under torchrun the backend must be hf (--env backend=hf), got {backend!r}")
    job = json.dumps({key: value for key, value in vars(args).items() if key != "func"}, sort_keys=True, default=str)
    try:
        with session(job=job, timeout_s=args.dist_timeout) as current:
            if current.rank == 0:
                return int(args.func(args))
            _serve_command(args)
            return 0
    except RankLost as error:
        print(f"mixgym {args.command}: error: {error}", file=sys.stderr)
        return 1


def agents_command(args: argparse.Namespace) -> int:
    """List the agents and their options."""
    from mixgym.agents import AGENTS
    from mixgym.agents.base import agent_spec, load_families, option_help

    load_families()
    console = Console()
    for name in [args.name] if args.name else sorted(AGENTS):
        spec = agent_spec(name)
        title = escape(f"{name}: {spec.summary} (action maps: {', '.join(spec.action_maps)})")  # "[extra]" is no markup
        table = Table(title=title, title_justify="left")
        for column in ("option", "default", "meaning and source"):
            table.add_column(column)
        for row in option_help(name):
            table.add_row(*row)
        console.print(table)
    return 0


def _agent_list() -> str:
    from mixgym.agents import AGENTS
    from mixgym.agents.base import load_families

    load_families()
    return "\n".join(f"  {name:<20} {spec.summary}" for name, spec in sorted(AGENTS.items()))


def _add_env_and_options(parser: argparse.ArgumentParser) -> None:
    """``--env KEY=VALUE`` and ``-o/--option KEY=VALUE`` (train and eval)."""
    parser.add_argument(
        "--env",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment or backend option, repeatable: MixingEnv's (reward, action_map, steps_per_action, "
        "total_steps, eval_every, ...) and the toy backend's (hidden_dim, num_domains, task_seed, ...)",
    )
    parser.add_argument(
        "-o",
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="agent option, repeatable (see `mixgym agents NAME`); values are YAML (0.1, true, [1, 2])",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, including those named in `EXTENSIONS`."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="mixgym",
        description="Online data mixing for language-model pretraining as a Gymnasium environment.",
        formatter_class=formatter,
        epilog="Run `mixgym COMMAND --help` for a command's options; `mixgym agents` lists every agent's options.",
    )
    parser.add_argument(
        "--threads", type=int_at_least(1), default=1, help="torch CPU threads (default 1: the agents' nets are small)"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="under torchrun: how long a collective may wait, including a process's wait for rank 0's next command; "
        "a process lost for longer stops the job with an error (default 1800)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "demo",
        help="compare mixing agents on the mix-pilemix toy task: table and PNG",
        description=(
            "Compare " + ", ".join(DEMO_AGENTS) + " on the catalogue's Pile-like toy task mix-pilemix (a noisy crawl "
            "and its duplicate, junk, a contradicting domain, a primer and a data-constrained domain) against the oracle static "
            "mixture (searched on 30 seeds; regret is shown only where it beats uniform beyond noise). "
            "acodm and hds run in proxy mode: they learn on a smaller toy model (same domains) and then act "
            "deterministically on the target; the others act on the target directly (the bandits and DoReMi adapt "
            "online). Every agent runs the same target seeds. Prints final mean held-out loss, regret vs the oracle, "
            "decisions to reach the natural and the uniform mixture's final loss and wall time; writes DIR/demo.png (stacked-area "
            "mixtures and held-out loss curves), DIR/summary.md and each agent's per-decision results and policy."
        ),
        formatter_class=formatter,
    )
    p.add_argument("--quick", action="store_true", help="a small, fast version (for tests): 2 seeds, short runs")
    p.add_argument("--out", default="mixgym-demo", help="output folder (default mixgym-demo)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the agents' learning (default 0)")
    p.add_argument(
        "--reward",
        default=None,
        help="reward the RL agents learn from (default: each paper's, acodm alignment, hds holistic; or eval_loss)",
    )
    p.set_defaults(func=demo)

    p = commands.add_parser(
        "train",
        help="learn a policy (proxy or online mode) and save it",
        description=(
            "Learn a policy and save it. proxy: learn over many runs on the backend given by --env (usually a "
            "smaller model than the target), then `mixgym eval POLICY --env ...` acts with it on the target. "
            "online (non-proxy): learn during one run of the given backend; that run's per-decision results are "
            "saved too. The env uses the agent's action map (simplex for mixers, softmax for SB3 presets) and, "
            "for acodm/hds, its paper's reward, unless --env says otherwise.\n\nagents:\n" + _agent_list()
        ),
        formatter_class=formatter,
    )
    p.add_argument("agent", help="agent name (see below)")
    p.add_argument("--mode", choices=("proxy", "online"), default="proxy", help="proxy (default) or online")
    _add_env_and_options(p)
    p.add_argument(
        "--decisions", type=int_at_least(1), default=None, help="proxy: decisions to learn for, exactly (default: 30 runs)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the agent and of its first run (default 0)")
    p.add_argument("--save", default=None, help="where to save the policy (default AGENT.zip)")
    p.add_argument("--results", default=None, help="online: folder for the run's results (default AGENT-online)")
    p.add_argument(
        "--tensorboard", default=None, metavar="DIR", help="log SB3 metrics, mixture and losses to TensorBoard"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="run as a checkpointed experiment in DIR (decisions.csv, checkpoints/); SIGINT/SIGTERM checkpoint and stop",
    )
    p.add_argument(
        "--checkpoint-every", type=int_at_least(1), default=50, help="decisions between checkpoints (default 50)"
    )
    p.add_argument("--keep", type=int_at_least(1), default=3, help="checkpoints kept (default 3)")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--resume", action="store_true", help="continue the experiment in --checkpoint-dir from its newest valid checkpoint"
    )
    start.add_argument(
        "--restart", action="store_true", help="discard the checkpoints and table in --checkpoint-dir and start over"
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="resume from a checkpoint this installation did not write (unpickling it can run code: only files you trust)",
    )
    p.add_argument(
        "--strict-whatif-cache",
        action="store_true",
        help="stop on a corrupt or unsigned file in CHECKPOINT_DIR/whatif/ instead of recomputing it with a warning",
    )
    p.set_defaults(func=train)

    p = commands.add_parser(
        "eval",
        help="run a saved policy (or a named agent) and save every decision",
        description=(
            "Run a saved policy deterministically -- e.g. a proxy-trained one on a larger target: "
            "`mixgym eval acodm.zip --env hidden_dim=64` -- or a named agent (--agent odm), for --episodes runs "
            "seeded SEED, SEED+1, ...; saves decisions.csv and config.json. A policy refuses an env with another "
            "number of domains or action map.\n\nagents:\n" + _agent_list()
        ),
        formatter_class=formatter,
    )
    p.add_argument("policy", nargs="?", default=None, help="a policy saved by `mixgym train` (or Agent.save)")
    p.add_argument("--agent", default=None, help="instead of a policy: an agent made fresh (static, bandit, doremi)")
    _add_env_and_options(p)
    p.add_argument("--episodes", type=int_at_least(1), default=5, help="runs (default 5)")
    p.add_argument("--seed", type=SEED, default=100, help="seed of the first run (default 100)")
    p.add_argument("--results", default=None, help="output folder (default NAME-eval)")
    p.add_argument(
        "--trust",
        action="store_true",
        help="the POLICY file is trusted: load an SB3 policy from elsewhere with SB3's own (pickle-based) load, which can "
        "run code from the file; without it such a file is rebuilt from its options and tensors only",
    )
    add_tracking_arguments(p)
    p.set_defaults(func=evaluate_command)

    p = commands.add_parser("agents", help="list the agents and their options", description="List agents and options.")
    p.add_argument("name", nargs="?", default=None, help="one agent (default: all)")
    p.set_defaults(func=agents_command)

    for entry in EXTENSIONS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(commands)
    for command in commands.choices.values():  # also after the command: mixgym train ... --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    return parser


USER_ERRORS = (ValueError, TypeError, OSError, DependencyNotInstalled)
"""What a command's mistakes raise (bad values, missing or unwritable files, a full disk, a
missing extra):
printed as one line ``mixgym COMMAND: error: ...`` with exit code 2; ``--debug`` shows the
traceback instead."""


def main(argv: list[str] | None = None) -> int:
    from mixgym.llm_backend.distributed import launched

    parser = build_parser()
    args = parser.parse_args(argv)
    if not launched():
        return _run(parser, args, lambda: int(args.func(args)))
    try:
        code = _run(parser, args, lambda: _distributed(args))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    # A torchrun process ends here, its results written and its process groups destroyed: at
    # interpreter teardown gloo's threads can abort it ("terminate called without an active
    # exception"), turning a finished run into a failed one, so it exits at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, command: Callable[[], int]) -> int:
    """`command`'s status; a user mistake is one line and status 2, Ctrl-C is status 130.
    Warnings are one line too, ``mixgym COMMAND: warning: ...``, without the source line
    Python prints by default (unless --debug)."""
    formatwarning = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = lambda message, *_, **__: f"mixgym {args.command}: warning: {message}\n"
    try:
        return command()
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        parser.exit(2, f"mixgym {args.command}: error: {message} (--debug shows the traceback)\n")
    except KeyboardInterrupt:
        if args.debug:
            raise
        parser.exit(130, f"mixgym {args.command}: interrupted\n")
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
