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
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

import numpy as np

from mixgym.llm_backend.base import Signal, WeightStats
from mixgym.validation import number

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
        step_weight_norms: norms of the chosen matrices at the previous snapshot and after
            every optimizer step since, (steps + 1, L), if the backend reports them.
        cumulative_samples: per-domain examples trained on since reset, shape (K,).
        baseline_eval_loss: the baseline twin's per-domain held-out loss at the same
            evaluation, if the reward runs a twin (`AdvantageReward`), shape (K,).
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
    step_weight_norms: np.ndarray | None = None
    cumulative_samples: np.ndarray | None = None
    baseline_eval_loss: np.ndarray | None = None


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


def mean_std_norm(values: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """AC-ODM's and HDS's normalisation, ``mean_std_norm``: ``(v - mean) / (std + 1e-8)``
    clamped to [-clip, clip], with torch's default sample standard deviation (n - 1).

    Source: DANG-ai/AC-ODM and DANG-ai/LLM-Training-Holistic-Data-Schedule, both
    ``megatron/data/agent.py:16-20``. Unlike `zscore` (population std, zeros for a constant
    vector), a constant vector gives zeros here through the 1e-8, as in the source.
    """
    v = np.asarray(values, dtype=np.float64)
    centred = v - v.mean()
    std = math.sqrt(float(np.dot(centred, centred)) / max(v.size - 1, 1))
    return np.clip(centred / (std + 1e-8), -clip, clip)


def alignment_scores(gradients: np.ndarray) -> np.ndarray:
    """AC-ODM's per-domain gradient-alignment score (DANG-ai/AC-ODM `megatron/data/agent.py:89-97`).

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


def cosine_alignment(gradients: np.ndarray) -> np.ndarray:
    """Per domain, the mean cosine between its gradient and each other domain's, in [-1, 1]
    (0 for a domain whose gradient is zero)."""
    g = np.asarray(gradients, dtype=np.float64)
    norms = np.linalg.norm(g, axis=1)
    unit = np.divide(g, norms[:, None], out=np.zeros_like(g), where=norms[:, None] > 0)
    cosines = unit @ unit.T
    return (cosines.sum(axis=1) - np.diag(cosines)) / max(len(g) - 1, 1)


ALIGNMENT_MODES = ("z", "cosine", "raw")
"""How the per-domain alignment term is scaled (see `alignment_terms`)."""


def alignment_terms(gradients: np.ndarray, mode: str = "z") -> tuple[np.ndarray, np.ndarray]:
    """(raw scores s, the per-domain term a reward weights by the mixture).

    - ``"z"`` (default): ``mean_std_norm(s)``, what both papers use: AC-ODM's reward vector
      (``agent.py:98-99``) and HDS's r_align (``agent.py:123-124``), after a clip to
      [dw_min, dw_max] = [-999, 999] (``acodm_config/ddpg_1B.yml:8-9``) that never binds at
      the scale of s. Scale-free and centred: ``m . z(s) = (m - uniform) . z(s)`` pays for
      leaning towards the domains that help the others, whatever the model's size.
    - ``"cosine"``: `cosine_alignment`, also scale-free but not centred: it says how much the
      domains agree at all, so a uniform mixture is paid the mean pairwise cosine.
    - ``"raw"``: s itself, mixgym's former scalar (``m . s``): its scale follows the gradients'
      (``m . s`` is 0.01-0.04 on pythia-tiny beside HDS's other terms, 10 r_div = 3-5 and
      10 r_stab = 50; on the toy mean |s| falls ~7x within a run; `benchmarks/hds_reward_terms.py`),
      so a policy learned on a proxy sees another scale on its target.
    """
    if mode not in ALIGNMENT_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; choose one of {', '.join(ALIGNMENT_MODES)}")
    scores = alignment_scores(gradients)
    if mode == "z":
        return scores, mean_std_norm(scores)
    if mode == "cosine":
        return scores, cosine_alignment(gradients)
    return scores, scores


def mtld(tokens: np.ndarray, threshold: float = 0.72) -> float:
    """Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010) of one sequence; see
    `mtld_rows`, which computes it for many sequences at once."""
    seq = np.asarray(tokens).ravel()
    return float(mtld_rows(seq[None, :], threshold)[0]) if seq.size else 0.0


def mtld_rows(rows: np.ndarray, threshold: float = 0.72) -> np.ndarray:
    """MTLD (McCarthy & Jarvis 2010) of each row of `rows` (n, L), the mean of both directions.

    The textbook definition: read the sequence until the type-token ratio of the current
    segment falls to `threshold`, count a factor and start a new segment; a trailing partial
    segment counts as the fraction ``(1 - ttr) / (1 - threshold)``; MTLD = length / factors
    (the length itself when no factor is counted). Vectorised: the 2n chains (n rows, each
    read both ways) advance one segment per iteration together; a segment's end is the first
    position whose count of distinct types, a cumulative sum of "this token did not occur
    since the segment's start", reaches ``threshold * count``. The values are bit-identical
    to the token-by-token loop (same float operations in the same order).
    """
    rows = np.atleast_2d(np.asarray(rows))
    n, length = rows.shape
    if length == 0:
        return np.zeros(n)
    previous, following = _neighbour_occurrences(rows)
    # read backwards, a token's previous occurrence is its next one read forwards
    backward = np.where(following[:, ::-1] < length, length - 1 - following[:, ::-1], -1)
    one_way = _mtld_one_way(np.concatenate([previous, backward]), threshold)
    return 0.5 * (one_way[:n] + one_way[n:])


def _neighbour_occurrences(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, L) each: the index of each token's previous occurrence in its row (-1 if none) and
    of its next one (L if none), from one stable sort per row."""
    m, length = rows.shape
    if rows.min() >= 0 and rows.max() < 2**16:
        rows = rows.astype(np.uint16)  # numpy radix-sorts 16-bit keys
    order = np.argsort(rows, axis=1, kind="stable")  # stable: equal tokens in position order
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = ordered[:, 1:] == ordered[:, :-1]
    which = np.nonzero(repeat)[0]
    earlier, later = order[:, :-1][repeat], order[:, 1:][repeat]
    previous = np.full((m, length), -1, dtype=np.int32)
    previous[which, later] = earlier
    following = np.full((m, length), length, dtype=np.int32)
    following[which, earlier] = later
    return previous, following


