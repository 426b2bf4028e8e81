"""DoReMi: ``doremi`` (group reweighting run online) and ``doremi-static`` (the published protocol).

Source: Xie et al., "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining"
(arXiv 2305.10429), code sangmichaelxie/doremi at 7cde52d, `doremi/trainer.py`
`update_domain_weights` (lines 239-260, ``doremiv1``). Per update, with w the current
domain weights, L_d domain d's loss and ref_d a reference model's loss on the same examples:

    score_d = max(L_d - ref_d, 0)             (kept from before for a domain not measured)
    log w   <- log w + eta * score
    w       <- (1 - c) * softmax(log w) + c / K

eta = 1.0 and c = 1e-3 as the shipped run script sets them
(`scripts/runs/run_pile_doremi120M.sh` lines 70-71: ``--reweight_eta 1.0 --reweight_eps
1e-3``; the argument defaults are 1.0 and 1e-4). The weights start uniform, as DoReMi's
proxy does (`configs/pile_uniform.json`, run script line 43). DoReMi's output is not the last
weights but their **time average** over the proxy run, initial weights included
(`trainer.py:157-160` ``write_weights``; `train.py:272-274`, 348-358 writes it to
``avg_domain_weights.json``): `DoReMiMixer.time_averaged_mixture`.

The protocol (``doremi-static``, `protocol_mixture`): (1) a reference run on the baseline
mixture (DoReMi: the Pile's natural weights, `run_pile_baseline120M.sh` with
``pile_baseline_50kvocab_nopack``); (2) a proxy run whose domain weights follow the update
above against the reference's losses; (3) the proxy's time-averaged weights; (4) the target
trained on them as a static mixture. Here (1) and (2) run on the proxy environment (the
agent's own, or ``proxy=`` options for a smaller model with the same domains) when the agent
is made, and the agent then acts with the static mixture. DoReMi's proxy samples uniformly
and reweights each example's loss by w / (sampling weight) (`trainer.py:344-363`); mixgym's
backends train on a mixture, so the proxy samples from w instead. Both give the gradient
``sum_d w_d grad L_d`` in expectation (E_{d ~ w}[grad L_d] = E_{d ~ u}[(w_d / u_d) grad L_d]);
sampling has the lower variance for the domains w favours and never trains the ones it drops.

``doremi`` runs the update online, its weights being the sampling mixture of the run being
trained (no separate proxy); its time average is reported beside the run's mixture.

The reference. DoReMi's reference model is a small model fully trained on a reference
mixture; its loss *on the same tokens* as the proxy's says how much of each domain is still
learnable, and the per-token difference cancels what no model can learn (label noise).
Here the reference is a run of the same backend on the baseline mixture (``doremi``:
uniform; ``doremi-static``: natural, as DoReMi): `reference_losses` trains
``len(reference_seeds)`` runs through the environment (``env.reset(seed=s)``, then ``env.step``
to the end), takes each domain's loss averaged over the last 10% of decisions -- what a fully
trained model still pays -- and averages over the runs. Making the agent therefore costs
that many extra runs (about 0.1 s each on the toy); pass ``reference_loss=[...]`` to skip them.

Which loss (option ``signal``). The environment reports per-domain *mean* losses, not
per-example ones, so the "same examples" property holds only on the fixed held-out sets:
``signal="eval_loss"`` (default) compares the run's held-out loss with the reference run's
on the same held-out examples. ``signal="train_loss"`` uses the decision's training-batch
means, as DoReMi uses training tokens, but then a pure-noise domain's excess is its batch
noise clipped at 0, a positive bias that keeps raising its weight (on the toy's default task
it ends with 65% of the mixture, worse than uniform). Note that "eval_loss" reads the same
held-out losses the objective is made of: the agent decides on the rows it is scored on.
``signal="validation_loss"`` reads a validation split instead (`Signal.VALIDATION`: rows disjoint
from those that score the run; toy and HF backends), evaluated at every decision by the agent
itself (one more forward pass over K held-out sets per decision). DoReMi itself scores on
training tokens, so neither held-out choice is the paper's; "eval_loss" stays the default so
that earlier results are reproduced.

Other differences from DoReMi: the excess is clipped per domain mean, not per token; scores
of domains never measured start at 0 (DoReMi: log of the vocabulary size, `train.py:273`);
one update per decision (DoReMi: per optimizer step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import MixerConfig, as_json, register_mixer
from mixgym.agents.static import StaticMixer, restore_static
from mixgym.validation import integer, number


def doremi_update(mixture: np.ndarray, scores: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """DoReMi's update: ``(1 - c) softmax(log w + eta * scores) + c / K`` (log space)."""
    logits = np.log(mixture) + eta * scores
    top = logits.max()
    weights = np.exp(logits - top - math.log(float(np.exp(logits - top).sum())))
    return (1.0 - smoothing) * weights + smoothing / len(mixture)


SIGNALS = ("eval_loss", "train_loss", "validation_loss")
"""Which losses DoReMi compares with the reference's (module docstring)."""


