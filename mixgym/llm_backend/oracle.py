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
from collections.abc import Sequence
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
    """`schedule_objective` of each of `schedules` (S, P, K): the same numbers as S * len(seeds)
    runs of `ToyBackend` one after another (`train_schedules`), in a fraction of the time."""
    schedules = np.asarray(schedules, dtype=np.float64)
    pairs = list(itertools.product(range(len(schedules)), seeds))
    backends, _ = train_schedules(config, schedules[[i for i, _ in pairs]], [seed for _, seed in pairs])
    values = np.array([b.objective() for b in backends]).reshape(len(schedules), len(seeds))
    return np.array([float(np.mean(list(row))) for row in values])


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
