"""OP-Mix (On-Policy Mix): re-mix once per phase from LoRA probes of the current model.

Source: Hu, Gandhi, Cho, Linzen, Sharma, "Always Learning, Always Mixing: Efficient and Simple
Data Mixing All The Time" (arXiv 2605.15220), code michahu/on-policy-mix (commit 0b4469c), whose
mixing-law fit is adapted from allenai/olmix (commit 9586977). OP-Mix needs no proxy model: it
asks the run itself, through the backend's what-if capability (`MixingEnv.what_if`,
`mixgym.llm_backend.whatif`), what short probes trained from the *current* state would give.

Per phase of the run (the whole run when the env has no ``phases``), as
`pipeline/pretrain_opm.py` runs it (``ExplicitOldProbeExperiment.run``, lines 263-306):

1. **Prefix.** Train `prefix_fraction` = 20% of the phase on the old mixture (`:187-189,
   :337-349`; 0.2 at `:67` and `:920`); the old mixture of the first phase is uniform
   (`:95-97`, `:907-908`). Later phases start from the previous phase's model with no prefix
   (``prefix_fraction=0.0`` for the chain's stage 2, `:942`; the continual pipeline likewise).
   The code's prefix is a Trainer job of its own, its schedule (warm-up scaled by the prefix
   share, `:347`) annealed over the prefix's steps, and the final stage a new job from that
   checkpoint: a new optimizer, the peak learning rate again, no warm-up, annealed over the
   remaining steps (`:787-801`). ``restart_after_prefix=True`` does that (the backend's
   `Signal.RESTART`: `plan_restart` at reset, `restart_optimizer` at the re-mix); the default
   keeps one continuous run (below, "Deviations").
2. **Probes.** From that state train P = 1 + n probes (`:414`): one on the old mixture
   (`:453-456`) and, for each of the n target domains, one on 0.9 of the domain plus 0.1 of
   the old mixture (`:457-463`, `pipeline/pretrain.py:123-137`), each sequence's domain drawn
   from that mixture (one weighted, shuffled dataset: `train.py:118-128`, `src/data.py:65-130`;
   ``per_sequence``, which the HF backend honours and the toy always does). LoRA r 16, alpha 32,
   dropout 0.05, every attention and FFN projection but the LM head (`:387-390`,
   `src/argparser.py:55-74`), learning rate 2x the main run's with no warm-up (`:383, :386`),
   5,000 steps of a 50,000-step run, i.e. `probe_fraction` = 10% of the phase (`:68`,
   `pipeline/pretrain.py:47`). A later phase that adds several domains (or none) probes for
   `later_probe_fraction` = 50% of it: the chain's stage 2 trains 5,000-step probes in a
   10,000-step stage (`:839, :847`, ``lora_steps`` and ``stage_2_steps``). The targets are
   every domain in the first phase; in a later phase, the domains it adds (``new_datasets``,
   `:101-112`), or every domain when it adds none. ``probe_budget`` instead sizes the probes
   by compute, as a share of the phase: 0.4 is the paper's (six probes of 5,000 LoRA steps, a
   LoRA step about 2/3 of a main step, in 50,000 steps); the compute each phase's request
   costs is in `OpMixMixer.planned_cost` and in each ``history`` record (``cost``).
3. **Candidates.** 12 Dirichlet(1) draws w over the P probes (`:1016`, `pipeline/pretrain.py:
   140-149`, seeded by the run's seed or 0, `:139-143`); candidate c is the current model plus
   ``sum_p w_cp dLoRA_p`` (`pipeline/pretrain.py:229-299`), and its per-domain held-out loss is
   measured (`:544-644`). The code measures it on the run's own eval files (`:380, :604-605`),
   the rows its final model is scored on (`:793`): selection on the test set. Here
   ``score_split="validation"`` (default) scores candidates on a validation split disjoint from
   the rows that score the run (`Signal.VALIDATION`); ``"eval"`` is the code's. The fit's
   coordinates x are the weights w themselves (``ratios`` default to ``weights``,
   `pipeline/pretrain.py:328-330`), although domain d's probe trained on 0.9 d + 0.1 old: the
   fit reads probe d as pure d, as the code does.
4. **Fit.** Per domain m, ``L_m(x) = exp(c_m) + exp(t_m . x)`` (`pipeline/olmix_fit.py:42-46`),
   Huber loss with delta 0.02 summed over candidates (`:73`, `:144`), L-BFGS from 10 x 30
   starting points: log c in linspace(-2, 1.5, 10) and t with a random negative entry for the
   domain's own coordinate and small positive ones elsewhere (`:49-54`), keeping the start with
   the lowest loss (`:111-127`). Candidates with a non-finite loss are dropped (`:371-372`).
   A law has 1 + P parameters for 12 points: at K = 22 (P = 23) that is 24, so making the agent
   warns when a phase's laws have more parameters than candidates.
5. **Solve.** ``min_x mean_m exp(t_m . x) + 0.05 KL(E x || q)`` on the simplex (`:223-267`;
   0.05 at `pipeline/pretrain_opm.py:74`), the mean over every evaluated domain (`:663-664`),
   junk included; ``fit_weights="objective"`` weighs the laws by the env's objective instead
   and fits none for a domain it gives no weight (the toy's noise domain; there it ends -2.7%
   vs uniform, against -0.9% for the mean, within two sems). q is the prior: in
   the first phase, on the collapsed coordinates, 0.5 on "old" and 1/(2n) on each target
   (`pipeline/pretrain_opm.py:682-693`); in a later phase, on the expanded domains (E maps
   "old" to the old mixture), uniform over the available domains (`:687-690`).
6. **Train** the rest of the phase on ``p = x_old * old + sum_d x_d e_d``
   (``compute_expanded_weights``, `:248-261`).

**Continual variant** (`pipeline/continual_opm_standalone.py`): a phase that adds exactly one
domain collapses the previous mixture into one "old" coordinate and trains two probes, at 0.1
and 0.9 of the new domain (`:47-48`, `:250-252`, `:326-334`), for 2,500 steps of a
10,000-step stage (`:96`, `pipeline/continual.py:54`: `continual_probe_fraction` = 25%);
its candidates are the 9 fixed interpolations at effective new-domain shares 0.1, ..., 0.9
(model weights ``(e - 0.1) / 0.8``, fit coordinates ``(1 - e, e)``, `:56-82`); the laws are
fitted to every domain seen so far (`:605-606`) and the prior is 0.5 on the new domain and
0.5 spread over the old one by the old mixture (`:624-639`); ``p`` as above
(`pipeline/continual.py:280-293`).

**Equal compute.** Probes cost compute the baselines spend on training. A fair comparison
gives OP-Mix a run *re-planned* to the budget (`equal_compute_steps`): n main steps, the probes
sized from n as any run's are, n + what-if compute = the budget, the learning-rate schedule
annealed over the n steps. Reading a longer run at the step where its spending crosses the
budget, before its schedule has annealed, overstates the loss; the reports keep that reading
only as "truncated at equal compute". Toy numbers in BENCHMARKS.md.

Deviations that remain, and their effect (toy numbers: BENCHMARKS.md, 5 seeds, the default
5-domain task, probe lr 0.5x):

- **One continuous run by default** (``restart_after_prefix=False``): every agent in a mixgym
  comparison trains under the env's one schedule, so a restart would credit OP-Mix (or blame
  it) for a schedule change that has nothing to do with mixing; set it to run the code's two
  jobs. Effect on the toy: the restart ends 0.006 worse (+2.0% vs uniform, against -0.9%).
- With the restart, the schedule's shape is the backend's (toy: cosine to 10% with no warm-up;
  HF: warm-up-cosine), not the code's warm-up-stable-decay with 1,000 decay steps
  (`train.py:222-250`); and only the first phase's prefix restarts: the chain's stage 2 is also
  a new job from stage 1's final model (`:929-949`), here a later phase continues the schedule.
  The counterfactual twin (``reward="advantage"``) does not restart.
- **Candidates on a validation split by default**, not the scoring rows as in the code; on the
  toy the two end within noise of each other (-0.9% and +0.3% vs uniform, sems 1.7% and 2.4%);
  on pythia-tiny both, with per-sequence or one-domain probe micro-batches, end at uniform.
- **The main run's micro-batches are one domain each** on the HF backend (probes mix per
  sequence, as the code's); on the toy every example's domain is drawn, in both.
- **Probe and fit sizes are fractions of the phase**, since a phase here is not 50,000 steps.
  On the toy a probe step is a full-parameter step, so the code's 10% probes cost 727 of a
  1,000-step run (classic5) and 3,356 on pile22 (K = 22: 23 probes, and 36 evaluations of 22
  domains that alone exceed the run), where the paper's LoRA probes cost about 40%;
  ``probe_budget=0.4`` restores the paper's share where the evaluations leave room for it.
- **The KL prior decides on the toy.** With it (0.05, the code's) OP-Mix ties uniform; with it
  off (``kl_reg=0``) the fitted laws are flat or point away from the oracle and the run ends
  21% behind uniform (+- 19%: some seeds land far off): the laws carry little signal here.
- Probes keep their last state; OP-Mix's Trainer keeps its best checkpoint by the held-out
  loss of the *first* evaluation domain (`train.py:167-201`), an arbitrary choice we drop.
- The fit's negative starting slope goes on the domain's own coordinate; the code puts it at
  the metric's index (`pipeline/olmix_fit.py:53, :387-389`), which with "old" first is the
  previous domain's. With 300 starting points this rarely matters.
- L-BFGS is ours, in numpy (`lbfgs`): every starting point runs its own, all together, with a
  backtracking line search where torch's uses strong Wolfe; it reaches the minima scipy's
  L-BFGS-B reaches (tests), in a fraction of a second for 300 starts.
- The convex proposal is solved by SLSQP (scipy), not cvxpy's ECOS.
- On the toy backend, probes are full-parameter SGD branches whose deltas are truncated to
  rank r (`ToyBackend.simulate`); ``lr_scale=2`` suits LoRA with AdamW but makes the toy's
  SGD probes diverge, so the toy benchmarks set it lower (BENCHMARKS.md).

What-if compute is charged to the run (``info["compute/whatif"]``); under
``MixingEnv(budget="compute")`` a plan that costs the whole budget is refused when the agent
is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import MixerConfig, as_json, register_mixer
from mixgym.llm_backend.base import SPLITS, Signal
from mixgym.validation import integer, number

FIT_WEIGHTS = ("mean", "objective")
"""`OpMixConfig.fit_weights`: OLMix's plain mean over the laws, or the env's objective."""
LOG_C_LEVELS = tuple(np.linspace(-2.0, 1.5, 10).tolist())
"""Starting values of log c (`pipeline/olmix_fit.py:51`)."""
_EXP_CLIP = 50.0


def _scipy() -> Any:
    try:
        import scipy.optimize
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('scipy is not installed; pip install "mixgym[opmix]"') from error
    return scipy.optimize


# --------------------------------------------------------------------------- the mixing law
@dataclass(frozen=True)
class MixingLaw:
    """``L(x) = exp(log_c) + exp(slopes . x)``, fitted to one domain's held-out losses.

    Attributes:
        log_c: the irreducible part's log.
        slopes: t, one per coordinate of x.
        loss: the fit's Huber loss, summed over the candidates.
    """

    log_c: float
    slopes: np.ndarray
    loss: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.log_c) + np.exp(np.asarray(x) @ self.slopes)


def _huber_batch(params: np.ndarray, x: np.ndarray, y: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-start Huber losses (R,) and their gradients (R, 1 + P) for parameters (R, 1 + P)."""
    floor = np.exp(np.clip(params[:, :1], -_EXP_CLIP, _EXP_CLIP))
    power = np.exp(np.clip(params[:, 1:] @ x.T, -_EXP_CLIP, _EXP_CLIP))
    residual = y[None, :] - floor - power
    small = np.abs(residual) <= delta
    loss = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta)).sum(axis=1)
    psi = np.where(small, residual, delta * np.sign(residual))
    grad = np.concatenate([-(psi * floor).sum(axis=1, keepdims=True), -(psi * power) @ x], axis=1)
    return loss, grad


