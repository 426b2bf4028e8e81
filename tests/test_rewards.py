"""The reward formulas against hand-computed values."""

import numpy as np
import pytest

from mixgym.envs.action_maps import ActionMap
from mixgym.envs.rewards import (
    HolisticReward,
    alignment_scores,
    diversity_reward,
    mtld,
    mtld_rows,
    stability_reward,
    type_token_ratio,
    zscore,
)
from mixgym.llm_backend.base import WeightStats


def test_alignment_scores_by_hand() -> None:
    g = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    # W = G G^T = [[1, 1, -1], [1, 2, -1], [-1, -1, 1]]; off-diagonal row sums: 0, 0, -2
    mean_norm = (1 + np.sqrt(2) + 1) / 3
    assert np.allclose(alignment_scores(g), np.array([0.0, 0.0, -2.0]) / mean_norm)
    assert np.array_equal(alignment_scores(np.zeros((3, 4))), np.zeros(3))


def test_zscore_clips_and_handles_constant_vectors() -> None:
    assert np.array_equal(zscore(np.full(4, 2.0)), np.zeros(4))
    z = zscore(np.array([0.0] * 99 + [1.0]))
    assert z.max() == 3.0 and np.isclose(z[:-1].mean(), -0.1005, atol=1e-3)
    assert np.allclose(zscore(np.array([1.0, 3.0])), [-1.0, 1.0])


def test_mtld_by_hand() -> None:
    # all distinct: no factor completes; the partial factor is (1 - 1) / 0.28 = 0 -> MTLD = length
    assert mtld(np.arange(10)) == 10.0
    # "a a ..." : TTR 1, 0.5 (<= 0.72) -> one factor every 2 tokens, both directions
    assert mtld(np.zeros(8, dtype=int)) == pytest.approx(2.0)
    # a b a b: TTR 1, 1, 0.667 -> factor at token 3; then "b": partial 0 -> MTLD = 4 / 1
    assert mtld(np.array([0, 1, 0, 1])) == pytest.approx(4.0)
    assert type_token_ratio(np.array([1, 1, 2, 3])) == 0.75


def reference_mtld(tokens: list[int], threshold: float = 0.72) -> float:
    """MTLD as McCarthy & Jarvis describe it, token by token."""

    def one_way(items: list[int]) -> float:
        factors, types, count, ttr = 0.0, set(), 0, 1.0
        for item in items:
            types.add(item)
            count += 1
            ttr = len(types) / count
            if ttr <= threshold:
                factors, types, count, ttr = factors + 1, set(), 0, 1.0
        if count:
            factors += (1 - ttr) / (1 - threshold)
        return len(items) / factors if factors > 0 else float(len(items))

    return 0.5 * (one_way(tokens) + one_way(tokens[::-1]))


@pytest.mark.parametrize("vocabulary", [2, 5, 30, 1000, 100_000])
def test_mtld_equals_the_token_by_token_definition(vocabulary: int) -> None:
    rng = np.random.default_rng(vocabulary)
    for length in (1, 7, 50, 513):
        tokens = rng.integers(0, vocabulary, length)
        assert mtld(tokens) == pytest.approx(reference_mtld(tokens.tolist()), rel=1e-12)
        rows = rng.integers(0, vocabulary, (6, length))
        rows[0] = np.arange(length)  # one long segment: the window has to grow to the end
        assert mtld_rows(rows).tolist() == [reference_mtld(row.tolist()) for row in rows]  # bit for bit


def test_diversity_modes() -> None:
    rng = np.random.default_rng(0)
    varied = rng.integers(0, 500, (2, 100))
    repetitive = rng.integers(0, 3, (2, 100))
    assert diversity_reward(varied, 0.5) > diversity_reward(repetitive, 0.5)
    assert 0.0 <= diversity_reward(repetitive, 0.5) <= 1.0
    # the released code's variant grows as diversity falls, and with progress
    assert diversity_reward(repetitive, 0.5, "ttr-progress") > diversity_reward(varied, 0.5, "ttr-progress")
    assert diversity_reward(varied, 0.5, "ttr-progress") == pytest.approx(0.5 / type_token_ratio(varied))
    short = np.array([[1, 2, 2, 3]])
    assert diversity_reward(short, 0.0) == pytest.approx(0.75)  # under 50 tokens: TTR
    with pytest.raises(ValueError, match="'entropy'"):
        diversity_reward(varied, 0.5, "entropy")


def test_stability_reward_by_hand() -> None:
    before = WeightStats(("a", "b"), np.array([1.0, 2.0]), np.zeros(2))
    after = WeightStats(("a", "b"), np.array([1.1, 1.8]), np.zeros(2))
    assert stability_reward(before, after) == pytest.approx(1 / 0.3)
    assert stability_reward(before, before) == 5.0


def test_holistic_weights_are_settable_and_checked() -> None:
    reward = HolisticReward(w_align=0.0, w_div=1.0, w_stab=0.0, diversity="ttr-progress")
    assert (reward.w_align, reward.w_div, reward.diversity) == (0.0, 1.0, "ttr-progress")
    with pytest.raises(ValueError, match="w_stab"):
        HolisticReward(w_stab=float("nan"))


@pytest.mark.parametrize("name", ["softmax", "normalize", "simplex"])
def test_action_map_inverse_round_trips(name: str) -> None:
    mapper = ActionMap(name, 4)
    mixture = np.array([0.5, 0.3, 0.15, 0.05])
    assert np.allclose(mapper(mapper.inverse(mixture)), mixture, atol=1e-6)
    assert mapper.space.contains(mapper.inverse(mixture))


def test_softmax_floor_keeps_every_domain_reachable() -> None:
    mapper = ActionMap("softmax", 5, temperature=0.5, eps=0.05)
    mixture = mapper(np.array([1.0, -1, -1, -1, -1]))
    assert mixture.min() >= 0.05 / 5 and np.isclose(mixture.sum(), 1.0)
    assert np.allclose(ActionMap("normalize", 3, eps=0.0)(np.array([-1.0, -0.5, -0.1])), 1 / 3)
