"""Predicting a mixture's outcome from a swarm, and scoring every predictor the same way.

A predictor is fitted on the runs of some mixtures of a swarm (`mixgym.bench.swarm`) and
predicts the objective of mixtures it has not seen. `agreement` scores each predictor by
k-fold cross-validation over mixtures (every mixture is held out once; its seeds are
averaged): Spearman correlation of predicted and measured objective, pairwise accuracy (the
share of pairs of mixtures ordered correctly: DataDecide's measure), top-1 recall (is the
measured best among held-out mixtures the predicted best) and top-5 recall, each with a 90%
bootstrap interval over mixtures.

Predictors (`PREDICTORS`):

- ``linear``: RegMix's linear regression of the objective on the mixture weights
  (sail-sg/regmix ``regression_fitting/regression.ipynb``; no intercept: the weights sum to 1).
- ``lightgbm``: RegMix's LightGBM regression (same notebook: gbdt, 1,000 iterations, learning
  rate 0.01, seed 42; LightGBM's own training API, which needs no scikit-learn). Deviation:
  ``min_data_in_leaf=2`` -- LightGBM's default 20 allows no
  split at all with the tens of mixtures a CPU swarm has (RegMix fits 512); and no early
  stopping (RegMix stops on a held-out split, which would cost a fold of mixtures here).
- ``mixing-law``: Data Mixing Laws' exponential law ``L(r) = c + k exp(t . r)`` (Ye et al.
  2024, eq. 1; Olmix fits laws of this family) fitted by least squares to the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mixgym.validation import integer

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``predict(train_mixtures (n, K), train_objective (n,), test_mixtures (m, K)) -> (m,)``."""


