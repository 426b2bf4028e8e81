"""Mixing trajectories as Minari offline-RL datasets: ``mixgym record`` and `record`.

Minari (Farama-Foundation/Minari, ``pip install minari``) is Farama's format for offline-RL
datasets: episodes of observations, actions, rewards, terminations, truncations and infos, with
the environment's spec so that ``dataset.recover_environment()`` makes the env again. A
learned mixing policy trained *across* runs offline (Data Mixing Agent trains CQL on many
random mixing trajectories) needs such data; mixgym makes it at toy speed, and on a real LM.

`record` runs an agent on a task's env for some episodes (episode e seeded ``seed + e``) and
writes them as dataset `dataset_id` under Minari's root (``MINARI_DATASETS_PATH``, default
``~/.minari/datasets``). Each step keeps every per-decision key of the env's ``info`` (the
chosen and realised mixture, per-domain train and held-out losses, samples, tokens, step,
the reward's components; ``reward/<name>`` becomes ``reward.<name>``, since Minari's HDF5
storage would read a "/" as a group), so per-domain losses and mixtures load with the
trajectory. The dataset's metadata holds, besides Minari's own keys, ``"mixgym"``: the task,
the agent and its options, the env options, the seeds and mixgym's version.

Built on `minari.create_dataset_from_buffers`, which needs no ``minari[create]`` (JAX) extra.

>>> import os, tempfile, minari
>>> os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp()
>>> dataset = record("uniform", "mixgym/classic5/uniform-v0", episodes=2, env_options={"total_steps": 30})
>>> minari.load_dataset("mixgym/classic5/uniform-v0").total_episodes
2
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import DependencyNotInstalled

from mixgym.agents import Agent, evaluate, load_agent, make_agent
from mixgym.agents.base import agent_spec, read_metadata
from mixgym.agents.compare import env_kwargs
from mixgym.tasks import get_task


def _minari() -> Any:
    try:
        import minari
    except ImportError as error:
        raise DependencyNotInstalled(f'Minari datasets need minari ({error.name} is missing): pip install "mixgym[minari]"') from error
    return minari


class TrajectoryRecorder(gym.Wrapper):
    """Keeps every episode that passes through it as a Minari ``EpisodeBuffer``.

    Args:
        env: the environment (a `MixingEnv`, possibly wrapped).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.episodes: list[Any] = []
        self._current: dict[str, Any] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._close_episode()
        obs, info = self.env.reset(seed=seed, options=options)
        self._current = {"seed": seed, "observations": [obs], "actions": [], "rewards": [], "terminations": [],
                         "truncations": [], "infos": [_step_info(info)]}
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        if self._current is None:
            raise ValueError("step before reset: the recorder has no episode in progress")
        obs, reward, terminated, truncated, info = self.env.step(action)
        current = self._current
        current["observations"].append(obs)
        current["actions"].append(np.asarray(action, dtype=self.env.action_space.dtype))
        current["rewards"].append(float(reward))
        current["terminations"].append(bool(terminated))
        current["truncations"].append(bool(truncated))
        current["infos"].append(_step_info(info))
        return obs, reward, terminated, truncated, info

    def _close_episode(self) -> None:
        current, self._current = self._current, None
        if current is None or not current["rewards"]:
            return
        if not (current["terminations"][-1] or current["truncations"][-1]):
            current["truncations"][-1] = True  # an episode cut short is truncated, as Minari's collector marks it
        from minari.data_collector import EpisodeBuffer

        infos = {key: np.stack([step[key] for step in current["infos"]]) for key in current["infos"][0]}
        self.episodes.append(
            EpisodeBuffer(
                id=len(self.episodes),
                seed=current["seed"],
                observations=np.stack(current["observations"]),
                actions=np.stack(current["actions"]),
                rewards=current["rewards"],
                terminations=current["terminations"],
                truncations=current["truncations"],
                infos=infos,
            )
        )

    def buffers(self) -> list[Any]:
        """Every finished episode (the one in progress is closed first)."""
        self._close_episode()
        return self.episodes


