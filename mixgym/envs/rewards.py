"""Rewards: functions of what the backend reported before and after one decision.

A reward is called as ``reward(before, after, env)`` with two `Snapshot`s and returns a
`RewardResult` (the scalar SB3 needs plus named components, each of which goes to
``info["reward/<name>"]``, so a user sees what the scalar is made of, as HighwayEnv shows).
A plain callable returning a float, or a ``(float, dict)`` pair, works too. Built-in rewards
declare the backend signals they need, so a backend that cannot provide them is refused when
the environment is built, and the components they report (`Reward.components`), so that
``reset`` lists the same ``info`` keys as ``step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

import numpy as np

from mixgym.llm_backend.base import Signal, WeightStats

if TYPE_CHECKING:
    from mixgym.envs.mixing_env import MixingEnv


@dataclass(frozen=True)
class Snapshot:
    """The state of a run at a decision boundary, as the backend reported it.

    Attributes:
        step: optimizer steps taken.
        mixture: the mixture trained on since the previous snapshot (None at reset).
        train_loss: per-domain training loss, carried forward for domains not sampled
            since the previous snapshot (the held-out loss at reset), shape (K,).
        samples: per-domain examples trained on since the previous snapshot, shape (K,).
        eval_loss: per-domain held-out loss at the last evaluation, shape (K,).
        weights: norms of the chosen matrices, if the backend reports them.
        gradients: per-domain gradients (K, D), if a reward asked for them.
        token_ids: the tokens trained on since the previous snapshot, (sequences, length).
        progress: step / total_steps.
    """

    step: int
    mixture: np.ndarray | None
    train_loss: np.ndarray
    samples: np.ndarray
    eval_loss: np.ndarray
    weights: WeightStats | None = None
    gradients: np.ndarray | None = None
    token_ids: np.ndarray | None = None
    progress: float = 0.0


@dataclass(frozen=True)
class RewardResult:
    """A scalar reward and what it is made of (floats or per-domain arrays)."""

    value: float
    components: dict[str, Any] = field(default_factory=dict)


RewardFn = Callable[[Snapshot, Snapshot, "MixingEnv"], Union[float, tuple[float, dict[str, Any]], RewardResult]]


def zscore(values: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """Z-score across the vector, clipped to [-clip, clip]; all zeros if it is constant."""
    v = np.asarray(values, dtype=np.float64)
    centred = v - np.add.reduce(v) / v.size  # np.mean/np.std cost ~10x more on tiny vectors
    std = math.sqrt(float(np.dot(centred, centred)) / v.size)
    if not std > 1e-12:
        return np.zeros_like(v)
    return np.minimum(np.maximum(centred / std, -clip), clip)


def alignment_scores(gradients: np.ndarray) -> np.ndarray:
    """AC-ODM's per-domain gradient-alignment score (DANG-ai/AC-ODM `megatron/data/agent.py`).

    With G the (K, D) per-domain gradients and W = G G^T, domain i scores
    ``s_i = sum_{j != i} W_ij / mean_k ||G_k||``: how much a step on domain i's gradient
    lowers the other domains' losses to first order (a step of -eta g_i changes domain j's
    loss by -eta <g_i, g_j>). DoGE scores domains the same way.
    """
    g = np.asarray(gradients, dtype=np.float64)
    gram = g @ g.T
    cross = gram.sum(axis=1) - np.diag(gram)
    mean_norm = np.sqrt(np.diag(gram)).mean()
    return cross / mean_norm if mean_norm > 0 else np.zeros(len(g))


def mtld(tokens: np.ndarray, threshold: float = 0.72) -> float:
    """Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010), mean of both directions.

    Reads the sequence until the type-token ratio of the current segment falls to
    `threshold`, counts a factor and starts a new segment; a trailing partial segment counts
    as the fraction ``(1 - ttr) / (1 - threshold)``. MTLD = length / factors. A plain loop:
    segments are short, so array operations per segment cost more than they save.
    """
    seq = np.asarray(tokens).ravel().tolist()

    def one_way(items: list[int]) -> float:
        factors, types, count = 0.0, set(), 0
        for item in items:
            types.add(item)
            count += 1
            if len(types) <= threshold * count:
                factors += 1
                types, count = set(), 0
        if count:
            factors += (1 - len(types) / count) / (1 - threshold)
        return len(items) / factors if factors > 0 else float(len(items))

    if not seq:
        return 0.0
    return 0.5 * (one_way(seq) + one_way(seq[::-1]))


def type_token_ratio(tokens: np.ndarray) -> float:
    """Distinct tokens / tokens."""
    t = np.asarray(tokens).ravel()
    return len(np.unique(t)) / len(t) if len(t) else 0.0


DIVERSITY_MODES = ("mtld", "ttr-progress")
_MTLD_MIN_LENGTH = 50


def diversity_reward(token_ids: np.ndarray, progress: float, mode: str = "mtld", max_sequences: int = 8) -> float:
    """HDS's data-diversity term r_div of the tokens trained on in one decision.

    - ``"mtld"`` (the HDS paper): per sequence, (MTLD - 2) / (length - 2), in [0, 1], averaged
      over at most `max_sequences` sequences (MTLD is a Python loop; the cap bounds its
      cost). Sequences shorter than 50 tokens, too short for MTLD, use the type-token ratio,
      as the paper falls back to.
    - ``"ttr-progress"`` (the released code, DANG-ai/LLM-Training-Holistic-Data-Schedule
      `megatron/data/agent.py`): progress / TTR of all the tokens, which grows as diversity
      falls, so late in training it rewards *less* diverse data.
    """
    if mode not in DIVERSITY_MODES:
        raise ValueError(f"unknown diversity mode {mode!r}; choose one of {', '.join(DIVERSITY_MODES)}")
    rows = np.atleast_2d(np.asarray(token_ids))
    if mode == "ttr-progress":
        ttr = type_token_ratio(rows)
        return progress / ttr if ttr > 0 else 0.0
    values = []
    for row in rows[:max_sequences]:
        if len(row) < _MTLD_MIN_LENGTH:
            values.append(type_token_ratio(row))
        else:
            values.append(float(np.clip((mtld(row) - 2) / (len(row) - 2), 0.0, 1.0)))
    return float(np.mean(values)) if values else 0.0


def stability_reward(before: WeightStats, after: WeightStats, cap: float = 5.0) -> float:
    """HDS's weight-norm stability term: min(cap, 1 / (sum_l | ||W_l||_t - ||W_l||_{t-1} | + 1e-8))."""
    change = float(np.abs(after.norms - before.norms).sum())
    return min(cap, 1.0 / (change + 1e-8))


