"""One domain's training data for a `MixtureDataset`: rows of token ids, counted and checked.

A domain is given as any of:

- a ``datasets.Dataset`` or any sized, indexable collection (a list, a map-style torch
  ``Dataset``) of examples -- read in a fresh seeded permutation every epoch;
- a ``datasets.IterableDataset``, any re-iterable collection, or a zero-argument callable
  returning an iterator -- read front to back, in its own order, every epoch (shuffle it
  yourself if you want another order; it is read once up front to count its rows, since
  exact epochs need the count);

where an example is a mapping with an ``input_ids`` column (already tokenised: one row per
example, cut to ``seq_len`` if one is given) or with a text column (``text`` by default, or a
plain string): then a tokenizer and ``seq_len`` are needed, and the domain's documents, each
followed by the end-of-text token, are concatenated and cut into rows of exactly ``seq_len``
tokens (packing, as `mixgym.llm_backend.hf.HFBackend` trains; the last partial row is dropped).

A tokenizer is a mixgym `TextTokenizer` (`mixgym.llm_backend.tokenizer`) or a `transformers`
tokenizer. Errors name the domain: no rows, no ``input_ids``/text column (listing the columns
found), token ids beyond the tokenizer's vocabulary (a tokenizer mismatch), text without a
tokenizer or ``seq_len``, a one-shot iterator.

Each source carries a `DomainSource.content` digest, so that a saved stream position is never
applied to other data (`MixtureDataset.load_state_dict`): a SHA-256 of its rows' token ids, read
while the rows are counted anyway, or, for a ``datasets.Dataset`` of tokenised rows (not read up
front), the dataset's own fingerprint, which ``datasets`` derives from its files and the
transforms applied to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
import hashlib
from itertools import islice
from typing import Any

import numpy as np

_TEXT_BATCH = 256
"""Documents tokenised at once."""


def vocab_size(tokenizer: Any) -> int:
    """Number of ids `tokenizer` can produce."""
    size = getattr(tokenizer, "vocab_size", None)
    if hasattr(tokenizer, "encode_documents") and isinstance(size, int):
        return size  # mixgym's TextTokenizer: special tokens included
    try:
        return len(tokenizer)  # transformers: added tokens included, unlike .vocab_size
    except TypeError:
        raise ValueError(f"cannot tell the vocabulary size of tokenizer {tokenizer!r}") from None


def encode_documents(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """One int64 stream of token ids: each document followed by the end-of-text id."""
    if hasattr(tokenizer, "encode_documents"):
        return tokenizer.encode_documents(list(texts)).astype(np.int64)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no end-of-text token (eos_token_id) to separate documents")
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=np.int64)


def _columns(example: Any) -> list[str]:
    return list(example.keys()) if isinstance(example, Mapping) else [type(example).__name__]


@dataclass
class DomainSource:
    """One domain's rows (see the module docstring).

    Attributes:
        name: the domain.
        size: rows per epoch.
        token_counts: tokens of each row, or one int when every row has the same.
        in_order: rows are read front to back (a stream) rather than permuted.
        max_token_id: the largest token id of the domain (-1 if unknown), to check the model.
        content: a digest of the rows (module docstring).
    """

    name: str
    size: int
    token_counts: int | np.ndarray
    in_order: bool
    max_token_id: int
    content: str = ""
    _chunks: np.ndarray | None = None
    _indexed: Any = None
    _stream: Callable[[], Iterator[np.ndarray]] | None = None
    _seq_len: int | None = None

    def reader(self) -> RowReader:
        """A reader of this domain's rows (one per process: it keeps an iterator for streams)."""
        return RowReader(self)


class RowReader:
    """Reads rows of one domain; a stream is walked forward, restarted at each new epoch."""

    def __init__(self, source: DomainSource) -> None:
        self.source = source
        self._iterator: Iterator[np.ndarray] | None = None
        self._epoch = -1
        self._next = 0

    def get(self, row: int, epoch: int) -> np.ndarray:
        """The token ids of `row` (int64)."""
        source = self.source
        if source._chunks is not None:
            return source._chunks[row].astype(np.int64)
        if source._indexed is not None:
            return _ids_of(source._indexed[row], source.name, source._seq_len)
        assert source._stream is not None
        if self._iterator is None or epoch != self._epoch or row < self._next:
            self._iterator, self._epoch, self._next = source._stream(), epoch, 0
        skipped = row - self._next
        if skipped:
            next(islice(self._iterator, skipped - 1, None), None) if skipped > 1 else next(self._iterator)
        try:
            ids = next(self._iterator)
        except StopIteration:
            raise RuntimeError(
                f"domain {source.name!r} yielded fewer rows than the {source.size} counted up front: "
                "an iterable domain must give the same rows on every pass"
            ) from None
        self._next = row + 1
        return ids


