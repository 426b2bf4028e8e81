"""The reward formulas against hand-computed values."""

import numpy as np
import pytest

from mixgym.envs import MixingEnv
from mixgym.envs.action_maps import INVERSE_BOUND, ActionMap
from mixgym.envs.rewards import (
    AlignmentReward,
    HolisticReward,
    Snapshot,
    alignment_scores,
    alignment_terms,
    cosine_alignment,
    diversity_reward,
    mean_std_norm,
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


def test_mean_std_norm_is_the_papers_sample_std_zscore() -> None:
    v = np.array([1.0, 2.0, 4.0])
    mean, sample_std = 7 / 3, np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert np.allclose(mean_std_norm(v), (v - mean) / (sample_std + 1e-8))
    assert not np.allclose(mean_std_norm(v), zscore(v))  # zscore is the population std's
    assert np.array_equal(mean_std_norm(np.full(3, 5.0)), np.zeros(3))
    assert mean_std_norm(np.array([0.0] * 99 + [1.0])).max() == 3.0


def test_alignment_terms_by_hand() -> None:
    g = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    scores, raw = alignment_terms(g, "raw")
    assert np.array_equal(scores, alignment_scores(g)) and np.array_equal(raw, scores)
    assert np.allclose(alignment_terms(g, "z")[1], mean_std_norm(scores))
    # cosines: (0,1) 1/sqrt2, (0,2) -1, (1,2) -1/sqrt2; per domain, the mean over the other two
    r = 1 / np.sqrt(2)
    assert np.allclose(cosine_alignment(g), [(r - 1) / 2, (r - r) / 2, (-1 - r) / 2])
    assert np.array_equal(cosine_alignment(np.zeros((3, 2))), np.zeros(3))
    with pytest.raises(ValueError, match="'dot'.*z, cosine, raw"):
        alignment_terms(g, "dot")


def snapshots(gradients: np.ndarray, mixture: np.ndarray, norms: np.ndarray | None = None) -> tuple[Snapshot, Snapshot]:
    k = len(mixture)
    weights = WeightStats(("a", "b"), np.array([1.0, 2.0]), np.zeros(2))
    before = Snapshot(0, None, np.ones(k), np.zeros(k), np.ones(k), weights=weights)
    after_weights = WeightStats(("a", "b"), np.array([1.1, 1.8]), np.zeros(2))
    rng = np.random.default_rng(0)
    after = Snapshot(
        10, mixture, np.ones(k), np.ones(k), np.ones(k), weights=after_weights, gradients=gradients,
        token_ids=rng.integers(0, 500, (2, 100)), progress=0.5, step_weight_norms=norms,
    )
    return before, after


def test_scale_free_alignment_gives_a_proxy_and_its_target_the_same_reward() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((4, 30))
    mixture = np.array([0.4, 0.3, 0.2, 0.1])
    for mode, scale_free in (("z", True), ("cosine", True), ("raw", False)):
        reward = AlignmentReward(alignment=mode)
        small = reward(*snapshots(g, mixture), None).value  # type: ignore[arg-type]
        large = reward(*snapshots(100.0 * g, mixture), None).value  # type: ignore[arg-type]
        assert np.isclose(small, large) == scale_free, mode
    result = AlignmentReward()(*snapshots(g, mixture), None)  # type: ignore[arg-type]
    assert result.value == pytest.approx(float(mixture @ mean_std_norm(alignment_scores(g))))
    assert set(result.components) == set(AlignmentReward().components(4))
    assert "alignment_cosine" in AlignmentReward(alignment="cosine").components(4)
    with pytest.raises(ValueError, match="alignment mode 'dot'"):
        AlignmentReward(alignment="dot")


def test_holistic_reward_by_hand_with_per_step_stability() -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((3, 12))
    mixture = np.array([0.5, 0.3, 0.2])
    norms = np.array([[1.0, 2.0], [1.05, 2.0], [1.05, 1.9], [1.1, 1.8]])  # changes 0.05, 0.1, 0.15
    before, after = snapshots(g, mixture, norms)
    result = HolisticReward()(before, after, None)  # type: ignore[arg-type]
    r_stab = np.mean([min(5.0, 1 / (c + 1e-8)) for c in (0.05, 0.1, 0.15)])
    r_div = diversity_reward(after.token_ids, 0.5)
    vector = mean_std_norm(alignment_scores(g)) + 10 * r_div + 10 * r_stab
    assert result.components["stability"] == pytest.approx(r_stab)
    assert np.allclose(result.components["holistic_vector"], vector)
    assert result.value == pytest.approx(float(mixture @ vector))
    # the former reward: raw scores, stability over the whole decision (change 0.3)
    old = HolisticReward(alignment="raw", stability="per-decision")(before, after, None)  # type: ignore[arg-type]
    assert old.components["stability"] == pytest.approx(1 / 0.3)
    assert old.components["alignment"] == pytest.approx(float(mixture @ alignment_scores(g)))
    with pytest.raises(ValueError, match="step_weight_norms.*per-decision"):
        HolisticReward()(*snapshots(g, mixture, None), MixingEnv(total_steps=20))


def test_diversity_modes() -> None:
    rng = np.random.default_rng(0)
    varied = rng.integers(0, 500, (2, 100))
    repetitive = rng.integers(0, 3, (2, 100))
    assert diversity_reward(varied, 0.5) > diversity_reward(repetitive, 0.5)
    assert 0.0 <= diversity_reward(repetitive, 0.5) <= 1.0
    # progress / MTLD_norm grows as diversity falls, and with progress
    mtld_norm = diversity_reward(varied, 0.5)
    assert diversity_reward(varied, 0.5, "progress-over-mtld") == pytest.approx(0.5 / (mtld_norm + 1e-8))
    assert diversity_reward(repetitive, 0.5, "progress-over-mtld") > diversity_reward(varied, 0.5, "progress-over-mtld")
    assert diversity_reward(varied, 0.0, "progress-over-mtld") == 0.0
    # the released code's r_div: its progress factor is always 0
    assert diversity_reward(varied, 0.9, "released") == 0.0 == diversity_reward(repetitive, 0.3, "released")
    short = np.array([[1, 2, 2, 3]])
    assert diversity_reward(short, 0.0) == pytest.approx(0.75)  # under 50 tokens: TTR
    with pytest.raises(ValueError, match="'ttr-progress'.*mtld, progress-over-mtld, released"):
        diversity_reward(varied, 0.5, "ttr-progress")


def test_stability_reward_by_hand() -> None:
    assert stability_reward(np.array([[1.0, 2.0], [1.1, 1.8]])) == pytest.approx(1 / 0.3)
    assert stability_reward(np.array([[1.0, 2.0], [1.0, 2.0]])) == 5.0
    assert stability_reward(np.array([[1.0], [1.5], [1.5]])) == pytest.approx((2.0 + 5.0) / 2)
    with pytest.raises(ValueError, match="two or more points"):
        stability_reward(np.array([1.0, 2.0]))


def test_holistic_weights_are_settable_and_checked() -> None:
    reward = HolisticReward(w_align=0.0, w_div=1.0, w_stab=0.0, diversity="released")
    assert (reward.w_align, reward.w_div, reward.diversity) == (0.0, 1.0, "released")
    with pytest.raises(ValueError, match="w_stab"):
        HolisticReward(w_stab=float("nan"))
    with pytest.raises(ValueError, match="stability mode 'sometimes'"):
        HolisticReward(stability="sometimes")


def test_hds_per_step_stability_is_not_the_per_decision_one_on_the_toy() -> None:
    env = MixingEnv(reward="holistic", total_steps=200)
    env.reset(seed=0)
    mixture = np.array([0.0, 1.0, 0.0, 0.0, 0.0])  # one-hot "hard", the old term's favourite
    _, _, _, _, info = env.step(ActionMap("softmax", 5).inverse(mixture))
    stats_norms = env.unwrapped._snapshot.step_weight_norms
    assert stats_norms.shape == (11, 3)
    assert info["reward/stability"] == pytest.approx(stability_reward(stats_norms))
    per_decision = stability_reward(stats_norms[[0, -1]])
    assert info["reward/stability"] != pytest.approx(per_decision)


NATURAL = np.array([0.45, 0.25, 0.15, 0.1, 0.05])


@pytest.mark.parametrize("name", ["softmax", "normalize", "simplex"])
@pytest.mark.parametrize(
    "mixture",
    [np.full(5, 0.2), NATURAL, ActionMap("softmax", 5)(np.array([0.97, -0.97, -0.97, -0.97, -0.97]))],
    ids=["uniform", "natural", "near-one-hot"],
)
def test_action_map_inverse_round_trips_inside_the_bounds(name: str, mixture: np.ndarray) -> None:
    mapper = ActionMap(name, 5)
    action = mapper.inverse(mixture)
    assert np.allclose(mapper(action), mixture, atol=1e-6)
    assert mapper.space.contains(action)
    if name != "simplex":
        assert np.abs(action).max() <= INVERSE_BOUND + 1e-6  # strictly inside: no saturated tanh target


def test_softmax_inverse_is_centred() -> None:
    mapper = ActionMap("softmax", 5)
    assert np.array_equal(mapper.inverse(np.full(5, 0.2)), np.zeros(5, dtype=np.float32))
    assert abs(float(mapper.inverse(NATURAL).mean())) < 1e-6  # mean-zero logits when they fit
    # a near-one-hot mixture needs a shift away from mean zero to stay exact inside the bounds
    near = mapper(np.array([0.97, -0.97, -0.97, -0.97, -0.97]))
    assert mapper.inverse(near).max() <= INVERSE_BOUND + 1e-6
    # beyond reach (one-hot under the floor): the most extreme reachable mixture in its direction
    beyond = mapper.inverse(np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert np.allclose(beyond, [INVERSE_BOUND] + [-INVERSE_BOUND] * 4)
    assert np.argmax(mapper(beyond)) == 0


def test_softmax_floor_keeps_every_domain_reachable() -> None:
    mapper = ActionMap("softmax", 5, temperature=0.5, eps=0.05)
    mixture = mapper(np.array([1.0, -1, -1, -1, -1]))
    assert mixture.min() >= 0.05 / 5 and np.isclose(mixture.sum(), 1.0)
    assert np.allclose(ActionMap("normalize", 3, eps=0.0)(np.array([-1.0, -0.5, -0.1])), 1 / 3)
