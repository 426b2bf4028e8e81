"""The best static mixture (and best piecewise-static schedule) of a toy task, by search.

A static mixture trains the whole budget on one mixture; a P-phase schedule splits the
budget into P equal phases, each with its own mixture (P=1 is static). The objective of a
schedule is the toy's target-weighted mean held-out loss at the end of the budget, averaged
over `seeds` (the run seeds given to `ToyBackend.reset`).

One seed's final objective varies by several percent from seed to seed (`BENCHMARKS.md`), as
much as many mixture effects, so a search on 3 seeds fits noise. The search therefore scores
every candidate on the same `seeds` (common random numbers: at least 2, by default 30) and its
answer is re-scored on fresh seeds (`rescore`) before anyone calls it an oracle.

The search works in logit space (mixture = softmax(z), so every point is a valid mixture):
1. Starts (structured, then random): the uniform mixture, the natural mixture (proportional
   to domain sizes), tempered natural mixtures (natural^tau for tau in `TEMPERATURES`),
   uniform with one domain dropped (each domain in turn, at most `MAX_DROP_STARTS`),
   `n_random` Dirichlet(1) draws (from a fixed RNG) and, for P > 1, the best static
   mixture, each tiled over the phases; the best start is kept (so a schedule is never
   worse than the static oracle on the search seeds).
2. Coordinate search: for `rounds` rounds, every move z[p, k] += +-step (all phases p and
   domains k) is scored in one batched call; the round takes the best of the best single
   move and the sum of every improving move (the better sign per coordinate); a round
   without improvement halves the step (start 1.0, stop below 1/32).
Budget: at most (starts + rounds * (2 * P * K + 1)) schedule evaluations, each `len(seeds)`
toy runs of `total_steps` optimizer steps; the runs of one round, and of all the starts,
train together as rows of one `ToyRuns` (`schedule_objectives`).
Results are cached on disk (`$MIXGYM_CACHE` or `~/.cache/mixgym`) and in memory, keyed by
the task fingerprint, every search argument and the search's version (`SEARCH_VERSION`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mixgym.llm_backend.base import check_split
from mixgym.llm_backend.toy import ToyBackend, ToyConfig, train_together
from mixgym.llm_backend.toy_runs import ToyRuns


@dataclass(frozen=True)
class OracleResult:
    """A searched schedule: `mixtures` has shape (P, K); P=1 is a static mixture."""

    mixtures: np.ndarray
    objective: float
    evaluations: int

    @property
    def mixture(self) -> np.ndarray:
        """The first phase's mixture (the whole schedule when P=1)."""
        return self.mixtures[0]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def schedule_objective(backend: ToyBackend, mixtures: np.ndarray, seeds: tuple[int, ...]) -> float:
    """Mean over `seeds` of the objective after training the budget on the P-phase schedule."""
    return float(schedule_objectives(backend.config, np.asarray(mixtures)[None], seeds)[0])


def schedule_objectives(config: ToyConfig, schedules: np.ndarray, seeds: tuple[int, ...], split: str = "eval") -> np.ndarray:
    """`schedule_objective` of each of `schedules` (S, P, K): the same numbers as S * len(seeds)
    runs of `ToyBackend` one after another (`train_schedules`), in a fraction of the time; scored
    on `split`'s held-out rows (`ToyBackend.objective`)."""
    values = seed_objectives(config, schedules, seeds, split)
    return np.array([float(np.mean(list(row))) for row in values])


def seed_objectives(config: ToyConfig, schedules: np.ndarray, seeds: tuple[int, ...], split: str = "eval") -> np.ndarray:
    """(S, len(seeds)): the final objective (on `split`'s rows) of each schedule of `schedules`
    (S, P, K) on each run seed, all runs trained together (`schedule_objectives` is its mean over
    the seeds)."""
    schedules = np.asarray(schedules, dtype=np.float64)
    pairs = list(itertools.product(range(len(schedules)), seeds))
    backends, _ = train_schedules(config, schedules[[i for i, _ in pairs]], [seed for _, seed in pairs])
    return np.array([b.objective(split) for b in backends]).reshape(len(schedules), len(seeds))


TEMPERATURES = (0.25, 0.5, 0.75)
"""Exponents tau of the tempered natural starts (natural^tau, normalised)."""
MAX_DROP_STARTS = 32
"""Drop-one-domain starts are tried for tasks of at most this many domains."""
SEARCH_VERSION = 2
"""Part of the cache key: 1 was 3 seeds, uniform/natural/random starts, greedy moves, step
down to 1/16; 2 is the search of the module docstring."""
SEARCH_SEEDS = tuple(range(30))
"""Default run seeds of the search (fresh seeds for `rescore` start at `FRESH_SEED`)."""
FRESH_SEED = 10_000