def _ids_of(example: Any, name: str, seq_len: int | None) -> np.ndarray:
    if not isinstance(example, Mapping) or "input_ids" not in example:
        raise ValueError(f"domain {name!r}: an example has no 'input_ids' column (columns: {_columns(example)})")
    ids = np.asarray(example["input_ids"], dtype=np.int64).reshape(-1)
    return ids[:seq_len] if seq_len is not None else ids


def _packed(texts: Iterable[str], tokenizer: Any, seq_len: int) -> Iterator[np.ndarray]:
    """Rows of `seq_len` tokens from documents concatenated with end-of-text tokens."""
    buffer = np.zeros(0, dtype=np.int64)
    iterator = iter(texts)
    while True:
        batch = list(islice(iterator, _TEXT_BATCH))
        if not batch:
            return
        buffer = np.concatenate([buffer, encode_documents(tokenizer, batch)])
        rows = len(buffer) // seq_len
        for i in range(rows):
            yield buffer[i * seq_len : (i + 1) * seq_len]
        buffer = buffer[rows * seq_len :]


def _text_of(example: Any, name: str, text_column: str) -> str:
    if isinstance(example, str):
        return example
    if isinstance(example, Mapping) and text_column in example:
        return str(example[text_column])
    raise ValueError(
        f"domain {name!r}: an example has neither an 'input_ids' nor a {text_column!r} column (columns: {_columns(example)}); "
        "give tokenised rows or text (text_column= names another column)"
    )


def _is_indexed(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, Mapping))


def _first(data: Any, name: str) -> Any:
    try:
        return data[0] if _is_indexed(data) else next(iter(_iterable(data, name)()))
    except (IndexError, StopIteration):
        raise ValueError(f"domain {name!r} has no examples") from None


@dataclass
class _Examples:
    """A fresh iterator over a domain's examples at every call (picklable, for spawned workers)."""

    data: Any

    def __call__(self) -> Iterator[Any]:
        data = self.data
        if callable(data) and not hasattr(data, "__iter__"):
            return data()
        if hasattr(data, "iter") and hasattr(data, "n_shards"):  # datasets.IterableDataset
            # its own __iter__ splits the stream between DataLoader workers; every worker here
            # reads the whole stream and keeps its own positions, so read it unsharded
            return (row for batch in data.iter(batch_size=_TEXT_BATCH) for row in _unbatch(batch))
        return iter(data)


@dataclass
class _Rows:
    """A fresh iterator over a streamed domain's rows of token ids at every call."""

    examples: _Examples
    name: str
    seq_len: int | None
    tokenizer: Any
    text_column: str
    tokenised: bool

    def __call__(self) -> Iterator[np.ndarray]:
        if self.tokenised:
            return (_ids_of(x, self.name, self.seq_len) for x in self.examples())
        assert self.seq_len is not None
        texts = (_text_of(x, self.name, self.text_column) for x in self.examples())
        return _packed(texts, self.tokenizer, self.seq_len)


def _iterable(data: Any, name: str) -> _Examples:
    """The domain's examples as a re-iterable source; a one-shot iterator is refused."""
    if not (callable(data) and not hasattr(data, "__iter__")) and not hasattr(data, "n_shards") and iter(data) is data:
        raise ValueError(
            f"domain {name!r} is a one-shot iterator: give a list, a datasets Dataset/IterableDataset or a "
            "zero-argument callable returning a fresh iterator (every epoch reads it again)"
        )
    return _Examples(data)


