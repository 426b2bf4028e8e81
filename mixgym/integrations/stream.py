"""The sequence a `MixtureDataset` serves: which domain, and which row of it, at every position.

The stream is a pure function of a seed, the domains' sizes and the mixture schedule, so that
every DataLoader worker, every rank and the main process compute the same sequence without
talking to each other, and a resumed run continues it exactly:

- Position p (0, 1, 2, ... across the whole run, every reader together) draws its domain
  from the mixture in force at p, restricted to the domains not yet retired, with a uniform
  number that depends on (seed, p) only (counter-based), not on how many
  numbers anyone drew before.
- Each domain walks its rows in a fresh seeded permutation every epoch (`permutation`),
  through its own cursor: a domain is read in its own order whatever the mixture does, so a
  change of mixture can neither skip nor repeat a row within an epoch of that domain.
- A domain with ``max_epochs`` retires when its cursor completes that many passes; the others
  share its weight. When every domain has retired the stream ends.
- The mixture schedule (`Schedule`) says which mixture holds from which position. Its
  ``horizon`` is the first position whose mixture is not decided yet: a reader that gets
  there waits (DataLoader workers run ahead of the training loop), so a mixture chosen after
  step t governs exactly the examples of steps t+1, t+2, ..., however far the workers had
  prefetched. With ``shared=True`` its arrays live in shared memory (torch tensors), so the
  process that decides (the training loop) and the workers that read see the same schedule.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

UNIFORM_BLOCK = 4096
"""Uniform numbers are generated in blocks of this many positions (one generator per block)."""
_STREAM_TAG = 0x6D69  # separates the domain draws' seeds from the permutations' seeds
_PERMUTATION_TAG = 0x7065


def permutation(seed: int, domain: int, epoch: int, size: int) -> np.ndarray:
    """Domain `domain`'s row order in its epoch `epoch` (0-based)."""
    dtype = np.int32 if size < 2**31 else np.int64
    return np.random.default_rng([seed, _PERMUTATION_TAG, domain, epoch]).permutation(size).astype(dtype)


class StreamEnded(Exception):
    """Every domain has retired (reached its ``max_epochs``): the stream has no more positions."""


class ScheduleClosed(Exception):
    """The training loop closed the schedule (it stopped) while a reader waited for a mixture."""


@dataclass
class StreamState:
    """Where the stream stands: everything served before `position`.

    Attributes:
        position: the next position to draw.
        cursors: per domain, rows of its current epoch already served.
        epochs: per domain, passes completed.
        retired: per domain, whether it reached its ``max_epochs``.
        retired_at: per domain, the position at which it retired (-1 while it has not).
        examples: per domain, examples served.
        tokens: per domain, tokens served.
        block_domain: the domain drawn for the current block of positions (-1: none yet).
    """

    position: int
    cursors: np.ndarray
    epochs: np.ndarray
    retired: np.ndarray
    retired_at: np.ndarray
    examples: np.ndarray
    tokens: np.ndarray
    block_domain: int = -1

    @classmethod
    def start(cls, num_domains: int) -> StreamState:
        zeros = np.zeros(num_domains, dtype=np.int64)
        return cls(0, zeros.copy(), zeros.copy(), np.zeros(num_domains, dtype=bool), np.full(num_domains, -1), zeros.copy(), zeros.copy())

    def copy(self) -> StreamState:
        return StreamState(
            self.position, self.cursors.copy(), self.epochs.copy(), self.retired.copy(),
            self.retired_at.copy(), self.examples.copy(), self.tokens.copy(), self.block_domain,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": int(self.position),
            "block_domain": int(self.block_domain),
            **{name: getattr(self, name).tolist() for name in ("cursors", "epochs", "retired", "retired_at", "examples", "tokens")},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_domains: int) -> StreamState:
        arrays = {}
        for name in ("cursors", "epochs", "retired_at", "examples", "tokens"):
            arrays[name] = np.asarray(data[name], dtype=np.int64)
        arrays["retired"] = np.asarray(data["retired"], dtype=bool)
        if any(a.shape != (num_domains,) for a in arrays.values()):
            raise ValueError(f"a saved stream state must hold {num_domains} entries per field (one per domain)")
        return cls(int(data["position"]), block_domain=int(data["block_domain"]), **arrays)


