"""ToyBackend: a real multi-domain learning problem that trains in microseconds per step.

Why a toy: reinforcement-learning agents need thousands of episodes, and a language model
gives one in hours. The toy keeps what makes data mixing hard -- domains that help each
other, domains that conflict, a domain that repeats another, a domain of pure noise, domains
of different difficulty and size -- and trains a small network with real gradients fast
enough that the best static mixture can be found by search (`mixgym.llm_backend.oracle`),
which gives every agent a regret.

The task. Each domain k draws inputs x ~ N(mu_k, I_d) and targets
``y = sqrt(1 - noise_k) * f_k(x) + sqrt(noise_k) * eps`` with ``f_k(x) = v_k . tanh(s_k x U)``
normalised to unit variance, so predicting 0 costs a loss of 1 and the best possible loss is
``noise_k``. The teacher features ``tanh(s_k x U)`` are shared by every domain (shared
structure: learning one domain teaches features the others use); ``s_k`` (difficulty) makes
the function more non-linear; the head ``v_k`` says how domains relate:

========== ===========================================================================
kind       head and inputs
========== ===========================================================================
easy       own head, difficulty 0.5 (nearly linear)
hard       own head, difficulty 2.5
noise      no signal: ``noise = 1``; training on it only pulls predictions to 0
redundant  the same function and inputs as the first "hard" domain (a near-duplicate)
conflict   minus the first "easy" domain's function, on nearly the same inputs
related    0.7 of the first "hard" head plus 0.3 of its own, nearby inputs (transfer)
========== ===========================================================================

The student is a 3-layer tanh MLP (d -> h -> h -> 1, the first layer's bias as a constant
input, no other biases: targets have mean 0) trained by SGD with momentum and a cosine
learning-rate schedule on the mean squared error; each example's domain is drawn from
the mixture. Its three weight matrices are the "chosen layers" whose norms and gradients
the environment reads, as AC-ODM and HDS read three MLP output matrices of a transformer.
Per-domain gradients come from a fixed probe set per domain (a backward pass costs
microseconds here, so the toy has no need for the HF backend's gradients from the training micro-batches).
"Tokens" of an example are its input coordinates quantised into 8 bins each, and one batch
is one "sequence", so the lexical-diversity reward of HDS measures how spread out the inputs
trained on are.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from mixgym.llm_backend.base import (
    BackendInfo,
    Signal,
    TrainStats,
    WeightStats,
    check_forced_fraction,
    check_options,
    domains_of,
    draw_domains,
    validate_mixture,
)
from mixgym.llm_backend.objectives import make_objective
from mixgym.llm_backend.whatif import (
    WhatIfCache,
    WhatIfRequest,
    WhatIfResult,
    cached_simulation,
    forward_flops,
    probe_learning_rates,
    probe_seed,
    training_flops,
    validate_request,
)
from mixgym.resources import check_memory
from mixgym.validation import check_field_types, integer, number

DOMAIN_KINDS = ("easy", "hard", "noise", "redundant", "conflict", "related")
"""Domain archetypes, in the order `default_domains` hands them out."""

_KIND_DEFAULTS: dict[str, tuple[float, float]] = {
    # kind: (difficulty, label-noise fraction)
    "easy": (0.5, 0.05),
    "hard": (2.5, 0.05),
    "noise": (1.0, 1.0),
    "redundant": (2.5, 0.05),
    "conflict": (0.5, 0.05),
    "related": (2.0, 0.1),
}
_TOKEN_BINS = 8
_SOURCE_KINDS = ("redundant", "related", "conflict")
_SIZE_OPTIONS = ("input_dim", "hidden_dim", "teacher_units", "batch_size", "eval_size", "probe_size")
MAX_DOMAINS = 10_000
MAX_INPUT_SCALE = 1e6
"""The largest |domain_shift|, |conflict_offset| and |domain_tag|: runs at 1e6 and at 1e12 end
with the same held-out losses (measured), while from about 1e16 the float32 inputs overflow
and the loss turns non-finite steps into the run, so such values are refused up front."""
"""Most default domains a toy task makes (each adds an input coordinate: K=10,000 already needs
terabytes; the memory check refuses far smaller tasks on most machines)."""


@dataclass(frozen=True)
class DomainSpec:
    """One synthetic domain.

    Attributes:
        name: unique name.
        kind: one of `DOMAIN_KINDS` (see the module docstring).
        difficulty: scale s of the teacher's input; larger is more non-linear.
        noise: fraction of target variance that is label noise, in [0, 1].
        size: number of training examples (sampled with replacement: small domains repeat).
        source: for "redundant", "related" and "conflict": the name of the earlier domain it
            repeats, borrows from or contradicts; None is the first "hard" domain (redundant,
            related) or the first "easy" one (conflict).
    """

    name: str
    kind: str
    difficulty: float
    noise: float
    size: int
    source: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.kind not in DOMAIN_KINDS:
            raise ValueError(f"unknown domain kind {self.kind!r}; known: {', '.join(DOMAIN_KINDS)}")
        number(f"domain {self.name!r}: noise", self.noise, 0.0, 1.0)
        number(f"domain {self.name!r}: difficulty", self.difficulty, above=0.0)
        integer(f"domain {self.name!r}: size", self.size, 1)
        if self.source is not None and self.kind not in _SOURCE_KINDS:
            raise ValueError(
                f"domain {self.name!r}: only kinds {', '.join(_SOURCE_KINDS)} take a source, not {self.kind!r}"
            )


def default_domains(num_domains: int, task_seed: int = 0) -> tuple[DomainSpec, ...]:
    """The default K domains: the six kinds in order, then random kinds and difficulties.

    K=5 gives easy, hard, noise, redundant, conflict. Beyond six, kinds are drawn at random
    (from `task_seed`) with difficulty and noise jittered around the kind's defaults, and
    sizes spread over two orders of magnitude so that some domains repeat.
    """
    if num_domains < 2:
        raise ValueError(f"num_domains must be >= 2, got {num_domains!r}")
    rng = np.random.default_rng([task_seed, 1])
    specs: list[DomainSpec] = []
    counts: dict[str, int] = {}
    for k in range(num_domains):
        if k < len(DOMAIN_KINDS):
            kind = DOMAIN_KINDS[k]
            difficulty, noise = _KIND_DEFAULTS[kind]
            size = 400 if kind == "related" else 20_000
        else:
            kind = str(rng.choice(["easy", "hard", "hard", "related", "redundant", "conflict", "noise"]))
            difficulty, noise = _KIND_DEFAULTS[kind]
            difficulty *= float(rng.uniform(0.6, 1.4))
            noise = noise if kind == "noise" else float(rng.uniform(0.02, 0.3))
            size = int(10 ** rng.uniform(2.5, 4.5))
        counts[kind] = counts.get(kind, 0) + 1
        name = kind if counts[kind] == 1 else f"{kind}{counts[kind]}"
        specs.append(DomainSpec(name, kind, difficulty, noise, size))
    return tuple(specs)


@dataclass(frozen=True)
class ToyConfig:
    """Configuration of a `ToyBackend`; every default is the one the benchmarks use.

    Attributes:
        num_domains: K, used when `domains` is None.
        domains: explicit domain specs; None means `default_domains(num_domains, task_seed)`.
        total_steps: optimizer-step budget of one run.
        input_dim: d, input dimension.
        hidden_dim: h, width of the student's two hidden layers.
        teacher_units: m, number of shared teacher features.
        batch_size: examples per optimizer step.
        learning_rate: peak SGD learning rate (cosine decay to 10% over `total_steps`).
        momentum: SGD momentum.
        domain_shift: distance of each domain's input mean from the origin.
        conflict_offset: distance of a "conflict" domain's input mean from its source's; the
            smaller, the more their inputs overlap and the harder the conflict.
        domain_tag: scale of a one-hot domain tag appended to the student's input (as a
            language model can tell code from prose by looking); 0 hides the domain. A
            "redundant" domain carries its source's tag: it is the same data.
        eval_size: held-out examples per domain (fixed per task).
        probe_size: examples per domain for `domain_gradients` (fixed per task).
        target_weights: weights of the per-domain held-out losses in the objective; None is
            uniform over the domains that are not of kind "noise" (junk is in the training
            pool, not in what the model should learn; its loss is irreducible anyway).
        task_seed: seed of the task (teacher, inputs, held-out sets). The run's own seed
            (initialisation and sampling) is the one given to `reset`.
        forced_fraction: share of each `train` call's examples spread evenly over the
            domains of positive weight, the rest drawn from the mixture
            (`mixgym.llm_backend.base.draw_domains`;
            AC-ODM and HDS force one micro-batch per domain per step, 22 of 144). 0 (the
            default): every example's domain is drawn from the mixture, so the run trains on
            the mixture chosen, in expectation. The toy's per-domain gradients come from probe
            sets, so it needs no forced examples; the option exists so that a toy run leans
            towards uniform exactly as an AC-ODM/HDS run of `HFBackend` does.
    """

    num_domains: int = 5
    domains: tuple[DomainSpec, ...] | None = None
    total_steps: int = 1000
    input_dim: int = 16
    hidden_dim: int = 32
    teacher_units: int = 32
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    domain_shift: float = 3.0
    conflict_offset: float = 3.0
    domain_tag: float = 2.0
    eval_size: int = 128
    probe_size: int = 64
    target_weights: tuple[float, ...] | None = None
    task_seed: int = 0
    forced_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("domains", "target_weights"):  # YAML and JSON give lists
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        check_field_types(self)
        if self.domains is None:
            integer("num_domains", self.num_domains, 2, MAX_DOMAINS)
        for name in ("total_steps",) + _SIZE_OPTIONS:
            integer(name, getattr(self, name), 1)
        integer("task_seed", self.task_seed, 0)
        number("learning_rate", self.learning_rate, above=0.0)
        number("momentum", self.momentum, 0.0, below=1.0)
        for name in ("domain_shift", "conflict_offset", "domain_tag"):
            number(name, getattr(self, name), -MAX_INPUT_SCALE, MAX_INPUT_SCALE)
        domains = self.domains if self.domains is not None else default_domains(self.num_domains, self.task_seed)
        object.__setattr__(self, "domains", tuple(domains))
        object.__setattr__(self, "num_domains", len(domains))
        if len(domains) < 2:
            raise ValueError(f"a toy task needs at least 2 domains, got {len(domains)}")
        names = [d.name for d in domains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must be unique, got {names}")
        for k, spec in enumerate(domains):
            if spec.source is not None and spec.source not in names[:k]:
                raise ValueError(
                    f"domain {spec.name!r}: source {spec.source!r} must name an earlier domain; "
                    f"earlier domains: {names[:k]}"
                )
        check_forced_fraction(self.forced_fraction)
        if self.target_weights is not None:
            for weight in self.target_weights:
                number("target_weights entry", weight, 0.0)
            w = np.asarray(self.target_weights, dtype=np.float64)
            if w.shape != (len(domains),) or np.any(w < 0) or not w.sum() > 0:
                raise ValueError(
                    f"target_weights must be {len(domains)} non-negative numbers with a positive sum, "
                    f"got {self.target_weights!r}"
                )

    def objective_weights(self) -> np.ndarray:
        """Normalised weights of the per-domain held-out losses in the objective (the one the
        oracle search optimises): `target_weights`, or "domain-mean" over the non-noise domains."""
        assert self.domains is not None
        spec = self.target_weights if self.target_weights is not None else "domain-mean"
        kinds = BackendInfo(domain_kinds=tuple(d.kind for d in self.domains))
        return make_objective(spec, kinds, self.num_domains).weights

    def memory_bytes(self, steps_per_call: int = 10) -> int:
        """An upper estimate of the bytes a backend of this config allocates at its peak.

        Building the task holds every example (training, held-out and probe sets) as float64
        while it concatenates them and converts them to float32: 20 bytes per input number, and
        the student's input has ``input_dim + K + 1`` numbers (features, domain tag, constant).
        Training holds four float32 copies of the parameters, the per-domain gradients (K
        float64 copies, twice while they are assembled) and one `train` call of
        `steps_per_call` steps (the env's default ``steps_per_action``).
        """
        assert self.domains is not None
        k = len(self.domains)
        width = self.input_dim + k + 1
        h = self.hidden_dim
        examples = sum(d.size for d in self.domains) + k * (self.eval_size + self.probe_size)
        params = width * h + h * h + h
        largest = max(max(d.size for d in self.domains), 4096, self.eval_size, self.probe_size)
        teacher = 24 * largest * (self.input_dim + self.teacher_units)
        training = steps_per_call * self.batch_size * (4 * width + 8 * h + 40)
        probes = 16 * k * self.probe_size * h
        return 20 * examples * width + 16 * params + 16 * k * params + teacher + training + probes

    def fingerprint(self) -> str:
        """A short hash identifying the task and training set-up (for caches and checkpoints).

        `forced_fraction` enters only when it is not 0, so the default keeps the fingerprints
        (and cached oracles) of the tasks defined before it existed."""
        fields = asdict(self)
        if not self.forced_fraction:
            del fields["forced_fraction"]
        payload = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class _Task:
    """Fixed data of a task: training sets, held-out sets, probe sets (all from task_seed)."""

    train: np.ndarray  # (N, input_dim + 1 + d): per example its input, target and token ids; all domains
    offsets: np.ndarray  # (K,) start of each domain in train
    sizes: np.ndarray  # (K,)
    eval_x: np.ndarray  # (K, E, d)
    eval_y: np.ndarray  # (K, E)
    probe_x: np.ndarray  # (K, P, d)
    probe_y: np.ndarray  # (K, P)
    input_dim: int = 0  # the student's input: d features, the K-dim domain tag, a constant 1
    checksum: str = ""  # of every array: a task rebuilt from its seed must be this one, bit for bit

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(digest_size=16)
        for value in (self.train, self.offsets, self.sizes, self.eval_x, self.eval_y, self.probe_x, self.probe_y):
            digest.update(np.ascontiguousarray(value).view(np.uint8).ravel())
            value.flags.writeable = False  # shared by every backend (and copy) of the task
        self.checksum = digest.hexdigest()


def _make_task(cfg: ToyConfig) -> _Task:
    """Draw the teacher and every fixed data set of a task from `cfg.task_seed`."""
    rng = np.random.default_rng([cfg.task_seed, 0])
    d, m = cfg.input_dim, cfg.teacher_units
    teacher = rng.standard_normal((d, m)) / np.sqrt(d)
    domains = cfg.domains
    assert domains is not None
    first = {kind: next((i for i, s in enumerate(domains) if s.kind == kind), None) for kind in ("easy", "hard")}
    index = {s.name: i for i, s in enumerate(domains)}
    default_source = {"redundant": first["hard"], "related": first["hard"], "conflict": first["easy"]}

    def source_of(k: int) -> int | None:
        spec = domains[k]
        return index[spec.source] if spec.source is not None else default_source.get(spec.kind)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    means, heads, scales = [], [], []
    for k, spec in enumerate(domains):
        own_mean = unit(rng.standard_normal(d)) * cfg.domain_shift
        own_head = unit(rng.standard_normal(m))
        source = source_of(k)
        if source is None or source >= k:
            means.append(own_mean), heads.append(own_head), scales.append(spec.difficulty)
            continue
        if spec.kind == "redundant":
            means.append(means[source]), heads.append(heads[source])
        elif spec.kind == "conflict":
            means.append(means[source] + cfg.conflict_offset * unit(rng.standard_normal(d))), heads.append(-heads[source])
        else:  # related
            means.append(means[source] + 0.5 * unit(rng.standard_normal(d)))
            heads.append(unit(0.7 * heads[source] + 0.3 * own_head))
        scales.append(domains[source].difficulty if spec.kind != "related" else spec.difficulty)

    k_total = len(domains)

    def tag_index(k: int) -> int:
        """A redundant domain is its source's data, so it carries its source's tag."""
        source = source_of(k)
        return source if domains[k].kind == "redundant" and source is not None else k

    tag_of = [tag_index(k) for k in range(k_total)]

    def draw(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = means[k] + rng.standard_normal((n, d))
        f = np.tanh(scales[k] * x @ teacher) @ heads[k]
        f = (f - f_mean[k]) / f_std[k]
        noise = domains[k].noise
        tag = np.zeros((n, k_total + 1))
        tag[:, tag_of[k]] = cfg.domain_tag
        tag[:, -1] = 1.0  # constant input: the first layer's bias
        return np.hstack([x, tag]), np.sqrt(1 - noise) * f + np.sqrt(noise) * rng.standard_normal(n)

    calib = [np.tanh(scales[k] * (means[k] + rng.standard_normal((4096, d))) @ teacher) @ heads[k] for k in range(len(domains))]
    f_mean = [c.mean() for c in calib]
    f_std = [c.std() + 1e-12 for c in calib]

    train = [draw(k, s.size) for k, s in enumerate(domains)]
    evals = [draw(k, cfg.eval_size) for k in range(len(domains))]
    probes = [draw(k, cfg.probe_size) for k in range(len(domains))]
    sizes = np.array([s.size for s in domains], dtype=np.int64)
    f32 = np.float32
    return _Task(
        # one row per example, target last: a batch is one gather (random rows miss the cache)
        # one row per example (input, target, token ids: float32 holds these small integers
        # exactly), so a batch is one gather: random rows miss the cache
        train=np.concatenate([np.hstack([x, y[:, None], _token_ids(x[:, :d].astype(f32))]) for x, y in train]).astype(f32),
        offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]),
        sizes=sizes,
        eval_x=np.stack([x for x, _ in evals]).astype(f32),
        eval_y=np.stack([y for _, y in evals]).astype(f32),
        probe_x=np.stack([x for x, _ in probes]).astype(f32),
        probe_y=np.stack([y for _, y in probes]).astype(f32),
        input_dim=d + k_total + 1,
    )


def _token_ids(features: np.ndarray) -> np.ndarray:
    """(n, d) token ids of examples: each coordinate of the input quantised into 8 bins over
    [-3, 3], coordinate i's bins numbered 8i .. 8i+7."""
    bins = np.clip(((features + 3.0) * (_TOKEN_BINS / 6.0)).astype(np.int64), 0, _TOKEN_BINS - 1)
    return bins + np.arange(features.shape[1], dtype=np.int64) * _TOKEN_BINS


_TASK_CACHE: dict[str, _Task] = {}


def _task_for(cfg: ToyConfig) -> _Task:
    key = cfg.fingerprint()
    if key not in _TASK_CACHE:
        _TASK_CACHE[key] = _make_task(cfg)
    return _TASK_CACHE[key]


LAYER_NAMES = ("mlp.0.weight", "mlp.1.weight", "mlp.2.weight")


class ToyBackend:
    """The fast synthetic backend (see the module docstring for the task).

    >>> backend = ToyBackend(ToyConfig(num_domains=3, total_steps=200))
    >>> backend.reset(seed=0)
    >>> before = backend.evaluate()
    >>> stats = backend.train(np.full(3, 1 / 3), n_steps=200)
    >>> after = backend.evaluate()
    >>> sum(after.values()) < sum(before.values())
    True
    """

    signals = frozenset({Signal.GRADIENTS, Signal.WEIGHT_NORMS, Signal.TOKENS, Signal.TWIN, Signal.WHATIF})

    def __init__(self, config: ToyConfig | None = None, **overrides: Any) -> None:
        config = config or ToyConfig()
        if overrides:
            check_options(type(self).__name__, overrides, ToyConfig.__dataclass_fields__)
            if "num_domains" in overrides and "domains" not in overrides:
                overrides["domains"] = None
            config = replace(config, **overrides)
        self.config = config
        assert config.domains is not None
        sizes = ", ".join(f"{name}={getattr(config, name)}" for name in _SIZE_OPTIONS)
        check_memory(
            config.memory_bytes(),
            f"a toy task of K={config.num_domains} domains ({sum(d.size for d in config.domains)} training examples; {sizes})",
            "use fewer or smaller domains, or smaller sizes",
        )
        self.domains = [d.name for d in config.domains]
        self.total_steps = config.total_steps
        self._task = _task_for(config)
        self._objective_weights = config.objective_weights()
        self._params: list[np.ndarray] = []
        self._step = 0
        self.whatif_cache = WhatIfCache()
        """Answers of `simulate`, kept across resets (keyed by a digest of the state)."""
        self.reset(seed=0)

    # ------------------------------------------------------------------ protocol
    @property
    def step(self) -> int:
        return self._step

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            domain_sizes=self._task.sizes.astype(np.float64),
            tokens_per_sample=self.config.input_dim,
            objective_weights=self._objective_weights if self.config.target_weights is not None else None,
            domain_kinds=tuple(d.kind for d in self.config.domains or ()),
        )

    def reset(self, seed: int) -> None:
        """Fresh student (1/sqrt(fan-in) init), zero momentum, sampling RNG from `seed`."""
        init_rng, self._rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self._seed = int(seed)
        self._allocate()
        for w in self._params:
            w[...] = init_rng.standard_normal(w.shape) / np.sqrt(w.shape[0])
        self._previous_theta = self._theta.copy()
        self._step = 0

    def _allocate(self) -> None:
        """Zero flat parameter, gradient and momentum vectors, and the per-matrix views of the
        first two (one vector op then updates every matrix)."""
        d, h = self._task.input_dim, self.config.hidden_dim
        self._shapes = shapes = [(d, h), (h, h), (h, 1)]
        self._theta = np.zeros(sum(a * b for a, b in shapes), dtype=np.float32)
        self._grad = np.zeros_like(self._theta)
        self._velocity = np.zeros_like(self._theta)
        self._params = self._views(self._theta, shapes)
        self._grads = self._views(self._grad, shapes)
        bounds = np.cumsum([0] + [w.size for w in self._params])
        self._layer_slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    @staticmethod
    def _views(flat: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        """Views of `flat` shaped like the parameters, so one vector op updates them all."""
        views, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            views.append(flat[start : start + size].reshape(shape))
            start += size
        return views

    def learning_rate(self, step: int) -> float:
        """Cosine decay from `learning_rate` to 10% of it over the budget."""
        progress = min(step / self.total_steps, 1.0)
        return self.config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    def train(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        """SGD steps on batches whose examples' domains are drawn i.i.d. from `mixture`
        (with `ToyConfig.forced_fraction` > 0, that share of the call's examples is spread
        evenly over the domains instead).

        Without forced examples, sampling is per step from the run's RNG, so `train(m, 10)`
        twice equals `train(m, 20)` once, bit for bit (forced examples are planned per call).
        """
        start = time.perf_counter()
        mixture = validate_mixture(mixture, len(self.domains))
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps!r}")
        cfg, task = self.config, self._task
        k = len(self.domains)
        self._previous_theta = self._theta.copy()
        domain, batches = self._draw(self._rng, mixture, n_steps, cfg.forced_fraction)
        inputs = task.input_dim
        xs, ys, tokens = batches[..., :inputs], batches[..., inputs : inputs + 1], batches[..., inputs + 1 :]
        errors = np.empty((n_steps, cfg.batch_size, 1), dtype=np.float32)
        history = np.empty((n_steps + 1, self._theta.size), dtype=np.float32)  # for per-step weight norms
        history[0] = self._theta
        learning_rates = [np.float32(self.learning_rate(self._step + t)) for t in range(n_steps)]
        self._sgd(xs, ys, errors, learning_rates, history[1:])
        self._step += n_steps
        samples = np.bincount(domain.ravel(), minlength=k)
        loss_sum = np.bincount(domain.ravel(), weights=(errors[..., 0] ** 2).ravel(), minlength=k)
        train_loss = np.where(samples > 0, loss_sum / np.maximum(samples, 1), np.nan)
        return TrainStats(
            samples=samples,
            train_loss=train_loss,
            tokens=int(samples.sum()) * cfg.input_dim,
            wall_time=time.perf_counter() - start,
            learning_rate=self.learning_rate(self._step - 1),
            token_ids=tokens.astype(np.int64).reshape(n_steps, -1),
            step_weight_norms=self._layer_norms(history),
        )

    def _draw(
        self, rng: np.random.Generator, mixture: np.ndarray, n_steps: int, forced_fraction: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(domains (n, B), rows (n, B, d' + 1 + tokens) of the task's training table) of
        `n_steps` batches drawn with `rng`: the run's generator, or a what-if branch's own."""
        cfg, task = self.config, self._task
        if forced_fraction:
            domain = draw_domains(mixture, n_steps * cfg.batch_size, forced_fraction, rng)
            domain = domain.reshape(n_steps, cfg.batch_size)
            position = rng.random((n_steps, cfg.batch_size))
        else:
            draws = rng.random((n_steps, cfg.batch_size, 2))
            domain = domains_of(mixture, draws[..., 0])
            position = draws[..., 1]
        index = task.offsets[domain] + (position * task.sizes[domain]).astype(np.int64)
        return domain, task.train[index]

    def _sgd(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        errors: np.ndarray,
        learning_rates: list[np.float32],
        thetas: np.ndarray | None,
        branch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """One SGD-with-momentum step per batch ``xs[t]`` (forward, backward, update), the
        errors written to `errors` and the parameters after each step to `thetas` (if given).
        The run's parameters, or a what-if `branch`'s flat (parameters, momentum, gradient)
        vectors, which are updated in place instead. Every array
        is allocated once per call and written with ``out=``, and products use `np.dot`, whose
        dispatch costs half a microsecond less than `np.matmul`'s (the same BLAS call): at these
        sizes (32 x 32 matrices) numpy's per-call overhead, not arithmetic, is most of the cost."""
        theta, velocity, grad = (self._theta, self._velocity, self._grad) if branch is None else branch
        w1, w2, w3 = self._params if branch is None else self._views(theta, self._shapes)
        g1, g2, g3 = self._grads if branch is None else self._views(grad, self._shapes)
        w2_t, w3_t = w2.T, w3.T
        h1, h2, d1, d2, slope = (np.empty((xs.shape[1], w2.shape[0]), dtype=np.float32) for _ in range(5))
        d_out = np.empty((xs.shape[1], 1), dtype=np.float32)
        update = np.empty_like(theta)
        scale, momentum, one = np.float32(2.0 / self.config.batch_size), np.float32(self.config.momentum), np.float32(1)
        for t, (x, y, err, learning_rate) in enumerate(zip(xs, ys, errors, learning_rates)):
            np.tanh(np.dot(x, w1, out=h1), out=h1)
            np.tanh(np.dot(h1, w2, out=h2), out=h2)
            np.subtract(np.dot(h2, w3, out=err), y, out=err)
            np.multiply(err, scale, out=d_out)
            np.dot(d_out, w3_t, out=d2)  # the outer product d_out w3^T
            np.multiply(d2, np.subtract(one, np.multiply(h2, h2, out=slope), out=slope), out=d2)  # tanh' = 1 - h^2
            np.dot(d2, w2_t, out=d1)
            np.multiply(d1, np.subtract(one, np.multiply(h1, h1, out=slope), out=slope), out=d1)
            np.dot(x.T, d1, out=g1)
            np.dot(h1.T, d2, out=g2)
            np.dot(h2.T, d_out, out=g3)
            velocity *= momentum
            velocity += grad
            theta -= np.multiply(velocity, learning_rate, out=update)
            if thetas is not None:
                thetas[t] = theta

    def _layer_norms(self, thetas: np.ndarray) -> np.ndarray:
        """(n, L) Frobenius norms of the three matrices in each row of `thetas` (n, P): one
        ``reduceat`` over the contiguous matrices, summed in float64."""
        starts = [p.start for p in self._layer_slices]
        return np.sqrt(np.add.reduceat(thetas * thetas, starts, axis=1, dtype=np.float64))

    def _forward(self, x: np.ndarray, theta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hidden activations and predictions for inputs of shape (..., input_dim), at the run's
        parameters or at flat `theta` (a what-if branch's); the leading axes (domains,
        examples) are flattened, so each layer is one matrix product over every domain's
        examples rather than one per domain."""
        w1, w2, w3 = self._params if theta is None else self._views(theta, self._shapes)
        lead = x.shape[:-1]
        h1 = np.tanh(np.dot(x.reshape(-1, x.shape[-1]), w1))
        h2 = np.tanh(np.dot(h1, w2))
        return h1.reshape(*lead, -1), h2.reshape(*lead, -1), np.dot(h2, w3).reshape(lead)

    def evaluate(self) -> dict[str, float]:
        """Mean squared error per domain on the task's fixed held-out sets."""
        return dict(zip(self.domains, self._held_out_loss().tolist()))

    def _held_out_loss(self, theta: np.ndarray | None = None) -> np.ndarray:
        """(K,) mean squared error per domain on the held-out sets, at the run's parameters or
        at flat `theta`."""
        _, _, pred = self._forward(self._task.eval_x, theta)
        return ((pred - self._task.eval_y) ** 2).mean(axis=1, dtype=np.float64)

    def objective(self) -> float:
        """The task's objective: target-weighted mean held-out loss (lower is better)."""
        return float(self._objective_weights @ np.array(list(self.evaluate().values())))

    def domain_gradients(self) -> np.ndarray:
        """Gradient of each domain's probe-set loss w.r.t. the three weight matrices, (K, D):
        one forward and backward pass over every domain's probe set together, then one
        product per layer and domain."""
        task = self._task
        h1, h2, pred = self._forward(task.probe_x)
        d_out = (pred - task.probe_y)[..., None] * np.float32(2.0 / self.config.probe_size)  # (K, P, 1)
        _, w2, w3 = self._params
        d2 = (d_out @ w3.T) * (1 - h2 * h2)
        d1 = ((d2.reshape(-1, d2.shape[-1]) @ w2.T) * (1 - (h1 * h1).reshape(-1, h1.shape[-1]))).reshape(h1.shape)
        k = len(self.domains)
        per_layer = [np.swapaxes(a, 1, 2) @ b for a, b in ((task.probe_x, d1), (h1, d2), (h2, d_out))]
        return np.concatenate([g.reshape(k, -1) for g in per_layer], axis=1).astype(np.float64)

    def twin(self) -> ToyBackend:
        """A fresh backend of the same task (`Signal.TWIN`). Reset with the same seed it starts
        from the same student and draws the same uniform numbers, which `train` maps to domains
        through the mixture's CDF and to examples within a domain: common random numbers, so
        two mixtures are compared on the same draws. The task's data is shared (cached)."""
        return ToyBackend(self.config)

    def weight_stats(self) -> WeightStats:
        return WeightStats(
            names=LAYER_NAMES,
            norms=self._layer_norms(self._theta[None])[0],
            update_norms=self._layer_norms((self._theta - self._previous_theta)[None])[0],
        )

    def __getstate__(self) -> dict[str, Any]:
        """What `pickle` and `copy.deepcopy` carry: the configuration (the task's seed
        included) and `state_dict`, a few KB. Not the task's data (9 MB at K=5): the copy
        rebuilds it from the seed, and its checksum must match the original's. A plain copy
        of the attributes would also break the views of the flat parameter vector, leaving a
        copy whose SGD steps update a vector the model no longer reads."""
        return {"config": self.config, "state": self.state_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]
        self.load_state_dict(state["state"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.config.fingerprint(),
            "data_checksum": self._task.checksum,
            "step": self._step,
            "theta": self._theta.copy(),
            "velocity": self._velocity.copy(),
            "previous_theta": self._previous_theta.copy(),
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "seed": self._seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self.config.fingerprint():
            raise ValueError(
                f"state is from a toy task with fingerprint {state.get('fingerprint')!r}, "
                f"this backend's is {self.config.fingerprint()!r}"
            )
        if state.get("data_checksum", self._task.checksum) != self._task.checksum:
            raise ValueError(
                f"the toy task's data rebuilt from task_seed={self.config.task_seed} differs from the one the state "
                f"was saved with (checksum {self._task.checksum} != {state['data_checksum']}): a different numpy or "
                "platform draws it differently"
            )
        self._step = int(state["step"])
        self._theta[...] = state["theta"]
        self._velocity[...] = state["velocity"]
        self._previous_theta[...] = state["previous_theta"]
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._seed = int(state.get("seed", 0))

    # ------------------------------------------------------------------ what-if (Signal.WHATIF)
    def simulate(
        self,
        probes: np.ndarray,
        steps: int,
        candidates: np.ndarray,
        method: str = "merge",
        lr_scale: float = 2.0,
        rank: int | None = None,
    ) -> WhatIfResult:
        """Held-out losses of probe mixtures and candidates from the current state
        (`mixgym.llm_backend.whatif`); the run is left bit-identical.

        Each branch -- a probe, or for ``method="exact"`` a candidate -- copies the
        parameters, trains them by SGD with fresh momentum for `steps` steps on its mixture
        (`whatif.probe_learning_rates` of ``lr_scale * learning_rate``), drawing batches
        from a generator of its own (`whatif.probe_seed`, the same for every branch of the
        request), and is evaluated; the run's
        parameters, momentum, step and generator are never written. ``"merge"`` candidates
        are the current parameters plus the weighted probe deltas, each matrix's delta
        truncated to its top `rank` singular directions when `rank` is given (a stand-in for
        a LoRA adapter of that rank; probe losses are then those of the truncated deltas).
        """
        request = validate_request(probes, steps, candidates, method, len(self.domains), lr_scale, rank)
        digest = hashlib.sha256(self._theta.tobytes() + f"|{self._step}|{self._seed}".encode()).hexdigest()
        key = request.key(self.config.fingerprint(), digest)
        return cached_simulation(self.whatif_cache, key, lambda: self._simulate(request))

    def whatif_cost(
        self, probes: np.ndarray, steps: int, candidates: np.ndarray, method: str = "merge", rank: int | None = None
    ) -> float:
        """Main-step equivalents `simulate` spends: branch steps cost one main step each (a
        full-parameter SGD step on a batch of the same size); an evaluation costs a forward
        pass over the K held-out sets."""
        request = validate_request(probes, steps, candidates, method, len(self.domains), rank=rank)
        return self._cost(request)

    def _cost(self, request: WhatIfRequest) -> float:
        params, batch = self._theta.size, self.config.batch_size
        branches = len(request.probes) + (len(request.candidates) if request.method == "exact" else 0)
        evaluations = 1 + len(request.probes) + len(request.candidates)
        held_out = len(self.domains) * self.config.eval_size
        flops = branches * request.steps * training_flops(params, params, batch) + evaluations * forward_flops(params, held_out)
        return flops / training_flops(params, params, batch)

    def _simulate(self, request: WhatIfRequest) -> WhatIfResult:
        theta0 = self._theta.copy()
        rates = probe_learning_rates(request.lr_scale * self.config.learning_rate, request.steps)

        inputs, batch = self._task.input_dim, self.config.batch_size

        def branch(mixture: np.ndarray) -> np.ndarray:
            theta = theta0.copy()
            rng = np.random.default_rng(probe_seed(self._seed, self._step))
            _, rows = self._draw(rng, mixture, request.steps)
            errors = np.empty((request.steps, batch, 1), dtype=np.float32)
            weights = (theta, np.zeros_like(theta), np.zeros_like(theta))
            self._sgd(rows[..., :inputs], rows[..., inputs : inputs + 1], errors, list(rates.astype(np.float32)), None, weights)
            return theta - theta0

        deltas = [self._truncate(branch(p), request.rank) for p in request.probes]
        mixtures = request.candidate_mixtures
        if request.method == "merge":
            candidates = [theta0 + np.tensordot(w, deltas, axes=1).astype(np.float32) for w in request.candidates]
        else:
            candidates = [theta0 + branch(m) for m in mixtures]
        steps = request.steps * (len(deltas) + (len(candidates) if request.method == "exact" else 0))
        return WhatIfResult(
            base_loss=self._held_out_loss(theta0),
            probe_loss=np.array([self._held_out_loss(theta0 + d) for d in deltas]).reshape(len(deltas), -1),
            candidate_loss=np.array([self._held_out_loss(c) for c in candidates]).reshape(len(candidates), len(self.domains)),
            candidate_mixtures=mixtures,
            probe_steps=steps,
            evaluations=1 + len(deltas) + len(candidates),
            cost=self._cost(request),
            wall_time=0.0,
        )

    def _truncate(self, delta: np.ndarray, rank: int | None) -> np.ndarray:
        """`delta` with each weight matrix cut to its best rank-`rank` approximation (SVD); a
        diverged probe's non-finite delta is left as it is (its losses are then not finite)."""
        if rank is None or not np.all(np.isfinite(delta)):
            return delta
        out = np.empty_like(delta)
        for matrix, where in zip(self._views(delta, self._shapes), self._layer_slices):
            u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
            out[where] = ((u[:, :rank] * s[:rank]) @ vt[:rank]).astype(np.float32).ravel()
        return out
