"""The what-if capability (Signal.WHATIF) on the toy backend, and its accounting in MixingEnv."""

from __future__ import annotations

import numpy as np
import pytest

from mixgym.envs import MixingEnv
from mixgym.llm_backend import Signal
from mixgym.llm_backend.toy import ToyBackend
from mixgym.llm_backend.whatif import WhatIfCache, probe_learning_rates

K = 5
PROBES = np.vstack([np.full(K, 1 / K), 0.9 * np.eye(K)[:2] + 0.1 / K])
CANDIDATES = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [0.6, 0.2, 0.2]])


def trained_toy(seed: int = 3, steps: int = 100) -> ToyBackend:
    backend = ToyBackend(total_steps=400)
    backend.reset(seed)
    backend.train(np.full(K, 1 / K), steps)
    return backend


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("method,rank", [("merge", None), ("merge", 2), ("exact", None)])
def test_simulate_leaves_the_toy_run_bit_identical(method: str, rank: int | None) -> None:
    backend = trained_toy()
    before = backend.state_dict()
    evaluation = backend.evaluate()
    result = backend.simulate(PROBES, 20, CANDIDATES, method, lr_scale=0.5, rank=rank)
    assert_same_state(before, backend.state_dict())
    assert backend.evaluate() == evaluation
    assert result.probe_loss.shape == (3, K) and result.candidate_loss.shape == (4, K)
    assert np.allclose(result.base_loss, list(evaluation.values()))
    assert np.allclose(result.candidate_mixtures, CANDIDATES @ PROBES)
    assert result.probe_steps == 20 * (3 + (4 if method == "exact" else 0))


def test_a_run_with_what_if_calls_equals_one_without() -> None:
    def run(ask: bool) -> tuple[list, dict]:
        env = MixingEnv(total_steps=60, reward="eval_loss", action_map="simplex")
        obs, info = env.reset(seed=11)
        trace = [obs]
        rng = np.random.default_rng(0)
        done = False
        while not done:
            if ask:
                env.what_if(PROBES, 5, CANDIDATES, "exact", lr_scale=0.5)
                env.what_if(PROBES, 5, CANDIDATES, "merge", lr_scale=0.5, rank=1)
            obs, reward, done, _, info = env.step(rng.dirichlet(np.ones(K)))
            trace += [obs, reward, {k: v for k, v in info.items() if not k.startswith("compute/")}]
        return trace, env.backend.state_dict()

    plain, plain_state = run(False)
    asked, asked_state = run(True)
    assert_same_state(plain_state, asked_state)
    for a, b in zip(plain, asked):
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        else:
            assert np.array_equal(a, b)


def test_answers_are_deterministic_and_cached() -> None:
    backend = trained_toy()
    first = backend.simulate(PROBES, 15, CANDIDATES, lr_scale=0.5)
    again = backend.simulate(PROBES, 15, CANDIDATES, lr_scale=0.5)
    assert not first.cached and again.cached and again.wall_time == 0.0
    assert np.array_equal(first.candidate_loss, again.candidate_loss)
    backend.whatif_cache = WhatIfCache()
    recomputed = backend.simulate(PROBES, 15, CANDIDATES, lr_scale=0.5)
    assert not recomputed.cached and np.array_equal(first.candidate_loss, recomputed.candidate_loss)
    other = backend.simulate(PROBES, 16, CANDIDATES, lr_scale=0.5)  # another request: not a hit
    assert not other.cached and not np.array_equal(first.probe_loss, other.probe_loss)
    backend.train(np.full(K, 1 / K), 1)  # another state: not a hit
    assert not backend.simulate(PROBES, 15, CANDIDATES, lr_scale=0.5).cached


def test_the_disk_cache_serves_a_new_backend(tmp_path) -> None:
    backend = trained_toy()
    backend.whatif_cache = WhatIfCache(tmp_path)
    first = backend.simulate(PROBES, 10, CANDIDATES, "exact", lr_scale=0.5)
    assert len(list(tmp_path.glob("*.whatif"))) == 1
    fresh = trained_toy()
    fresh.whatif_cache = WhatIfCache(tmp_path)
    hit = fresh.simulate(PROBES, 10, CANDIDATES, "exact", lr_scale=0.5)
    assert hit.cached and np.array_equal(hit.candidate_loss, first.candidate_loss) and hit.cost == first.cost


def test_merge_and_exact_agree_at_the_probes_and_rank_truncation_bites() -> None:
    backend = trained_toy()
    one_hot = np.eye(3)
    merged = backend.simulate(PROBES, 20, one_hot, "merge", lr_scale=0.5)
    exact = backend.simulate(PROBES, 20, one_hot, "exact", lr_scale=0.5)
    # a one-hot candidate is its probe: the merged delta is the probe's, and the exact branch
    # trains the probe's mixture on the same (common) random numbers
    assert np.allclose(merged.candidate_loss, merged.probe_loss, rtol=1e-5)
    assert np.allclose(exact.candidate_loss, merged.probe_loss, rtol=1e-5)
    full_rank = backend.simulate(PROBES, 20, one_hot, "merge", lr_scale=0.5, rank=64)
    rank_one = backend.simulate(PROBES, 20, one_hot, "merge", lr_scale=0.5, rank=1)
    assert np.allclose(full_rank.probe_loss, merged.probe_loss, rtol=1e-4)
    assert not np.allclose(rank_one.probe_loss, merged.probe_loss, rtol=1e-3)


