"""``doremi``: DoReMi's group reweighting run online, as the mixture of the run itself.

Source: Xie et al., "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining"
(arXiv 2305.10429), code sangmichaelxie/doremi, `doremi/trainer.py`
`update_domain_weights` (lines 239-260, ``doremiv1``). Per decision, with w the current
mixture, L_d domain d's loss and ref_d a reference model's loss on the same examples:

    score_d = max(L_d - ref_d, 0)             (kept from before for a domain not measured)
    log w   <- log w + eta * score
    w       <- (1 - c) * softmax(log w) + c / K

eta = 1.0 and c = 1e-3 as the shipped run script sets them
(`scripts/runs/run_pile_doremi120M.sh` lines 70-71: ``--reweight_eta 1.0 --reweight_eps
1e-3``; the argument defaults are 1.0 and 1e-4). The mixture starts uniform, as DoReMi's
proxy does (`configs/pile_uniform.json`).

The reference. DoReMi's reference model is a small model fully trained on a reference
mixture; its loss *on the same tokens* as the proxy's says how much of each domain is still
learnable, and the per-token difference cancels what no model can learn (label noise).
Here the reference is a uniform-mixture run of the same backend: `reference_losses` trains
``len(reference_seeds)`` runs on the uniform mixture through the agent's own environment
(``env.reset(seed=s)``, then ``env.step`` to the end), takes each domain's loss averaged
over the last 10% of decisions -- what a fully trained uniform model still pays -- and
averages over the runs. ``make_agent("doremi", env)`` therefore costs that many extra runs
(about 0.1 s each on the toy); pass ``reference_loss=[...]`` to skip them.

Which loss (option ``signal``). The environment reports per-domain *mean* losses, not
per-example ones, so the "same examples" property holds only on the fixed held-out sets:
``signal="eval_loss"`` (default) compares the run's held-out loss with the reference run's
on the same held-out examples. ``signal="train_loss"`` uses the decision's training-batch
means, as DoReMi uses training tokens, but then a pure-noise domain's excess is its batch
noise clipped at 0, a positive bias that keeps raising its weight (on the toy's default task
it ends with 65% of the mixture, worse than uniform). Note that "eval_loss" reads the same
held-out losses the objective is made of.

Other differences from DoReMi: the weights are the sampling mixture of the run being
trained, updated online (DoReMi reweights a proxy's loss and hands the time-averaged
weights to a later run); the excess is clipped per domain mean, not per token; scores of
domains never measured start at 0 (DoReMi: log of the vocabulary size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import MixerConfig, as_json, register_mixer
from mixgym.validation import integer, number


def doremi_update(mixture: np.ndarray, scores: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """DoReMi's update: ``(1 - c) softmax(log w + eta * scores) + c / K`` (log space)."""
    logits = np.log(mixture) + eta * scores
    top = logits.max()
    weights = np.exp(logits - top - math.log(float(np.exp(logits - top).sum())))
    return (1.0 - smoothing) * weights + smoothing / len(mixture)


SIGNALS = ("eval_loss", "train_loss")


def reference_losses(
    env: gym.Env, seeds: tuple[int, ...], signal: str = "eval_loss", tail_fraction: float = 0.1
) -> np.ndarray:
    """Per-domain `signal` loss of uniform-mixture runs of `env` (see the module docstring).

    Each run's value is the mean over its last `tail_fraction` of decisions (at least one);
    the result is the mean over the runs seeded by `seeds`.
    """
    if not seeds:
        raise ValueError("reference_seeds must name at least one run seed")
    inner = env.unwrapped
    k = len(inner.domains)  # type: ignore[attr-defined]
    action = inner.action_mapper.inverse(np.full(k, 1.0 / k))  # type: ignore[attr-defined]
    runs = []
    for seed in seeds:
        env.reset(seed=seed)
        losses, done = [], False
        while not done:
            _, _, terminated, truncated, info = env.step(action)
            losses.append(info[signal])
            done = terminated or truncated
        tail = max(1, int(round(tail_fraction * len(losses))))
        runs.append(np.mean(losses[-tail:], axis=0))
    return np.mean(runs, axis=0)