@dataclass
class Schedule:
    """Which mixture holds from which position, and up to where it is decided.

    Entry k holds from ``starts[k]`` until the next entry's start. ``horizon`` is the first
    position whose mixture is not decided yet (-1: all are). ``closed`` releases waiting
    readers (so does the death of the process that decides; ``wait_timeout`` seconds, if
    set, turn a wait into an error). ``resume`` is the position the next iteration starts from. A reader that gets to
    the horizon waits if it is ``blocking`` (a DataLoader worker: the training process will
    decide), and otherwise raises (the training process itself would wait for itself).
    """

    num_domains: int
    capacity: int
    shared: bool = False
    wait_timeout: float | None = None
    _tensors: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"a schedule needs room for at least one mixture, got capacity {self.capacity!r}")
        if self._tensors is None:
            if self.shared:
                import torch

                self._tensors = (
                    torch.zeros(self.capacity, dtype=torch.int64).share_memory_(),
                    torch.zeros(self.capacity, self.num_domains, dtype=torch.float64).share_memory_(),
                    torch.tensor([0, -1, 0, 0, 0], dtype=torch.int64).share_memory_(),
                )
            else:
                self._tensors = (
                    np.zeros(self.capacity, dtype=np.int64),
                    np.zeros((self.capacity, self.num_domains), dtype=np.float64),
                    np.array([0, -1, 0, 0, 0], dtype=np.int64),
                )
        self._views()

    def _views(self) -> None:
        starts, mixtures, meta = self._tensors
        as_numpy = (lambda t: t.numpy()) if self.shared else (lambda t: t)
        self.starts, self.mixtures, self._meta = as_numpy(starts), as_numpy(mixtures), as_numpy(meta)
        self._last = 0
        self.blocking = False
        self._parent = -1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("starts", "mixtures", "_meta"):  # numpy views are rebuilt from the tensors
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._views()

    # ------------------------------------------------------------------ writer side
    @property
    def count(self) -> int:
        return int(self._meta[0])

    @property
    def horizon(self) -> int:
        return int(self._meta[1])

    @property
    def closed(self) -> bool:
        return bool(self._meta[2])

    @property
    def resume(self) -> int:
        return int(self._meta[3])

    @property
    def workers_seen(self) -> bool:
        """Whether DataLoader workers have read from this schedule."""
        return bool(self._meta[4])

    def read_in_worker(self) -> None:
        """Called by a DataLoader worker on its copy: it waits for decisions (while the
        process that makes them lives) and says that workers read."""
        self._meta[4] = 1
        self.blocking = True
        self._parent = os.getppid()

    def waits(self, position: int) -> bool:
        """Whether the mixture of `position` is still undecided."""
        horizon = self.horizon
        return 0 <= horizon <= position

    def set_resume(self, position: int) -> None:
        self._meta[3] = int(position)

    def close(self) -> None:
        self._meta[2] = 1

    def reopen(self) -> None:
        self._meta[2] = 0

    def add(self, start: int, mixture: np.ndarray, horizon: int | None) -> None:
        """Mixture `mixture` holds from position `start`; positions from `horizon` on wait
        for the next entry (None: no more entries are coming)."""
        count = self.count
        if count and start < self.starts[count - 1]:
            raise ValueError(f"a mixture for position {start} comes after one for position {int(self.starts[count - 1])}")
        if count and self.horizon >= 0 and start < self.horizon:
            raise ValueError(
                f"a mixture for position {start} comes after the schedule promised the previous one up to position "
                f"{self.horizon}: readers may already have served those examples"
            )
        if count and start == self.starts[count - 1]:
            count -= 1  # a second decision at the same position replaces the first
        if count >= self.capacity:
            raise ValueError(
                f"the mixture schedule is full ({self.capacity} mixtures): bind the dataset with room for every "
                "decision of the run (MixtureDriver and MixtureCallback do)"
            )
        self.mixtures[count] = mixture
        self.starts[count] = start
        self._meta[0] = count + 1
        self._meta[1] = -1 if horizon is None else int(horizon)

    def entries(self) -> list[tuple[int, list[float]]]:
        return [(int(self.starts[i]), self.mixtures[i].tolist()) for i in range(self.count)]

    def load_entries(self, entries: Sequence[tuple[int, Sequence[float]]], horizon: int | None) -> None:
        self._meta[0] = 0
        self._meta[1] = -1
        for start, mixture in entries:
            self.add(int(start), np.asarray(mixture, dtype=np.float64), None)
        self._meta[1] = -1 if horizon is None else int(horizon)

    # ------------------------------------------------------------------ reader side
    def lookup(self, position: int) -> tuple[int, np.ndarray]:
        """(entry index, mixture) in force at `position`; waits while it is not decided yet.

        Raises `ScheduleClosed` if the schedule is closed while waiting.
        """
        waited, pause = 0.0, 0.0005
        while True:
            horizon = self.horizon
            if horizon < 0 or position < horizon:
                break
            if not self.blocking:
                raise RuntimeError(
                    f"the training process itself reads example position {position}, beyond the position up to "
                    f"which the mixture is decided ({horizon}): the loop reads further ahead than the dataset "
                    "was bound for (MixtureDataset.bind's lookahead)"
                )
            if self.closed:
                raise ScheduleClosed(f"the schedule was closed before the mixture of position {position} was decided")
            if os.getppid() != self._parent:
                raise ScheduleClosed("the training process is gone")
            if self.wait_timeout is not None and waited > self.wait_timeout:
                raise TimeoutError(
                    f"waited {waited:.0f} s for the mixture of example position {position} (decided up to {horizon}): "
                    "the training loop stopped deciding; call MixtureDriver.close() when a loop ends early"
                )
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.02)
        count = self.count
        if count == 0:
            raise RuntimeError("the mixture schedule is empty")
        index = min(self._last, count - 1)
        if self.starts[index] > position:
            index = 0
        while index + 1 < count and self.starts[index + 1] <= position:
            index += 1
        if self.starts[index] > position:
            raise RuntimeError(f"no mixture holds at position {position} (the first starts at {int(self.starts[0])})")
        self._last = index
        return index, self.mixtures[index]