def signal_losses(env: Any, info: dict[str, Any], signal: str) -> np.ndarray:
    """(K,) the `signal` losses of the decision `info` reports: a key of `info`, or for
    ``"validation_loss"`` the backend's validation split read now (`Signal.VALIDATION`)."""
    if signal != "validation_loss":
        return np.asarray(info[signal], dtype=np.float64)
    backend = env.unwrapped.backend
    losses = backend.evaluate(split="validation")
    return np.array([losses[d] for d in env.unwrapped.domains], dtype=np.float64)


def require_validation(env: gym.Env, signal: str, agent: str) -> None:
    """Refuse ``signal="validation_loss"`` on a backend without a validation split."""
    from mixgym.llm_backend.base import Signal

    backend = env.unwrapped.backend  # type: ignore[attr-defined]
    if signal == "validation_loss" and Signal.VALIDATION not in backend.signals:
        raise ValueError(
            f"agent {agent!r} with signal='validation_loss' needs a backend with the 'validation' signal, which "
            f"{type(backend).__name__} does not provide; use signal='eval_loss'"
        )


def reference_losses(
    env: gym.Env,
    seeds: tuple[int, ...],
    signal: str = "eval_loss",
    tail_fraction: float = 0.1,
    mixture: np.ndarray | None = None,
) -> np.ndarray:
    """Per-domain `signal` loss of runs of `env` on `mixture` (default uniform; see the module
    docstring).

    Each run's value is the mean over its last `tail_fraction` of decisions (at least one);
    the result is the mean over the runs seeded by `seeds`.
    """
    if not seeds:
        raise ValueError("reference_seeds must name at least one run seed")
    inner = env.unwrapped
    k = len(inner.domains)  # type: ignore[attr-defined]
    baseline = np.full(k, 1.0 / k) if mixture is None else mixture
    action = inner.action_mapper.inverse(baseline)  # type: ignore[attr-defined]
    runs = []
    for seed in seeds:
        env.reset(seed=seed)
        losses, done = [], False
        while not done:
            _, _, terminated, truncated, info = env.step(action)
            losses.append(signal_losses(env, info, signal))
            done = terminated or truncated
        tail = max(1, int(round(tail_fraction * len(losses))))
        runs.append(np.mean(losses[-tail:], axis=0))
    return np.mean(runs, axis=0)


class DoReMiMixer:
    """DoReMi's group reweighting against fixed reference losses of `signal`, with the time
    average of its weights (DoReMi's output)."""

    def __init__(self, reference: np.ndarray, eta: float, smoothing: float, signal: str, env: Any = None) -> None:
        self.signal = signal
        self._env = env
        self.reference = np.asarray(reference, dtype=np.float64)
        self.eta = eta
        self.smoothing = smoothing
        self.reset({})

    def reset(self, info: dict[str, Any]) -> None:
        k = len(self.reference)
        self.weights = np.full(k, 1.0 / k)
        self.scores = np.zeros(k)
        self.average = self.weights.copy()
        self.updates = 0

    def attach(self, env: Any) -> None:
        """The environment whose backend ``signal="validation_loss"`` reads."""
        self._env = env

    def observe(self, info: dict[str, Any]) -> None:
        if self.signal == "validation_loss" and self._env is None:
            raise ValueError("doremi with signal='validation_loss' has no environment to read; make or load it with env=...")
        if self.signal == "train_loss":
            fresh: Any = np.asarray(info["samples"]) > 0
        else:  # the validation split is read now; the env's held-out losses may be from an earlier decision
            fresh = self.signal == "validation_loss" or bool(info["eval_fresh"])
        excess = np.maximum(signal_losses(self._env, info, self.signal) - self.reference, 0.0)
        self.scores = np.where(fresh, excess, self.scores)
        self.weights = doremi_update(self.weights, self.scores, self.eta, self.smoothing)
        self.updates += 1
        self.average += (self.weights - self.average) / (self.updates + 1)  # trainer.py:160, initial weights included

    def mixture(self) -> np.ndarray:
        return self.weights.copy()

    def report(self) -> dict[str, np.ndarray]:
        """The time-averaged weights, reported as ``info["agent/time_averaged_mixture"]``."""
        return {"time_averaged_mixture": self.time_averaged_mixture()}

    def time_averaged_mixture(self) -> np.ndarray:
        """The mean of the weights since the run started, the initial ones included: what DoReMi
        hands to the target run (`trainer.py:157-160`)."""
        return self.average.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": as_json(self.reference),
            "weights": as_json(self.weights),
            "scores": as_json(self.scores),
            "average": as_json(self.average),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = len(self.reference)
        for key in ("reference", "weights", "scores", "average"):
            if np.shape(state[key]) != (k,):
                raise ValueError(f"saved DoReMi {key} is not for K={k} domains")
        self.reference = np.asarray(state["reference"], dtype=np.float64)
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.average = np.asarray(state["average"], dtype=np.float64)
        self.updates = int(state["updates"])


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
        metadata={
            "help": "loss compared with the reference: 'eval_loss' (the held-out rows that score the run), "
            "'validation_loss' (a disjoint validation split) or 'train_loss'"
        },
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


