"""Backends: training runs that `MixingEnv` drives one mixture at a time.

`make_backend("toy", ...)` builds the fast synthetic `ToyBackend`; `make_backend("hf", ...)`
builds `HFBackend` (a `transformers` causal LM), importing torch only then.
"""

from __future__ import annotations

from typing import Any

from mixgym.llm_backend.base import (
    Backend,
    BackendInfo,
    Signal,
    TrainStats,
    UnexpectedOptionError,
    WeightStats,
    check_options,
    require_signals,
)
from mixgym.llm_backend.toy import ToyBackend, ToyConfig

BACKENDS = ("toy", "hf")


def backend_options(name: str) -> tuple[str, ...]:
    """The keyword options `make_backend(name, ...)` accepts (its config's fields)."""
    if name == "toy":
        return tuple(ToyConfig.__dataclass_fields__)
    if name == "hf":
        from mixgym.llm_backend.hf import HFConfig  # numpy only: torch loads when a backend is built

        return tuple(HFConfig.__dataclass_fields__)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build a backend by name; `kwargs` are its options (e.g. `num_domains` for the toy).

    Inside a distributed session (`mixgym.llm_backend.distributed`, e.g. under torchrun),
    "hf" is the run spread over the session's processes (`distributed.hf_backend`)."""
    from mixgym.llm_backend import distributed  # imports no torch until a session starts

    in_session = distributed.current_session() is not None
    if in_session and name != "hf":
        raise ValueError(f"only the hf backend runs on several processes, not {name!r}")
    if name == "toy":
        return ToyBackend(**kwargs)
    if name == "hf":
        if in_session:
            return distributed.hf_backend(**kwargs)
        from mixgym.llm_backend.hf import HFBackend  # torch and transformers load only here

        return HFBackend(**kwargs)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendInfo",
    "Signal",
    "ToyBackend",
    "ToyConfig",
    "TrainStats",
    "UnexpectedOptionError",
    "WeightStats",
    "backend_options",
    "check_options",
    "make_backend",
    "require_signals",
]
