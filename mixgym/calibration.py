"""Calibrating a toy task to a swarm: a fast simulator of one corpus and model.

`calibrate` fits a toy task whose K domains stand for a swarm's K domains
(`mixgym.bench.swarm`: static mixtures of a real LM) so that, over the swarm's mixtures, each
toy domain's held-out loss moves as the LM's does. What is fitted:

- per domain, the teacher's difficulty (how much there is to learn) and the label-noise share
  (the irreducible loss); a domain of kind "noise" in the corpus is the toy's "noise" kind;
- the domains' pool sizes keep the corpus' proportions (read from the swarm's epochs: a run's
  samples over its epochs), scaled by one fitted factor, so small domains repeat as they do;
- a readout per domain, ``LM loss = intercept + slope * toy loss`` (least squares, slope >= 0),
  since the toy's squared error and the LM's nats are different units.

The search is coordinate descent in log space (as the oracle's, `mixgym.llm_backend.oracle`)
on the mean share of each domain's variance across mixtures that the readout leaves
unexplained; every candidate is a batched toy swarm over the fitting mixtures
(`oracle.train_schedules`). The result is a task file (YAML, read with ``safe_load``) that
loads like any toy task (``task="path/to/task.yaml"``; `load_task_file`), runs at toy speed,
can be driven by every agent, and carries its readout and fit error for predictions. A fit
that explains less than `MIN_EXPLAINED` of the variance is refused, with its error, rather
than written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mixgym.llm_backend.oracle import train_schedules
from mixgym.llm_backend.toy import DomainSpec, ToyConfig
from mixgym.validation import integer

MIN_EXPLAINED = 0.2
"""A calibration must explain at least this share of the per-domain variance of the fitting
mixtures' losses to be written (else `calibrate` raises with its fit error)."""
BASE_SIZE = 20_000
"""Toy examples of the largest domain before the fitted scale."""


@dataclass(frozen=True)
class Calibration:
    """A calibrated toy task and how its losses read as the LM's (see the module docstring)."""

    config: ToyConfig
    domains: tuple[str, ...]
    intercept: np.ndarray
    slope: np.ndarray
    explained: float
    """Mean share of each domain's variance across the fitting mixtures that the readout explains."""
    seeds: tuple[int, ...]

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """(M, K) predicted LM held-out losses of static `mixtures` (M, K)."""
        return self.intercept + self.slope * toy_losses(self.config, mixtures, self.seeds)


