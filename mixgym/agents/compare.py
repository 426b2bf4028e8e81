"""Compare agents on one target run: the table and figure of ``mixgym demo`` and the benchmark.

Each `Contender` meets the target environment in one of three modes:

- ``"act"``: made on the target env and evaluated as it is (static mixtures; bandits and
  DoReMi, which adapt online within each run);
- ``"proxy"``: learns for ``train_decisions`` decisions (many runs) on the *proxy* env -- the
  same domains, a smaller model -- and then acts deterministically on the target env;
- ``"online"``: non-proxy, a fresh agent per seed learns during the one target run it drives.

Every contender runs on the same target seeds. The references always run too (`REFERENCES`):
the natural and uniform mixtures and the oracle (the toy's best static mixture,
`mixgym.llm_backend.oracle.oracle_mixture`; pass it in `contenders` with options to search
differently). The oracle's objective on those seeds -- the same backend runs
`schedule_objective` would train, since a static mixture trained 10 steps at a time equals
one trained in one go -- is the yardstick of regret; natural's and uniform's final
objectives are the targets of "decisions to reach" (the papers measure against natural,
which on a skewed corpus is far from uniform).

`Comparison.summary` has, per contender: final objective (mean and sd over seeds), regret
vs the oracle (absolute and relative; only where the oracle beats uniform beyond noise, the
90% CI of their per-seed difference excluding 0, else NaN and the table says "oracle not
separable from uniform"), the RL agents' gradient updates (a row of 0 is marked
"untrained"), for natural and for uniform the first decision at
which the mean objective curve reaches that baseline's final objective and how many fewer
that is than the baseline needs, and wall time (learning plus evaluation).
`Comparison.plot` draws the mean mixture each contender trained on over the run (the
realised one, stacked areas) and the held-out loss curves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from stable_baselines3.common.callbacks import BaseCallback

from mixgym.agents.base import agent_spec, make_agent
from mixgym.agents.runner import Results, evaluate, learn_online
from mixgym.envs.mixing_env import MixingEnv

MODES = ("act", "proxy", "online")
REFERENCES = ("natural", "uniform", "oracle")
"""Agents every comparison runs; "decisions to reach" is measured against the first two."""
_ENV_LEVEL = ("reward", "observation")
"""`AgentSpec.env_options` keys that are `MixingEnv`'s own, applied whatever the backend."""


@dataclass(frozen=True)
class Contender:
    """One agent in a comparison.

    Attributes:
        agent: registered agent name.
        mode: "act", "proxy" or "online" (see the module docstring).
        overrides: the agent's options.
        reward: the env reward it learns from; None is the paper's (`AgentSpec.env_options`)
            or, for agents without one, the env's default. Acting does not depend on it.
        label: its name in tables (default: the agent name, plus the reward when given).
    """

    agent: str
    mode: str = "act"
    overrides: dict[str, Any] = field(default_factory=dict)
    reward: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        agent_spec(self.agent)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return f"{self.agent} ({self.reward})" if self.reward else self.agent

    def env(self, options: dict[str, Any]) -> MixingEnv:
        """The env this contender drives, built from backend/env `options`."""
        return env_for(self.agent, options, reward=self.reward)


def env_for(agent: str, options: dict[str, Any], reward: str | None = None, action_map: str | None = None) -> MixingEnv:
    """A `MixingEnv` for `agent` from env/backend `options`.

    Unless given (as arguments or in `options`): the agent's first action map ("simplex"
    for mixers, "softmax" for SB3 presets) and its set-up (`AgentSpec.env_options`): the
    reward it learns from, for acodm, acodm-frozen-actor and hds the papers' state (observation
    layout "v0") and forced per-domain micro-batches (``forced_fraction`` 22/144), for the
    tuned presets the advantage reward. Backend options apply only to a backend built here by
    name; a `Backend` instance in `options` is used as it is (give it ``forced_fraction``
    yourself).
    """
    return MixingEnv(**env_kwargs(agent, options, reward, action_map))


def env_kwargs(
    agent: str, options: dict[str, Any], reward: str | None = None, action_map: str | None = None
) -> dict[str, Any]:
    """The `MixingEnv` keyword arguments `env_for` builds with (for ``gymnasium.make(id, **kwargs)``)."""
    spec = agent_spec(agent)
    kwargs = {"action_map": action_map or spec.action_maps[0], **options}
    built_here = isinstance(kwargs.get("backend", "toy"), str)
    for key, value in spec.env_options.items():
        if key in _ENV_LEVEL or built_here:
            kwargs.setdefault(key, value)
    if reward is not None:
        kwargs["reward"] = reward
    return kwargs


