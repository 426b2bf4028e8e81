"""Backends: training runs that `MixingEnv` drives one mixture at a time.

`make_backend("toy", ...)` builds the fast synthetic `ToyBackend`; `make_backend("hf", ...)`
builds `HFBackend` (a `transformers` causal LM), importing torch only then.
"""

from __future__ import annotations

from typing import Any

from mixgym.llm_backend.base import Backend, BackendInfo, Signal, TrainStats, WeightStats, require_signals
from mixgym.llm_backend.toy import ToyBackend, ToyConfig

BACKENDS = ("toy", "hf")
WHATIF_BACKENDS = ("toy (ToyBackend)", "hf (HFBackend)")
"""The backends that provide `Signal.WHATIF` (what-if simulation, `mixgym.llm_backend.whatif`)."""


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build a backend by name; `kwargs` are its options (e.g. `num_domains` for the toy)."""
    if name == "toy":
        return ToyBackend(**kwargs)
    if name == "hf":
        from mixgym.llm_backend.hf import HFBackend  # torch and transformers load only here

        return HFBackend(**kwargs)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "WHATIF_BACKENDS",
    "Backend",
    "BackendInfo",
    "Signal",
    "ToyBackend",
    "ToyConfig",
    "TrainStats",
    "WeightStats",
    "make_backend",
    "require_signals",
]