def _unbatch(batch: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    keys = list(batch)
    for values in zip(*(batch[k] for k in keys)):
        yield dict(zip(keys, values))


def make_source(
    name: str,
    data: Any,
    tokenizer: Any = None,
    seq_len: int | None = None,
    text_column: str = "text",
) -> DomainSource:
    """Build one domain's `DomainSource` from `data` (see the module docstring)."""
    first = _first(data, name)
    tokenised = isinstance(first, Mapping) and "input_ids" in first
    if not tokenised:
        _text_of(first, name, text_column)  # the column check
        if tokenizer is None or seq_len is None:
            raise ValueError(
                f"domain {name!r} holds text ({text_column!r}): give a tokenizer and seq_len to pack it into rows, "
                "or give tokenised rows (an 'input_ids' column)"
            )
    limit = vocab_size(tokenizer) if tokenizer is not None else None
    if _is_indexed(data):
        if tokenised:
            lengths, top, content = _indexed_lengths(data, name, seq_len)
            source = DomainSource(name, len(data), lengths, False, top, content, _indexed=data, _seq_len=seq_len)
        else:
            texts = data[text_column] if hasattr(data, "column_names") else [_text_of(x, name, text_column) for x in data]
            assert seq_len is not None
            stream = encode_documents(tokenizer, list(texts))
            rows = len(stream) // seq_len
            if rows == 0:
                raise ValueError(
                    f"domain {name!r} has {len(stream)} tokens, fewer than one row of seq_len={seq_len}: add text or lower seq_len"
                )
            chunks = stream[: rows * seq_len].reshape(rows, seq_len)
            dtype = np.int32 if chunks.max(initial=0) < 2**31 else np.int64
            chunks = chunks.astype(dtype)
            content = _digest([chunks.reshape(-1)])
            source = DomainSource(name, rows, seq_len, False, int(chunks.max(initial=-1)), content, _chunks=chunks)
    else:
        rows_of = _Rows(_iterable(data, name), name, seq_len, tokenizer, text_column, tokenised)
        lengths_list, top, digest = [], -1, hashlib.sha256()
        for ids in rows_of():
            lengths_list.append(len(ids))
            top = max(top, int(ids.max(initial=-1)))
            _update(digest, ids)
        if not lengths_list:
            raise ValueError(f"domain {name!r} has no rows" + ("" if tokenised else f" of seq_len={seq_len} tokens"))
        lengths = np.asarray(lengths_list, dtype=np.int64)
        counts: int | np.ndarray = int(lengths[0]) if not tokenised else lengths
        source = DomainSource(name, len(lengths), counts, True, top, digest.hexdigest(), _stream=rows_of, _seq_len=seq_len)
    if source.size == 0:
        raise ValueError(f"domain {name!r} has no examples")
    if limit is not None and source.max_token_id >= limit:
        raise ValueError(
            f"domain {name!r} holds token id {source.max_token_id}, beyond the tokenizer's vocabulary of {limit} ids: "
            "it was tokenised with another tokenizer"
        )
    return source


def _update(digest: Any, ids: np.ndarray) -> None:
    """Add one row of token ids (its length first: rows [1, 2][3] and [1][2, 3] differ)."""
    row = np.ascontiguousarray(ids, dtype=np.int64)
    digest.update(len(row).to_bytes(8, "little") + row.tobytes())


def _digest(rows: Iterable[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        _update(digest, row)
    return digest.hexdigest()


def _indexed_lengths(data: Any, name: str, seq_len: int | None) -> tuple[np.ndarray, int, str]:
    """Per-row token counts (cut to `seq_len`), the largest id and the content digest (module
    docstring) of an indexed tokenised domain."""
    table = getattr(data, "data", None)
    if hasattr(data, "column_names") and table is not None and hasattr(table, "column"):
        import pyarrow.compute as pc

        column = table.column("input_ids")
        lengths = np.asarray(pc.list_value_length(column).to_numpy(zero_copy_only=False), dtype=np.int64)
        top = pc.max(pc.list_flatten(column)).as_py()
        if getattr(data, "_indices", None) is not None:  # a selected/shuffled view
            lengths = lengths[np.asarray(data._indices.column(0).to_numpy(), dtype=np.int64)]
        content = f"datasets:{getattr(data, '_fingerprint', '')}"
    else:
        rows = [_ids_of(data[i], name, None) for i in range(len(data))]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        top = max((int(r.max(initial=-1)) for r in rows), default=-1)
        content = _digest(rows)
    if seq_len is not None:
        lengths = np.minimum(lengths, seq_len)
    if len(lengths) and lengths.min() == 0:
        raise ValueError(f"domain {name!r} has an example with no tokens (row {int(np.argmin(lengths))})")
    return lengths, -1 if top is None else int(top), content