def structured_starts(sizes: np.ndarray) -> list[np.ndarray]:
    """Logits of the structured starts for domains of `sizes`: uniform, natural, tempered
    natural, and uniform without each domain in turn (a dropped domain gets logit -8, a
    share of about 3e-4 of the others')."""
    k = len(sizes)
    natural = np.log(sizes / sizes.sum())
    starts = [np.zeros(k), natural] + [tau * natural for tau in TEMPERATURES]
    if k <= MAX_DROP_STARTS:
        for d in range(k):
            z = np.zeros(k)
            z[d] = -8.0
            starts.append(z)
    return starts


def train_schedules(
    config: ToyConfig, schedules: np.ndarray, seeds: Sequence[int], chunk: int = 256
) -> tuple[list[ToyBackend], np.ndarray]:
    """Train run i on ``schedules[i]`` (P equal phases of the budget, (n, P, K)) from run seed
    ``seeds[i]``, every run a row of a `ToyRuns` trained in batched calls, `chunk` rows at a
    time; returns the trained backends (held-out losses computed) and the examples each run
    trained per domain (n, K)."""
    schedules = np.asarray(schedules, dtype=np.float64)
    if len(schedules) != len(seeds):
        raise ValueError(f"train_schedules needs one seed per schedule, got {len(schedules)} schedules and {len(seeds)} seeds")
    template = ToyBackend(config)
    bounds = np.linspace(0, template.total_steps, schedules.shape[1] + 1).round().astype(int)
    backends: list[ToyBackend] = []
    samples = np.zeros((len(schedules), len(template.domains)), dtype=np.int64)
    for start in range(0, len(schedules), chunk):
        rows = range(start, min(start + chunk, len(schedules)))
        runs = ToyRuns(template.config, template._task, len(rows))
        members = []
        for row in rows:
            member = ToyBackend(template.config)
            member.share_runs(runs, row - start)
            member.reset(int(seeds[row]))
            members.append(member)
        for phase, n_steps in enumerate(np.diff(bounds)):
            if n_steps > 0:
                stats = train_together(members, [schedules[row, phase] for row in rows], int(n_steps), step_norms=False)
                samples[start : rows.stop] += np.array([s.samples for s in stats])
        runs.prefetch(range(len(rows)), [])
        backends += members
    return backends, samples


def _cache_dir() -> Path:
    return Path(os.environ.get("MIXGYM_CACHE", Path.home() / ".cache" / "mixgym"))


_MEMORY: dict[str, OracleResult] = {}


