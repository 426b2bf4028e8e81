"""Phases of a run whose domain set changes: continual pretraining, midtraining, new data arriving.

``MixingEnv(phases=[(300, ["easy", "hard"]), (700, ["easy", "hard", "noise", "conflict"])])``:
the run's optimizer-step budget is cut into consecutive phases, each with the domains that
exist in it (OP-Mix's continual setting, where "each stage adds one domain": michahu/on-policy-mix
`pipeline/continual_opm_standalone.py:161-182`). K stays the corpus' full domain count, so
actions, mixtures and observations keep their shape (a stable-baselines3 policy is built once);
a domain outside the current phase is masked out of the mixture (`mask_mixture`) and the
observation carries an availability mask.

A phase is a pair ``(steps, domains)`` or a mapping ``{"steps": ..., "domains": [...]}``. The
phases' steps must add up to the run's budget; every domain must be one of the backend's, each
phase non-empty and without repeats. A decision never straddles two phases: the last decision
of a phase trains only up to its end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixgym.validation import integer


@dataclass(frozen=True)
class Phase:
    """One phase of a run.

    Attributes:
        start: optimizer step at which it starts.
        steps: its optimizer steps.
        domains: the domains available in it, in the backend's order.
        available: (K,) bool, True for an available domain.
    """

    start: int
    steps: int
    domains: tuple[str, ...]
    available: np.ndarray

    @property
    def end(self) -> int:
        return self.start + self.steps


def parse_phases(raw: Any, domains: Sequence[str], total_steps: int) -> tuple[Phase, ...]:
    """Validate `raw` (module docstring) against the backend's `domains` and budget."""
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence) or len(raw) == 0:
        raise ValueError(f"phases must be a non-empty list of (steps, domains) pairs, got {raw!r}")
    phases, start = [], 0
    for i, entry in enumerate(raw):
        if isinstance(entry, Mapping):
            unknown = sorted(set(entry) - {"steps", "domains"})
            if unknown or "steps" not in entry or "domains" not in entry:
                raise ValueError(f"phases[{i}] must have exactly the keys 'steps' and 'domains', got {dict(entry)!r}")
            steps, names = entry["steps"], entry["domains"]
        elif isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)) and len(entry) == 2:
            steps, names = entry
        else:
            raise ValueError(f"phases[{i}] must be a (steps, domains) pair or a mapping, got {entry!r}")
        integer(f"phases[{i}] steps", steps, 1)
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or len(names) == 0:
            raise ValueError(f"phases[{i}] domains must be a non-empty list of domain names, got {names!r}")
        unknown = [n for n in names if n not in domains]
        if unknown:
            raise ValueError(f"phases[{i}]: unknown domain(s) {unknown}; the backend's domains are {list(domains)}")
        if len(set(names)) != len(names):
            raise ValueError(f"phases[{i}]: a domain is listed twice in {list(names)}")
        available = np.array([d in names for d in domains])
        phases.append(Phase(start, int(steps), tuple(d for d in domains if d in names), available))
        start += int(steps)
    if start != total_steps:
        counts = [p.steps for p in phases]
        raise ValueError(f"the phases' steps {counts} add up to {start}, but the run's budget is total_steps={total_steps}")
    return tuple(phases)


def phase_index(phases: Sequence[Phase], step: int) -> int:
    """The phase the next optimizer step after `step` steps belongs to (the last at the end)."""
    for i, phase in enumerate(phases):
        if step < phase.end:
            return i
    return len(phases) - 1


def mask_mixture(mixture: np.ndarray, phase: Phase) -> np.ndarray:
    """`mixture` with the domains outside `phase` set to 0 and the rest renormalised.

    An agent's mixture with no weight on any available domain is an error naming them (under
    the "softmax" and "normalize" action maps every domain keeps a floor, so only a "simplex"
    action can do that).
    """
    masked = np.where(phase.available, mixture, 0.0)
    total = masked.sum()
    if not total > 0:
        raise ValueError(
            f"mixture {np.round(mixture, 6).tolist()} puts no weight on the domains of the current phase "
            f"{list(phase.domains)} (steps {phase.start}-{phase.end})"
        )
    return masked / total