def fit_law(
    x: np.ndarray, y: np.ndarray, own: int | None, restarts: int = 30, delta: float = 0.02, seed: int = 42
) -> MixingLaw:
    """Fit one domain's law to candidates' coordinates `x` (N, P) and losses `y` (N,).

    Starting points (`pipeline/olmix_fit.py:49-54`): each of the 10 `LOG_C_LEVELS` with
    `restarts` random slope vectors, ``-U(0, 1)`` on coordinate `own` (the domain's own probe;
    None: none) and ``U(0, 0.1)`` elsewhere, from a generator seeded 42 as the code seeds
    numpy (`:137`). Every start runs its own L-BFGS (`lbfgs`, all starts at once); the start
    with the lowest loss wins (`:111-127`).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0:
        raise ValueError(f"fit_law needs x of shape (N, P) and y of shape (N,), got {x.shape} and {y.shape}")
    width = x.shape[1]
    rng = np.random.default_rng(seed)
    starts = []
    for log_c in LOG_C_LEVELS:
        for _ in range(restarts):
            slopes = rng.random(width) * 0.1
            if own is not None:
                slopes[own] = -rng.random()
            starts.append([log_c, *slopes])
    fitted = lbfgs(lambda params: _huber_batch(params, x, y, delta), np.array(starts))
    losses, _ = _huber_batch(fitted, x, y, delta)
    best = int(np.argmin(losses))
    return MixingLaw(float(fitted[best, 0]), fitted[best, 1:].copy(), float(losses[best]))


def lbfgs(
    objective: Any, start: np.ndarray, memory: int = 10, max_iter: int = 2000, tolerance: float = 1e-10
) -> np.ndarray:
    """Minimise R independent problems at once by L-BFGS: `objective` maps points (R, D) to
    losses (R,) and gradients (R, D); each row keeps its own history of `memory` pairs (as
    torch's ``LBFGS(history_size=10)`` in `pipeline/olmix_fit.py:66-68`) and its own
    backtracking (Armijo) line search, and stops when its gradient or its progress vanishes.
    In numpy: scipy's L-BFGS-B calls a threaded BLAS for each tiny step and crawls on a busy
    machine."""
    x = np.array(start, dtype=np.float64)
    loss, grad = objective(x)
    history: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (s, y, rho); rho 0 where a row kept no pair
    scale = 1.0 / np.maximum(np.abs(grad).max(axis=1), 1.0)  # the first step: a unit move at most
    active = np.ones(len(x), dtype=bool)
    for _ in range(max_iter):
        direction, alphas = grad.copy(), []
        for s, yv, rho in reversed(history):  # the two-loop recursion, every row at once
            alpha = rho * np.sum(s * direction, axis=1)
            direction -= alpha[:, None] * yv
            alphas.append(alpha)
        direction *= scale[:, None]
        for (s, yv, rho), alpha in zip(history, reversed(alphas)):
            direction += (alpha - rho * np.sum(yv * direction, axis=1))[:, None] * s
        direction = -direction
        slope = np.sum(direction * grad, axis=1)
        uphill = slope >= 0
        direction[uphill], slope[uphill] = -grad[uphill], -np.sum(grad[uphill] ** 2, axis=1)
        step = active.astype(np.float64)
        for _ in range(40):
            trial_loss, _ = objective(x + step[:, None] * direction)
            failed = (step > 0) & ~(trial_loss <= loss + 1e-4 * step * slope)
            if not failed.any():
                break
            step[failed] *= 0.5
        else:
            step[failed] = 0.0
        new_x = x + step[:, None] * direction
        new_loss, new_grad = objective(new_x)
        s, yv = new_x - x, new_grad - grad
        sy = np.sum(s * yv, axis=1)
        curved = (step > 0) & (sy > 1e-12)
        safe = np.where(curved, sy, 1.0)
        history = (history + [(s * curved[:, None], yv * curved[:, None], np.where(curved, 1.0 / safe, 0.0))])[-memory:]
        scale = np.where(curved, safe / np.maximum(np.sum(yv * yv, axis=1), 1e-300), scale)
        stalled = np.abs(loss - new_loss) <= tolerance * np.maximum(1.0, np.abs(loss))
        x, loss, grad = new_x, np.where(active, new_loss, loss), np.where(active[:, None], new_grad, grad)
        active &= (step > 0) & ~stalled & (np.abs(grad).max(axis=1) > 1e-12)
        if not active.any():
            break
    return x


def propose(
    slopes: np.ndarray,
    kl_reg: float,
    prior: np.ndarray,
    kl_map: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The mixture x on the simplex minimising ``mean_m exp(slopes_m . x) + kl_reg KL(A x || prior)``.

    OLMix's exact proposer (`pipeline/olmix_fit.py:223-267`): the laws' constants do not move
    the minimum. `kl_map` A (L, P) maps x to the distribution the prior is on (None: x itself).
    `weights` (M,), summing to 1, replace the mean over the laws by a weighted sum (the env's
    objective; None: OLMix's plain mean). The objective is convex; SLSQP solves it from the
    uniform point.
    """
    slopes = np.asarray(slopes, dtype=np.float64)
    width = slopes.shape[1]
    kl_map = np.eye(width) if kl_map is None else np.asarray(kl_map, dtype=np.float64)
    q = np.maximum(np.asarray(prior, dtype=np.float64), 1e-12)
    q = q / q.sum()
    tiny = 1e-300

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        power = np.exp(np.clip(slopes @ x, -_EXP_CLIP, _EXP_CLIP))
        mapped = np.clip(kl_map @ x, 0.0, None)
        log_ratio = np.log(np.maximum(mapped, tiny) / q)
        kl = kl_reg * float(np.sum(np.where(mapped > 0, mapped * log_ratio, 0.0)))
        if weights is None:
            value, grad = power.mean() + kl, (power @ slopes) / len(slopes)
        else:
            value, grad = float(weights @ power) + kl, (weights * power) @ slopes
        return value, grad + kl_reg * kl_map.T @ (log_ratio + 1.0)

    result = _scipy().minimize(
        objective,
        np.full(width, 1.0 / width),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * width,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)}],
        options={"maxiter": 500, "ftol": 1e-12},
    )
    x = np.clip(result.x, 0.0, None)
    return x / x.sum()


