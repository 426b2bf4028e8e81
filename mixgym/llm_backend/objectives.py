"""What a pretraining run is scored on: objectives over the per-domain held-out losses.

The data-mixing papers score a run by one number made of the K per-domain validation losses,
and which number decides who wins. ODM, DoReMi, AC-ODM and HDS report the *unweighted* mean
of per-domain perplexity over The Pile's 22 domains, which rewards the small domains; a
validation set drawn like the training data (the natural mixture) rewards the large ones.

============== ==========================================================================
name           value (lower is better)
============== ==========================================================================
domain-mean    unweighted mean of the scored domains' held-out losses (the papers')
natural        mean weighted by the domains' sizes: validation on the natural mixture
worst-domain   the largest held-out loss of a scored domain
K weights      ``weights @ losses / sum(weights)`` for explicit non-negative weights
============== ==========================================================================

Scored domains are those whose kind (`BackendInfo.domain_kinds`) is not junk injected into
the training pool (`JUNK_KINDS`: a "noise" domain of pure noise, a "duplicate" domain of a few
repeated documents): what the model should learn, not the junk it is fed. Explicit weights
score exactly the domains they weigh.

>>> import numpy as np
>>> from mixgym.llm_backend.base import BackendInfo, normalised_mixture
>>> info = BackendInfo(domain_sizes=np.array([6.0, 3.0, 1.0]), domain_kinds=("text", "text", "noise"))
>>> losses = np.array([1.0, 2.0, 5.0])
>>> [make_objective(name, info)(losses) for name in OBJECTIVES]
[1.5, 1.3333333333333333, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixgym.llm_backend.base import BackendInfo, normalised_mixture

OBJECTIVES = ("domain-mean", "natural", "worst-domain")
"""Objectives by name (explicit weights are the fourth kind)."""
JUNK_KINDS = frozenset({"noise", "duplicate", "contradict", "primer"})
"""Domain kinds that no named objective scores (the toy's "contradict" and "primer" are training
sources that undo or stand in for another domain, `mixgym.llm_backend.toy`)."""

ObjectiveSpec = str | Sequence[float]
"""A name from `OBJECTIVES` or K non-negative weights with a positive sum."""


@dataclass(frozen=True)
class Objective:
    """A validated objective over K per-domain held-out losses.

    Attributes:
        name: its name in `OBJECTIVES`, or ``"weights"``.
        weights: (K,) normalised weights of a mean; for "worst-domain" the scored domains'
            mask, normalised (what the maximum is taken over).
        worst: take the maximum over the weighted domains instead of the weighted mean.
    """

    name: str
    weights: np.ndarray
    worst: bool = False

    def __call__(self, losses: np.ndarray) -> Any:
        """The objective of (K,) losses (a float), or of each row of (N, K) losses (an array)."""
        losses = np.asarray(losses, dtype=np.float64)
        values = losses[..., self.weights > 0].max(axis=-1) if self.worst else losses @ self.weights
        return float(values) if values.ndim == 0 else values


def scored_domains(info: BackendInfo, num_domains: int) -> np.ndarray:
    """(K,) bool: the domains that named objectives score (not of a `JUNK_KINDS` kind)."""
    kinds = info.domain_kinds or ("",) * num_domains
    mask = np.array([kind not in JUNK_KINDS for kind in kinds], dtype=bool)
    return mask if mask.any() else np.ones(num_domains, dtype=bool)


def make_objective(spec: ObjectiveSpec | None, info: BackendInfo, num_domains: int | None = None) -> Objective:
    """The objective `spec` names for a backend described by `info`.

    None is the backend's own: its ``objective_weights`` when it has them (a ``target_weights``
    option), else "domain-mean".

    Raises:
        ValueError: an unknown name (listing the known ones); weights that are not K finite
            non-negative numbers with a positive sum; "natural" on a backend with no sizes.
    """
    k = num_domains if num_domains is not None else len(info.domain_sizes)
    if spec is None:
        if info.objective_weights is None:
            return make_objective("domain-mean", info, k)
        spec = list(info.objective_weights)
    scored = scored_domains(info, k)
    if isinstance(spec, str):
        if spec == "domain-mean":
            return Objective(spec, scored / scored.sum())
        if spec == "worst-domain":
            return Objective(spec, scored / scored.sum(), worst=True)
        if spec == "natural":
            sizes = np.asarray(info.domain_sizes, dtype=np.float64)
            if sizes.shape != (k,) or not (sizes * scored).sum() > 0:
                raise ValueError("objective 'natural' needs the backend's domain sizes, and this backend reports none")
            weights = sizes * scored
            return Objective(spec, weights / weights.sum())
        raise ValueError(f"unknown objective {spec!r}; choose one of {', '.join(OBJECTIVES)} or give {k} weights")
    return Objective("weights", normalised_mixture(spec, k, "objective weights"))


def all_objectives(info: BackendInfo, num_domains: int) -> dict[str, Objective]:
    """Every named objective that applies to the backend ("natural" needs its sizes): what a
    benchmark reports for every run."""
    objectives = {}
    for name in OBJECTIVES:
        try:
            objectives[name] = make_objective(name, info, num_domains)
        except ValueError:
            continue
    return objectives
