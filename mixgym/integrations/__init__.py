"""Bring your own training loop: mixgym's agents steer the data mixture of a loop that is not ours."""

from mixgym.integrations.dataset import Accounting, MixtureDataset, collate
from mixgym.integrations.driver import ExternalBackend, MixtureDriver

__all__ = ["Accounting", "ExternalBackend", "MixtureDataset", "MixtureDriver", "collate"]