# --------------------------------------------------------------------------- the agent
@dataclass(frozen=True)
class OpMixConfig(MixerConfig):
    """Options of the ``opmix`` agent; every default is the code's (module docstring)."""

    prefix_fraction: float = field(
        default=0.2, metadata={"help": "share of the first phase trained on the old mixture before probing (pretrain_opm.py:67)"}
    )
    probe_fraction: float = field(
        default=0.1, metadata={"help": "probe steps as a share of the first phase (pretrain_opm.py:68: 5,000 of 50,000)"}
    )
    continual_probe_fraction: float = field(
        default=0.25,
        metadata={
            "help": "probe steps as a share of a later phase that adds one domain (continual_opm_standalone.py:96: "
            "2,500 of 10,000)"
        },
    )
    later_probe_fraction: float = field(
        default=0.5,
        metadata={
            "help": "probe steps as a share of a later phase that adds several domains or none (the chain's stage 2, "
            "pretrain_opm.py:839,847: 5,000 of 10,000)"
        },
    )
    probe_budget: float | None = field(
        default=None,
        metadata={
            "help": "what-if compute of a phase as a share of its steps (0.4: the paper's, 6 LoRA probes of 5,000 "
            "steps at 2/3 of a main step in a 50,000-step run); probe steps sized to fit it (None: the fractions)"
        },
    )
    restart_after_prefix: bool = field(
        default=False,
        metadata={
            "help": "restart the run after the prefix as the code does (pretrain_opm.py:337-349, 787-801: prefix "
            "annealed over its own steps, then a fresh optimizer at the peak rate, no warm-up); False: one run"
        },
    )
    fit_weights: str = field(
        default="mean",
        metadata={
            "help": "what the proposal minimises over the fitted laws: 'mean' (every available domain, "
            "olmix_fit.py:223-267) or 'objective' (the env's objective weights; domains of weight 0 left out)"
        },
    )
    score_split: str = field(
        default="validation",
        metadata={
            "help": "held-out rows the candidates are scored on: 'validation' (disjoint from the rows that score "
            "the run) or 'eval' (the code's: the run's own eval files, pretrain_opm.py:380,793)"
        },
    )
    per_sequence: bool = field(
        default=True,
        metadata={"help": "mix probe micro-batches per sequence, as the code's weighted dataset (train.py:118-128, src/data.py:65-130)"},
    )
    probe_steps: int | None = field(default=None, metadata={"help": "probe steps in every phase (None: the fractions)"})
    domain_weight: float = field(
        default=0.9, metadata={"help": "a domain probe's share of its domain, the rest old mixture (pretrain_opm.py:458)"}
    )
    candidates: int = field(default=12, metadata={"help": "Dirichlet candidates per phase (pretrain_opm.py:1016)"})
    concentration: float = field(default=1.0, metadata={"help": "Dirichlet concentration (pretrain.py:144)"})
    lr_scale: float = field(default=2.0, metadata={"help": "probe learning rate / the run's peak (pretrain_opm.py:383)"})
    rank: int | None = field(
        default=16, metadata={"help": "LoRA rank of the probes; the toy truncates its deltas to it (pretrain_opm.py:388)"}
    )
    method: str = field(
        default="merge", metadata={"help": "'merge' (interpolated deltas, the paper's) or 'exact' (train each candidate)"}
    )
    kl_reg: float = field(default=0.05, metadata={"help": "KL weight of the proposal (pretrain_opm.py:74)"})
    huber_delta: float = field(default=0.02, metadata={"help": "Huber delta of the law fit (olmix_fit.py:144)"})
    fit_restarts: int = field(
        default=30, metadata={"help": "random slope starts per log c level, 10 levels (olmix_fit.py:51-52)"}
    )
    initial: str = field(
        default="uniform", metadata={"help": "the first phase's old mixture: 'uniform' (pretrain_opm.py:95-97) or 'natural'"}
    )
    continual_points: int = field(
        default=9, metadata={"help": "fixed interpolations of the two-probe variant (continual_opm_standalone.py:64)"}
    )
    continual_shares: tuple[float, float] = field(
        default=(0.1, 0.9),
        metadata={"help": "the new domain's share in its two probes (continual_opm_standalone.py:47-48)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        bounds = {
            "prefix_fraction": dict(minimum=0.0, below=1.0),
            "probe_fraction": dict(maximum=1.0, above=0.0),
            "continual_probe_fraction": dict(maximum=1.0, above=0.0),
            "later_probe_fraction": dict(maximum=1.0, above=0.0),
            "domain_weight": dict(maximum=1.0, above=0.0),
            "concentration": dict(above=0.0),
            "lr_scale": dict(above=0.0),
            "huber_delta": dict(above=0.0),
            "kl_reg": dict(minimum=0.0),
        }
        for name, bound in bounds.items():  # stored as floats: a huge int would make numpy arrays of objects
            object.__setattr__(self, name, number(name, getattr(self, name), **bound))
        for name in ("candidates", "fit_restarts", "continual_points"):
            integer(name, getattr(self, name), 2, 10_000)  # each candidate is one evaluation, each restart 10 L-BFGS runs
        if self.probe_steps is not None:
            integer("probe_steps", self.probe_steps, 1, 10_000_000)  # each step is one step of every probe
        if self.probe_budget is not None:
            object.__setattr__(self, "probe_budget", number("probe_budget", self.probe_budget, above=0.0, below=1.0))
            if self.probe_steps is not None:
                raise ValueError("give probe_steps or probe_budget, not both")
        if self.fit_weights not in FIT_WEIGHTS:
            raise ValueError(f"fit_weights must be one of {', '.join(FIT_WEIGHTS)}, got {self.fit_weights!r}")
        if self.score_split not in SPLITS:
            raise ValueError(f"score_split must be one of {', '.join(SPLITS)}, got {self.score_split!r}")
        for name in ("restart_after_prefix", "per_sequence"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.rank is not None:
            integer("rank", self.rank, 1)
        if self.method not in ("merge", "exact"):
            raise ValueError(f"method must be 'merge' or 'exact', got {self.method!r}")
        if self.initial not in ("uniform", "natural"):
            raise ValueError(f"initial must be 'uniform' or 'natural', got {self.initial!r}")
        low, high = (number("continual_shares entry", share, 0.0, 1.0) for share in self.continual_shares)
        if not low < high:
            raise ValueError(f"continual_shares must be two shares 0 <= low < high <= 1, got {self.continual_shares!r}")


@dataclass(frozen=True)
class PhasePlan:
    """One phase as the agent sees it: its steps and available domains (a bool per domain)."""

    start: int
    end: int
    available: tuple[bool, ...]


@dataclass(frozen=True)
class Design:
    """One phase's what-if request and how to read it.

    Attributes:
        probes: (P, K) probe mixtures.
        candidates: (C, P) interpolation weights over the probes (sent to `what_if`).
        coordinates: (C, P) the fit's x for each candidate.
        expansion: (K, P) maps x to a mixture over the K domains.
        prior: the KL prior, over x's coordinates or (with `kl_map`) over the domains.
        kl_map: (K, P) when the prior is on the expanded mixture, else None.
        own: per available domain, the coordinate of its own probe (None: none).
        steps: probe steps.
    """

    probes: np.ndarray
    candidates: np.ndarray
    coordinates: np.ndarray
    expansion: np.ndarray
    prior: np.ndarray
    kl_map: np.ndarray | None
    own: list[int | None]
    steps: int


class OpMixMixer:
    """OP-Mix as a `mixgym.agents.mixer.Mixer` (module docstring).

    Attributes:
        history: one record per re-mix, kept across runs: the run (1 for the first reset),
            phase, step, probes, candidate weights and losses, the fitted laws, the proposal
            x and the mixture p, and the what-if cost.
    """

    def __init__(self, config: OpMixConfig, facts: EnvFacts, plan: list[PhasePlan], env: Any = None) -> None:
        self.config = config
        self.facts = facts
        self.plan = plan
        self._env = env
        k = facts.num_domains
        self._rng = np.random.default_rng(0 if config.seed is None else config.seed)
        self._mixture = np.full(k, 1.0 / k)
        self._old = self._mixture.copy()
        self._phase = 0
        self._remixed: list[int] = []
        self._runs = 0
        self.history: list[dict[str, Any]] = []
        self.planned_cost: list[float] = []
        """What-if compute each phase's request will cost, in main-step equivalents (set when
        the agent is made for an env)."""

    def attach(self, env: Any) -> None:
        """The environment whose `what_if` the agent calls (its run is the one it mixes)."""
        self._env = env

    # -------------------------------------------------------------- the Mixer protocol
    def reset(self, info: dict[str, Any]) -> None:
        self._rng = np.random.default_rng(0 if self.config.seed is None else self.config.seed)
        self._remixed = []
        self._runs += 1
        available = np.array(self.plan[0].available)
        natural = np.asarray(self.facts.natural) if self.config.initial == "natural" and self.facts.natural else None
        start = np.ones(len(available)) if natural is None else natural
        self._mixture = _on(available, start)
        self._enter(0)
        if self.config.restart_after_prefix and self._env is not None and self.restart_step() is not None:
            self._env.backend.plan_restart(self.restart_step())
        self._maybe_remix(0)

    def observe(self, info: dict[str, Any]) -> None:
        step = int(info["step"])
        phase = _phase_of(self.plan, step)
        if phase != self._phase:
            self._enter(phase)
        self._maybe_remix(step)

    def mixture(self) -> np.ndarray:
        return self._mixture.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "plan": [[p.start, p.end, list(p.available)] for p in self.plan],
            "mixture": as_json(self._mixture),
            "old": as_json(self._old),
            "phase": self._phase,
            "remixed": list(self._remixed),
            "runs": self._runs,
            "rng": self._rng.bit_generator.state,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan = [PhasePlan(int(s), int(e), tuple(bool(a) for a in av)) for s, e, av in state["plan"]]
        self._mixture = np.asarray(state["mixture"], dtype=np.float64)
        self._old = np.asarray(state["old"], dtype=np.float64)
        self._phase = int(state["phase"])
        self._remixed = [int(i) for i in state["remixed"]]
        self._runs = int(state["runs"])
        self._rng.bit_generator.state = state["rng"]
        self.history = list(state["history"])

    # -------------------------------------------------------------- phases
    def _enter(self, index: int) -> None:
        """Start phase `index`: the mixture in effect becomes the old mixture, on its domains."""
        self._phase = index
        self._old = _on(np.array(self.plan[index].available), self._mixture)
        self._mixture = self._old.copy()

    def remix_step(self, index: int) -> int:
        """The optimizer step at which phase `index` is re-mixed (after its prefix)."""
        phase = self.plan[index]
        prefix = self.config.prefix_fraction if index == 0 else 0.0
        return phase.start + int(round(prefix * (phase.end - phase.start)))

    def restart_step(self) -> int | None:
        """With ``restart_after_prefix``, the step at which the run restarts: the first decision
        at or after the first phase's `remix_step` (the agent acts at decisions); None without a
        prefix or an env."""
        if self._env is None or self.remix_step(0) == 0:
            return None
        every = int(self._env.steps_per_action)
        step = -(-self.remix_step(0) // every) * every
        return step if step < self.plan[0].end else None

    def _maybe_remix(self, step: int) -> None:
        index = self._phase
        if index in self._remixed or step < self.remix_step(index) or step >= self.plan[index].end:
            return
        if self._env is None:
            raise ValueError("agent 'opmix' has no environment to probe; make or load it with env=...")
        self._remixed.append(index)
        design = self.design(index, self._old)
        cfg = self.config
        result = self._env.what_if(
            design.probes, design.steps, design.candidates, cfg.method, cfg.lr_scale, cfg.rank, cfg.score_split, cfg.per_sequence
        )
        available, weights = self._fitted(index)
        losses = result.candidate_loss[:, available]
        finite = np.all(np.isfinite(losses), axis=1)
        if finite.sum() < 2:
            raise FloatingPointError(
                f"opmix: {int((~finite).sum())} of {len(finite)} candidates gave non-finite held-out losses at step "
                f"{step}, too many to fit (the probes diverged?); lower lr_scale (now {self.config.lr_scale})"
            )
        x, y = design.coordinates[finite], losses[finite]
        own = [design.own[m] for m in np.searchsorted(np.flatnonzero(self.plan[index].available), available)]
        laws = [fit_law(x, y[:, m], own[m], cfg.fit_restarts, cfg.huber_delta) for m in range(len(available))]
        proposal = propose(np.array([law.slopes for law in laws]), cfg.kl_reg, design.prior, design.kl_map, weights)
        self._mixture = _on(np.array(self.plan[index].available), design.expansion @ proposal)
        if index == 0 and step == self.restart_step() and cfg.restart_after_prefix:
            self._env.backend.restart_optimizer()  # the final stage is a new Trainer: a new optimizer
        self.history.append(
            {
                "run": self._runs,
                "phase": index,
                "step": step,
                "probe_steps": design.steps,
                "probes": design.probes.tolist(),
                "candidates": design.candidates.tolist(),
                "coordinates": design.coordinates.tolist(),
                "candidate_loss": result.candidate_loss.tolist(),
                "probe_loss": result.probe_loss.tolist(),
                "base_loss": result.base_loss.tolist(),
                "laws": [[law.log_c, law.slopes.tolist(), law.loss] for law in laws],
                "proposal": proposal.tolist(),
                "mixture": self._mixture.tolist(),
                "cost": result.cost,
                "split": cfg.score_split,
                "fitted_domains": available.tolist(),
                "restarted": bool(index == 0 and cfg.restart_after_prefix and step == self.restart_step()),
            }
        )

    def _fitted(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The domains whose laws phase `index` fits and their weights in the proposal: every
        available domain and a plain mean (``fit_weights="mean"``, OLMix's), or those the env's
        objective weighs, with its weights renormalised over them (``"objective"``)."""
        available = np.flatnonzero(self.plan[index].available)
        if self.config.fit_weights == "mean":
            return available, None
        weights = np.asarray(self._env.objective.weights, dtype=np.float64)[available]
        if not weights.sum() > 0:
            raise ValueError(f"opmix: fit_weights='objective' but the objective weighs none of phase {index}'s domains")
        keep = weights > 0
        return available[keep], weights[keep] / weights[keep].sum()

    def design(self, index: int, old: np.ndarray) -> Design:
        """Phase `index`'s probes, candidates, fit coordinates and prior (module docstring)."""
        cfg, k = self.config, self.facts.num_domains
        phase = self.plan[index]
        available = np.flatnonzero(phase.available)
        before = np.array(self.plan[index - 1].available) if index > 0 else np.zeros(k, dtype=bool)
        new = [d for d in available if not before[d]]
        targets = new if index > 0 and new else list(available)
        continual = index > 0 and len(targets) == 1
        fraction = cfg.probe_fraction if index == 0 else cfg.continual_probe_fraction if continual else cfg.later_probe_fraction
        steps = cfg.probe_steps or max(1, int(round(fraction * (phase.end - phase.start))))
        eye = np.eye(k)
        if continual:  # continual_opm_standalone.py: two probes, fixed points
            lo, hi = cfg.continual_shares
            new_domain = eye[targets[0]]
            probes = np.array([(1 - lo) * old + lo * new_domain, (1 - hi) * old + hi * new_domain])
            shares = np.linspace(lo, hi, cfg.continual_points)
            alpha = (shares - lo) / (hi - lo)
            expansion = np.stack([old, new_domain], axis=1)
            own = [1 if d == targets[0] else 0 for d in available]
            design = Design(
                probes=probes,
                candidates=np.stack([1 - alpha, alpha], axis=1),
                coordinates=np.stack([1 - shares, shares], axis=1),
                expansion=expansion,
                prior=0.5 * old + 0.5 * new_domain,
                kl_map=expansion,
                own=own,
                steps=steps,
            )
        else:
            probes = np.array([old] + [(1 - cfg.domain_weight) * old + cfg.domain_weight * eye[d] for d in targets])
            weights = self._rng.dirichlet(np.full(len(probes), cfg.concentration), cfg.candidates)
            expansion = np.stack([old] + [eye[d] for d in targets], axis=1)
            own = [1 + targets.index(d) if d in targets else 0 for d in available]
            if index == 0:  # pretrain_opm.py:682-693: collapsed prior, 0.5 on "old"
                prior = np.array([0.5] + [0.5 / len(targets)] * len(targets))
                kl_map = None
            else:  # pretrain_opm.py:687-690: expanded prior, uniform over the domains
                prior = np.where(phase.available, 1.0 / len(available), 0.0)
                kl_map = expansion
            design = Design(probes, weights, weights, expansion, prior, kl_map, own, steps)
        if cfg.probe_budget is None or self._env is None:
            return design
        return replace(design, steps=self._budgeted_steps(design, cfg.probe_budget * (phase.end - phase.start)))

    def _budgeted_steps(self, design: Design, budget: float) -> int:
        """The most probe steps whose request costs at most `budget` main-step equivalents (the
        cost is affine in the steps: branches x steps x a step's cost + the evaluations); 1 when
        even one step costs more."""
        cfg = self.config

        def cost(steps: int) -> float:
            return float(self._env.what_if_cost(design.probes, steps, design.candidates, cfg.method, cfg.rank))

        one, per_step = cost(1), cost(2) - cost(1)
        if one > budget:
            warnings.warn(
                f"opmix: probe_budget={cfg.probe_budget} allows {budget:.0f} main-step equivalents, but the "
                f"request's evaluations and one probe step already cost {one:.0f}; probing for 1 step",
                stacklevel=3,
            )
        return max(1, int((budget - (one - per_step)) // per_step))


def _on(available: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """`mixture` restricted to the available domains and renormalised (uniform over them if
    it gives them no weight)."""
    masked = np.where(available, np.clip(mixture, 0.0, None), 0.0)
    return masked / masked.sum() if masked.sum() > 0 else available / available.sum()


def _phase_of(plan: list[PhasePlan], step: int) -> int:
    for i, phase in enumerate(plan):
        if step < phase.end:
            return i
    return len(plan) - 1


def _plan(env: gym.Env) -> list[PhasePlan]:
    inner = env.unwrapped
    phases = getattr(inner, "phases", None)
    if phases is None:
        k = len(inner.domains)
        return [PhasePlan(0, int(inner.backend.total_steps), (True,) * k)]
    return [PhasePlan(p.start, p.end, tuple(bool(a) for a in p.available)) for p in phases]


def _build(env: gym.Env, config: OpMixConfig, facts: EnvFacts) -> OpMixMixer:
    inner = env.unwrapped
    backend = inner.backend
    needs = [(config.score_split == "validation", Signal.VALIDATION, "score_split='validation'", "score_split='eval'")]
    needs += [(config.restart_after_prefix, Signal.RESTART, "restart_after_prefix=True", "restart_after_prefix=False")]
    for wanted, signal, option, instead in needs:
        if wanted and signal not in backend.signals:
            raise ValueError(
                f"agent 'opmix' with {option} needs a backend with the {signal.value!r} signal, which "
                f"{type(backend).__name__} does not provide; pass {instead}"
            )
    mixer = OpMixMixer(config, facts, _plan(env), inner)
    planned = 0.0
    for index, phase in enumerate(mixer.plan):  # prices every phase's request (and checks the capability)
        design = mixer.design(index, _on(np.array(phase.available), np.ones(facts.num_domains)))
        cost = inner.what_if_cost(design.probes, design.steps, design.candidates, config.method, config.rank)
        mixer.planned_cost.append(float(cost))
        planned += cost
        spent = mixer.remix_step(index) + planned
        if getattr(inner, "budget", "steps") == "compute" and spent >= backend.total_steps:
            raise ValueError(
                f"agent 'opmix' plans {planned:.0f} main-step equivalents of what-if compute by its probes at step "
                f"{mixer.remix_step(index)}, which with the steps before them reach the whole compute budget of "
                f"{backend.total_steps} (budget='compute'); lower probe_fraction or candidates, or set probe_budget"
            )
        points, parameters = len(design.candidates), 1 + design.coordinates.shape[1]
        if parameters > points:
            warnings.warn(
                f"opmix: phase {index} fits laws of {parameters} parameters (log c and {parameters - 1} slopes) to "
                f"{points} candidates: under-determined, the fit is its starting points' choice; raise candidates "
                f"to at least {parameters}",
                stacklevel=2,
            )
    return mixer


def equal_compute_steps(budget: int, make_env: Callable[[int], gym.Env], config: OpMixConfig | None = None) -> int:
    """Main steps of an OP-Mix run *re-planned* to a compute budget: the most steps n for which
    n plus the what-if compute the agent plans for a run of n steps (probes sized from n, as
    they are from any run's length) is at most `budget` main-step equivalents.

    `make_env(n)` makes the environment of a run of n steps (its learning-rate schedule annealed
    over those n steps; with phases, their lengths scaled to n). Comparing that run's final
    objective with a baseline's of `budget` steps is the "equal compute" comparison; reading an
    un-planned run at the step its spending crosses the budget, before its schedule annealed,
    is not (it is kept in the reports only as "truncated at equal compute")."""
    integer("budget", budget, 2)
    config = config or OpMixConfig()

    def spent(steps: int) -> float:
        env = make_env(steps)
        with warnings.catch_warnings():  # the under-determined-fit warning is the caller's to see once
            warnings.simplefilter("ignore")
            mixer = _build(env, replace(config), EnvFacts.of(env))
        return steps + sum(mixer.planned_cost)

    low, high = 2, budget  # spent() grows with the steps; bisect for the last that fits (a run has 2 or more)
    if spent(low) > budget:
        raise ValueError(
            f"opmix: even a 2-step run spends {spent(low):.0f} main-step equivalents (its probes' evaluations alone "
            f"cost about that), more than the budget of {budget}; fewer candidates or a larger budget"
        )
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if spent(middle) <= budget else (low, middle - 1)
    return low


def _restore(config: OpMixConfig, facts: EnvFacts, state: dict[str, Any]) -> OpMixMixer:
    mixer = OpMixMixer(config, facts, [])
    mixer.load_state_dict(state)
    return mixer


register_mixer("opmix", "OP-Mix: re-mix once per phase from what-if probes of the run", OpMixConfig, _build, _restore)
