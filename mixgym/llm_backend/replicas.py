"""The group of processes that train one `HFBackend` run together.

`HFBackend` asks its replica group the few things data parallelism changes in a training
step: which rows of a global micro-batch this process trains, the model to run the
forward pass with (DDP's wrapper), when gradients are synchronised, how losses, gradient
sums and token ids are combined across processes. `SingleProcess` is the group of one --
every rows, the model itself, nothing to combine -- so the single-process training step
reads as if the group were not there; `mixgym.llm_backend.distributed.DataParallel` is
the DDP group of a torchrun job.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol


class Replicas(Protocol):
    """What `HFBackend` needs of the processes it trains with (see the module docstring)."""

    rank: int
    world_size: int
    local_rank: int

    def agree(self, fingerprint: str) -> None:
        """Raise unless every process built a backend with this `fingerprint` (configuration,
        tokenizer and corpus): processes started differently would train different runs."""
        ...

    def rows(self, count: int) -> slice:
        """This process's share of `count` rows (a global micro-batch or evaluation batch)."""
        ...

    def wrap(self, model: Any) -> Any:
        """The module to run training forward passes with (called at every reset)."""
        ...

    def sync(self, last: bool) -> Any:
        """Context for one micro-batch's forward and backward: gradients are synchronised
        across processes only in the `last` micro-batch of an optimizer step."""
        ...

    def sum_(self, tensor: Any) -> None:
        """Sum `tensor` over the processes, in place, on every process."""
        ...

    def gather_rows(self, local: Any) -> Any:
        """Rank 0: the global rows of every micro-batch, (n * world * b, L), from each
        process's (n, b, L) share, in micro-batch order; other ranks: None."""
        ...


class SingleProcess:
    """A run of one process: every row is its own, nothing to synchronise or combine."""

    rank = 0
    world_size = 1
    local_rank = 0

    def agree(self, fingerprint: str) -> None:
        return None

    def rows(self, count: int) -> slice:
        return slice(0, count)

    def wrap(self, model: Any) -> Any:
        return model

    def sync(self, last: bool) -> Any:
        return contextlib.nullcontext()

    def sum_(self, tensor: Any) -> None:
        return None

    def gather_rows(self, local: Any) -> Any:
        return local.reshape(-1, local.shape[-1])


def share(count: int, rank: int, world_size: int) -> slice:
    """Rank `rank`'s contiguous share of `count` rows, the first ``count % world_size`` ranks
    taking one more (as `numpy.array_split`)."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))