class MixtureStream:
    """Draws the stream position by position (see the module docstring).

    Args:
        names: the K domain names (for messages).
        sizes: rows per domain.
        seed: the stream's seed.
        max_epochs: per domain, passes after which it retires (None: never).
        token_counts: per domain, the tokens of each row (an int when all rows have the same).
        in_order: per domain, read its rows in their own order every epoch instead of a fresh
            permutation (a stream read front to back cannot be permuted).
        block: consecutive positions (from multiples of it) that share one domain draw; a
            domain that retires within a block hands the rest of the block to a new draw.
    """

    def __init__(
        self,
        names: Sequence[str],
        sizes: Sequence[int],
        seed: int,
        max_epochs: Sequence[int | None],
        token_counts: Sequence[int | np.ndarray],
        in_order: Sequence[bool] | None = None,
        block: int = 1,
    ) -> None:
        self.names = list(names)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.seed = int(seed)
        self.max_epochs = list(max_epochs)
        self.token_counts = list(token_counts)
        self.in_order = list(in_order) if in_order is not None else [False] * len(self.names)
        self.block = int(block)
        self.state = StreamState.start(len(self.names))
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}
        self._uniforms: tuple[int, np.ndarray] = (-1, np.zeros(0))
        self._cdf_key: tuple[int, bytes] | None = None
        self._cdf = np.zeros(0)

    @property
    def ended(self) -> bool:
        return bool(self.state.retired.all())

    def _uniform(self, position: int) -> float:
        block, offset = divmod(position, UNIFORM_BLOCK)
        if self._uniforms[0] != block:
            self._uniforms = (block, np.random.default_rng([self.seed, _STREAM_TAG, block]).random(UNIFORM_BLOCK))
        return float(self._uniforms[1][offset])

    def _row(self, domain: int, epoch: int, cursor: int) -> int:
        if self.in_order[domain]:
            return cursor
        cached = self._permutations.get(domain)
        if cached is None or cached[0] != epoch:
            cached = (epoch, permutation(self.seed, domain, epoch, int(self.sizes[domain])))
            self._permutations[domain] = cached
        return int(cached[1][cursor])

    def _domain(self, entry: int, mixture: np.ndarray, uniform: float) -> int:
        retired = self.state.retired
        key = (entry, retired.tobytes())
        if key != self._cdf_key:
            weights = np.where(retired, 0.0, np.asarray(mixture, dtype=np.float64))
            total = weights.sum()
            if not total > 0:
                available = [n for n, r in zip(self.names, retired) if not r]
                raise ValueError(
                    f"at example position {self.state.position} the mixture {np.round(mixture, 4).tolist()} gives no "
                    f"weight to any domain still available ({available}); domains retired after max_epochs: "
                    f"{[n for n, r in zip(self.names, retired) if r]}"
                )
            cdf = np.cumsum(weights / total)
            cdf[int(np.flatnonzero(weights)[-1]) :] = 1.0  # rounding must never pick a zero-weight domain
            self._cdf_key, self._cdf = key, cdf
        return int(np.searchsorted(self._cdf, uniform, side="right"))

    def draw(self, schedule: Schedule) -> tuple[int, int, int]:
        """Serve the current position: (domain, row, epoch of that domain); advance by one.

        Raises `StreamEnded` when every domain has retired.
        """
        state = self.state
        if self.ended:
            raise StreamEnded(f"every domain reached its max_epochs; the stream ended at example position {state.position}")
        entry, mixture = schedule.lookup(state.position)
        held = state.block_domain
        if self.block > 1 and state.position % self.block and held >= 0 and not state.retired[held]:
            domain = held
        else:
            domain = self._domain(entry, mixture, self._uniform(state.position))
            state.block_domain = domain
        epoch, cursor = int(state.epochs[domain]), int(state.cursors[domain])
        row = self._row(domain, epoch, cursor)
        counts = self.token_counts[domain]
        state.tokens[domain] += counts if isinstance(counts, (int, np.integer)) else int(counts[row])
        state.examples[domain] += 1
        state.position += 1
        if cursor + 1 == self.sizes[domain]:
            state.cursors[domain] = 0
            state.epochs[domain] += 1
            limit = self.max_epochs[domain]
            if limit is not None and state.epochs[domain] >= limit:
                state.retired[domain] = True
                state.retired_at[domain] = state.position
        else:
            state.cursors[domain] = cursor + 1
        return domain, row, epoch

    def advance_to(self, position: int, schedule: Schedule) -> None:
        """Draw (without serving) every position before `position`; stops early if the stream ends."""
        while self.state.position < position and not self.ended:
            self.draw(schedule)

    def epoch_progress(self) -> np.ndarray:
        """Per domain: passes completed plus the fraction of the current one served."""
        return self.state.epochs + self.state.cursors / np.maximum(self.sizes, 1)


def retired_message(names: Sequence[str], domain: int, max_epochs: int | None, position: int) -> str:
    """The warning given when a domain retires."""
    return (
        f"domain {names[domain]!r} reached max_epochs={max_epochs} at example position {position} and is retired "
        "from the mixture; the other domains share its weight"
    )