@dataclass
class Comparison:
    """Results of every contender on the same target seeds (see the module docstring)."""

    results: dict[str, Results]
    modes: dict[str, str]
    seconds: dict[str, float]
    updates: dict[str, int] = field(default_factory=dict)
    """Gradient-update rounds of each RL contender's learning (absent: not an RL agent)."""

    def oracle_separable(self, oracle: str = "oracle", reference: str = "uniform") -> bool:
        """Whether the oracle beats `reference` beyond noise: the 90% CI of their per-seed
        difference on the target seeds (the same seeds: common random numbers) excludes 0."""
        from mixgym.llm_backend.oracle import mean_ci

        if oracle not in self.results or reference not in self.results:
            return False
        ours, theirs = self.results[oracle].final_objectives(), self.results[reference].final_objectives()
        if len(ours) < 2 or len(ours) != len(theirs):
            return False
        gap, half = mean_ci(np.asarray(theirs) - np.asarray(ours))
        return gap - half > 0

    def summary(self, oracle: str = "oracle", baselines: tuple[str, ...] = REFERENCES[:2]) -> pd.DataFrame:
        """One row per contender; see the module docstring for the columns. Regret is NaN
        unless the oracle is separable from uniform (`oracle_separable`)."""
        best = float(self.results[oracle].final_objectives().mean()) if self.oracle_separable(oracle) else np.nan
        targets = {b: float(self.results[b].final_objectives().mean()) for b in baselines}
        needed = {b: self.results[b].decisions_to_reach(targets[b]) for b in baselines}
        rows = []
        for name, results in self.results.items():
            finals = results.final_objectives()
            row = {
                "agent": name,
                "mode": self.modes[name],
                "final_objective": float(finals.mean()),
                "final_sd": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                "regret": float(finals.mean()) - best,
                "regret_pct": 100.0 * (float(finals.mean()) - best) / best,
                "updates": self.updates.get(name, np.nan),
            }
            for baseline in baselines:
                reached = results.decisions_to_reach(targets[baseline])
                row[f"decisions_to_{baseline}"] = reached
                row[f"pct_fewer_than_{baseline}"] = (
                    100.0 * (needed[baseline] - reached) / needed[baseline]
                    if reached is not None and needed[baseline]
                    else np.nan
                )
            rows.append({**row, "wall_s": self.seconds[name]})
        return pd.DataFrame(rows)

    def plot(self, path: str | Path, dpi: int = 110) -> Path:
        """Stacked-area trajectories of the mixture trained on (the realised one: shares of the
        samples) per contender and held-out loss curves, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.results)
        columns = 4
        rows = -(-len(names) // columns)
        fig = plt.figure(figsize=(4.2 * columns, 3.0 * rows + 4.0))
        grid = fig.add_gridspec(rows + 1, columns, height_ratios=[1.0] * rows + [1.4])
        domains = self.results[names[0]].domains
        colours = plt.get_cmap("tab10")(np.arange(len(domains)) % 10)
        for i, name in enumerate(names):
            ax = fig.add_subplot(grid[i // columns, i % columns])
            mixture = self.results[name].mixture_curve("realised_mixture")
            ax.stackplot(mixture.index, mixture.to_numpy().T, labels=domains, colors=colours)
            ax.set(title=name, xlim=(mixture.index[0], mixture.index[-1]), ylim=(0, 1))
            ax.set(xlabel="decision", ylabel="trained on (realised)")
            if i == 0:
                ax.legend(loc="upper left", fontsize=7, ncol=2)
        curves = fig.add_subplot(grid[rows, :])
        for name in names:
            curve = self.results[name].objective_curve()
            curves.plot(curve.index, curve.to_numpy(), label=name, lw=2.4 if name in ("oracle", "uniform") else 1.1)
        curves.set(title="held-out loss (objective), mean over seeds", xlabel="decision", yscale="log")
        curves.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
        plt.close(fig)
        return out


class _Tick(BaseCallback):
    """Calls `tick` after every decision of a ``learn`` (progress bars)."""

    def __init__(self, tick: Callable[[], None]) -> None:
        super().__init__()
        self.tick = tick

    def _on_step(self) -> bool:
        self.tick()
        return True


ProgressHook = Callable[[str, int], Callable[[], None]]
"""``hook(label, total_decisions) -> tick``: opens a progress bar, returns its advance."""


def compare(
    contenders: Sequence[Contender],
    target: dict[str, Any],
    proxy: dict[str, Any],
    seeds: int = 5,
    first_seed: int = 100,
    train_decisions: int = 3000,
    save_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
) -> Comparison:
    """Run every contender (plus the `REFERENCES` not among them) on `seeds` target runs.

    Args:
        contenders: the agents and how they meet the target.
        target: env and backend options of the target (e.g. ``{"hidden_dim": 32}``).
        proxy: those of the proxy env that "proxy" contenders learn on.
        seeds: number of target runs, seeded ``first_seed``, ``first_seed + 1``, ...
        train_decisions: decisions each "proxy" contender learns for.
        save_dir: if given, each contender's `Results` (and learned policy) go to
            ``save_dir/<label>/``.
        progress: progress-bar hook (see `ProgressHook`).
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    given = {c.agent for c in contenders}
    everyone = [Contender(name) for name in REFERENCES if name not in given] + list(contenders)
    labels = [c.name for c in everyone]
    if len(set(labels)) != len(labels):
        raise ValueError(f"contender labels must be unique, got {labels}")
    comparison = Comparison({}, {}, {})
    for contender in everyone:
        env = contender.env(target)
        decisions = seeds * env.num_decisions + (train_decisions if contender.mode == "proxy" else 0)
        tick = progress(contender.name, decisions) if progress is not None else None
        start = time.perf_counter()
        folder = Path(save_dir) / contender.name.replace(" ", "_") if save_dir is not None else None
        if contender.mode == "online":
            run_seeds = list(range(first_seed, first_seed + seeds))
            results, agents = learn_online(contender.agent, env, run_seeds, on_decision=tick, **contender.overrides)
            if all(hasattr(a, "updates") for a in agents):
                comparison.updates[contender.name] = min(int(a.updates) for a in agents)
        else:
            if contender.mode == "proxy":
                agent = make_agent(contender.agent, contender.env(proxy), **contender.overrides)
                agent.learn(train_decisions, callback=_Tick(tick) if tick is not None else None)
                if hasattr(agent, "updates"):
                    comparison.updates[contender.name] = int(agent.updates)
                if folder is not None:
                    agent.save(folder / "policy.zip")
            else:
                agent = make_agent(contender.agent, env, **contender.overrides)
            results = evaluate(agent, env, episodes=seeds, seed=first_seed, on_decision=tick)
        results.config.update({"target": target, "proxy": proxy if contender.mode == "proxy" else None})
        comparison.results[contender.name] = results
        comparison.modes[contender.name] = contender.mode
        comparison.seconds[contender.name] = time.perf_counter() - start
        if folder is not None:
            results.save(folder)
    return comparison


