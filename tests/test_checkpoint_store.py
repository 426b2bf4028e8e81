"""Checkpoint files: atomic, checksummed, retained, and skipped when corrupt."""

import os
import signal

import numpy as np
import pytest

from mixgym.checkpoint import CheckpointStore, CorruptCheckpoint, StopRequest, capture_rng_state, decode, encode, restore_rng_state


def test_truncated_and_corrupt_checkpoints_are_skipped_with_a_warning(tmp_path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    store.save({"decision": 1, "weights": np.arange(1000)}, 1)
    newest = store.save({"decision": 2, "weights": np.arange(1000)}, 2)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="checkpoint-00000002.*truncated or corrupt"):
        payload, path = store.load_latest()
    assert payload["decision"] == 1 and path.name == "checkpoint-00000001.ckpt"
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    newest.write_bytes(bytes(flipped))
    with pytest.warns(UserWarning, match="checksum"):
        assert store.load_latest()[0]["decision"] == 1


def test_an_interrupted_write_leaves_the_previous_checkpoint_valid(tmp_path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"decision": 5}, 5)
    # a crash mid-write leaves only a temporary file behind, never a partial final file
    (tmp_path / ".checkpoint-00000006.ckpt.tmp-123").write_bytes(b"half")
    assert store.load_latest()[0] == {"decision": 5}
    assert [p.name for p in store.paths()] == ["checkpoint-00000005.ckpt"]


def test_no_checkpoint_and_bad_arguments(tmp_path) -> None:
    assert CheckpointStore(tmp_path / "missing").load_latest() is None
    with pytest.raises(ValueError, match="keep.*0"):
        CheckpointStore(tmp_path, keep=0)
    with pytest.raises(CorruptCheckpoint, match="bad header"):
        decode(b"not a checkpoint")
    assert decode(encode({"a": [1, 2]})) == {"a": [1, 2]}


def test_rng_state_round_trip() -> None:
    import torch

    state = capture_rng_state()
    first = (np.random.rand(3), torch.rand(3))
    restore_rng_state(state)
    second = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_stop_request_turns_sigterm_into_a_flag() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_failed_write_leaves_no_temporary_file_and_the_old_checkpoint(tmp_path, monkeypatch) -> None:
    import errno

    store = CheckpointStore(tmp_path)
    store.save({"decision": 1}, 1)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        store.save({"decision": 2}, 2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.ckpt"]
    assert store.load_latest()[0] == {"decision": 1}


def test_nested_stop_requests_share_a_signal() -> None:
    with StopRequest() as outer:
        os.kill(os.getpid(), signal.SIGTERM)
        with StopRequest() as inner:  # a signal that came before the inner block is not lost
            assert inner.requested == signal.SIGTERM
        with StopRequest() as inner:
            inner.requested = None
            os.kill(os.getpid(), signal.SIGINT)
        assert outer.requested == signal.SIGTERM and inner.requested == signal.SIGINT
