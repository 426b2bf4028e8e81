"""`MixtureDataset`: a torch ``IterableDataset`` over K domains that follows a changing mixture.

Every example's domain is drawn from the mixture in force; each domain is read through its
own cursor in its own seeded order (`mixgym.integrations.stream`), so changing the mixture
never skips or repeats an example within an epoch of a domain, and the accounting is exact:
`MixtureDataset.accounting` gives per-domain examples, tokens and epochs served. A domain with
``max_epochs`` retires (with a warning) when it has been read that many times; when every
domain has, the stream ends (a warning says so) instead of repeating data.

Readers. The stream is one sequence of positions for the whole run. With DataLoader workers
each worker serves its own batches of it (worker w of W serves the batches i with
i % W == w of its iteration), and under ``torch.distributed`` each rank its own batches
(rank r of R the global batches b with b % R == r); every reader computes the whole sequence
of domains (cheap: no data is read) and reads only its own rows. So the examples served, in
the order the training loop sees them, do not depend on the number of workers. Batch size
matters (it says which positions are whose): `bind` it, or build the loader with
`MixtureDataset.loader`, which also counts what the loop consumed (for `state_dict`). An
iteration starts from a position fixed before its workers start (`load_state_dict`, `bind`
with a step, `loader`'s iterator, or where a stream that ended ended), never from one that
moves while they start: a worker that starts late reads the same start as the others.

Changing the mixture. `set_mixture(mixture)` applies from the next example the process reads
itself (no workers). With workers, which run ahead, a change must say from which step it
holds: `bind` the dataset to the loop (batch size, examples per optimizer step, decisions)
and ``set_mixture(mixture, step=t, until=t + n)``: the mixture holds from the first example
of step t (plus `lookahead`, the examples the loop had read ahead before deciding: one batch
under `accelerate`), and workers that get to the next decision's position wait for it. That
is what `mixgym.integrations.MixtureDriver` and `MixtureCallback` do.

Resuming. `state_dict` holds where the stream stands (per-domain cursors, epochs, examples,
tokens), the whole mixture schedule and the loop's step; `load_state_dict` continues exactly
there (``replay=True`` starts the iteration from the first position instead, for a loop that
skips the batches it already trained on, as the HF ``Trainer`` does unless
``ignore_data_skip``): either way the examples after the resume are those of a run that was
never interrupted. The state carries a digest of each domain's rows (`DomainSource.content`):
a state of a dataset with the same names and sizes but other rows is refused
(`SourcesChanged`, naming the domains) unless ``load_state_dict(state, accept_changed_sources=True)``
says that continuing the position on the new data is meant.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mixgym.integrations.sources import DomainSource, make_source
from mixgym.integrations.stream import (
    MixtureStream,
    Schedule,
    ScheduleClosed,
    StreamEnded,
    StreamState,
    retired_message,
)

STATE_FORMAT = "mixgym-mixture-dataset/1"


class SourcesChanged(ValueError):
    """A `MixtureDataset` state saved over other rows than this dataset's (same names and sizes)."""

DEFAULT_CAPACITY = 4096
"""Mixtures a dataset's schedule holds unless `bind` asks for more."""


@dataclass(frozen=True)
class Accounting:
    """What a `MixtureDataset` has served to the loop, per domain (in `domains` order).

    Attributes:
        domains: the K domain names.
        position: examples served in all (the stream's position).
        examples: examples served per domain.
        tokens: tokens served per domain.
        epochs: passes over each domain, the current one counted by its served fraction.
        retired: domains that reached their ``max_epochs``.
        ended: every domain has retired; no example follows.
    """

    domains: tuple[str, ...]
    position: int
    examples: np.ndarray
    tokens: np.ndarray
    epochs: np.ndarray
    retired: tuple[str, ...]
    ended: bool

    @property
    def realised_mixture(self) -> np.ndarray:
        """Share of the examples served per domain."""
        total = self.examples.sum()
        return self.examples / total if total else np.zeros(len(self.domains))