def _given_reference(config: DoReMiConfig, facts: EnvFacts) -> np.ndarray | None:
    if config.reference_loss is None:
        return None
    reference = np.asarray(config.reference_loss, dtype=np.float64)
    if reference.shape != (facts.num_domains,) or not np.all(np.isfinite(reference)):
        raise ValueError(
            f"reference_loss must be {facts.num_domains} finite numbers (one per domain), got {config.reference_loss!r}"
        )
    return reference


def _build(env: gym.Env, config: DoReMiConfig, facts: EnvFacts) -> DoReMiMixer:
    require_validation(env, config.signal, "doremi")
    reference = _given_reference(config, facts)
    if reference is None:
        reference = reference_losses(env, config.reference_seeds, config.signal)
    return DoReMiMixer(reference, config.eta, config.smoothing, config.signal, env.unwrapped)


def _restore(config: DoReMiConfig, facts: EnvFacts, state: dict[str, Any]) -> DoReMiMixer:
    mixer = DoReMiMixer(np.asarray(state["reference"], dtype=np.float64), config.eta, config.smoothing, config.signal)
    mixer.load_state_dict(state)
    return mixer


register_mixer("doremi", "DoReMi's excess-loss group reweighting, online", DoReMiConfig, _build, _restore)


@dataclass(frozen=True)
class DoReMiStaticConfig(DoReMiConfig):
    """Options of ``doremi-static`` (DoReMi's protocol: reference, proxy, averaged weights)."""

    baseline: str = field(
        default="natural",
        metadata={"help": "the reference run's mixture: 'natural' (DoReMi: the Pile's weights) or 'uniform'"},
    )
    proxy: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "MixingEnv options of the reference and proxy runs (same domains); None: the agent's env"},
    )
    proxy_seeds: tuple[int, ...] = field(
        default=(23456,), metadata={"help": "seeds of the proxy runs whose time-averaged weights are averaged"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline not in ("natural", "uniform"):
            raise ValueError(f"baseline must be 'natural' or 'uniform', got {self.baseline!r}")
        if not self.proxy_seeds:
            raise ValueError("proxy_seeds must name at least one run seed")
        if self.proxy is not None and not isinstance(self.proxy, dict):
            raise ValueError(f"proxy must be a mapping of MixingEnv options or None, got {self.proxy!r}")


def proxy_environment(env: gym.Env, options: dict[str, Any] | None) -> gym.Env:
    """The environment of the reference and proxy runs: `env`, or a `MixingEnv` built from
    `options` (mixture actions; the cheap ``eval_loss`` reward unless given) with `env`'s domains."""
    if options is None:
        return env
    from mixgym.envs.mixing_env import MixingEnv

    if options.get("action_map", "simplex") != "simplex":
        raise ValueError(f"the proxy env takes mixtures (action_map 'simplex'), got action_map={options['action_map']!r}")
    proxy = MixingEnv(**{"reward": "eval_loss", **options, "action_map": "simplex"})
    domains = list(env.unwrapped.domains)  # type: ignore[attr-defined]
    if proxy.domains != domains:
        raise ValueError(f"the proxy env's domains {proxy.domains} differ from the target's {domains}")
    return proxy


def proxy_run(env: gym.Env, mixer: DoReMiMixer, seed: int) -> np.ndarray:
    """One run of `env` whose mixture is `mixer`'s weights; their time average at the end."""
    _, info = env.reset(seed=seed)
    mixer.reset(info)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(mixer.mixture())
        mixer.observe(info)
        done = terminated or truncated
    return mixer.time_averaged_mixture()


def protocol_mixture(env: gym.Env, config: DoReMiStaticConfig, facts: EnvFacts) -> np.ndarray:
    """DoReMi's protocol up to its output: reference run(s) on the baseline mixture, proxy
    run(s) with DoReMi's update, their time-averaged weights (mean over `proxy_seeds`)."""
    proxy = proxy_environment(env, config.proxy)
    require_validation(proxy, config.signal, "doremi-static")
    reference = _given_reference(config, facts)
    if reference is None:
        if config.baseline == "uniform":
            baseline = None
        elif facts.natural is None:
            raise ValueError("agent 'doremi-static': the backend reports no domain sizes; use baseline='uniform'")
        else:
            baseline = np.array(facts.natural)
        reference = reference_losses(proxy, config.reference_seeds, config.signal, mixture=baseline)
    averages = [
        proxy_run(proxy, DoReMiMixer(reference, config.eta, config.smoothing, config.signal, proxy.unwrapped), seed)
        for seed in config.proxy_seeds
    ]
    average = np.mean(averages, axis=0)
    return average / average.sum()


def _build_static(env: gym.Env, config: DoReMiStaticConfig, facts: EnvFacts) -> StaticMixer:
    return StaticMixer(protocol_mixture(env, config, facts))


register_mixer(
    "doremi-static",
    "DoReMi's protocol: reference and Group-DRO proxy runs, then their averaged weights, static",
    DoReMiStaticConfig,
    _build_static,
    restore_static,
)