def _step_info(info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The info keys an env gives at reset and every step, as arrays, "/" written "."."""
    return {key.replace("/", "."): np.asarray(value) for key, value in info.items() if not key.startswith("agent/")}


def record(
    agent: str | Agent,
    dataset_id: str,
    task: str = "classic5",
    episodes: int = 10,
    seed: int = 0,
    env_options: Mapping[str, Any] | None = None,
    agent_options: Mapping[str, Any] | None = None,
    deterministic: bool = True,
    description: str | None = None,
    on_decision: Callable[[], None] | None = None,
    trusted: bool = False,
) -> Any:
    """Run `agent` on `task` for `episodes` runs and write them as Minari dataset `dataset_id`.

    Args:
        agent: a registered agent name (made fresh on the env, with `agent_options`) or the path
            of a saved policy (``mixgym train``'s ``.zip``; a file from elsewhere needs `trusted`
            to be unpickled, see `mixgym.agents.load_agent`).
        dataset_id: Minari's ``(namespace/)(env_name/)name-vN``, e.g. ``"mixgym/classic5/odm-v0"``.
        task: a task name (`mixgym.tasks`): its registered id is the dataset's env spec.
        episodes: runs to record (seeds ``seed``, ``seed + 1``, ...).
        env_options: `MixingEnv` and backend options over the task's (``total_steps``, ...).
        deterministic: act deterministically (SB3 policies; mixers are deterministic anyway);
            ``False`` records an SB3 policy's exploration.
        description: the dataset's description (default: one line naming agent, task, seeds).
        on_decision: called after every decision (progress bars).

    Returns:
        The `minari.MinariDataset` written.
    """
    minari = _minari()
    options = dict(env_options or {})
    preset = get_task(task)
    if isinstance(agent, str) and agent.endswith(".zip"):
        meta = read_metadata(agent)[1]
        name, kwargs = meta["agent"], env_kwargs(meta["agent"], options, action_map=meta["env"]["action_map"])
    elif isinstance(agent, str):
        agent_spec(agent)
        name, kwargs = agent, env_kwargs(agent, options)
    else:
        name = getattr(agent, "name", type(agent).__name__)
        kwargs = options
    recorder = TrajectoryRecorder(gym.make(preset.env_id, **kwargs))
    if isinstance(agent, str):
        actor = load_agent(agent, recorder, trusted=trusted) if agent.endswith(".zip") else make_agent(
            agent, recorder, **dict(agent_options or {})
        )
    else:
        actor = agent
    evaluate(actor, recorder, episodes=episodes, seed=seed, deterministic=deterministic, on_decision=on_decision)
    seeds = list(range(seed, seed + episodes))
    import mixgym

    with warnings.catch_warnings():  # Minari asks for a code link and an e-mail: mixgym has neither to give
        warnings.filterwarnings("ignore", message=r"`(code_permalink|author_email)` is set to None")
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            recorder.buffers(),
            env=recorder.env,
            eval_env=recorder.env.spec,
            algorithm_name=name,
            author="mixgym",
            description=description or f"mixgym: agent {name} on task {task}, {episodes} runs, seeds {seeds[0]}..{seeds[-1]}",
            requirements=[f"mixgym=={mixgym.__version__}"],
        )
    dataset.storage.update_metadata(
        {
            "mixgym": {
                "task": task,
                "env_id": preset.env_id,
                "agent": name,
                "agent_options": dict(agent_options or {}),
                "env_options": {key: value for key, value in kwargs.items() if _is_json(value)},
                "seeds": seeds,
                "deterministic": deterministic,
                "domains": list(recorder.unwrapped.domains),
                "mixgym_version": mixgym.__version__,
            }
        }
    )
    return minari.load_dataset(dataset_id)


def _is_json(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, tuple, dict))


def record_command(args: argparse.Namespace) -> int:
    """``mixgym record AGENT --task T --episodes N --out NAME``."""
    from rich.console import Console

    from mixgym.cli import _progress

    console = Console()
    options = dict(args.env)
    with _progress(console) as progress:
        bar = progress.add_task(f"record {args.agent}", total=None) if args.progress else None
        tick = (lambda: progress.advance(bar)) if bar is not None else None
        dataset = record(
            args.agent,
            args.out,
            task=args.task,
            episodes=args.episodes,
            seed=args.seed,
            env_options=options,
            agent_options=dict(args.option),
            deterministic=not args.explore,
            on_decision=tick,
            trusted=args.trust,
        )
    console.print(
        f"{args.out}: {dataset.total_episodes} episodes, {dataset.total_steps} decisions of {args.agent} on "
        f"{args.task}; minari.load_dataset({args.out!r}) reads it (under {dataset.storage.data_path.parent.parent})"
    )
    return 0


def add_record_cli(commands: Any) -> None:
    """Add ``mixgym record`` (`mixgym.cli.EXTENSIONS`)."""
    from mixgym.cli import SEED, _add_env_and_options, int_at_least
    from mixgym.tasks import TASK_PRESETS

    p = commands.add_parser(
        "record",
        help="record an agent's runs as a Minari offline-RL dataset",
        description=(
            "Run AGENT (a registered name or a saved policy .zip) on a task for --episodes runs (seeds SEED, "
            "SEED+1, ...) and write them as Minari dataset --out (namespace/name-vN) under MINARI_DATASETS_PATH "
            "(default ~/.minari/datasets): observations, actions, rewards, terminations, truncations and infos "
            '(mixtures, per-domain losses), with the task, seeds and mixgym version in its metadata. pip install "mixgym[minari]".'
        ),
    )
    p.add_argument("agent", help="agent name (mixgym agents) or a saved policy .zip")
    p.add_argument("--task", default="classic5", choices=sorted(TASK_PRESETS), help="task (default classic5)")
    p.add_argument("--episodes", type=int_at_least(1), default=10, help="runs to record (default 10)")
    p.add_argument("--out", required=True, metavar="NAME", help="Minari dataset id, e.g. mixgym/classic5/odm-v0")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the first run (default 0)")
    p.add_argument("--explore", action="store_true", help="an SB3 policy acts stochastically (default deterministic)")
    p.add_argument("--trust", action="store_true", help="the policy file is trusted (see mixgym eval --trust)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_env_and_options(p)
    p.set_defaults(func=record_command)