def _per_domain(value: Any, names: Sequence[str], what: str) -> list[int | None]:
    """`value` (one setting, or a mapping by domain name) as a list in `names` order."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{what} names unknown domain(s) {unknown}; the domains: {list(names)}")
        items = [value.get(n) for n in names]
    else:
        items = [value] * len(names)
    for name, item in zip(names, items):
        if item is not None and (not isinstance(item, (int, np.integer)) or isinstance(item, bool) or item < 1):
            raise ValueError(f"{what} for domain {name!r} must be an integer >= 1 or None, got {item!r}")
    return [None if i is None else int(i) for i in items]


def check_mixture(mixture: Any, names: Sequence[str]) -> np.ndarray:
    """`mixture` (K weights in domain order, or a mapping from every domain name to its
    weight) as a probability vector; an error naming what is wrong otherwise."""
    k = len(names)
    if isinstance(mixture, Mapping):
        unknown = sorted(set(map(str, mixture)) - set(names))
        if unknown:
            raise ValueError(f"the mixture names domain(s) {unknown} that do not exist; the domains: {list(names)}")
        missing = [n for n in names if n not in mixture]
        if missing:
            raise ValueError(f"the mixture gives no weight for domain(s) {missing}: give every domain one (0 is allowed)")
        mixture = [mixture[n] for n in names]
    try:
        m = np.asarray(mixture, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"a mixture must be {k} numbers (one per domain {list(names)}), got {mixture!r}") from None
    if m.shape != (k,):
        raise ValueError(
            f"the mixture has shape {m.shape} but there are {k} domains {list(names)}: the number of domains is fixed"
        )
    if not np.all(np.isfinite(m)) or np.any(m < 0) or not m.sum() > 0:
        raise ValueError(f"a mixture must be finite, non-negative and have a positive sum, got {m.tolist()}")
    return m / m.sum()


def collate(examples: Sequence[Mapping[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack examples into a batch, padding ragged rows: ``input_ids`` with `pad_id`,
    ``attention_mask`` with 0 and ``labels`` with -100 (ignored by the loss)."""
    length = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        rows = torch.full((len(examples), length), fill, dtype=torch.long)
        for i, example in enumerate(examples):
            values = torch.as_tensor(example[key])
            rows[i, : len(values)] = values
        batch[key] = rows
    for key in examples[0]:
        if key not in batch:
            batch[key] = torch.as_tensor([e[key] for e in examples])
    return batch


