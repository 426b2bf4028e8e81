"""The what-if capability (`Signal.WHATIF`): "which held-out losses would these mixtures give?"

OP-Mix (Hu et al., "Always Learning, Always Mixing", arXiv 2605.15220; code michahu/on-policy-mix)
chooses a mixture by training short low-rank probes from the *current* model, one per data
mixture, and evaluating interpolations of their parameter deltas as stand-ins for the mixtures
in between. A backend that provides `Signal.WHATIF` answers exactly that question, and nothing
else: ::

    result = backend.simulate(probes, steps, candidates, method="merge", lr_scale=2.0, rank=None)

- ``probes`` (P, K): P data mixtures. Each is trained for ``steps`` optimizer steps from a copy
  of the current state, on data streams of its own (the main run's data order is untouched),
  with a fresh optimizer at ``lr_scale`` x the run's peak learning rate, without warm-up and
  decaying over its last fifth as OP-Mix's probes do (`probe_learning_rates`; OP-Mix: 2x,
  `pipeline/pretrain_opm.py:383,386`).
- ``candidates`` (C, P): interpolation weights over the probes, each row on the simplex.
  ``method="merge"``: candidate c is the current parameters plus ``sum_p w_cp * delta_p``, the
  probes' deltas (OP-Mix's "theta_0 + sum_c w_c dLoRA_c", `pipeline/pretrain.py:263-299` applied
  to the merged probes of `:229-260`). ``method="exact"``: candidate c is trained itself, as a
  branch like a probe, on the data mixture ``w_c @ probes``. Comparing the two measures how
  faithful the interpolation is.
- ``split``: which held-out rows score the branches: ``"eval"`` (default), the rows that score
  the run, or ``"validation"`` (`Signal.VALIDATION`), disjoint rows for an agent that chooses
  among the candidates, so that it never selects on the rows it is judged on.
- ``per_sequence``: draw each *sequence* of a probe's micro-batches from its mixture (OP-Mix's
  probes mix at the sequence level: one Trainer on one weighted, shuffled dataset, `train.py:
  118-128`, `src/data.py:65-130`) rather than each micro-batch from one domain (the main run's micro-batches). The HF
  backend honours it; the toy draws every example's domain from the mixture either way.
- ``rank``: the rank of the deltas. The toy trains full-parameter probes and truncates each
  matrix's delta to rank r by SVD for "merge" (None: no truncation), a stand-in for LoRA; the HF
  backend trains LoRA adapters of rank r (None: 16) with alpha 2r.

The answer, a `WhatIfResult`, holds the per-domain held-out loss of the current state, of each
probe and of each candidate, and the compute spent, in *main-step equivalents*: floating-point
operations divided by those of one optimizer step of the main run, counted with the usual
estimate of Kaplan et al. (2020): a forward pass costs 2 FLOPs per parameter per token, a
backward pass 2 more for the activations' gradients and 2 per *trainable* parameter for the
weights' (`training_flops`, `forward_flops`); attention's sequence-length term is left out.
The environment charges this to the run's compute budget (`MixingEnv(budget="compute")`).

Promises every backend keeps (tests check both backends):

- The main run comes back bit-identical: weights, optimizer, schedule, data positions and every
  random generator; a run with what-if calls between its decisions equals one without.
- The same request from the same state gives the same answer: probe streams are seeded from the
  run's seed and step (`probe_seed`), never from the main run's generators.
- Answers are cached (`WhatIfCache`) by a digest of the state and the request, in memory and,
  when the cache has a directory (a checkpointed experiment gives it one), on disk as
  ``<key>.whatif`` files, so a run resumed after a crash does not train its probes again. A file
  is written as checkpoints are (temporary file, fsync, rename, fsync of the folder) and sealed
  like them (`mixgym.checkpoint.seal`: a SHA-256 and this installation's signature around a
  pickle-free ``.npz``), so a truncated, altered or planted entry is never used: it is a cache
  miss with a warning (the answer is recomputed; the run is bit-identical to one without the
  file) or, with ``strict=True``, a `WhatIfCacheError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mixgym.checkpoint import CorruptCheckpoint, atomic_write_bytes, seal, unseal
from mixgym.llm_backend.base import check_split
from mixgym.trust import UntrustedFile
from mixgym.validation import integer, number

WHATIF_METHODS = ("merge", "exact")
"""``"merge"``: interpolate the probes' deltas; ``"exact"``: train each candidate's mixture."""

_SIMPLEX_TOLERANCE = 1e-6


@dataclass(frozen=True)
class WhatIfResult:
    """The answer to one what-if request.

    Attributes:
        base_loss: (K,) held-out loss per domain of the current state.
        probe_loss: (P, K) held-out loss per domain after each probe.
        candidate_loss: (C, K) held-out loss per domain of each candidate.
        candidate_mixtures: (C, K) the data mixture each candidate stands for,
            ``candidates @ probes``.
        probe_steps: optimizer steps taken in branches (probes, and candidates for "exact").
        evaluations: held-out evaluations (each over all K domains).
        cost: compute in main-step equivalents (module docstring).
        wall_time: seconds the request took (near 0 when it came from the cache).
        cached: whether the answer came from the cache.
    """

    base_loss: np.ndarray
    probe_loss: np.ndarray
    candidate_loss: np.ndarray
    candidate_mixtures: np.ndarray
    probe_steps: int
    evaluations: int
    cost: float
    wall_time: float
    cached: bool = False


@runtime_checkable
class WhatIfBackend(Protocol):
    """A backend that provides `Signal.WHATIF` (the module docstring has the contract)."""

    def simulate(
        self,
        probes: np.ndarray,
        steps: int,
        candidates: np.ndarray,
        method: str = "merge",
        lr_scale: float = 2.0,
        rank: int | None = None,
        split: str = "eval",
        per_sequence: bool = False,
    ) -> WhatIfResult:
        """Held-out losses of probe mixtures and of candidates, the run left bit-identical."""
        ...

    def whatif_cost(
        self, probes: np.ndarray, steps: int, candidates: np.ndarray, method: str = "merge", rank: int | None = None
    ) -> float:
        """What `simulate` would cost, in main-step equivalents, without running it."""
        ...


@dataclass(frozen=True)
class WhatIfRequest:
    """A validated what-if request (see `validate_request`)."""

    probes: np.ndarray
    steps: int
    candidates: np.ndarray
    method: str
    lr_scale: float
    rank: int | None
    split: str = "eval"
    per_sequence: bool = False

    def key(self, backend_fingerprint: str, state_digest: str) -> str:
        """The cache key: a hash of the backend, its current state and this request (`split` and
        `per_sequence` enter only when not the default, so earlier keys stay valid)."""
        digest = hashlib.sha256()
        parts = [backend_fingerprint, state_digest, self.method, repr(self.steps), repr(self.lr_scale), repr(self.rank)]
        parts += [f"split={self.split}"] if self.split != "eval" else []
        parts += ["per_sequence"] if self.per_sequence else []
        for part in parts:
            digest.update(part.encode() + b"|")
        for array in (self.probes, self.candidates):
            digest.update(repr(array.shape).encode() + np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return digest.hexdigest()[:32]

    @property
    def candidate_mixtures(self) -> np.ndarray:
        """(C, K) the data mixture each candidate stands for."""
        return self.candidates @ self.probes


def _simplex_rows(values: Any, width: int, what: str, row_name: str, width_name: str) -> np.ndarray:
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError):  # ragged rows
        raise ValueError(f"{what} must be a 2-d array of numbers, got {values!r}") from None
    if raw.dtype.kind not in "iuf":  # bools, strings, objects: not weights
        raise TypeError(f"{what} must be a 2-d array of numbers, got {values!r}")
    array = raw.astype(np.float64)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{what} must have shape (n, {width}) ({width_name}), got shape {array.shape}: {values!r}")
    for i, row in enumerate(array):
        if not np.all(np.isfinite(row)) or np.any(row < 0) or abs(row.sum() - 1.0) > _SIMPLEX_TOLERANCE:
            raise ValueError(f"{row_name} {i} of {what} is not on the simplex (finite, >= 0, summing to 1): {row!r}")
    return array


def validate_request(
    probes: Any,
    steps: Any,
    candidates: Any,
    method: str,
    num_domains: int,
    lr_scale: float = 2.0,
    rank: int | None = None,
    split: str = "eval",
    per_sequence: bool = False,
) -> WhatIfRequest:
    """Check a what-if request; a `TypeError`/`ValueError` naming the bad value otherwise."""
    probe_array = _simplex_rows(probes, num_domains, "probes", "probe", f"one weight per domain, K={num_domains}")
    if len(probe_array) == 0:
        raise ValueError("a what-if request needs at least one probe mixture")
    integer("steps (optimizer steps per probe)", steps, 1)
    width = len(probe_array)
    candidate_array = _simplex_rows(candidates, width, "candidates", "candidate", f"one weight per probe, P={width}")
    if method not in WHATIF_METHODS:
        raise ValueError(f"unknown what-if method {method!r}; choose one of {', '.join(WHATIF_METHODS)}")
    number("lr_scale", lr_scale, above=0.0)
    if rank is not None:
        integer("rank", rank, 1)
    check_split(split)
    if not isinstance(per_sequence, (bool, np.bool_)):
        raise TypeError(f"per_sequence must be True or False, got {per_sequence!r}")
    return WhatIfRequest(
        probe_array, int(steps), candidate_array, method, float(lr_scale), None if rank is None else int(rank), split, bool(per_sequence)
    )


def training_flops(params: float, trainable: float, tokens: float) -> float:
    """FLOPs of a training step over `tokens` tokens: forward (2 per parameter), backward
    through the activations (2 per parameter) and the weights' gradients (2 per trainable one)."""
    return (4.0 * params + 2.0 * trainable) * tokens