HEADER = (
    "agent",
    "mode",
    "final held-out loss (mean ± sd)",
    "regret vs oracle",
    "decisions to natural's final loss",
    "decisions to uniform's final loss",
    "wall time (s)",
)


def _reached(row: pd.Series, baseline: str) -> str:
    decisions, pct = row[f"decisions_to_{baseline}"], row[f"pct_fewer_than_{baseline}"]
    text = "never" if pd.isna(decisions) else f"{int(decisions)}"
    if not pd.isna(pct) and row["agent"] != baseline:
        text += f" ({pct:.0f}% fewer)" if pct >= 0 else f" ({-pct:.0f}% more)"
    return text


def table_rows(summary: pd.DataFrame) -> list[tuple[str, ...]]:
    """The summary's rows as text, one cell per `HEADER` column."""
    return [
        (
            str(row["agent"]) + (" (0 updates: untrained)" if row.get("updates") == 0 else ""),
            str(row["mode"]),
            f"{row['final_objective']:.4f} ± {row['final_sd']:.4f}",
            "oracle not separable from uniform"
            if pd.isna(row["regret"])
            else f"{row['regret']:+.4f} ({row['regret_pct']:+.1f}%)",
            _reached(row, "natural"),
            _reached(row, "uniform"),
            f"{row['wall_s']:.1f}",
        )
        for _, row in summary.iterrows()
    ]


def markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summary)]
    return "\n".join(lines)