def _mtld_one_way(previous: np.ndarray, threshold: float, width: int = 128) -> np.ndarray:
    """Forward MTLD of each row, from `_neighbour_occurrences`: a token is a new type of the
    segment starting at s exactly when its previous occurrence lies before s."""
    m, length = previous.shape
    # each row padded with "new type" positions: past the end the TTR only rises, so no
    # factor completes there, and a window may run over the end unchecked
    padded = np.full((m, 2 * length), -1, dtype=np.int32)
    padded[:, :length] = previous
    flat = padded.ravel()
    row_start = np.arange(m) * (2 * length)
    offsets = np.arange(max(length, m))
    limits = threshold * np.arange(1, length + 1)
    factors = np.zeros(m)
    start = np.zeros(m, dtype=np.int64)
    chains = np.arange(m)
    while chains.size:
        width = min(width, length)
        begin = start[chains]
        window = flat[(row_start[chains] + begin)[:, None] + offsets[:width]]
        distinct = np.cumsum(window < begin[:, None], axis=1, dtype=np.int32)
        hit = distinct <= limits[:width]
        first = hit.argmax(axis=1)
        found = hit[offsets[: chains.size], first]
        factors[chains] += found  # one factor per segment that ended
        end = begin + first + 1
        start[chains] = np.where(found, end, begin)
        if found.all():
            chains = chains[end < length]
            continue
        tail = ~found & (begin + width >= length)  # the rest of the row: a partial factor
        count = length - begin[tail]
        factors[chains[tail]] += (1 - distinct[tail, count - 1] / count) / (1 - threshold)
        if not (found | tail).all():
            width *= 2  # a segment longer than the window: look further next time
        chains = chains[~tail & (start[chains] < length)]
    return np.where(factors > 0, length / np.where(factors > 0, factors, 1.0), float(length))


def type_token_ratio(tokens: np.ndarray) -> float:
    """Distinct tokens / tokens."""
    t = np.asarray(tokens).ravel()
    return len(np.unique(t)) / len(t) if len(t) else 0.0


DIVERSITY_MODES = ("mtld", "progress-over-mtld", "released")
_MTLD_MIN_LENGTH = 50


