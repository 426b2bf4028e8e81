"""Per-decision tables to experiment trackers: TensorBoard and Weights & Biases.

``mixgym train --tensorboard DIR`` logs through SB3's logger while it learns; `mixgym eval` and
`mixgym bench` write their per-decision tables (`mixgym.agents.runner.Results`, a bench cell's
``decisions.csv``) here afterwards, one tracker run per episode: every numeric column (objective,
reward, ``mixture/<domain>``, ``train_loss/<domain>``, ``eval_loss/<domain>``, the reward's
components, ...) as the scalar ``mixgym/<column>`` at step = the decision, the names the HF
``Trainer`` callback logs under.

Weights & Biases honours its own settings: ``WANDB_MODE=offline`` writes the runs under
``WANDB_DIR`` (default ``./wandb``) with no network, for ``wandb sync`` later.

>>> import tempfile, pandas as pd
>>> table = pd.DataFrame({"episode": [0, 0], "seed": [3, 3], "decision": [0, 1], "objective": [1.0, 0.9]})
>>> folder = tempfile.mkdtemp()
>>> [path.name for path in log_table(table, "uniform", tensorboard=folder)]
['seed3']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gymnasium.error import DependencyNotInstalled

_INDEX = ("episode", "seed", "decision")


def log_table(
    table: pd.DataFrame,
    run: str,
    tensorboard: str | Path | None = None,
    wandb_project: str | None = None,
    config: dict[str, Any] | None = None,
) -> list[Path]:
    """Log `table` (one row per decision, episodes stacked) as one tracker run per episode.

    Args:
        table: a per-decision table with ``episode``, ``seed`` and ``decision`` columns.
        run: the runs' name (an agent, a bench cell's label); TensorBoard folders are
            ``tensorboard/run/seed<seed>``.
        tensorboard: a TensorBoard log folder, or None.
        wandb_project: a Weights & Biases project, or None.
        config: the run's configuration, given to W&B.

    Returns:
        The TensorBoard run folders written.
    """
    if tensorboard is None and wandb_project is None:
        return []
    columns = [c for c in table.columns if c not in _INDEX and pd.api.types.is_numeric_dtype(table[c])]
    folders = []
    for (episode, seed), rows in table.groupby(["episode", "seed"], sort=True, dropna=False):
        name = f"seed{seed}" if pd.notna(seed) else f"episode{episode}"
        scalars = [(int(row["decision"]), {f"mixgym/{c}": float(row[c]) for c in columns if np.isfinite(row[c])}) for _, row in rows.iterrows()]
        if tensorboard is not None:
            folders.append(_tensorboard(Path(tensorboard) / run / name, scalars))
        if wandb_project is not None:
            _wandb(wandb_project, f"{run}/{name}", run, config or {}, scalars)
    return folders


def _tensorboard(folder: Path, scalars: list[tuple[int, dict[str, float]]]) -> Path:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise DependencyNotInstalled(f'TensorBoard logging needs tensorboard: pip install "mixgym[bench]" ({error})') from error
    folder.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(str(folder)) as writer:
        for step, values in scalars:
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
    return folder


def _wandb(project: str, name: str, group: str, config: dict[str, Any], scalars: list[tuple[int, dict[str, float]]]) -> None:
    try:
        import wandb
    except ImportError as error:
        raise DependencyNotInstalled('Weights & Biases logging needs wandb: pip install "mixgym[wandb]"') from error
    run = wandb.init(project=project, name=name, group=group, config=config, reinit="create_new")
    try:
        for step, values in scalars:
            run.log(values, step=step)
    finally:
        run.finish()