def test_cost_is_in_main_step_equivalents() -> None:
    backend = trained_toy()
    config = backend.config
    evaluation = K * config.eval_size / (3 * config.batch_size)  # a forward pass over the held-out sets
    merge = backend.simulate(PROBES, 10, CANDIDATES, lr_scale=0.5)
    assert merge.cost == pytest.approx(3 * 10 + (1 + 3 + 4) * evaluation)
    assert merge.cost == backend.whatif_cost(PROBES, 10, CANDIDATES)
    assert backend.whatif_cost(PROBES, 10, CANDIDATES, "exact") == pytest.approx((3 + 4) * 10 + 8 * evaluation)


def test_probe_schedule_has_no_warm_up_and_decays_at_the_end() -> None:
    rates = probe_learning_rates(2.0, 10)
    assert rates[0] == 2.0 and rates[7] == 2.0 and rates[-1] < 2.0
    assert probe_learning_rates(1.0, 5000)[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize(
    "probes,steps,candidates,method,match",
    [
        (np.full((2, K), 0.3), 5, np.full((1, 2), 0.5), "merge", "probe 0 of probes is not on the simplex"),
        (np.full((2, 4), 0.25), 5, np.full((1, 2), 0.5), "merge", r"shape \(n, 5\)"),
        (np.full((2, K), 0.2), 0, np.full((1, 2), 0.5), "merge", "steps .* got 0"),
        (np.full((2, K), 0.2), 5, np.full((1, 3), 1 / 3), "merge", r"candidates must have shape \(n, 2\)"),
        (np.full((2, K), 0.2), 5, np.array([[1.5, -0.5]]), "merge", "candidate 0 of candidates"),
        (np.full((2, K), 0.2), 5, np.full((1, 2), 0.5), "average", "unknown what-if method 'average'"),
        (np.zeros((0, K)), 5, np.zeros((1, 0)), "merge", "at least one probe"),
    ],
)
def test_bad_requests_are_refused_before_training(probes, steps, candidates, method, match) -> None:
    backend = trained_toy()
    before = backend.state_dict()
    with pytest.raises(ValueError, match=match):
        backend.simulate(probes, steps, candidates, method)
    env = MixingEnv(total_steps=40)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.what_if(probes, steps, candidates, method)
    assert_same_state(before, backend.state_dict())


@pytest.mark.parametrize("kwargs,match", [({"lr_scale": 0.0}, "lr_scale"), ({"rank": 0}, "rank")])
def test_bad_probe_options_are_refused(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        trained_toy().simulate(PROBES, 5, CANDIDATES, **kwargs)


class _NoWhatIf(ToyBackend):
    signals = ToyBackend.signals - {Signal.WHATIF}


def test_a_backend_without_the_capability_is_named() -> None:
    env = MixingEnv(backend=_NoWhatIf(total_steps=40))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"which _NoWhatIf does not provide; backends that do: toy \(ToyBackend\), hf"):
        env.what_if(PROBES, 5, CANDIDATES)


def test_env_charges_what_if_compute_in_info() -> None:
    env = MixingEnv(total_steps=60, info_timings=True)
    _, info = env.reset(seed=0)
    assert info["compute/whatif"] == 0.0 and info["compute/total"] == 0.0 and info["timings/whatif"] == 0.0
    result = env.what_if(PROBES, 10, CANDIDATES, lr_scale=0.5)
    _, _, _, _, info = env.step(np.zeros(K))
    assert info["compute/main"] == 10 and info["compute/whatif"] == pytest.approx(result.cost)
    assert info["compute/total"] == pytest.approx(10 + result.cost)
    assert info["compute/probe_steps"] == 30 and info["compute/whatif_calls"] == 1
    assert info["timings/whatif"] > 0 and env.timings["total"]["whatif"] > 0
    later = env.what_if(PROBES, 10, CANDIDATES, lr_scale=0.5)  # another state: not from the cache
    assert not later.cached
    _, _, _, _, info = env.step(np.zeros(K))
    assert info["compute/whatif"] == pytest.approx(result.cost + later.cost) and info["compute/whatif_calls"] == 2
    _, info = env.reset(seed=0)
    assert info["compute/whatif"] == 0.0 and info["compute/whatif_calls"] == 0


def test_compute_budget_ends_the_episode_early_and_refuses_what_if_beyond_it() -> None:
    env = MixingEnv(total_steps=100, budget="compute", steps_per_action=10)
    env.reset(seed=0)
    cost = env.what_if_cost(PROBES, 10, CANDIDATES)
    assert 30 < cost < 90
    env.what_if(PROBES, 10, CANDIDATES, lr_scale=0.5)
    steps, done = [], False
    while not done:
        _, _, done, _, info = env.step(np.zeros(K))
        steps.append(int(info["step"]))
    assert info["compute/total"] >= 100 and info["compute/total"] < 101
    assert steps[-1] == int(np.ceil(100 - cost)) < 100
    with pytest.raises(RuntimeError, match="terminated"):
        env.what_if(PROBES, 10, CANDIDATES)
    env.reset(seed=0)
    env.step(np.zeros(K))
    with pytest.raises(ValueError, match="only .* of the compute budget remain"):
        env.what_if(PROBES, 30, CANDIDATES)
    with pytest.raises(ValueError, match="unknown budget 'flops'"):
        MixingEnv(budget="flops")


def test_env_state_dict_carries_the_counters_and_the_cache() -> None:
    env = MixingEnv(total_steps=60)
    env.reset(seed=0)
    env.step(np.zeros(K))
    env.what_if(PROBES, 5, CANDIDATES, lr_scale=0.5)
    state = env.state_dict()
    other = MixingEnv(total_steps=60)
    other.reset(seed=5)
    other.load_state_dict(state)
    assert other.compute == env.compute and len(other.backend.whatif_cache) == 1
    assert other.what_if(PROBES, 5, CANDIDATES, lr_scale=0.5).cached
    _, _, _, _, a = env.step(np.zeros(K))
    _, _, _, _, b = other.step(np.zeros(K))
    # a cached answer is charged as the compute it stands for, so a resumed run's accounting
    # equals an uninterrupted one's; `other` asked twice
    assert b["compute/whatif"] == pytest.approx(2 * a["compute/whatif"])
    assert np.array_equal(a["eval_loss"], b["eval_loss"])


def _planted(path, **changes) -> bytes:
    """A what-if file's .npz with `changes` applied (a forger's file: valid shapes, no signature)."""
    import io

    from mixgym.checkpoint import unseal

    with np.load(io.BytesIO(unseal(path.read_bytes())), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "planted", "resealed wrong shape"])