class Reward:
    """A named reward with the backend signals it needs and the components it reports."""

    name: str = ""
    requires: frozenset[Signal] = frozenset()

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every component this reward reports (``()`` for a scalar)."""
        return {}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        raise NotImplementedError


class AlignmentReward(Reward):
    """AC-ODM's gradient-alignment reward, reduced to the scalar SB3 needs.

    The paper feeds the critic the vector z(s) (s from `alignment_scores`, z-scored and
    clipped to [-3, 3]); z-scores sum to about 0, so their mean carries nothing. The scalar
    is the mixture-weighted raw score ``m . s``: the first-order benefit of the chosen
    mixture's update to every other domain. s and z(s) go to ``info["reward/alignment_scores"]``
    and ``info["reward/alignment_z"]``.
    """

    name = "alignment"
    requires = frozenset({Signal.GRADIENTS})

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        return {"alignment": (), "alignment_scores": (num_domains,), "alignment_z": (num_domains,)}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        assert after.gradients is not None and after.mixture is not None
        scores = alignment_scores(after.gradients)
        value = float(after.mixture @ scores)
        return RewardResult(value, {"alignment": value, "alignment_scores": scores, "alignment_z": zscore(scores)})


@dataclass
class HolisticReward(Reward):
    """HDS's holistic reward: ``w_align * r_align + w_div * r_div + w_stab * r_stab``.

    Source: DANG-ai/LLM-Training-Holistic-Data-Schedule `megatron/data/agent.py`; default
    weights 1, 10, 10 are the released code's. r_align is AC-ODM's per-domain alignment score
    (`alignment_scores`), r_div the diversity of the tokens trained on (`diversity_reward`,
    `diversity="mtld"` as in the paper by default, `"ttr-progress"` as in the code), r_stab
    the weight-norm stability term (`stability_reward`). HDS's reward is a K-vector (one per
    domain, the shared terms added to each); the scalar is its mixture-weighted sum, and the
    vector goes to ``info["reward/holistic_vector"]``.
    """

    w_align: float = 1.0
    w_div: float = 10.0
    w_stab: float = 10.0
    diversity: str = "mtld"
    name = "holistic"
    requires = frozenset({Signal.GRADIENTS, Signal.WEIGHT_NORMS, Signal.TOKENS})

    def __post_init__(self) -> None:
        if self.diversity not in DIVERSITY_MODES:
            raise ValueError(f"unknown diversity mode {self.diversity!r}; choose one of {', '.join(DIVERSITY_MODES)}")
        for key in ("w_align", "w_div", "w_stab"):
            if not np.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be finite, got {getattr(self, key)!r}")

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        scalars = {name: () for name in ("alignment", "diversity", "stability")}
        return {**scalars, "alignment_scores": (num_domains,), "holistic_vector": (num_domains,)}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        assert after.gradients is not None and after.mixture is not None
        assert before.weights is not None and after.weights is not None and after.token_ids is not None
        scores = alignment_scores(after.gradients)
        r_div = diversity_reward(after.token_ids, after.progress, self.diversity)
        r_stab = stability_reward(before.weights, after.weights)
        vector = self.w_align * scores + self.w_div * r_div + self.w_stab * r_stab
        value = float(after.mixture @ vector)
        return RewardResult(
            value,
            {
                "alignment": float(after.mixture @ scores),
                "diversity": r_div,
                "stability": r_stab,
                "alignment_scores": scores,
                "holistic_vector": vector,
            },
        )


class EvalLossReward(Reward):
    """Decrease of the environment's objective (`MixingEnv.objective`) over the decision.

    A plain, honest signal: what the objective gained. With ``eval_every > 1`` the held-out
    loss is refreshed only on evaluation decisions, so the reward arrives there.
    """

    name = "eval_loss"

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        return {"eval_loss": ()}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        value = env.objective(before.eval_loss) - env.objective(after.eval_loss)
        return RewardResult(value, {"eval_loss": value})


REWARDS: dict[str, type[Reward]] = {"alignment": AlignmentReward, "holistic": HolisticReward, "eval_loss": EvalLossReward}


def make_reward(reward: str | Reward | RewardFn, **kwargs: Any) -> Reward | RewardFn:
    """A reward from its name (with options such as HDS's weights) or a callable as given."""
    if isinstance(reward, str):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)} or pass a callable")
        try:
            return REWARDS[reward](**kwargs)
        except TypeError as error:
            raise ValueError(f"bad option for reward {reward!r}: {error}") from None
    if kwargs:
        raise ValueError(f"reward options {sorted(kwargs)} apply only to a named reward, not to {reward!r}")
    if not callable(reward):
        raise ValueError(f"reward must be a name ({', '.join(REWARDS)}) or a callable, got {reward!r}")
    return reward


def reward_components(reward: Reward | RewardFn, num_domains: int) -> dict[str, tuple[int, ...]]:
    """The components `reward` declares (name -> shape): a `Reward`'s, or a callable's
    ``components`` attribute (a dict) if it has one; else none (its components then appear in
    ``info`` from the first ``step`` on)."""
    if isinstance(reward, Reward):
        return reward.components(num_domains)
    declared = getattr(reward, "components", None)
    return {str(k): tuple(v) for k, v in declared.items()} if isinstance(declared, dict) else {}


def call_reward(reward: Reward | RewardFn, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
    """Call any reward and normalise its answer to a finite `RewardResult`."""
    out = reward(before, after, env)
    if isinstance(out, RewardResult):
        result = out
    elif isinstance(out, tuple) and len(out) == 2:
        result = RewardResult(float(out[0]), dict(out[1]))
    else:
        result = RewardResult(float(out))  # type: ignore[arg-type]
    if not np.isfinite(result.value):
        raise ValueError(f"reward {getattr(reward, 'name', reward)!r} returned a non-finite value {result.value!r} at step {after.step}")
    return result