def diversity_reward(token_ids: np.ndarray, progress: float, mode: str = "mtld", max_sequences: int = 8) -> float:
    """HDS's data-diversity term r_div of the tokens trained on in one decision.

    What is known. The HDS paper describes lexical diversity by MTLD normalised as
    ``MTLD_norm = (MTLD - 2) / (seq_len - 2)`` (MTLD's range is [2, seq_len]); whether its
    r_div is MTLD_norm or ``t' / MTLD_norm`` (t' = step / total steps) is not established.
    The released code (DANG-ai/LLM-Training-Holistic-Data-Schedule ``megatron/data/agent.py``)
    computes ``t' / (mtld + 1e-8)`` (lines 129-139) where "mtld" is the mean per-sequence
    type-token ratio of the step's last micro-batch (``calculate_mtld``, lines 76-97, its
    docstring: "a simplified proxy for MTLD") and ``t' = neox_args.iteration / train_iters``
    (line 131); ``neox_args.iteration`` is set once, to 0 for a run that loads no checkpoint
    (``megatron/training.py:714-726``), and the training loop counts in a local variable
    (line 148), so the released r_div is identically 0. The modes:

    - ``"mtld"`` (default, the paper as understood): per sequence, MTLD_norm clipped to
      [0, 1], averaged over at most `max_sequences` sequences (`mtld_rows`; the cap bounds
      its cost). Sequences shorter than 50 tokens, too short for MTLD, use the
      type-token ratio. Default because it rewards diverse data, as the paper's text says
      the term should, and is bounded like the other terms.
    - ``"progress-over-mtld"``: ``progress / MTLD_norm`` (0 when MTLD_norm is 0), the code's
      formula with MTLD_norm in place of its TTR proxy: it grows as diversity falls and as
      training goes on.
    - ``"released"``: what the released code computes, 0.
    """
    if mode not in DIVERSITY_MODES:
        raise ValueError(f"unknown diversity mode {mode!r}; choose one of {', '.join(DIVERSITY_MODES)}")
    if mode == "released":
        return 0.0
    rows = np.atleast_2d(np.asarray(token_ids))
    rows = rows[:max_sequences]
    if rows.size == 0:
        mtld_norm = 0.0
    elif rows.shape[1] < _MTLD_MIN_LENGTH:
        mtld_norm = float(np.mean([type_token_ratio(row) for row in rows]))
    else:
        mtld_norm = float(np.mean(np.clip((mtld_rows(rows) - 2) / (rows.shape[1] - 2), 0.0, 1.0)))
    if mode == "progress-over-mtld":
        return progress / (mtld_norm + 1e-8) if mtld_norm > 0 else 0.0
    return mtld_norm


STABILITY_MODES = ("per-step", "per-decision")


def stability_reward(norms: np.ndarray, cap: float = 5.0) -> float:
    """HDS's weight-norm stability term, averaged over consecutive rows of `norms`.

    `norms` is (n + 1, L): the chosen matrices' norms at n + 1 successive points. For each of
    the n changes, ``min(cap, 1 / (sum_l | ||W_l||_t - ||W_l||_{t-1} | + 1e-8))``
    (DANG-ai/LLM-Training-Holistic-Data-Schedule ``megatron/data/agent.py:453-457``, cap
    ``r_stability_cap`` 5.0); the result is their mean. HDS computes it once per optimizer
    step (``update_pools`` at each gradient-accumulation boundary, lines 432-461), so the
    holistic reward's default feeds the per-step norms of the decision (`TrainStats.
    step_weight_norms`); two rows (start and end of a decision) give the per-decision form.
    """
    n = np.asarray(norms, dtype=np.float64)
    if n.ndim != 2 or len(n) < 2:
        raise ValueError(f"stability needs norms at two or more points, shape (n + 1, L); got shape {n.shape}")
    change = np.abs(np.diff(n, axis=0)).sum(axis=1)
    return float(np.minimum(cap, 1.0 / (change + 1e-8)).mean())