def search_schedule(
    config: ToyConfig | None = None,
    *,
    phases: int = 1,
    seeds: tuple[int, ...] = SEARCH_SEEDS,
    n_random: int = 8,
    rounds: int = 8,
    use_cache: bool = True,
    split: str = "eval",
) -> OracleResult:
    """Search the best P-phase schedule for `config` (see the module docstring). ``split=
    "validation"`` scores the candidates on the toy's validation split (`Signal.VALIDATION`),
    rows disjoint from the held-out ones that score a run, so the oracle is not selected on the
    rows it is judged on (as OP-Mix's ``score_split`` and DoReMi's ``signal="validation_loss"``);
    the default, "eval", is the search every recorded oracle used."""
    check_split(split)
    config = config or ToyConfig()
    if phases < 1:
        raise ValueError(f"phases must be >= 1, got {phases!r}")
    seeds = tuple(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"the oracle search needs at least 2 distinct run seeds (one seed's noise is as large as the "
            f"mixture effects), got seeds={seeds!r}"
        )
    key_payload = {
        "task": config.fingerprint(),
        "phases": phases,
        "seeds": [int(seed) for seed in seeds],  # numpy integers are welcome; JSON takes ints
        "n_random": int(n_random),
        "rounds": int(rounds),
        "version": SEARCH_VERSION,
        **({"split": split} if split != "eval" else {}),  # the default keeps the caches' keys
    }
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:20]
    path = _cache_dir() / f"oracle-{key}.json"
    if use_cache and key in _MEMORY:
        return _MEMORY[key]
    if use_cache and path.exists():
        stored = json.loads(path.read_text())
        result = OracleResult(np.array(stored["mixtures"]), stored["objective"], stored["evaluations"])
        _MEMORY[key] = result
        return result

    backend = ToyBackend(config)
    k = backend.config.num_domains
    evaluations = 0

    def scores(zs: list[np.ndarray]) -> np.ndarray:
        nonlocal evaluations
        evaluations += len(zs)
        return schedule_objectives(backend.config, _softmax(np.array(zs)), seeds, split)

    rng = np.random.default_rng(0)
    starts = structured_starts(backend.info.domain_sizes) + [np.log(rng.dirichlet(np.ones(k)) + 1e-6) for _ in range(n_random)]
    if phases > 1:
        static = search_schedule(config, phases=1, seeds=seeds, n_random=n_random, rounds=rounds, use_cache=use_cache, split=split)
        starts.append(np.log(static.mixture))
    values = scores([np.tile(z, (phases, 1)) for z in starts])
    best, best_value = np.tile(starts[int(np.argmin(values))], (phases, 1)), float(values.min())
    step = 1.0
    for _ in range(rounds):
        moves = [(p, d, sign) for p in range(phases) for d in range(k) for sign in (1.0, -1.0)]
        candidates = []
        for p, d, sign in moves:
            candidate = best.copy()
            candidate[p, d] += sign * step
            candidates.append(candidate)
        values = scores(candidates).reshape(phases, k, 2)
        gains = best_value - values
        combined = best.copy()
        for p in range(phases):
            for d in range(k):
                j = int(np.argmax(gains[p, d]))
                if gains[p, d, j] > 0:
                    combined[p, d] += (1.0, -1.0)[j] * step
        single = candidates[int(np.argmin(values))]
        final = scores([combined])[0] if not np.array_equal(combined, single) else float(values.min())
        value, chosen = min((float(values.min()), 0), (final, 1))
        if value < best_value:
            best, best_value = (single, combined)[chosen], value
        else:
            step /= 2
            if step < 1 / 32:
                break
    result = OracleResult(_softmax(best), best_value, evaluations)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**asdict(result), "mixtures": result.mixtures.tolist(), "key": key_payload}))
        tmp.replace(path)
        _MEMORY[key] = result
    return result


@dataclass(frozen=True)
class Rescored:
    """A schedule re-scored against a reference on fresh run seeds (common random numbers).

    Attributes:
        objective: mean final objective of the schedule on the fresh seeds.
        reference: the reference's (uniform by default) on the same seeds.
        gap: mean of reference - schedule per seed (positive: the schedule is better).
        half_width: half-width of the 90% confidence interval of `gap` (Student t over seeds).
        seeds: the fresh seeds.
    """

    objective: float
    reference: float
    gap: float
    half_width: float
    seeds: tuple[int, ...]

    @property
    def separable(self) -> bool:
        """Whether the 90% CI of the gap excludes 0 on the schedule's side (it beats the reference)."""
        return self.gap - self.half_width > 0


def mean_ci(values: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """(mean, half-width of its `level` confidence interval) of i.i.d. `values` (Student t)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(values)}")
    half = float(t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return float(values.mean()), half


def rescore(
    config: ToyConfig, mixtures: np.ndarray, seeds: tuple[int, ...] | None = None, reference: np.ndarray | None = None
) -> Rescored:
    """`mixtures` (P, K) and `reference` (P', K; None: uniform) trained on the same fresh
    `seeds` (None: 30 seeds from `FRESH_SEED`), compared seed by seed."""
    seeds = tuple(range(FRESH_SEED, FRESH_SEED + 30)) if seeds is None else tuple(seeds)
    k = config.num_domains
    reference = np.full((1, k), 1.0 / k) if reference is None else np.atleast_2d(reference)
    mixtures = np.atleast_2d(mixtures)
    phases = np.lcm(len(mixtures), len(reference))  # equal phases of both, on one grid
    both = np.stack([np.repeat(mixtures, phases // len(mixtures), 0), np.repeat(reference, phases // len(reference), 0)])
    values = seed_objectives(config, both, seeds)
    gap, half = mean_ci(values[1] - values[0])
    return Rescored(float(values[0].mean()), float(values[1].mean()), gap, half, seeds)


def oracle_mixture(config: ToyConfig | None = None, **search_args: object) -> OracleResult:
    """The best static mixture of a toy task (`search_schedule` with one phase)."""
    return search_schedule(config, phases=1, **search_args)  # type: ignore[arg-type]
