"""MixtureDataset: exact accounting, epochs without loss or repetition across mixture changes,
max_epochs, workers, ranks, resume, sources and bad input."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mixgym.integrations import MixtureDataset
from mixgym.integrations.dataset import check_mixture

datasets = pytest.importorskip("datasets")


def rows(n: int, start: int, length: int = 4) -> list[dict[str, list[int]]]:
    """n tokenised rows whose first token tells which row it is."""
    return [{"input_ids": [start + i] + [1] * (length - 1)} for i in range(n)]


def small(**kwargs) -> MixtureDataset:
    return MixtureDataset({"a": rows(7, 100), "b": rows(5, 200), "c": rows(3, 300, length=2)}, seed=3, **kwargs)


def served(dataset: MixtureDataset, count: int | None = None) -> list[tuple[int, int, int, int]]:
    """(domain, index, epoch, position) of the examples of one in-process iteration."""
    out = []
    for example in dataset:
        out.append((int(example["domain"]), int(example["index"]), int(example["epoch"]), int(example["position"])))
        if count is not None and len(out) == count:
            break
    return out


def check_epochs(examples: list[tuple[int, int, int, int]], sizes: list[int]) -> None:
    """Within every epoch of every domain, each row is served at most once, and a completed
    epoch served every row exactly once."""
    by_epoch: dict[tuple[int, int], list[int]] = {}
    for domain, index, epoch, _ in examples:
        by_epoch.setdefault((domain, epoch), []).append(index)
    for (domain, epoch), indices in by_epoch.items():
        assert len(indices) == len(set(indices)), f"domain {domain} repeated a row in epoch {epoch}"
        later = any(d == domain and e > epoch for d, e in by_epoch)
        if later:
            assert sorted(indices) == list(range(sizes[domain])), f"domain {domain} lost rows in epoch {epoch}"


def test_accounting_counts_exactly_what_was_served() -> None:
    data = small(mixture=[0.5, 0.3, 0.2])
    examples, tokens = Counter(), Counter()
    for i, example in enumerate(data):
        examples[int(example["domain"])] += 1
        tokens[int(example["domain"])] += len(example["input_ids"])
        if i == 199:
            break
    book = data.accounting()
    assert book.position == 200
    assert book.examples.tolist() == [examples[d] for d in range(3)]
    assert book.tokens.tolist() == [tokens[d] for d in range(3)]
    assert np.allclose(book.epochs, [examples[d] / n for d, n in enumerate([7, 5, 3])])
    assert np.allclose(book.realised_mixture, [0.5, 0.3, 0.2], atol=0.08)


def test_mixture_changes_neither_lose_nor_repeat_rows_within_an_epoch() -> None:
    data = small()
    iterator = iter(data)
    examples = []
    for change, mixture in enumerate([[1, 0, 0], [0, 1, 1], [0.2, 0.2, 0.6], [0, 0, 1], [1, 1, 1]] * 4):
        data.set_mixture(mixture)
        for _ in range(6):
            e = next(iterator)
            examples.append((int(e["domain"]), int(e["index"]), int(e["epoch"]), int(e["position"])))
    assert [p for *_, p in examples] == list(range(len(examples)))
    check_epochs(examples, [7, 5, 3])
    # the mixture was followed: while it was [1, 0, 0] only domain a was served
    assert {d for d, *_ in examples[:6]} == {0}
    assert {d for d, *_ in examples[18:24]} == {2}


def test_max_epochs_retires_domains_with_a_warning_and_then_ends_the_stream() -> None:
    data = small(max_epochs={"a": 1, "b": 2, "c": 1})
    with pytest.warns(UserWarning) as caught:
        examples = served(data)
    messages = [str(w.message) for w in caught]
    assert any("'c' reached max_epochs=1" in m and "retired" in m for m in messages)
    assert any("every domain reached its max_epochs" in m for m in messages)
    assert Counter(d for d, *_ in examples) == {0: 7, 1: 10, 2: 3}  # each row max_epochs times, no more
    check_epochs(examples, [7, 5, 3])
    book = data.accounting()
    assert book.ended and book.retired == ("a", "b", "c") and book.examples.tolist() == [7, 10, 3]
    assert served(data) == []  # an exhausted stream stays empty: no hang, no repetition


def test_a_mixture_left_only_on_retired_domains_is_an_error() -> None:
    data = MixtureDataset({"a": rows(2, 0), "b": rows(2, 10)}, mixture=[1, 0], max_epochs={"a": 1})
    with pytest.warns(UserWarning, match="'a' reached max_epochs"), pytest.raises(ValueError, match="no weight to any domain still available"):
        served(data)


def test_workers_serve_the_same_sequence_as_one_process_and_follow_step_decisions() -> None:
    def run(workers: int) -> list[tuple[int, int, int, int]]:
        data = small(mixture=[1, 0, 0])
        loader = data.loader(batch_size=3, num_workers=workers)
        data.bind(3, 3, step=0, decisions=10)
        data.set_mixture([1, 0, 0], step=0, until=2)
        out = []
        for step, batch in enumerate(loader, start=1):
            out += [tuple(int(batch[k][i]) for k in ("domain", "index", "epoch", "position")) for i in range(3)]
            if step % 2 == 0:  # a decision every 2 steps: another mixture from the next step on
                mixture = [[0, 1, 0], [0, 0, 1], [1, 1, 1]][(step // 2 - 1) % 3]
                data.set_mixture(mixture, step=step, until=step + 2 if step < 18 else None)
            if step == 20:
                data.close()
                break
        return out

    single, two = run(0), run(2)
    assert two == single
    assert [p for *_, p in single] == list(range(60))
    check_epochs(single, [7, 5, 3])
    assert {d for d, *_ in single[6:12]} == {1} and {d for d, *_ in single[12:18]} == {2}


def test_simulated_ranks_split_the_stream_and_together_serve_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = served(small(mixture=[0.4, 0.4, 0.2]), 48)
    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        data = small(mixture=[0.4, 0.4, 0.2])
        data.bind(batch_size=4, examples_per_step=8)
        per_rank[rank] = served(data, 24)
    merged = sorted(per_rank[0] + per_rank[1], key=lambda e: e[3])
    assert merged == whole
    assert [p for *_, p in per_rank[1][:4]] == [4, 5, 6, 7]  # rank 1 serves the second batch of 4


def test_resume_continues_exactly_and_replay_restarts_the_same_stream(tmp_path: Path) -> None:
    def loop(data: MixtureDataset, batches: int, workers: int = 0):
        out = []
        for i, batch in enumerate(data.loader(batch_size=2, num_workers=workers)):
            out += list(zip(batch["domain"].tolist(), batch["index"].tolist()))
            if i + 1 == batches:
                break
        return out

    reference = small(mixture=[0.5, 0.3, 0.2], max_epochs=3)
    uninterrupted = loop(reference, 12)

    first = small(mixture=[0.5, 0.3, 0.2], max_epochs=3)
    head = loop(first, 5)
    state = first.state_dict()
    resumed = small(mixture=[0.5, 0.3, 0.2], max_epochs=3)
    resumed.load_state_dict(state)
    assert resumed.accounting().examples.tolist() == first.accounting().examples.tolist()
    tail = loop(resumed, 7, workers=2)
    assert head + tail == uninterrupted

    replayed = small(mixture=[0.5, 0.3, 0.2], max_epochs=3)
    replayed.load_state_dict(state, replay=True)
    assert [(d, i) for d, i, *_ in served(replayed, 10)] == head
    other = MixtureDataset({"a": rows(7, 100), "b": rows(5, 200)}, seed=3)
    with pytest.raises(ValueError, match="state is of another dataset"):
        other.load_state_dict(state)


def _text(n: int, word: str) -> list[str]:
    return [f"{word} {i} " * 5 for i in range(n)]


@pytest.mark.parametrize("kind", ["list", "datasets", "stream", "text"])
def test_a_state_saved_over_other_rows_of_the_same_shape_is_refused_unless_accepted(kind: str) -> None:
    from mixgym.integrations.dataset import SourcesChanged
    from mixgym.llm_backend.tokenizer import train_bpe

    tokenizer = train_bpe(_text(50, "alpha") + _text(50, "beta") + _text(50, "gamma"), vocab_size=300) if kind == "text" else None

    def build(first: int) -> MixtureDataset:
        a, b = rows(7, first), rows(5, 200)  # domain a: same size and lengths, other token ids
        if kind == "datasets":
            a, b = datasets.Dataset.from_list(a), datasets.Dataset.from_list(b)
        elif kind == "stream":
            a = datasets.Dataset.from_list(a).to_iterable_dataset()
        elif kind == "text":
            a, b = [{"text": t} for t in _text(40, "alpha" if first == 100 else "gamma")], [{"text": t} for t in _text(40, "beta")]
        return MixtureDataset({"a": a, "b": b}, seed=3, tokenizer=tokenizer, seq_len=8 if kind == "text" else None)

    first = build(100)
    first.consumed(position=6)
    state = first.state_dict()
    same = build(100)
    same.load_state_dict(state)  # the same rows: fine
    other = build(500)
    assert other.sizes.tolist() == first.sizes.tolist() and other.fingerprint() == first.fingerprint()
    with pytest.raises(SourcesChanged, match="other data in domain\\(s\\) 'a': same names and sizes, different rows"):
        other.load_state_dict(state)
    other.load_state_dict(state, accept_changed_sources=True)  # knowingly
    assert other.accounting().examples.tolist() == first.accounting().examples.tolist()


def _rank_main(rank: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = small(mixture=[0.4, 0.4, 0.2])
        rows_seen = []
        for i, batch in enumerate(data.loader(batch_size=3)):
            rows_seen += batch["position"].tolist()
            if i == 3:
                break
        Path(out, f"rank{rank}.txt").write_text(" ".join(map(str, rows_seen)))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two fresh processes importing torch: ~20 s (a fork after other tests' threads can deadlock)
def test_two_gloo_ranks_each_read_their_own_batches(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank_main, args=(port, str(tmp_path)), nprocs=2, join=True)
    rank0 = [int(x) for x in (tmp_path / "rank0.txt").read_text().split()]
    rank1 = [int(x) for x in (tmp_path / "rank1.txt").read_text().split()]
    assert rank0 == [0, 1, 2, 6, 7, 8, 12, 13, 14, 18, 19, 20]
    assert rank1 == [p + 3 for p in rank0]


def test_text_domains_are_packed_with_a_local_tokenizer_and_streams_are_read_in_order() -> None:
    from mixgym.data import SAMPLE_CORPUS
    from mixgym.llm_backend.corpus import load_corpus
    from mixgym.llm_backend.tokenizer import corpus_tokenizer

    corpus = load_corpus(SAMPLE_CORPUS)
    tokenizer = corpus_tokenizer(corpus.train_texts(), corpus.path)
    code = datasets.Dataset.from_list([{"text": t} for t in corpus.domains[0].train])
    stream = datasets.Dataset.from_list([{"text": t} for t in corpus.domains[1].train]).to_iterable_dataset(num_shards=2)
    data = MixtureDataset({"c": code, "changelogs": stream}, tokenizer=tokenizer, seq_len=64, seed=0, max_epochs=1)
    expected = tokenizer.encode_documents(corpus.domains[1].train)
    assert data.sizes[1] == len(expected) // 64 and data.sizes[0] > 100  # a few hundred rows each
    with pytest.warns(UserWarning):
        examples = list(data.loader(batch_size=4, num_workers=2))
    ids = torch.cat([b["input_ids"] for b in examples])
    domains = torch.cat([b["domain"] for b in examples])
    assert ids.shape[1] == 64 and len(ids) == int(data.sizes.sum())
    stream_rows = ids[domains == 1].numpy()
    assert np.array_equal(stream_rows.reshape(-1), expected[: len(stream_rows) * 64])  # front to back, every row once
    assert data.accounting().tokens.tolist() == (data.sizes * 64).tolist()


@pytest.mark.parametrize(
    ("domains", "kwargs", "message"),
    [
        ({}, {}, "non-empty mapping"),
        ({"a": [], "b": rows(2, 0)}, {}, "domain 'a' has no examples"),
        ({"a": [{"body": "x"}]}, {}, "neither an 'input_ids' nor a 'text' column \\(columns: \\['body'\\]\\)"),
        ({"a": [{"text": "x"}]}, {}, "give a tokenizer and seq_len"),
        ({"a": iter(rows(2, 0))}, {}, "one-shot iterator"),
        ({"a": rows(2, 0)}, {"max_epochs": {"z": 1}}, "unknown domain\\(s\\) \\['z'\\]"),
        ({"a": rows(2, 0)}, {"max_epochs": 0}, "max_epochs for domain 'a' must be an integer >= 1"),
        ({"a": rows(2, 0), "b": rows(2, 0)}, {"mixture": [1, 0, 0]}, "3 domains|shape \\(3,\\) but there are 2 domains"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(domains, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        MixtureDataset(domains, **kwargs)


def test_bad_mixtures_and_tokenizer_mismatch() -> None:
    names = ["a", "b"]
    with pytest.raises(ValueError, match="domain\\(s\\) \\['z'\\] that do not exist"):
        check_mixture({"a": 1, "z": 1}, names)
    with pytest.raises(ValueError, match="no weight for domain\\(s\\) \\['b'\\]"):
        check_mixture({"a": 1}, names)
    with pytest.raises(ValueError, match="the number of domains is fixed"):
        small().set_mixture([1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        check_mixture([1, -1], names)

    class Tiny:
        vocab_size = 150

        def encode_documents(self, texts):  # the TextTokenizer interface
            return np.zeros(0, dtype=np.int32)

    with pytest.raises(ValueError, match="domain 'b' holds token id 204, beyond the tokenizer's vocabulary of 150"):
        MixtureDataset({"a": rows(2, 100), "b": rows(5, 200)}, tokenizer=Tiny())


def test_a_workers_dataset_needs_steps_for_mixture_changes() -> None:
    data = small()
    loader = data.loader(batch_size=2, num_workers=2)
    next(iter(loader))
    with pytest.raises(ValueError, match="say from which step the mixture holds"):
        data.set_mixture([1, 1, 1])
    data.close()


def test_blocks_of_examples_share_one_domain() -> None:
    data = small(mixture=[0.4, 0.4, 0.2], block_size=4, max_epochs=2)
    with pytest.warns(UserWarning):
        examples = served(data)
    for start in range(0, len(examples), 4):
        block = examples[start : start + 4]
        retired_inside = len({d for d, *_ in block}) > 1
        if retired_inside:  # a domain ran out mid-block: the rest of the block drew again
            first = block[0][0]
            assert data.accounting().retired and any(d != first for d, *_ in block)
        else:
            assert len({d for d, *_ in block}) == 1
    check_epochs(examples, [7, 5, 3])
    assert Counter(d for d, *_ in examples) == {0: 14, 1: 10, 2: 6}


def test_the_dataset_pickles_for_spawned_workers() -> None:
    import pickle

    stream = datasets.Dataset.from_list(rows(6, 200)).to_iterable_dataset()
    data = MixtureDataset({"a": rows(7, 100), "s": stream}, seed=2, max_epochs=1)
    copy = pickle.loads(pickle.dumps(data))
    assert served(copy) == served(data)


def _second_worker_starts_late(worker: int) -> None:
    if worker == 1:
        import time

        time.sleep(1.5)


def test_a_worker_that_starts_late_reads_the_same_start_as_the_others() -> None:
    # the loop consumes worker 0's first batch (and counts it) before worker 1 starts: the
    # iteration's start must not have moved meanwhile
    data = small(mixture=[0.4, 0.4, 0.2])
    positions = []
    for i, batch in enumerate(data.loader(batch_size=3, num_workers=2, worker_init_fn=_second_worker_starts_late)):
        positions += batch["position"].tolist()
        if i == 3:
            break
    assert positions == list(range(12))