def forward_flops(params: float, tokens: float) -> float:
    """FLOPs of a forward pass over `tokens` tokens (2 per parameter per token)."""
    return 2.0 * params * tokens


PROBE_DECAY_FRACTION = 0.2
"""Share of a probe's steps at the end over which its learning rate decays linearly to
`PROBE_MIN_LR_RATIO` of its peak: OP-Mix's probes run HF's Trainer with a warm-up-stable-decay
schedule of 0 warm-up steps and 1,000 decay steps out of 5,000 (`train.py:222-250`,
`src/argparser.py:160-176`, `pipeline/pretrain_opm.py:68,386`)."""
PROBE_MIN_LR_RATIO = 0.1
"""`src/argparser.py:166-170` (``--min_lr_rate`` 0.1)."""


def probe_learning_rates(peak: float, steps: int) -> np.ndarray:
    """The learning rate of each of a probe's `steps` steps: `peak` (no warm-up), then a linear
    decay to ``PROBE_MIN_LR_RATIO * peak`` over the last `PROBE_DECAY_FRACTION` of the steps."""
    decay = max(1, int(round(PROBE_DECAY_FRACTION * steps)))
    progress = np.clip((np.arange(steps) - (steps - decay)) / decay, 0.0, None)
    return peak * np.maximum(PROBE_MIN_LR_RATIO, 1.0 - progress * (1.0 - PROBE_MIN_LR_RATIO))


