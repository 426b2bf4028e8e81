"""Bring your own training loop: mixgym's agents steer the data mixture of a loop that is not ours.

- `MixtureDataset`: a torch ``IterableDataset`` over K domains that follows a changing mixture,
  with exact per-domain accounting, epochs, ``max_epochs`` and resume.
- `MixtureDriver`: any agent (`mixgym.agents`) chooses that mixture from what a plain loop
  reports (``driver.observe(step, losses, ...)``), through a real `MixingEnv`.
- `MixtureCallback`: the same for a Hugging Face ``Trainer`` (needs ``pip install "mixgym[hf]"``;
  imported on first use).
"""

from typing import Any

from mixgym.integrations.dataset import Accounting, MixtureDataset, collate
from mixgym.integrations.driver import ExternalBackend, MatrixNorms, MixtureDriver

__all__ = ["Accounting", "ExternalBackend", "MatrixNorms", "MixtureCallback", "MixtureDataset", "MixtureDriver", "collate"]


def __getattr__(name: str) -> Any:
    if name == "MixtureCallback":  # transformers is an optional dependency
        try:
            from mixgym.integrations.hf_trainer import MixtureCallback
        except ImportError as error:
            from gymnasium.error import DependencyNotInstalled

            raise DependencyNotInstalled(f'{error.name} is not installed; pip install "mixgym[hf]"') from error
        return MixtureCallback
    raise AttributeError(f"module 'mixgym.integrations' has no attribute {name!r}")