def test_a_bad_cache_file_is_a_miss_with_a_warning_or_a_named_error_when_strict(tmp_path, damage: str) -> None:
    from mixgym.checkpoint import seal
    from mixgym.llm_backend.whatif import WhatIfCacheError

    backend = trained_toy()
    backend.whatif_cache = WhatIfCache(tmp_path)
    first = backend.simulate(PROBES, 10, CANDIDATES, lr_scale=0.5)
    (path,) = tmp_path.glob("*.whatif")
    data = path.read_bytes()
    if damage == "truncated":  # a power loss before the data reached the disk
        path.write_bytes(data[: len(data) // 2])
    elif damage == "wrong shape":
        path.write_bytes(_planted(path, candidate_loss=np.zeros((2, 1))))
    elif damage == "planted":  # valid shapes, changed losses, no signature: would steer the run
        path.write_bytes(_planted(path, candidate_loss=first.candidate_loss * 0.5))
    elif damage == "resealed wrong shape":  # signed (by us) but malformed
        path.write_bytes(seal(_planted(path, probe_loss=np.zeros(3))))
    fresh = trained_toy()
    fresh.whatif_cache = WhatIfCache(tmp_path)
    with pytest.warns(UserWarning, match=f"what-if cache file '{path}'.*recomputing its answer"):
        again = fresh.simulate(PROBES, 10, CANDIDATES, lr_scale=0.5)
    assert not again.cached and np.array_equal(again.candidate_loss, first.candidate_loss)
    assert np.array_equal(again.probe_loss, first.probe_loss) and again.cost == first.cost
    rewritten = trained_toy()
    rewritten.whatif_cache = WhatIfCache(tmp_path)
    assert rewritten.simulate(PROBES, 10, CANDIDATES, lr_scale=0.5).cached  # the recomputed answer, sealed
    path.write_bytes(data[:10] if damage == "truncated" else _planted(path, candidate_loss=first.candidate_loss * 0.5))
    strict = trained_toy()
    strict.whatif_cache = WhatIfCache(tmp_path, strict=True)
    with pytest.raises(WhatIfCacheError, match="what-if cache file .* delete it"):
        strict.simulate(PROBES, 10, CANDIDATES, lr_scale=0.5)


def test_cache_files_are_written_atomically_and_durably(tmp_path, monkeypatch) -> None:
    import os

    from mixgym import checkpoint

    synced = []
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    backend = trained_toy()
    backend.whatif_cache = WhatIfCache(tmp_path)
    backend.simulate(PROBES, 10, CANDIDATES, lr_scale=0.5)
    (path,) = tmp_path.glob("*.whatif")
    assert any(".whatif.tmp-" in name for name in synced) and str(tmp_path) in synced  # the file, then its folder
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