def probe_seed(run_seed: int, step: int) -> np.random.SeedSequence:
    """The seed of the branches of a what-if request made at `step` of the run seeded
    `run_seed`: streams of their own, independent of the main run's generators. Every branch
    of a request starts from this same seed (common random numbers: its batches are drawn from
    the same uniform numbers through its own mixture), so branches differ by their mixture, not
    by sampling noise."""
    return np.random.SeedSequence([int(run_seed), 0x77686174, int(step)])


class WhatIfCacheError(ValueError):
    """A what-if cache file that is corrupt, unsigned or malformed, read by a strict cache."""


SUFFIX = ".whatif"
"""A cache file's suffix: ``<key>.whatif``, a sealed ``.npz`` (module docstring)."""


class WhatIfCache:
    """What-if answers by request key (`WhatIfRequest.key`), in memory and optionally on disk.

    Attributes:
        directory: where answers are also written, one ``<key>.whatif`` each (None: memory only).
        strict: a bad file on disk raises `WhatIfCacheError` instead of being recomputed with a
            warning (module docstring).
    """

    def __init__(self, directory: str | Path | None = None, strict: bool = False) -> None:
        self.directory = None if directory is None else Path(directory)
        self.strict = bool(strict)
        self._results: dict[str, WhatIfResult] = {}

    def __len__(self) -> int:
        return len(self._results)

    def path(self, key: str) -> Path:
        """The file of `key`'s answer (needs a directory)."""
        assert self.directory is not None
        return self.directory / f"{key}{SUFFIX}"

    def get(self, key: str) -> WhatIfResult | None:
        """The cached answer (marked ``cached=True``, wall time 0), or None."""
        result = self._results.get(key)
        if result is None and self.directory is not None and self.path(key).exists():
            result = self._read(self.path(key))
            if result is not None:
                self._results[key] = result
        return None if result is None else replace(result, cached=True, wall_time=0.0)

    def _read(self, path: Path) -> WhatIfResult | None:
        """The answer in `path`, or None (with a warning) if the file cannot be used."""
        try:
            body = unseal(path.read_bytes(), f"what-if cache file {str(path)!r}", kind="mixgym what-if cache file")
            with np.load(io.BytesIO(body), allow_pickle=False) as data:
                return _from_arrays(data)
        except (OSError, CorruptCheckpoint, UntrustedFile, zipfile.BadZipFile, KeyError, ValueError, TypeError) as error:
            if isinstance(error, UntrustedFile):
                reason = f"what-if cache file {str(path)!r} is not signed by this installation (copied from elsewhere, or planted)"
            else:
                reason = f"what-if cache file {str(path)!r} cannot be used: {error}"
            if self.strict:
                raise WhatIfCacheError(f"{reason}; delete it to recompute the answer") from None
            warnings.warn(f"{reason}; recomputing its answer", stacklevel=3)
            return None

    def put(self, key: str, result: WhatIfResult) -> None:
        self._results[key] = result
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, **{f.name: np.asarray(getattr(result, f.name)) for f in fields(result)})
            atomic_write_bytes(self.path(key), seal(buffer.getvalue()))

    def state_dict(self) -> dict[str, dict[str, np.ndarray]]:
        """The in-memory answers as plain arrays (for the environment's checkpoints)."""
        return {key: {f.name: np.asarray(getattr(r, f.name)) for f in fields(r)} for key, r in self._results.items()}

    def load_state_dict(self, state: dict[str, dict[str, np.ndarray]]) -> None:
        self._results = {key: _from_arrays(arrays) for key, arrays in state.items()}


