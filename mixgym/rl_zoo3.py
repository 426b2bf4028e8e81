"""Hyperparameters for RL Zoo3 (``--conf-file mixgym.rl_zoo3``), one entry per registered id.

RL Zoo3 looks an environment's hyperparameters up by id in the file or module given to
``--conf-file`` (a module's ``hyperparams`` dict, used for whichever ``--algo``); without an
entry it refuses to train. These are the algorithms' stock settings with an MLP policy and a
budget of 100 toy runs (1,000 optimizer steps, 100 decisions each); tune them with RL Zoo3's
own ``--optimize``::

    python -m rl_zoo3.train --algo sac --env mixgym/Mixing-v1 --gym-packages mixgym --conf-file mixgym.rl_zoo3
    python -m rl_zoo3.enjoy --algo sac --env mixgym/Mixing-v1 --gym-packages mixgym --folder logs/
"""

from __future__ import annotations

from typing import Any

from mixgym.registration import ENV_PRESETS

hyperparams: dict[str, dict[str, Any]] = {env_id: {"policy": "MlpPolicy", "n_timesteps": 10_000} for env_id in ENV_PRESETS}
"""RL Zoo3's table: env id -> hyperparameters (any SB3 algorithm's keyword can be added)."""
