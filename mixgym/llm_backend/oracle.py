"""The best static mixture (and best piecewise-static schedule) of a toy task, by search.

A static mixture trains the whole budget on one mixture; a P-phase schedule splits the
budget into P equal phases, each with its own mixture (P=1 is static). The objective of a
schedule is the toy's target-weighted mean held-out loss at the end of the budget, averaged
over `seeds` (the run seeds given to `ToyBackend.reset`).

The search works in logit space (mixture = softmax(z), so every point is a valid mixture):
1. Starts: the uniform mixture, the natural mixture (proportional to domain sizes),
   `n_random` Dirichlet(1) draws (from a fixed RNG) and, for P > 1, the best static
   mixture, each tiled over the phases; the best start is kept (so a schedule is never
   worse than the static oracle on the search seeds).
2. Coordinate search: for `rounds` rounds, try z[p, k] += +-step for every phase p and domain
   k and keep each change that lowers the objective; a round without improvement halves the
   step (start 1.0, stop below 1/16).
Budget: at most (2 + n_random + rounds * 2 * P * K) schedule evaluations, each
`len(seeds)` toy runs of `total_steps` optimizer steps; the runs of one evaluation (its
seeds), and of all the starts, train together as rows of one `ToyRuns`
(`schedule_objectives`), with the numbers of runs one at a time.
Results are cached on disk (`$MIXGYM_CACHE` or `~/.cache/mixgym`) and in memory, keyed by
the task fingerprint and every search argument.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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


def schedule_objectives(config: ToyConfig, schedules: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """`schedule_objective` of each of `schedules` (S, P, K), every (schedule, seed) run a row
    of one `ToyRuns` trained in batched calls: the same numbers as S * len(seeds) runs of
    `ToyBackend` one after another, in a fraction of the time."""
    backend = ToyBackend(config)
    schedules = np.asarray(schedules, dtype=np.float64)
    count, phases = schedules.shape[:2]
    runs = ToyRuns(backend.config, backend._task, count * len(seeds))
    backends = []
    for row, (_, seed) in enumerate(itertools.product(range(count), seeds)):
        member = ToyBackend(backend.config)
        member.share_runs(runs, row)
        member.reset(seed)
        backends.append(member)
    bounds = np.linspace(0, backend.total_steps, phases + 1).round().astype(int)
    for phase, n_steps in enumerate(np.diff(bounds)):
        if n_steps > 0:
            mixtures = [schedules[row // len(seeds), phase] for row in range(len(backends))]
            train_together(backends, mixtures, int(n_steps), step_norms=False)
    runs.prefetch(range(len(backends)), [])
    values = np.array([b.objective() for b in backends]).reshape(count, len(seeds))
    return np.array([float(np.mean(list(row))) for row in values])


def _cache_dir() -> Path:
    return Path(os.environ.get("MIXGYM_CACHE", Path.home() / ".cache" / "mixgym"))


_MEMORY: dict[str, OracleResult] = {}


def search_schedule(
    config: ToyConfig | None = None,
    *,
    phases: int = 1,
    seeds: tuple[int, ...] = (0, 1, 2),
    n_random: int = 32,
    rounds: int = 8,
    use_cache: bool = True,
) -> OracleResult:
    """Search the best P-phase schedule for `config` (see the module docstring)."""
    config = config or ToyConfig()
    if phases < 1:
        raise ValueError(f"phases must be >= 1, got {phases!r}")
    if not seeds:
        raise ValueError("seeds must name at least one run seed")
    key_payload = {
        "task": config.fingerprint(),
        "phases": phases,
        "seeds": list(seeds),
        "n_random": n_random,
        "rounds": rounds,
        "version": 1,
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

    def scores(zs: list[np.ndarray]) -> list[float]:
        nonlocal evaluations
        evaluations += len(zs)
        return schedule_objectives(backend.config, _softmax(np.array(zs)), seeds).tolist()

    def score(z: np.ndarray) -> float:
        return scores([z])[0]

    rng = np.random.default_rng(0)
    sizes = backend.info.domain_sizes
    starts = [np.zeros(k), np.log(sizes / sizes.sum())] + [np.log(rng.dirichlet(np.ones(k)) + 1e-6) for _ in range(n_random)]
    if phases > 1:
        static = search_schedule(config, phases=1, seeds=seeds, n_random=n_random, rounds=rounds, use_cache=use_cache)
        starts.append(np.log(static.mixture))
    scored = [(value, i) for i, value in enumerate(scores([np.tile(z, (phases, 1)) for z in starts]))]
    best_value, best_index = min(scored)
    best = np.tile(starts[best_index], (phases, 1))
    step = 1.0
    for _ in range(rounds):
        improved = False
        for p in range(phases):
            for d in range(k):
                for sign in (1.0, -1.0):
                    candidate = best.copy()
                    candidate[p, d] += sign * step
                    value = score(candidate)
                    if value < best_value:
                        best, best_value, improved = candidate, value, True
        if not improved:
            step /= 2
            if step < 1 / 16:
                break
    result = OracleResult(_softmax(best), best_value, evaluations)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**asdict(result), "mixtures": result.mixtures.tolist(), "key": key_payload}))
        tmp.replace(path)
        _MEMORY[key] = result
    return result


def oracle_mixture(config: ToyConfig | None = None, **search_args: object) -> OracleResult:
    """The best static mixture of a toy task (`search_schedule` with one phase)."""
    return search_schedule(config, phases=1, **search_args)  # type: ignore[arg-type]