class Reward:
    """A named reward with the backend signals it needs and the components it reports."""

    name: str = ""
    requires: frozenset[Signal] = frozenset()

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every component this reward reports (``()`` for a scalar)."""
        return {}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        raise NotImplementedError


def _check_mode(name: str, value: str, modes: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in modes:
        raise ValueError(f"unknown {name} mode {value!r}; choose one of {', '.join(modes)}")


@dataclass
class AlignmentReward(Reward):
    """AC-ODM's gradient-alignment reward, reduced to the scalar SB3 needs.

    AC-ODM feeds its vector-valued critic ``mean_std_norm(s)`` (s from `alignment_scores`;
    DANG-ai/AC-ODM ``megatron/data/agent.py:89-99``). An SB3 critic is scalar, so the scalar
    is the mixture-weighted term ``m . a`` with a = `alignment_terms` (`alignment`: ``"z"``,
    the default, is the paper's vector and scale-free, so a proxy model and its larger target
    see rewards on the same scale; ``"cosine"`` is scale-free too; ``"raw"`` is mixgym's
    former ``m . s``, kept for comparison). s and z(s) go to ``info["reward/alignment_scores"]``
    and ``info["reward/alignment_z"]`` (and the cosines to ``reward/alignment_cosine``).
    """

    alignment: str = "z"
    name = "alignment"
    requires = frozenset({Signal.GRADIENTS})

    def __post_init__(self) -> None:
        _check_mode("alignment", self.alignment, ALIGNMENT_MODES)

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        extra = {"alignment_cosine": (num_domains,)} if self.alignment == "cosine" else {}
        return {"alignment": (), "alignment_scores": (num_domains,), "alignment_z": (num_domains,), **extra}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        assert after.gradients is not None and after.mixture is not None
        scores, terms = alignment_terms(after.gradients, self.alignment)
        value = float(after.mixture @ terms)
        parts = {"alignment": value, "alignment_scores": scores, "alignment_z": mean_std_norm(scores)}
        if self.alignment == "cosine":
            parts["alignment_cosine"] = terms
        return RewardResult(value, parts)


@dataclass
class HolisticReward(Reward):
    """HDS's holistic reward: ``w_align * r_align + w_div * r_div + w_stab * r_stab``.

    Source: DANG-ai/LLM-Training-Holistic-Data-Schedule ``megatron/data/agent.py``; weights
    1, 10, 10 are the released code's defaults (lines 463-467). The terms and their defaults:

    - r_align (`alignment`): ``"z"``, ``mean_std_norm`` of AC-ODM's alignment score as HDS
      computes it (lines 115-124; on pythia-tiny ``m . z`` spans 0 to -1.2 across mixtures);
      ``"raw"`` the unnormalised score, mixgym's former term (0.01-0.04 beside 10 r_stab = 50
      and 10 r_div = 3-5 on pythia-tiny, so the agent could not see it); ``"cosine"`` (see
      `alignment_terms`).
    - r_div (`diversity`): `diversity_reward` -- ``"mtld"`` (default, the paper as
      understood), ``"progress-over-mtld"`` or ``"released"`` (identically 0, as the released
      code's; its docstring says what is known).
    - r_stab (`stability`): `stability_reward` -- ``"per-step"`` (default, as HDS: once per
      optimizer step, averaged over the decision's steps) or ``"per-decision"`` (the norms'
      change across the whole decision, mixgym's former term: over 10 steps it pays most for
      the mixtures whose gradients move the weights least -- on the toy 48.9 for one-hot "hard"
      against 47.8 for uniform, whose final loss is 42% lower; per step both hit the cap, 50).

    HDS's reward is a K-vector (one per domain, the shared terms added to each, line 467);
    the scalar SB3 needs is its mixture-weighted sum, and the vector goes to
    ``info["reward/holistic_vector"]``.
    """

    w_align: float = 1.0
    w_div: float = 10.0
    w_stab: float = 10.0
    diversity: str = "mtld"
    alignment: str = "z"
    stability: str = "per-step"
    name = "holistic"
    requires = frozenset({Signal.GRADIENTS, Signal.WEIGHT_NORMS, Signal.TOKENS})

    def __post_init__(self) -> None:
        _check_mode("diversity", self.diversity, DIVERSITY_MODES)
        _check_mode("alignment", self.alignment, ALIGNMENT_MODES)
        _check_mode("stability", self.stability, STABILITY_MODES)
        for key in ("w_align", "w_div", "w_stab"):
            number(f"reward_kwargs {key}", getattr(self, key))

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        scalars = {name: () for name in ("alignment", "diversity", "stability")}
        return {**scalars, "alignment_scores": (num_domains,), "holistic_vector": (num_domains,)}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        assert after.gradients is not None and after.mixture is not None
        assert before.weights is not None and after.weights is not None and after.token_ids is not None
        scores, r_align = alignment_terms(after.gradients, self.alignment)
        r_div = diversity_reward(after.token_ids, after.progress, self.diversity)
        if self.stability == "per-decision":
            r_stab = stability_reward(np.stack([before.weights.norms, after.weights.norms]))
        elif after.step_weight_norms is None:
            raise ValueError(
                f"stability='per-step' needs the per-step weight norms (TrainStats.step_weight_norms), which "
                f"{type(env.backend).__name__} does not report; use reward_kwargs={{'stability': 'per-decision'}}"
            )
        else:
            r_stab = stability_reward(after.step_weight_norms)
        vector = self.w_align * r_align + self.w_div * r_div + self.w_stab * r_stab
        value = float(after.mixture @ vector)
        return RewardResult(
            value,
            {
                "alignment": float(after.mixture @ r_align),
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


BASELINES = ("uniform", "natural")
"""Named reference mixtures of `AdvantageReward`'s baseline twin (or give K weights)."""


@dataclass
class AdvantageReward(Reward):
    """Counterfactual reward: the change of the run's advantage over a baseline twin.

    The environment runs a baseline twin of the agent's run (`Signal.TWIN`): the same initial
    model and the same random numbers (data order and sampling draws: common random numbers),
    trained in lock-step on a fixed reference mixture, and evaluated whenever the agent's run
    is. With the objective J (target-weighted mean held-out loss, lower is better) of the twin,
    B_t, and of the agent's run, A_t, after decision t, the advantage is ``B_t - A_t`` and the
    reward is its change, ``r_t = (B_t - A_t) - (B_{t-1} - A_{t-1})``. The sum telescopes:
    the undiscounted return of an episode is ``B_T - A_T`` (``B_0 = A_0``: the runs start from
    the same model), exactly the agent's final advantage. The mixture's effect is measured
    against the twin on the same draws, so the large common trend (loss falls whatever the
    mixture) and most of the sampling noise cancel -- what ``eval_loss``'s per-decision
    decrease does not do.

    ``terminal=True`` (the ``"advantage_terminal"`` reward) pays 0 until the budget is spent
    and then the final advantage ``B_T - A_T``: the same return, all of it at the end.

    The twin doubles training and evaluation (`MixingEnv.timings` counts it as ``"twin"``):
    cheap on the toy, a second model on the HF backend -- there, choose this reward only when
    that is affordable. Components: ``advantage`` (``B_t - A_t``), ``baseline_objective``
    (``B_t``) and ``baseline_eval_loss`` (the twin's per-domain held-out loss).

    Attributes:
        baseline: the twin's mixture: ``"uniform"``, ``"natural"`` (proportional to the
            backend's domain sizes) or K non-negative weights (divided by their sum).
        terminal: pay the whole advantage at the end instead of its change per decision.
        scale: a positive factor on the reward (the return is ``scale * (B_T - A_T)``; the
            components stay unscaled). On the toy an episode's advantage is a few hundredths
            of a loss unit, per-decision changes ~1e-4: SAC's entropy bonus and default
            learning rates are set for rewards near 1, hence ``mixgym/MixingAdvantage-v1``'s
            scale 100.
    """

    baseline: str | tuple[float, ...] = "uniform"
    terminal: bool = False
    scale: float = 1.0
    name = "advantage"
    requires = frozenset({Signal.TWIN})

    def __post_init__(self) -> None:
        if isinstance(self.baseline, str):
            if self.baseline not in BASELINES:
                raise ValueError(
                    f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)} or give K mixture weights"
                )
        elif isinstance(self.baseline, (list, tuple, np.ndarray)):
            if not all(isinstance(w, numbers.Real) and not isinstance(w, (bool, np.bool_)) for w in self.baseline):
                raise TypeError(f"the baseline mixture's weights must be numbers, got {self.baseline!r}")
            weights = np.asarray(self.baseline, dtype=np.float64)
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError(f"the baseline mixture's weights must be finite and non-negative, got {self.baseline!r}")
            if not weights.sum() > 0:
                raise ValueError(f"the baseline mixture's weights are all zero: {self.baseline!r}")
        else:
            raise TypeError(f"baseline must be {' or '.join(map(repr, BASELINES))} or K mixture weights, got {self.baseline!r}")
        if not isinstance(self.terminal, (bool, np.bool_)):
            raise TypeError(f"terminal must be True or False, got {self.terminal!r}")
        number("reward_kwargs scale", self.scale, above=0.0)

    def baseline_mixture(self, domains: list[str], domain_sizes: np.ndarray) -> np.ndarray:
        """The twin's mixture over `domains` (checked; weights divided by their sum)."""
        k = len(domains)
        if isinstance(self.baseline, str):
            if self.baseline == "uniform":
                return np.full(k, 1.0 / k)
            sizes = np.asarray(domain_sizes, dtype=np.float64)
            if sizes.shape != (k,) or not np.all(sizes >= 0) or not sizes.sum() > 0:
                raise ValueError(f"baseline 'natural' needs the backend's K={k} domain sizes, got {sizes!r}")
            return sizes / sizes.sum()
        weights = np.asarray(self.baseline, dtype=np.float64)
        if weights.shape != (k,):
            raise ValueError(f"the baseline mixture needs K={k} weights (one per domain of {domains}), got {self.baseline!r}")
        return weights / weights.sum()  # finite, non-negative, not all zero: checked at construction

    def components(self, num_domains: int) -> dict[str, tuple[int, ...]]:
        return {"advantage": (), "baseline_objective": (), "baseline_eval_loss": (num_domains,)}

    def __call__(self, before: Snapshot, after: Snapshot, env: "MixingEnv") -> RewardResult:
        assert before.baseline_eval_loss is not None and after.baseline_eval_loss is not None
        score = env.objective  # the env's objective (`mixgym.llm_backend.objectives`), on both runs
        baseline_objective = float(score(after.baseline_eval_loss))
        advantage = baseline_objective - float(score(after.eval_loss))
        if self.terminal:
            value = advantage if after.progress >= 1.0 else 0.0
        else:
            value = advantage - (float(score(before.baseline_eval_loss)) - float(score(before.eval_loss)))
        components = {"advantage": advantage, "baseline_objective": baseline_objective, "baseline_eval_loss": after.baseline_eval_loss}
        return RewardResult(self.scale * value, components)