class MixtureDataset(IterableDataset):
    """K domains mixed by a mixture that may change while training (module docstring).

    Args:
        domains: domain name -> its data (`mixgym.integrations.sources`: a ``datasets``
            Dataset/IterableDataset, a list, ...; tokenised rows or text).
        mixture: the initial mixture (K weights or a mapping by name); uniform by default.
        tokenizer: packs text domains into rows (a mixgym `TextTokenizer` or a
            ``transformers`` tokenizer); also checks tokenised domains' ids against its vocabulary.
        seq_len: tokens per packed row; tokenised rows are cut to it.
        text_column: the text column of text domains.
        seed: the stream's seed (domain draws and each domain's order).
        max_epochs: passes after which a domain retires: one number for all, or a mapping by
            domain name (a domain not named never retires); None: never.
        shard_by_rank: split the stream between ``torch.distributed`` ranks (None: when a
            process group is initialised). The HF Trainer distributes an iterable dataset
            itself, so `MixtureCallback` turns this off.
        tags: add ``domain``, ``index`` (the row within its domain), ``epoch`` and
            ``position`` to every example.
        block_size: consecutive examples that share one domain draw. With the per-device
            batch size, every micro-batch holds one domain, as ODM and `HFBackend` train and as
            per-domain gradients need (`MixtureCallback(gradients=True)`).

    Examples are dicts of ``input_ids``, ``attention_mask`` and ``labels`` (int64 tensors of
    one row) and the tags. Rows of one length batch with torch's default collate; ragged
    tokenised rows need `collate`.

    >>> data = MixtureDataset({"a": [{"input_ids": [1, 2]}] * 3, "b": [{"input_ids": [3]}] * 2},
    ...                       mixture=[0.5, 0.5], seed=0, max_epochs=1)
    >>> [int(example["domain"]) for example in data]  # each row once (max_epochs=1), then the end
    [0, 0, 1, 0, 1]
    >>> data.accounting().examples.tolist()
    [3, 2]
    """

    def __init__(
        self,
        domains: Mapping[str, Any],
        mixture: Any = None,
        *,
        tokenizer: Any = None,
        seq_len: int | None = None,
        text_column: str = "text",
        seed: int = 0,
        max_epochs: int | Mapping[str, int] | None = None,
        shard_by_rank: bool | None = None,
        tags: bool = True,
        block_size: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(domains, Mapping) or not domains:
            raise ValueError(f"domains must be a non-empty mapping from domain name to its data, got {type(domains).__name__}")
        for name, value in (("seq_len", seq_len), ("block_size", block_size)):
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.block_size = int(block_size)
        self.names = [str(n) for n in domains]
        self.sources: list[DomainSource] = [
            make_source(name, data, tokenizer, seq_len, text_column) for name, data in zip(self.names, domains.values())
        ]
        self.max_epochs = _per_domain(max_epochs, self.names, "max_epochs")
        self.seed = int(seed)
        self.seq_len = seq_len
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.tags = bool(tags)
        self.shard_by_rank = shard_by_rank
        self.pad_id = int(getattr(tokenizer, "pad_id", getattr(tokenizer, "pad_token_id", None)) or 0) if tokenizer is not None else 0
        initial = check_mixture(mixture, self.names) if mixture is not None else np.full(len(self.names), 1 / len(self.names))
        self.batch_size: int | None = None
        self.lookahead = 0
        self._step_origin = (0, 0)  # (step, position): the loop's step at a stream position
        self._examples_per_step: int | None = None
        self._schedule = Schedule(len(self.names), DEFAULT_CAPACITY, shared=True)
        self._schedule.add(0, initial, None)
        self._base = StreamState.start(len(self.names))
        self._tracker = self._new_stream()
        self._lookup: MixtureStream | None = None
        self._warned: set[int] = set()
        self._produced = 0

    # ------------------------------------------------------------------ facts
    @property
    def domains(self) -> list[str]:
        """The K domain names, in the order of every per-domain array."""
        return list(self.names)

    @property
    def sizes(self) -> np.ndarray:
        """Rows per domain (one epoch)."""
        return np.array([s.size for s in self.sources], dtype=np.int64)

    @property
    def domain_tokens(self) -> np.ndarray:
        """Tokens per domain in one epoch (its natural weight)."""
        return np.array(
            [s.token_counts * s.size if isinstance(s.token_counts, int) else int(np.sum(s.token_counts)) for s in self.sources],
            dtype=np.int64,
        )

    @property
    def max_token_id(self) -> int:
        """The largest token id of any domain (to check a model's vocabulary)."""
        return max(s.max_token_id for s in self.sources)

    @property
    def mixture(self) -> np.ndarray:
        """The latest mixture set."""
        return self._schedule.mixtures[self._schedule.count - 1].copy()

    def schedule(self) -> list[tuple[int, list[float]]]:
        """Every (start position, mixture) of the run so far."""
        return self._schedule.entries()

    def fingerprint(self) -> str:
        """A hash of what fixes the stream: domains, their sizes and tokens, seed, max_epochs."""
        payload = json.dumps([self.names, self.sizes.tolist(), self.domain_tokens.tolist(), self.seed, self.max_epochs, self.block_size])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _new_stream(self) -> MixtureStream:
        stream = MixtureStream(
            self.names,
            [s.size for s in self.sources],
            self.seed,
            self.max_epochs,
            [s.token_counts for s in self.sources],
            [s.in_order for s in self.sources],
            self.block_size,
        )
        stream.state = self._base.copy()
        return stream

    # ------------------------------------------------------------------ binding to a loop
    def bind(
        self,
        batch_size: int,
        examples_per_step: int,
        step: int | None = None,
        decisions: int | None = None,
        lookahead: int = 0,
        shard_by_rank: bool | None = None,
    ) -> None:
        """Tie positions to the loop's optimizer steps (before iterating).

        Args:
            batch_size: examples per batch of each reader (the DataLoader's batch size).
            examples_per_step: examples one optimizer step consumes, every reader together
                (batch size x batches per step x readers).
            step: the loop's step at the position the next iteration starts from (None: keep
                the binding a loaded state or an earlier `bind` made; a new dataset: step 0 at
                position 0).
            decisions: mixtures to come (the schedule makes room for them).
            lookahead: examples the loop reads ahead of the step it trains (accelerate's
                DataLoader: one batch); a mixture set at step t holds from t's first example
                plus these.
            shard_by_rank: overrides the constructor's setting.
        """
        for name, value in (("batch_size", batch_size), ("examples_per_step", examples_per_step)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if examples_per_step % batch_size:
            raise ValueError(f"examples_per_step={examples_per_step} must be a multiple of batch_size={batch_size}")
        self.batch_size = int(batch_size)
        self._examples_per_step = int(examples_per_step)
        if step is not None:  # the loop's next iteration starts where the accounting stands
            self._schedule.set_resume(self._tracker.state.position)
            self._step_origin = (int(step), self._schedule.resume)
        self.lookahead = int(lookahead)
        if shard_by_rank is not None:
            self.shard_by_rank = shard_by_rank
        needed = self._schedule.count + (decisions or 0) + 1
        if needed > self._schedule.capacity:
            entries, horizon = self._schedule.entries(), self._schedule.horizon
            resume = self._schedule.resume
            self._schedule = Schedule(len(self.names), needed, shared=True)
            self._schedule.load_entries(entries, None if horizon < 0 else horizon)
            self._schedule.set_resume(resume)
        self._schedule.reopen()

    def position_of(self, step: int) -> int:
        """The stream position at which the loop's optimizer step `step` starts."""
        if self._examples_per_step is None:
            raise ValueError("bind the dataset to the loop first (MixtureDataset.bind)")
        origin_step, origin_position = self._step_origin
        return origin_position + (int(step) - origin_step) * self._examples_per_step

    def set_mixture(self, mixture: Any, step: int | None = None, until: int | None = None) -> np.ndarray:
        """Change the mixture; returns it normalised (see the module docstring).

        Args:
            mixture: K weights (or a mapping from every domain name to its weight), divided by
                their sum.
            step: the optimizer step from which it holds (needs `bind`); None: from the next
                example this process reads (without workers only).
            until: the step of the next decision: readers wait there for it (None: this
                mixture holds to the end).
        """
        m = check_mixture(mixture, self.names)
        if step is None:
            if self._schedule.workers_seen:
                raise ValueError(
                    "DataLoader workers read ahead of the loop: say from which step the mixture holds "
                    "(bind the dataset, then set_mixture(mixture, step=...)), as MixtureDriver does"
                )
            start, horizon = max(self._produced, self._schedule.resume), None
        else:
            start = self.position_of(step) + (self.lookahead if step > self._step_origin[0] else 0)
            horizon = None if until is None else self.position_of(until) + self.lookahead
        self._schedule.add(start, m, horizon)
        return m

    def close(self) -> None:
        """Release workers that wait for a mixture (the loop has stopped deciding)."""
        self._schedule.close()

    # ------------------------------------------------------------------ accounting
    def consumed(self, step: int | None = None, position: int | None = None) -> Accounting:
        """The loop has consumed everything before optimizer step `step` (or stream
        `position`): advance the accounting there, warn of domains that retired, and start
        the next iteration there. Returns the accounting."""
        if (step is None) == (position is None):
            raise ValueError("give exactly one of step and position")
        target = self.position_of(step) if step is not None else int(position)  # type: ignore[arg-type]
        if target < self._tracker.state.position:
            raise ValueError(f"position {target} is before the accounting's position {self._tracker.state.position}")
        self._tracker.advance_to(target, self._schedule)
        if self._tracker.ended:  # an iteration that starts now finds nothing left
            self._schedule.set_resume(self._tracker.state.position)
        state = self._tracker.state
        for domain in np.flatnonzero(state.retired):
            if int(domain) not in self._warned:
                self._warned.add(int(domain))
                warnings.warn(retired_message(self.names, int(domain), self.max_epochs[domain], int(state.retired_at[domain])), stacklevel=2)
        if self._tracker.ended and -1 not in self._warned:
            self._warned.add(-1)
            warnings.warn(
                f"every domain reached its max_epochs ({dict(zip(self.names, self.max_epochs))}): the data is "
                f"exhausted after {state.position} examples and the stream ends",
                stacklevel=2,
            )
        return self.accounting()

    def accounting(self) -> Accounting:
        """Per-domain examples, tokens and epochs served up to the last `consumed` position."""
        state = self._tracker.state
        return Accounting(
            domains=tuple(self.names),
            position=int(state.position),
            examples=state.examples.copy(),
            tokens=state.tokens.copy(),
            epochs=self._tracker.epoch_progress(),
            retired=tuple(n for n, r in zip(self.names, state.retired) if r),
            ended=self._tracker.ended,
        )

    def domains_at(self, start: int, stop: int) -> np.ndarray:
        """The domain of every position in [start, stop), computed without reading data
        (shorter if the stream ends first). Cheap for increasing positions after the last
        `consumed` one, as a training loop asks."""
        stream = self._lookup
        if stream is None or stream.state.position > start:
            stream = self._new_stream()
            if self._tracker.state.position <= start:
                stream.state = self._tracker.state.copy()
        stream.advance_to(start, self._schedule)
        out = []
        while stream.state.position < stop and not stream.ended:
            out.append(stream.draw(self._schedule)[0])
        self._lookup = stream
        return np.asarray(out, dtype=np.int64)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands (at the last `consumed` position), the whole schedule and
        the step binding; JSON-serialisable."""
        horizon = self._schedule.horizon
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint(),
            "domains": list(self.names),
            "sources": [s.content for s in self.sources],
            "stream": self._tracker.state.to_dict(),
            "schedule": self._schedule.entries(),
            "horizon": None if horizon < 0 else horizon,
            "step_origin": list(self._step_origin),
            "examples_per_step": self._examples_per_step,
        }

    def load_state_dict(self, state: Mapping[str, Any], replay: bool = False, accept_changed_sources: bool = False) -> None:
        """Continue from `state_dict`'s output (see the module docstring).

        Args:
            state: a state from a dataset with the same domains, sizes, seed and max_epochs.
            replay: start the next iteration from the first position (the loop skips what it
                already trained on) instead of where the state stands.
            accept_changed_sources: continue even if a domain's rows differ from those the
                state was saved over (otherwise `SourcesChanged`).
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a MixtureDataset state (format {STATE_FORMAT!r})")
        if state["fingerprint"] != self.fingerprint():
            raise ValueError(
                f"the state is of another dataset (domains {state['domains']}, fingerprint {state['fingerprint']}); "
                f"this one has domains {self.names} and fingerprint {self.fingerprint()} (sizes, seed or max_epochs differ)"
            )
        saved_sources = state.get("sources")  # None: a state of an older mixgym, which kept no digest
        changed = [n for n, a, b in zip(self.names, saved_sources or [], self.sources) if a != b.content]
        if changed and not accept_changed_sources:
            raise SourcesChanged(
                f"the state was saved over other data in domain(s) {', '.join(map(repr, changed))}: same names and "
                "sizes, different rows (another corpus, or files changed since). Resuming would continue its positions "
                "on the new rows; pass accept_changed_sources=True if that is what you mean"
            )
        saved = StreamState.from_dict(state["stream"], len(self.names))
        entries = [(int(s), m) for s, m in state["schedule"]]
        capacity = max(self._schedule.capacity, len(entries) + 1)
        self._schedule = Schedule(len(self.names), capacity, shared=True)
        self._schedule.load_entries(entries, state["horizon"])
        self._base = StreamState.start(len(self.names)) if replay else saved.copy()
        self._tracker = self._new_stream()
        self._tracker.state = saved.copy()
        self._lookup = None
        self._schedule.set_resume(0 if replay else saved.position)
        self._step_origin = (int(state["step_origin"][0]), int(state["step_origin"][1]))
        self._examples_per_step = state["examples_per_step"]
        self._warned = {int(d) for d in np.flatnonzero(saved.retired)} | ({-1} if saved.retired.all() else set())
        self._produced = saved.position

    # ------------------------------------------------------------------ iteration
    def _readers(self) -> tuple[int, int, int, int]:
        """(worker, workers, rank, ranks) of the calling reader."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard = self.shard_by_rank
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if shard is None:
            shard = distributed
        rank, ranks = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if shard and distributed else (0, 1)
        return worker, workers, rank, ranks

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers, rank, ranks = self._readers()
        in_worker = get_worker_info() is not None
        if in_worker:  # this is the worker's own copy of the dataset
            self._schedule.read_in_worker()
        batch = self.batch_size
        if batch is None:
            if workers > 1 or ranks > 1:
                raise ValueError(
                    "with several readers (DataLoader workers or ranks) the dataset needs the batch size to know which "
                    "examples are whose: bind it (MixtureDataset.bind) or build the loader with MixtureDataset.loader"
                )
            batch = 1
        start = self._schedule.resume
        if start % (batch * ranks):
            raise ValueError(f"the stream resumes at position {start}, not at a batch boundary (batch {batch} x {ranks} ranks)")
        stream = self._new_stream()
        readers = [s.reader() for s in self.sources]
        try:
            stream.advance_to(start, self._schedule)
            first_batch = start // batch // ranks  # this rank's batch index at the start
            local = worker
            while True:
                global_batch = (first_batch + local) * ranks + rank
                for position in range(global_batch * batch, (global_batch + 1) * batch):
                    stream.advance_to(position, self._schedule)
                    if stream.ended:
                        return
                    domain, row, epoch = stream.draw(self._schedule)
                    if not in_worker:  # the only reader: the next iteration continues from here
                        self._produced = stream.state.position
                        self._schedule.set_resume(self._produced)
                        if self._examples_per_step is None:  # no loop binding: count what is handed out
                            self.consumed(position=self._produced)
                    yield self._example(readers[domain], domain, row, epoch, position)
                local += workers
        except (ScheduleClosed, StreamEnded):
            return

    def _example(self, reader: Any, domain: int, row: int, epoch: int, position: int) -> dict[str, Any]:
        ids = torch.from_numpy(reader.get(row, epoch))
        example: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
        if self.tags:
            example.update(domain=domain, index=row, epoch=epoch, position=position)
        return example

    def loader(self, batch_size: int, num_workers: int = 0, steps_per_batch: int = 1, **kwargs: Any) -> DataLoader:
        """A DataLoader over this dataset that binds the batch size and counts what the loop
        consumes (so `accounting` and `state_dict` follow a plain loop); ``**kwargs`` go to
        DataLoader (``collate_fn`` defaults to `collate` for ragged rows).

        Without `MixtureDriver`, consumption is counted per batch handed to the loop."""
        ranks = self._readers()[3]
        self.bind(batch_size, batch_size * ranks * steps_per_batch, shard_by_rank=self.shard_by_rank)
        if self.seq_len is None or any(not isinstance(s.token_counts, int) for s in self.sources):
            kwargs.setdefault("collate_fn", functools.partial(collate, pad_id=self.pad_id))
        return _CountingLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)


class _CountingLoader(DataLoader):
    """A DataLoader that tells its `MixtureDataset` how much the loop consumed."""

    def __iter__(self) -> Iterator[Any]:
        dataset: MixtureDataset = self.dataset  # type: ignore[assignment]
        position = dataset._tracker.state.position
        dataset._schedule.set_resume(position)  # before the workers start: they read it once
        ranks = dataset._readers()[3]
        for batch in super().__iter__():
            position += len(batch["input_ids"]) * ranks
            dataset.consumed(position=position)
            yield batch
