"""The backend protocol: a pretraining run that can be driven one mixture at a time.

A backend knows nothing of reinforcement learning. `MixingEnv` asks it to train for some
optimizer steps on a given mixture, then reads what it reports (losses, per-domain
gradients, weight norms, the tokens it trained on) to build observations and rewards.

Not every backend can report everything: a backend lists what it provides in `signals`,
and a reward that needs a missing signal fails when the environment is constructed
(`require_signals`), not deep inside the first `step`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np


class Signal(str, enum.Enum):
    """An optional measurement (or, for `TWIN`, capability) a backend has besides losses."""

    GRADIENTS = "gradients"
    """`domain_gradients()`: one gradient per domain on the chosen parameters."""
    WEIGHT_NORMS = "weight_norms"
    """`weight_stats()`: norms of the chosen weight matrices and of their last update."""
    TOKENS = "tokens"
    """`TrainStats.token_ids`: the tokens trained on, for lexical-diversity rewards."""
    TWIN = "twin"
    """`twin()`: a second, independent backend of the same task and settings which, reset with
    the same seed, replays the same run -- the same initial model and the same random numbers
    (data order, sampling draws) -- on whatever mixture it is given: the baseline twin of a
    counterfactual reward (`mixgym.envs.rewards.AdvantageReward`)."""
    WHATIF = "whatif"
    """`simulate(probes, steps, candidates, method)`: held-out losses of hypothetical branches
    from the current state (probe mixtures and interpolations of their parameter deltas),
    leaving the run bit-identical (see `mixgym.llm_backend.whatif`)."""
    VALIDATION = "validation"
    """`evaluate(split="validation")`: per-domain loss on a *validation* split, rows disjoint from
    the held-out rows `evaluate()` reads (which score the run), and ``simulate(...,
    split="validation")`` scoring what-if branches on it. An agent that reads held-out losses to
    decide (OP-Mix's candidates, DoReMi's excess loss) reads this split, so that choosing a
    mixture never looks at the rows the choice is judged on. Toy: a third per-domain set drawn
    after every other draw of the task (today's tasks are unchanged); HF: the validation chunks
    after the ``eval_sequences`` that `evaluate()` reads."""
    RESTART = "restart"
    """`plan_restart(step)` and `restart_optimizer()`: the run becomes two runs back to back, as
    OP-Mix's code trains its prefix and its final stage as two Trainer jobs
    (michahu/on-policy-mix `pipeline/pretrain_opm.py:337-349, 787-801`): the learning-rate
    schedule of steps ``[0, step)`` is annealed over those steps (its warm-up the run's share of
    them), the schedule of ``[step, total_steps)`` starts at the peak with no warm-up and is
    annealed over the rest, and `restart_optimizer` (called at `step`) drops the optimizer's
    state (momentum; AdamW's moments and step counts). Both are cleared by `reset`."""


@dataclass(frozen=True)
class TrainStats:
    """What one `Backend.train` call did.

    Attributes:
        samples: per-domain number of sequences (examples) trained on, shape (K,).
        train_loss: per-domain mean training loss over those samples, shape (K,);
            NaN for a domain that got no sample in this call.
        tokens: tokens trained on in this call.
        wall_time: seconds spent in the call.
        learning_rate: learning rate at the last optimizer step of the call.
        token_ids: the token ids trained on in this call, shape (sequences, length), in
            training order, or None if the backend does not provide `Signal.TOKENS`.
        step_weight_norms: norms of the chosen matrices before the call's first optimizer
            step and after each of its steps, shape (n_steps + 1, L), or None if the backend
            does not provide `Signal.WEIGHT_NORMS`. HDS's stability term is computed per
            optimizer step from these (`mixgym.envs.rewards.stability_reward`).
    """

    samples: np.ndarray
    train_loss: np.ndarray
    tokens: int
    wall_time: float
    learning_rate: float
    token_ids: np.ndarray | None = None
    step_weight_norms: np.ndarray | None = None


@dataclass(frozen=True)
class WeightStats:
    """Norms of the chosen weight matrices (Frobenius), one entry per matrix.

    Attributes:
        names: the matrices' names, length L.
        norms: ||W_l|| now, shape (L,).
        update_norms: ||W_l(now) - W_l(before the last train call)||, shape (L,).
    """

    names: tuple[str, ...]
    norms: np.ndarray
    update_norms: np.ndarray


@dataclass(frozen=True)
class BackendInfo:
    """Static facts about a backend that agents and reports may use."""

    domain_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Training-set size per domain (examples or tokens), for "natural" mixtures."""
    tokens_per_sample: int = 1
    objective_weights: np.ndarray | None = None
    """Weights of the per-domain held-out losses in the run's objective; None is uniform."""
    domain_kinds: tuple[str, ...] | None = None
    """What each domain is (the toy's kinds; a corpus' "text", "noise", "duplicate"), so that
    objectives can leave out junk domains (`mixgym.envs.objectives.JUNK_KINDS`); None: unknown."""


@runtime_checkable
class Backend(Protocol):
    """A training run driven one mixture at a time (see DESIGN.md, "The backend protocol").

    Implementations: `mixgym.llm_backend.toy.ToyBackend` (milliseconds, known optimum) and
    `mixgym.llm_backend.hf.HFBackend` (any `transformers` causal LM).
    """

    domains: list[str]
    """The K domain names, in the order every per-domain array uses."""
    signals: frozenset[Signal]
    """The optional measurements this backend reports."""
    total_steps: int
    """Optimizer-step budget of one run."""

    @property
    def step(self) -> int:
        """Optimizer steps taken since the last `reset`."""
        ...

    @property
    def info(self) -> BackendInfo:
        """Static facts (domain sizes, tokens per sample)."""
        ...

    def reset(self, seed: int) -> None:
        """Start a fresh run: new model, optimizer, data order and RNG from `seed`."""
        ...

    def train(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        """Take `n_steps` optimizer steps on batches drawn from `mixture` (shape (K,))."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Held-out loss per domain on fixed evaluation batches (the rows that score the run).

        A backend with `Signal.VALIDATION` also takes ``split="validation"`` (default
        ``"eval"``, these rows): the loss on a disjoint validation split, for agents that decide
        on held-out losses."""
        ...

    def domain_gradients(self) -> np.ndarray:
        """Per-domain gradients on the chosen parameters, shape (K, D)."""
        ...

    def weight_stats(self) -> WeightStats:
        """Norms of the chosen weight matrices and of their change in the last `train`."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the run bit-exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by `state_dict`."""
        ...


SPLITS = ("eval", "validation")
"""`Backend.evaluate`'s splits: ``"eval"`` scores the run; ``"validation"`` (`Signal.VALIDATION`)
is for the agents' decisions."""


def check_split(split: str) -> str:
    """`split` if it is one of `SPLITS`, else a `ValueError` naming it."""
    if split not in SPLITS:
        raise ValueError(f"unknown held-out split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def require_signals(backend: Backend, needed: frozenset[Signal], user: str) -> None:
    """Raise if `backend` lacks a signal that `user` (e.g. a reward's name) needs."""
    missing = needed - backend.signals
    if missing:
        names = ", ".join(sorted(s.value for s in missing))
        have = ", ".join(sorted(s.value for s in backend.signals)) or "none"
        raise ValueError(
            f"{user} needs the backend signal(s) {names}, which "
            f"{type(backend).__name__} does not provide (it provides: {have})"
        )


def check_forced_fraction(value: float) -> None:
    """Refuse a `forced_fraction` outside [0, 1] (see `draw_domains`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"forced_fraction must be a number in [0, 1], got {value!r}")


def domains_of(mixture: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The domain each of `uniforms` (numbers in [0, 1), any shape) falls on under `mixture`:
    inverse-CDF sampling that never returns a domain of weight 0.

    The CDF's rounding error is absorbed by the last domain of positive weight (its entry and
    every later one are set to 1), not by the last domain: with a zero-weight last domain (one
    masked out by a phase) a uniform number just under 1 would otherwise land on it.
    """
    cdf = np.cumsum(mixture)
    cdf[np.flatnonzero(mixture > 0)[-1] :] = 1.0
    return np.searchsorted(cdf, uniforms, side="right").astype(np.int64)


def draw_domains(mixture: np.ndarray, count: int, forced_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The domains of `count` draws (micro-batches or examples) of one `train` call.

    ``round(forced_fraction * count)`` of them are spread evenly over the domains of positive
    weight -- all K, under the softmax and normalize action maps -- (each gets the same number;
    what does not divide evenly goes to distinct ones picked at random), the rest are drawn
    i.i.d. from `mixture`, and the two are shuffled together. A domain of weight 0 gets none:
    `MixingEnv`'s phases mask the domains outside a phase that way.
    AC-ODM and HDS force one micro-batch per domain per optimizer step -- 22 of the 144
    micro-batches of their 1B runs (DANG-ai/AC-ODM ``megatron/training.py:395-398``:
    ``domain_num`` = 1 round of all domains, ``acodm_config/ddpg_1B.yml:18``, then the rest
    drawn from the weights; 144 = 1152 sequences / micro-batches of 8,
    ``acodm_config/models/1B.yml:19-21``; HDS's ``megatron/training.py:387-391`` is the same)
    -- so that every domain has a loss and a gradient at every step. In expectation the call trains on ``(1 - f) * mixture + f * uniform`` (f the forced
    share, uniform over the domains of positive weight); with ``forced_fraction=0`` (the default
    of both backends) exactly on `mixture`.
    """
    forced_count = int(round(forced_fraction * count))
    drawn = domains_of(mixture, rng.random(count - forced_count))
    if forced_count == 0:
        return drawn.astype(np.int64)
    present = np.flatnonzero(mixture > 0)
    rounds, extra = divmod(forced_count, len(present))
    forced = np.concatenate([np.tile(present, rounds), rng.choice(present, extra, replace=False)])
    return rng.permutation(np.concatenate([forced, drawn])).astype(np.int64)


def validate_mixture(mixture: np.ndarray, num_domains: int) -> np.ndarray:
    """Return `mixture` as float64 after checking it is a probability vector over K domains.

    A backend is handed mixtures by the environment, which already validated actions; this
    guards direct users of a backend (notebooks, the oracle search).
    """
    m = np.asarray(mixture, dtype=np.float64)
    if m.shape != (num_domains,):
        raise ValueError(f"mixture must have shape ({num_domains},), got {m.shape}: {m!r}")
    if not np.isfinite(m).all() or m.min() < 0 or abs(m.sum() - 1.0) > 1e-6:  # methods: this runs every decision
        raise ValueError(f"mixture must be finite, non-negative and sum to 1, got {m!r}")
    return m


def normalised_mixture(values: Any, num_domains: int, what: str) -> np.ndarray:
    """`values` (K non-negative weights) divided by their sum; an error naming `what` otherwise."""
    try:
        m = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be {num_domains} numbers, got {values!r}") from None
    if m.shape != (num_domains,):
        raise ValueError(f"{what} must have {num_domains} entries (one per domain), got {values!r}")
    if not np.all(np.isfinite(m)) or np.any(m < 0) or not m.sum() > 0:
        raise ValueError(f"{what} must be finite, non-negative and have a positive sum, got {values!r}")
    return m / m.sum()


class UnexpectedOptionError(TypeError, ValueError):
    """An unknown keyword argument, worded as Python words its own.

    A `TypeError` saying ``got an unexpected keyword argument 'frameskip'``, as a Python
    function would, because RL clients probe optional keywords that way: TorchRL's
    ``GymEnv(env_id)`` passes ``frameskip=`` to ``gymnasium.make`` and retries without it
    only on that error. Unlike Python's, the message lists the known options. It is also a
    `ValueError`, which mixgym raised for unknown options before.
    """


def check_options(owner: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise `UnexpectedOptionError` if `given` holds a name that is not in `known`.

    >>> check_options("ToyBackend", ["frameskip"], ["total_steps"])
    Traceback (most recent call last):
    ...
    mixgym.llm_backend.base.UnexpectedOptionError: ToyBackend() got an unexpected keyword argument 'frameskip'; known options: total_steps
    """
    known = sorted(known)
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    more = f" (and {', '.join(repr(name) for name in unknown[1:])})" if len(unknown) > 1 else ""
    raise UnexpectedOptionError(
        f"{owner}() got an unexpected keyword argument {unknown[0]!r}{more}; known options: {', '.join(known)}"
    )