@dataclass
class TerminalAdvantageReward(AdvantageReward):
    """`AdvantageReward` paid once, at the end of the run: the final advantage ``B_T - A_T``."""

    terminal: bool = True
    name = "advantage_terminal"


REWARDS: dict[str, type[Reward]] = {
    "alignment": AlignmentReward,
    "holistic": HolisticReward,
    "eval_loss": EvalLossReward,
    "advantage": AdvantageReward,
    "advantage_terminal": TerminalAdvantageReward,
}


def make_reward(reward: str | Reward | RewardFn, **kwargs: Any) -> Reward | RewardFn:
    """A reward from its name (with options such as HDS's weights) or a callable as given."""
    if isinstance(reward, str):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)} or pass a callable")
        try:
            return REWARDS[reward](**kwargs)
        except TypeError as error:
            raise ValueError(f"bad reward_kwargs for reward {reward!r}: {error}") from None
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
    """Call any reward and normalise its answer to a finite `RewardResult`: a real number (a
    Python or numpy scalar, a one-element array), a ``(number, info dict)`` pair or a
    `RewardResult`; anything else is a `TypeError` naming the reward and what it returned."""
    name = getattr(reward, "name", reward)
    out = reward(before, after, env)
    if isinstance(out, RewardResult):
        value, components = out.value, out.components
    elif isinstance(out, tuple) and len(out) == 2:
        value, components = out
    else:
        value, components = out, {}
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)) or not isinstance(components, Mapping):
        raise TypeError(
            f"reward {name!r} returned {out!r} ({type(out).__name__}) at step {after.step}: a reward must return a real "
            "number, a (number, dict of components) pair or a RewardResult"
        )
    result = RewardResult(float(value), dict(components))
    if not np.isfinite(result.value):
        raise ValueError(f"reward {name!r} returned a non-finite value {result.value!r} at step {after.step}")
    return result