def _from_arrays(arrays: Any) -> WhatIfResult:
    """The result held by `arrays`; `ValueError` if their shapes do not fit one another."""
    result = WhatIfResult(
        base_loss=np.asarray(arrays["base_loss"], dtype=np.float64),
        probe_loss=np.asarray(arrays["probe_loss"], dtype=np.float64),
        candidate_loss=np.asarray(arrays["candidate_loss"], dtype=np.float64),
        candidate_mixtures=np.asarray(arrays["candidate_mixtures"], dtype=np.float64),
        probe_steps=int(arrays["probe_steps"]),
        evaluations=int(arrays["evaluations"]),
        cost=float(arrays["cost"]),
        wall_time=float(arrays["wall_time"]),
        cached=bool(arrays["cached"]),
    )
    width = result.base_loss.shape
    if (
        len(width) != 1
        or result.probe_loss.ndim != 2
        or result.probe_loss.shape[1:] != width
        or result.candidate_loss.ndim != 2
        or result.candidate_loss.shape[1:] != width
        or result.candidate_mixtures.shape != result.candidate_loss.shape
    ):
        shapes = {name: np.shape(arrays[name]) for name in ("base_loss", "probe_loss", "candidate_loss", "candidate_mixtures")}
        raise ValueError(f"its arrays' shapes do not fit one another: {shapes}")
    return result


def cached_simulation(cache: WhatIfCache, key: str, run: Callable[[], WhatIfResult]) -> WhatIfResult:
    """`cache`'s answer for `key`, or ``run()``'s (stored, with its wall time measured)."""
    hit = cache.get(key)
    if hit is not None:
        return hit
    start = time.perf_counter()
    result: WhatIfResult = run()
    result = replace(result, wall_time=time.perf_counter() - start, cached=False)
    cache.put(key, result)
    return result