def linear(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Least-squares linear regression on the mixture weights."""
    coefficients, *_ = np.linalg.lstsq(train_x, train_y, rcond=None)
    return test_x @ coefficients


def lightgbm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """RegMix's LightGBM regressor (see the module docstring)."""
    try:
        import lightgbm as lgb
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('the lightgbm predictor needs LightGBM: pip install "mixgym[swarm]"') from error
    params = {
        "boosting_type": "gbdt", "objective": "regression", "learning_rate": 1e-2, "seed": 42, "verbosity": -1,
        "num_threads": 1, "min_data_in_leaf": 2, "min_data_in_bin": 1,
    }
    model = lgb.train(params, lgb.Dataset(train_x, train_y, params={"min_data_in_bin": 1}), num_boost_round=1000)
    return np.asarray(model.predict(test_x))


def mixing_law(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """``c + k exp(t . r)`` fitted by least squares (see the module docstring)."""
    from scipy.optimize import least_squares

    k = train_x.shape[1]
    scale = float(np.std(train_y)) or 1.0

    def residuals(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (p[0] + p[1] * np.exp(np.clip(x @ p[2:], -30, 30)) - y) / scale

    start = np.concatenate([[train_y.min() - scale, scale], np.zeros(k)])
    fit = least_squares(residuals, start, args=(train_x, train_y), method="trf", max_nfev=2000)
    p = fit.x
    return p[0] + p[1] * np.exp(np.clip(test_x @ p[2:], -30, 30))


PREDICTORS: dict[str, Predictor] = {"linear": linear, "lightgbm": lightgbm, "mixing-law": mixing_law}


@dataclass(frozen=True)
class Agreement:
    """How well one predictor ranks held-out mixtures (point estimates and 90% intervals)."""

    predictor: str
    objective: str
    mixtures: int
    spearman: tuple[float, float, float]
    pairwise: tuple[float, float, float]
    top1: tuple[float, float, float]
    top5: tuple[float, float, float]


def mixture_table(table: pd.DataFrame, objective: str = "objective") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(mixtures (M, K), the seed-mean of column `objective` (M,), mixture ids) of a swarm."""
    columns = [c for c in table.columns if c.startswith("mixture/")]
    if objective not in table.columns:
        raise ValueError(f"the swarm has no column {objective!r}; objectives: objective, natural_loss")
    grouped = table.groupby("mixture_id", sort=True)
    return grouped[columns].first().to_numpy(), grouped[objective].mean().to_numpy(), list(grouped.groups)


def _scores(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(Spearman, pairwise accuracy, top-1 recall, top-5 recall) of predictions (lower is better)."""
    from scipy.stats import spearmanr

    n = len(measured)
    upper = np.triu_indices(n, 1)
    agree = np.sign(predicted[:, None] - predicted[None, :]) == np.sign(measured[:, None] - measured[None, :])
    top = min(5, n)
    return np.array(
        [
            float(spearmanr(predicted, measured).statistic),
            float(agree[upper].mean()),
            float(np.argmin(predicted) == np.argmin(measured)),
            len(set(np.argsort(predicted)[:top]) & set(np.argsort(measured)[:top])) / top,
        ]
    )


def cross_validated(predict: Predictor, mixtures: np.ndarray, objective: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions: each mixture predicted by a fit on the other folds."""
    order = np.random.default_rng(seed).permutation(len(mixtures))
    predicted = np.empty(len(mixtures))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        predicted[fold] = predict(mixtures[train], objective[train], mixtures[fold])
    return predicted


def agreement(
    table: pd.DataFrame,
    predictors: dict[str, Predictor | dict[str, Predictor]] | None = None,
    objectives: tuple[str, ...] = ("objective", "natural_loss"),
    folds: int = 5,
    bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[list[Agreement], pd.DataFrame]:
    """Score every predictor on every objective by `folds`-fold cross-validation over the
    swarm's mixtures (see the module docstring); also returns the out-of-fold predictions. A
    predictor may be a dict of one predictor per objective column."""
    integer("folds", folds, 2)
    predictors = predictors or PREDICTORS
    results, frames = [], []
    for objective in objectives:
        mixtures, measured, ids = mixture_table(table, objective)
        held_out = len(mixtures) // folds
        if held_out < 3:
            raise ValueError(
                f"{len(mixtures)} mixtures in {folds} folds hold out {held_out} per fold; agreement needs at least 3 "
                "(more mixtures, or fewer --folds)"
            )
        rng = np.random.default_rng(seed)
        for name, predictor in predictors.items():
            predict = predictor[objective] if isinstance(predictor, dict) else predictor  # one per objective
            predicted = cross_validated(predict, mixtures, measured, folds, seed)
            point = _scores(predicted, measured)
            draws = np.array([_scores(predicted[i], measured[i]) for i in (rng.integers(len(ids), size=len(ids)) for _ in range(bootstrap))])
            low, high = np.nanpercentile(draws, [5, 95], axis=0)
            triples = [(float(p), float(lo), float(hi)) for p, lo, hi in zip(point, low, high)]
            results.append(Agreement(name, objective, len(ids), *triples))
            frames.append(pd.DataFrame({"predictor": name, "objective": objective, "mixture_id": ids, "measured": measured, "predicted": predicted}))
    return results, pd.concat(frames, ignore_index=True)


def seed_noise(table: pd.DataFrame, objective: str = "objective") -> dict[str, Any]:
    """The swarm's seed noise beside its mixture effects: the mean over mixtures of the
    seed-to-seed sd, the sd of the mixtures' seed-means, and their ratio."""
    per_mixture = table.groupby("mixture_id")[objective]
    noise = float(per_mixture.std(ddof=1).mean())  # over the mixtures with two seeds or more (NaN: none)
    effects = float(per_mixture.mean().std(ddof=1))
    return {"objective": objective, "seed_sd": noise, "mixture_sd": effects, "ratio": effects / noise if noise > 0 else float("nan")}


def markdown(results: list[Agreement], noise: list[dict[str, Any]]) -> str:
    """The agreement table (90% intervals in brackets) and the noise line per objective."""
    def cell(triple: tuple[float, float, float]) -> str:
        return f"{triple[0]:.3f} [{triple[1]:.2f}, {triple[2]:.2f}]"

    lines = ["| predictor | objective | mixtures | Spearman | pairwise accuracy | top-1 recall | top-5 recall |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.predictor} | {r.objective} | {r.mixtures} | {cell(r.spearman)} | {cell(r.pairwise)} | {cell(r.top1)} | {cell(r.top5)} |")
    lines.append("")
    for n in noise:
        lines.append(
            f"{n['objective']}: seed-to-seed sd {n['seed_sd']:.4g}, sd of mixture means {n['mixture_sd']:.4g} "
            f"(mixture effects / seed noise = {n['ratio']:.1f})"
        )
    return "\n".join(lines)