class DoReMiMixer:
    """DoReMi's online group reweighting against fixed reference losses of `signal`."""

    def __init__(self, reference: np.ndarray, eta: float, smoothing: float, signal: str) -> None:
        self.signal = signal
        self.reference = np.asarray(reference, dtype=np.float64)
        self.eta = eta
        self.smoothing = smoothing
        k = len(self.reference)
        self.weights = np.full(k, 1.0 / k)
        self.scores = np.zeros(k)

    def reset(self, info: dict[str, Any]) -> None:
        k = len(self.reference)
        self.weights = np.full(k, 1.0 / k)
        self.scores = np.zeros(k)

    def observe(self, info: dict[str, Any]) -> None:
        fresh = np.asarray(info["samples"]) > 0 if self.signal == "train_loss" else bool(info["eval_fresh"])
        excess = np.maximum(np.asarray(info[self.signal], dtype=np.float64) - self.reference, 0.0)
        self.scores = np.where(fresh, excess, self.scores)
        self.weights = doremi_update(self.weights, self.scores, self.eta, self.smoothing)

    def mixture(self) -> np.ndarray:
        return self.weights.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"reference": as_json(self.reference), "weights": as_json(self.weights), "scores": as_json(self.scores)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = len(self.reference)
        for key in ("reference", "weights", "scores"):
            if np.shape(state[key]) != (k,):
                raise ValueError(f"saved DoReMi {key} is not for K={k} domains")
        self.reference = np.asarray(state["reference"], dtype=np.float64)
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.scores = np.asarray(state["scores"], dtype=np.float64)


@dataclass(frozen=True)
class DoReMiConfig(MixerConfig):
    """Options of ``doremi``."""

    eta: float = field(default=1.0, metadata={"help": "step size (DoReMi run script: --reweight_eta 1.0)"})
    smoothing: float = field(
        default=1e-3, metadata={"help": "c, share mixed with uniform (DoReMi run script: --reweight_eps 1e-3)"}
    )
    reference_seeds: tuple[int, ...] = field(
        default=(12345,), metadata={"help": "seeds of the uniform-mixture reference runs"}
    )
    signal: str = field(
        default="eval_loss",
        metadata={"help": "loss compared with the reference: 'eval_loss' (same held-out examples) or 'train_loss'"},
    )
    reference_loss: tuple[float, ...] | None = field(
        default=None,
        metadata={"help": "per-domain reference losses; given, no reference run is made", "per_domain": True},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        number("eta", self.eta, above=0.0)
        number("smoothing", self.smoothing, 0.0, 1.0)
        if not self.reference_seeds:
            raise ValueError("reference_seeds must name at least one run seed")
        for seed in self.reference_seeds:
            integer("reference_seeds entry", seed, 0, 2**32 - 1)
        for loss in self.reference_loss or ():
            number("reference_loss entry", loss)
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")


def _build(env: gym.Env, config: DoReMiConfig, facts: EnvFacts) -> DoReMiMixer:
    if config.reference_loss is not None:
        reference = np.asarray(config.reference_loss, dtype=np.float64)
        if reference.shape != (facts.num_domains,) or not np.all(np.isfinite(reference)):
            raise ValueError(
                f"reference_loss must be {facts.num_domains} finite numbers (one per domain), "
                f"got {config.reference_loss!r}"
            )
    else:
        reference = reference_losses(env, config.reference_seeds, config.signal)
    return DoReMiMixer(reference, config.eta, config.smoothing, config.signal)


def _restore(config: DoReMiConfig, facts: EnvFacts, state: dict[str, Any]) -> DoReMiMixer:
    mixer = DoReMiMixer(np.asarray(state["reference"], dtype=np.float64), config.eta, config.smoothing, config.signal)
    mixer.load_state_dict(state)
    return mixer


register_mixer("doremi", "DoReMi's excess-loss group reweighting, online", DoReMiConfig, _build, _restore)