def toy_losses(config: ToyConfig, mixtures: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """(M, K): held-out loss per domain after the budget on each static mixture, mean over `seeds`."""
    mixtures = np.asarray(mixtures, dtype=np.float64)
    schedules = np.repeat(mixtures[:, None], len(seeds), axis=0)
    backends, _ = train_schedules(config, schedules, list(seeds) * len(mixtures))
    losses = np.array([list(b.evaluate().values()) for b in backends])
    return losses.reshape(len(mixtures), len(seeds), -1).mean(axis=1)


def readout(toy: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per domain, the least-squares ``measured ~ intercept + slope * toy`` with slope >= 0:
    (intercept, slope, explained share of variance), each (K,)."""
    k = toy.shape[1]
    intercept, slope, explained = np.zeros(k), np.zeros(k), np.zeros(k)
    for d in range(k):
        x, y = toy[:, d], measured[:, d]
        vx, vy = np.var(x), np.var(y)
        b = float(np.cov(x, y, bias=True)[0, 1] / vx) if vx > 0 else 0.0
        b = max(b, 0.0)
        slope[d], intercept[d] = b, float(np.mean(y) - b * np.mean(x))
        residual = y - intercept[d] - b * x
        explained[d] = 1.0 - float(np.var(residual)) / vy if vy > 0 else 1.0
    return intercept, slope, explained


def _domains(names: list[str], kinds: list[str], sizes: np.ndarray, theta: np.ndarray) -> tuple[DomainSpec, ...]:
    """The toy domains of parameter vector `theta`: per domain log difficulty and logit noise,
    then the log size scale."""
    scale = float(np.exp(theta[-1]))
    specs = []
    for d, (name, kind) in enumerate(zip(names, kinds)):
        size = max(1, int(round(BASE_SIZE * scale * sizes[d] / sizes.max())))
        if kind == "noise":
            specs.append(DomainSpec(name, "noise", 1.0, 1.0, size))
            continue
        difficulty = float(np.exp(theta[2 * d]))
        noise = float(1.0 / (1.0 + np.exp(-theta[2 * d + 1])))
        specs.append(DomainSpec(name, "hard", difficulty, noise, size))
    return tuple(specs)


def calibrate(
    table: pd.DataFrame,
    kinds: list[str] | None = None,
    seeds: tuple[int, ...] = (0,),
    rounds: int = 3,
    total_steps: int = 600,
    progress: bool = True,
) -> Calibration:
    """Fit a toy task to the swarm `table` (see the module docstring); `kinds` per domain
    ("noise" for a noise domain; default all text). Raises `ValueError` with the fit error when
    the fit explains less than `MIN_EXPLAINED`."""
    from tqdm.auto import tqdm

    integer("rounds", rounds, 1)
    names = [c[len("mixture/") :] for c in table.columns if c.startswith("mixture/")]
    kinds = list(kinds or ["text"] * len(names))
    if len(kinds) != len(names):
        raise ValueError(f"kinds: one per domain ({len(names)}), got {len(kinds)}")
    grouped = table.groupby("mixture_id", sort=True)
    mixtures = grouped[[f"mixture/{d}" for d in names]].first().to_numpy()
    measured = grouped[[f"eval_loss/{d}" for d in names]].mean().to_numpy()
    if len(mixtures) < 3:
        raise ValueError(f"calibration needs at least 3 mixtures, got {len(mixtures)}")
    samples = table[[f"epochs/{d}" for d in names]].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        per_epoch = np.nanmedian(np.where(samples > 0, table[["tokens"]].to_numpy() * table[[f"mixture/{d}" for d in names]].to_numpy() / samples, np.nan), axis=0)
    sizes = np.where(np.isfinite(per_epoch), per_epoch, np.nanmax(per_epoch))
    base = ToyConfig(domains=_domains(names, kinds, sizes, np.zeros(2 * len(names) + 1)), total_steps=total_steps)

    def fit(theta: np.ndarray) -> tuple[float, ToyConfig, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        config = replace(base, domains=_domains(names, kinds, sizes, theta))
        terms = readout(toy_losses(config, mixtures, seeds), measured)
        return float(np.mean(terms[2])), config, terms

    theta = np.concatenate([np.tile([0.0, np.log(0.1 / 0.9)], len(names)), [0.0]])
    best_value, best_config, best_terms = fit(theta)
    free = [i for i in range(len(theta) - 1) if kinds[i // 2] != "noise"] + [len(theta) - 1]
    step = 1.0
    bar = tqdm(total=rounds * len(free) * 2, desc="calibrating", unit="fit", disable=not progress)
    for _ in range(rounds):
        for i in free:
            for sign in (1.0, -1.0):
                candidate = theta.copy()
                candidate[i] += sign * step
                value, config, terms = fit(candidate)
                bar.update(1)
                if value > best_value:
                    theta, best_value, best_config, best_terms = candidate, value, config, terms
        step /= 2
    bar.close()
    if best_value < MIN_EXPLAINED:
        raise ValueError(
            f"the calibration did not converge: it explains {best_value:.1%} of the per-domain variance across mixtures "
            f"(at least {MIN_EXPLAINED:.0%} needed); no task file written"
        )
    intercept, slope, _ = best_terms
    return Calibration(best_config, tuple(names), intercept, slope, best_value, tuple(seeds))


def write_task_file(calibration: Calibration, path: str | Path) -> Path:
    """The calibration as a task file (YAML): the toy's options, then its readout."""
    config = asdict(calibration.config)
    config["domains"] = [asdict(d) for d in calibration.config.domains or ()]
    payload = {
        "toy": config,
        "calibration": {
            "domains": list(calibration.domains),
            "intercept": calibration.intercept.tolist(),
            "slope": calibration.slope.tolist(),
            "explained": calibration.explained,
            "seeds": list(calibration.seeds),
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path


def read_task_file(path: str | Path) -> Calibration:
    """A task file written by `write_task_file` (data only: ``yaml.safe_load``), checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no task file at {str(path)!r}")
    payload = yaml.safe_load(path.read_text())
    if not isinstance(payload, dict) or not isinstance(payload.get("toy"), dict):
        raise ValueError(f"{str(path)!r} is not a mixgym task file (no 'toy' mapping)")
    options: dict[str, Any] = dict(payload["toy"])
    try:
        options["domains"] = tuple(DomainSpec(**d) for d in options.get("domains") or ())
        config = ToyConfig(**options)
    except TypeError as error:
        raise ValueError(f"{str(path)!r}: bad toy options: {error}") from None
    calibration = payload.get("calibration") or {}
    k = config.num_domains
    intercept = np.asarray(calibration.get("intercept", np.zeros(k)), dtype=np.float64)
    slope = np.asarray(calibration.get("slope", np.ones(k)), dtype=np.float64)
    if intercept.shape != (k,) or slope.shape != (k,):
        raise ValueError(f"{str(path)!r}: the readout needs {k} intercepts and slopes")
    names = tuple(calibration.get("domains", [d.name for d in config.domains or ()]))
    return Calibration(config, names, intercept, slope, float(calibration.get("explained", float("nan"))), tuple(calibration.get("seeds", (0,))))


def _swarm_kinds(path: Path, names: list[str]) -> list[str]:
    """The domains' kinds from the swarm's ``swarm.json`` beside its table (text if absent)."""
    import json

    spec = path.parent / "swarm.json"
    kinds = json.loads(spec.read_text()).get("kinds") if spec.is_file() else None
    return list(kinds) if kinds and len(kinds) == len(names) else ["text"] * len(names)


def _calibrate_command(args: Any) -> int:
    from mixgym.bench.swarm import read_swarm

    table = read_swarm(args.table)
    names = [c[len("mixture/") :] for c in table.columns if c.startswith("mixture/")]
    calibration = calibrate(
        table, _swarm_kinds(Path(args.table), names), seeds=tuple(range(args.seeds)), rounds=args.rounds,
        total_steps=args.steps, progress=not args.no_progress,
    )
    path = write_task_file(calibration, args.out)
    print(f"explained {calibration.explained:.1%} of the per-domain variance across mixtures; task file {path} "
          f"(gymnasium.make('mixgym/Mixing-v1', task='{path}'))")
    return 0


def add_calibrate_cli(subparsers: Any) -> None:
    """Add ``calibrate SWARM.csv --out TASK.yaml`` to the `mixgym` command line."""
    from mixgym.cli import int_at_least

    p = subparsers.add_parser(
        "calibrate",
        help="fit a toy task to a swarm (mixgym swarm) and write it as a task file",
        description="Fit a toy task's per-domain difficulty, noise and pool scale so that its held-out losses move "
        "across the swarm's mixtures as the swarm's do (a linear readout per domain), and write it as a task file "
        "that loads like any toy task (task=TASK.yaml). Refuses to write a fit that explains too little.",
    )
    p.add_argument("table", help="the swarm table (OUT/swarm.csv)")
    p.add_argument("--out", required=True, help="the task file to write (.yaml)")
    p.add_argument("--rounds", type=int_at_least(1), default=3, help="coordinate-search rounds (default 3)")
    p.add_argument("--steps", type=int_at_least(1), default=600, help="optimizer steps of the toy runs (default 600)")
    p.add_argument("--seeds", type=int_at_least(1), default=1, help="toy run seeds per mixture (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_calibrate_command)
