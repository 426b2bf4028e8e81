"""Write the notebooks of this folder, outputs stripped: ``python notebooks/_build.py``.

The notebooks are this script's output: edit a cell here, rerun the script and commit both.
`tests/test_notebooks.py` executes every notebook with ``MIXGYM_NOTEBOOK_QUICK=1`` and checks
that each one matches this script.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    (
        "markdown",
        """
        # mixgym quickstart

        Data mixing as a Gymnasium environment: every few optimizer steps you (or an agent) choose the mixture over the data domains, the backend trains on it, and the environment reports what happened. This notebook uses the fast **toy backend** (a real multi-domain learning problem that runs in milliseconds).

        `QUICK` keeps the run small when the test suite executes this notebook; set it to `False` for longer runs.
        """,
    ),
    (
        "code",
        """
        import os
        QUICK = os.environ.get("MIXGYM_NOTEBOOK_QUICK", "0") == "1"
        TOTAL_STEPS = 300 if QUICK else 1000     # optimizer steps per run
        SAC_STEPS = 120 if QUICK else 1500       # SAC learning steps (decisions)
        EPISODES = 3 if QUICK else 10            # evaluation runs per agent

        import gymnasium as gym
        import matplotlib.pyplot as plt
        import numpy as np
        import mixgym  # registers mixgym/Mixing-v0
        """,
    ),
    ("markdown", "## Make the environment and step it by hand"),
    (
        "code",
        """
        env = gym.make("mixgym/Mixing-v0", backend="toy", reward="alignment", total_steps=TOTAL_STEPS)
        print(env.unwrapped.domains)
        print(env.observation_space, env.action_space)
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0, -1.0, 0.0, 0.0], dtype=np.float32))
        print("mixture:", info["mixture"].round(3))
        print("reward:", round(reward, 4), "components:", {k: v for k, v in info["rewards"].items() if np.isscalar(v)})
        print("held-out loss per domain:", info["eval_loss"].round(3))
        """,
    ),
    (
        "markdown",
        """
        ## One run under a hand-made schedule, then plot the mixture and the losses

        Early on favour the easy domain, later the hard ones; never the noise.
        """,
    ),
    (
        "code",
        """
        def run(policy, seed=0):
            obs, info = env.reset(seed=seed)
            mixtures, losses, steps = [], [], []
            terminated = False
            while not terminated:
                obs, reward, terminated, truncated, info = env.step(policy(obs))
                mixtures.append(info["mixture"]); losses.append(info["eval_loss"]); steps.append(info["step"])
            return np.array(steps), np.array(mixtures), np.array(losses), info["objective"]

        def schedule(obs):
            progress = obs[-1]
            return np.array([1 - 2 * progress, 2 * progress - 0.5, -1, 0.3, 0.2], dtype=np.float32).clip(-1, 1)

        steps, mixtures, losses, objective = run(schedule)
        domains = env.unwrapped.domains
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
        left.stackplot(steps, mixtures.T, labels=domains); left.set(xlabel="optimizer step", ylabel="mixture", title="mixture")
        left.legend(loc="upper left", fontsize=7)
        right.plot(steps, losses, label=domains); right.set(xlabel="optimizer step", ylabel="held-out loss", title=f"objective {objective:.4f}")
        plt.tight_layout(); plt.show()
        """,
    ),
    (
        "markdown",
        """
        ## Train a stock SB3 SAC on it

        Every run is one episode of `TOTAL_STEPS / 10` decisions, so SAC learns over several runs. Its networks are small: one torch thread is as fast as several, and much faster than several on a busy machine.
        """,
    ),
    (
        "code",
        """
        import torch
        from stable_baselines3 import SAC

        torch.set_num_threads(1)
        model = SAC("MlpPolicy", env, learning_starts=50, seed=0, device="cpu")
        model.learn(total_timesteps=SAC_STEPS)
        print(f"SAC learned from {SAC_STEPS} decisions, {SAC_STEPS / env.unwrapped.num_decisions:.0f} runs")
        """,
    ),
    (
        "markdown",
        """
        ## Compare SAC with EXP3 and uniform

        `mixgym.agents` makes the other agents and runs any of them: `evaluate(agent, env, episodes, seed)` plays `episodes` runs seeded `seed`, `seed + 1`, ... and returns `Results`, one row per decision (mixture, rewards, per-domain losses, objective). SAC acts deterministically with what it learned, on seeds it never trained on. EXP3 (ODM's bandit) needs no training: it adapts within each run from the per-domain training losses. Bandits and static mixtures give the mixture itself, so they drive the environment with `action_map="simplex"`: the same backend, so a seed trains the same model on the same data whoever chooses the mixture.

        The **oracle** is the toy's best static mixture, found by search (it is known only for the toy); *regret* is an agent's final held-out loss minus the oracle's.
        """,
    ),
    (
        "code",
        """
        import pandas as pd
        from mixgym.agents import evaluate, make_agent

        simplex_env = gym.make(
            "mixgym/Mixing-v0", backend="toy", reward="alignment", total_steps=TOTAL_STEPS, action_map="simplex"
        )
        contenders = {
            "SAC": (model, env),
            "EXP3": (make_agent("exp3", simplex_env), simplex_env),
            "uniform": (make_agent("uniform", simplex_env), simplex_env),
            "oracle": (make_agent("oracle", simplex_env), simplex_env),
        }
        results = {name: evaluate(agent, on, episodes=EPISODES, seed=100) for name, (agent, on) in contenders.items()}

        best = results["oracle"].final_objectives().mean()
        pd.DataFrame(
            {
                name: {
                    "final held-out loss": r.final_objectives().mean(),
                    "sd over runs": r.final_objectives().std(ddof=1),
                    "regret vs oracle": r.final_objectives().mean() - best,
                }
                for name, r in results.items()
            }
        ).T.round(4)
        """,
    ),
    (
        "code",
        """
        fig, axes = plt.subplots(1, len(results) + 1, figsize=(3.4 * (len(results) + 1), 3.2))
        for name, r in results.items():
            curve = r.objective_curve()
            axes[0].plot(curve.index, curve.to_numpy(), label=name)
        axes[0].set(xlabel="decision", ylabel=f"held-out loss, mean of {EPISODES} runs", title="objective")
        axes[0].legend(fontsize=8)
        for ax, (name, r) in zip(axes[1:], results.items()):
            mixture = r.mixture_curve()
            ax.stackplot(mixture.index, mixture.to_numpy().T, labels=domains)
            ax.set(xlabel="decision", ylim=(0, 1), title=f"{name}: mixture")
        axes[1].legend(loc="upper left", fontsize=7)
        plt.tight_layout(); plt.show()
        """,
    ),
    (
        "markdown",
        """
        Do not expect either learner to beat uniform here. SAC has learned from 4 runs (15 with `QUICK = False`), far fewer than an RL policy needs, and acts on seeds it has not seen. EXP3's reward is a domain's training loss, so it drifts towards the noise domain, whose loss stays high whatever it is fed. The oracle shows what there is to gain: it gives the noise domain nothing. `mixgym demo` runs the full comparison (more agents, regret, decisions to reach uniform's final loss), and `benchmarks/` keeps the recorded results.
        """,
    ),
]

NOTEBOOKS = {"quickstart.ipynb": QUICKSTART}


def notebook(cells: list[tuple[str, str]], stem: str) -> nbformat.NotebookNode:
    """A notebook of `cells` (kind, source), without outputs, with ids that depend only on the order."""
    made = []
    for index, (kind, source) in enumerate(cells):
        text = textwrap.dedent(source).strip("\n")
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"{stem}-{index:02d}"
        made.append(cell)
    book = nbformat.v4.new_notebook(cells=made)
    book.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return book


def build() -> dict[str, nbformat.NotebookNode]:
    """Every notebook of this folder, by file name."""
    return {name: notebook(cells, Path(name).stem.replace("_", "-")) for name, cells in NOTEBOOKS.items()}


if __name__ == "__main__":
    for name, book in build().items():
        nbformat.validate(book)
        nbformat.write(book, HERE / name)
        print(f"wrote {HERE / name}")
