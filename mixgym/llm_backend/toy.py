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

Four more kinds (`TASK_KINDS`) behave exactly as named; the task catalogue
(`mixgym.tasks`) builds its unit tasks from them, and no default task uses them:

========== ===========================================================================
kind       data
========== ===========================================================================
duplicate  copies of the source's training examples: its rows *are* the first
           ``share`` of the source's pool (repeated up to `size`), with the source's tag.
           Training on it spends budget on examples the source already has; no named
           objective scores it (`mixgym.llm_backend.objectives.JUNK_KINDS`)
contradict the source's inputs and tag, the opposite target: a conflict the domain tag
           cannot separate; not scored (junk that undoes the source)
crawl      a large noisy crawl: each example copies the input of a random scored
           domain; a ``share`` of them carry that domain's target, the rest pure noise;
           its own tag; scored
primer     the source's inputs, tag and head at a lower difficulty (an easy version
           of it): useful early, misleading late (curriculum); not scored
========== ===========================================================================

Any domain may have a finite `DomainSpec.pool` of distinct examples smaller than its
`size`: its `size` rows are the pool repeated, so its natural share counts the repeats
(data-constrained: more epochs of the same examples).

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

import hashlib
import json
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
    check_split,
    validate_mixture,
)
from mixgym.llm_backend.objectives import JUNK_KINDS, make_objective
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
from mixgym.llm_backend.toy_runs import ToyRuns
from mixgym.resources import check_memory
from mixgym.validation import check_field_types, integer, number

DOMAIN_KINDS = ("easy", "hard", "noise", "redundant", "conflict", "related")
"""Domain archetypes, in the order `default_domains` hands them out."""
TASK_KINDS = ("duplicate", "contradict", "crawl", "primer")
"""Archetypes that behave exactly as named, for the task catalogue (`mixgym.tasks`); no default
task uses them (see the module docstring's second table)."""

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
_SOURCE_KINDS = ("redundant", "related", "conflict", "duplicate", "contradict", "primer")
_KIND_DEFAULTS.update({"duplicate": (2.5, 0.05), "contradict": (0.5, 0.05), "crawl": (1.0, 0.1), "primer": (0.5, 0.05)})
_CRAWL_SHARE = 0.3
"""Default share of a "crawl" domain's examples that carry signal (`DomainSpec.share`)."""
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
        source: for "redundant", "related", "conflict", "duplicate", "contradict" and "primer":
            the name of the earlier domain it repeats, borrows from, contradicts or primes;
            None is the first "hard" domain (redundant, related, duplicate, primer) or the first
            "easy" one (conflict, contradict).
        pool: distinct examples, 1 to `size`; the `size` rows repeat them (a data-constrained
            domain). None: `size` distinct examples.
        share: for "duplicate", the share of the source's distinct examples it copies; for
            "crawl", the share of its examples that carry signal; in (0, 1]. None: 1 for a
            duplicate, 0.3 for a crawl.
    """

    name: str
    kind: str
    difficulty: float
    noise: float
    size: int
    source: str | None = None
    pool: int | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.kind not in DOMAIN_KINDS + TASK_KINDS:
            raise ValueError(f"unknown domain kind {self.kind!r}; known: {', '.join(DOMAIN_KINDS + TASK_KINDS)}")
        number(f"domain {self.name!r}: noise", self.noise, 0.0, 1.0)
        number(f"domain {self.name!r}: difficulty", self.difficulty, above=0.0)
        integer(f"domain {self.name!r}: size", self.size, 1)
        if self.pool is not None:
            integer(f"domain {self.name!r}: pool (distinct examples)", self.pool, 1, self.size)
        if self.share is not None:
            if self.kind not in ("duplicate", "crawl"):
                raise ValueError(f"domain {self.name!r}: only kinds duplicate and crawl take a share, not {self.kind!r}")
            number(f"domain {self.name!r}: share", self.share, maximum=1.0, above=0.0)
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
        examples = sum(d.size for d in self.domains) + k * (2 * self.eval_size + self.probe_size)
        params = width * h + h * h + h
        largest = max(max(d.size for d in self.domains), 4096, self.eval_size, self.probe_size)
        teacher = 24 * largest * (self.input_dim + self.teacher_units)
        training = steps_per_call * self.batch_size * (4 * width + 8 * h + 40)
        probes = 16 * k * self.probe_size * h
        return 20 * examples * width + 16 * params + 16 * k * params + teacher + training + probes

    def fingerprint(self) -> str:
        """A short hash identifying the task and training set-up (for caches and checkpoints).

        `forced_fraction` enters only when it is not 0, and a domain's `pool` and `share` only
        when set, so the defaults keep the fingerprints (and cached oracles) of the tasks
        defined before they existed."""
        fields = asdict(self)
        if not self.forced_fraction:
            del fields["forced_fraction"]
        for domain in fields["domains"]:  # so do the domains' options added later, at None
            for name in ("pool", "share"):
                if domain[name] is None:
                    del domain[name]
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
    valid_x: np.ndarray  # (K, E, d): the validation split (`Signal.VALIDATION`), disjoint from eval_x
    valid_y: np.ndarray  # (K, E)
    input_dim: int = 0  # the student's input: d features, the K-dim domain tag, a constant 1
    checksum: str = ""  # of every array: a task rebuilt from its seed must be this one, bit for bit

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(digest_size=16)
        for value in (self.train, self.offsets, self.sizes, self.eval_x, self.eval_y, self.probe_x, self.probe_y):
            digest.update(np.ascontiguousarray(value).view(np.uint8).ravel())
            value.flags.writeable = False  # shared by every backend (and copy) of the task
        # The validation split is drawn after every array above from the same generator and kept
        # out of the checksum, so that states saved before it existed still load.
        self.valid_x.flags.writeable = self.valid_y.flags.writeable = False
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
    default_source.update({"duplicate": first["hard"], "primer": first["hard"], "contradict": first["easy"]})

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
        if spec.kind in ("redundant", "duplicate"):
            means.append(means[source]), heads.append(heads[source])
        elif spec.kind in ("contradict", "primer"):  # the source's inputs; the opposite or an easier target
            means.append(means[source]), heads.append(-heads[source] if spec.kind == "contradict" else heads[source])
            scales.append(domains[source].difficulty if spec.kind == "contradict" else spec.difficulty)
            continue
        elif spec.kind == "conflict":
            means.append(means[source] + cfg.conflict_offset * unit(rng.standard_normal(d))), heads.append(-heads[source])
        else:  # related
            means.append(means[source] + 0.5 * unit(rng.standard_normal(d)))
            heads.append(unit(0.7 * heads[source] + 0.3 * own_head))
        scales.append(domains[source].difficulty if spec.kind != "related" else spec.difficulty)

    k_total = len(domains)

    def tag_index(k: int) -> int:
        """A redundant domain is its source's data, so it carries its source's tag; so do the
        kinds that must look like their source (duplicate, contradict, primer)."""
        source = source_of(k)
        same_look = ("redundant", "duplicate", "contradict", "primer")
        return source if domains[k].kind in same_look and source is not None else k

    tag_of = [tag_index(k) for k in range(k_total)]

    def draw(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if domains[k].kind == "crawl":
            return draw_crawl(k, n)
        x = means[k] + rng.standard_normal((n, d))
        f = np.tanh(scales[k] * x @ teacher) @ heads[k]
        f = (f - f_mean[k]) / f_std[k]
        noise = domains[k].noise
        tag = np.zeros((n, k_total + 1))
        tag[:, tag_of[k]] = cfg.domain_tag
        tag[:, -1] = 1.0  # constant input: the first layer's bias
        return np.hstack([x, tag]), np.sqrt(1 - noise) * f + np.sqrt(noise) * rng.standard_normal(n)

    crawled = [j for j, spec in enumerate(domains) if spec.kind not in JUNK_KINDS | {"crawl"}]

    def draw_crawl(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each example: the input and target of a random scored domain, its target kept with
        probability `share` (else pure noise), label noise on top, the crawl's own tag."""
        if not crawled:
            raise ValueError(f"crawl domain {domains[k].name!r} needs a scored domain to crawl")
        spec = domains[k]
        share = _CRAWL_SHARE if spec.share is None else spec.share
        source = rng.choice(crawled, size=n)
        xs, ys = np.empty((n, d + k_total + 1)), np.empty(n)
        for j in crawled:
            rows = np.flatnonzero(source == j)
            if len(rows):
                x, y = draw(j, len(rows))
                xs[rows], ys[rows] = x, y
        xs[:, d:] = 0.0
        xs[:, d + tag_of[k]], xs[:, -1] = cfg.domain_tag, 1.0
        signal = rng.random(n) < share
        noisy = np.sqrt(1 - spec.noise) * ys + np.sqrt(spec.noise) * rng.standard_normal(n)
        return xs, np.where(signal, noisy, rng.standard_normal(n))

    calib = [np.tanh(scales[k] * (means[k] + rng.standard_normal((4096, d))) @ teacher) @ heads[k] for k in range(len(domains))]
    f_mean = [c.mean() for c in calib]
    f_std = [c.std() + 1e-12 for c in calib]

    train = [draw(k, s.pool or s.size) if s.kind != "duplicate" else None for k, s in enumerate(domains)]
    for k, spec in enumerate(domains):  # a duplicate copies its source's first distinct examples
        if spec.kind == "duplicate":
            source, share = source_of(k), 1.0 if spec.share is None else spec.share
            x, y = train[source]
            distinct = max(1, round(share * len(y)))
            train[k] = (x[:distinct], y[:distinct])
    train = [(np.resize(x, (s.size, x.shape[1])), np.resize(y, s.size)) for (x, y), s in zip(train, domains)]
    evals = [draw(k, cfg.eval_size) for k in range(len(domains))]
    probes = [draw(k, cfg.probe_size) for k in range(len(domains))]
    valids = [draw(k, cfg.eval_size) for k in range(len(domains))]  # last: every earlier draw unchanged
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
        valid_x=np.stack([x for x, _ in valids]).astype(f32),
        valid_y=np.stack([y for _, y in valids]).astype(f32),
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

    A `ToyBackend` is one run: a row of a `mixgym.llm_backend.toy_runs.ToyRuns`, which holds
    the state of runs as arrays with a leading run axis and does their arithmetic. On its own
    a backend has a one-row store; `mixgym.envs.vector.ToyVectorEnv` moves many backends onto
    one shared store (`share_runs`) and trains them together with `train_together`, bit for
    bit as they would train alone.

    >>> backend = ToyBackend(ToyConfig(num_domains=3, total_steps=200))
    >>> backend.reset(seed=0)
    >>> before = backend.evaluate()
    >>> stats = backend.train(np.full(3, 1 / 3), n_steps=200)
    >>> after = backend.evaluate()
    >>> sum(after.values()) < sum(before.values())
    True
    """

    signals = frozenset(
        {Signal.GRADIENTS, Signal.WEIGHT_NORMS, Signal.TOKENS, Signal.TWIN, Signal.WHATIF, Signal.VALIDATION, Signal.RESTART}
    )

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
        self._runs = ToyRuns(config, self._task)
        self._row = 0
        self.whatif_cache = WhatIfCache()
        """Answers of `simulate`, kept across resets (keyed by a digest of the state)."""

    # ------------------------------------------------------------------ the run's row
    @property
    def _theta(self) -> np.ndarray:
        """The flat parameter vector (a view of the run's row: writing it changes the run)."""
        return self._runs.theta[self._row]

    @property
    def _velocity(self) -> np.ndarray:
        """The SGD momentum vector (a view of the run's row)."""
        return self._runs.velocity[self._row]

    @property
    def _params(self) -> list[np.ndarray]:
        """The three weight matrices, views of `_theta`."""
        return self._runs.params(self._theta)

    @property
    def _seed(self) -> int:
        return int(self._runs.seeds[self._row])

    def share_runs(self, runs: ToyRuns, row: int) -> None:
        """Move this run onto row `row` of `runs` (a store of the same task), state and all."""
        if runs.task is not self._task or runs.config.fingerprint() != self.config.fingerprint():
            raise ValueError("share_runs needs a store of runs of this backend's own task")
        runs.load_state_dict(row, self._runs.state_dict(self._row))
        self._runs, self._row = runs, row

    # ------------------------------------------------------------------ protocol
    @property
    def step(self) -> int:
        return int(self._runs.steps[self._row])

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
        self._runs.reset(self._row, seed)

    def learning_rate(self, step: int) -> float:
        """Cosine decay from `learning_rate` to 10% of it over the budget; after `plan_restart`,
        over each of the two runs' steps."""
        return self._runs.learning_rate(step, self._row)

    def plan_restart(self, step: int) -> None:
        """Make this run two runs that meet at `step` (`Signal.RESTART`): the cosine schedule
        annealed over ``[0, step)``, then from the peak again over ``[step, total_steps)``. Call
        it before the run reaches `step` (``reset`` clears it), and `restart_optimizer` at
        `step`. The toy has no warm-up, so neither run has one."""
        integer("restart step", step, 1, self.total_steps - 1)
        if self.step > step:
            raise ValueError(f"cannot plan a restart at step {step}: the run is already at step {self.step}")
        self._runs.restarts[self._row] = int(step)

    def restart_optimizer(self) -> None:
        """A fresh optimizer from now on: SGD's momentum set to zero (`Signal.RESTART`)."""
        self._runs.velocity[self._row] = 0.0

    def train(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        """SGD steps on batches whose examples' domains are drawn i.i.d. from `mixture`
        (with `ToyConfig.forced_fraction` > 0, that share of the call's examples is spread
        evenly over the domains instead).

        Without forced examples, sampling is per step from the run's RNG, so `train(m, 10)`
        twice equals `train(m, 20)` once, bit for bit (forced examples are planned per call).
        """
        return train_together([self], [mixture], n_steps)[0]

    def evaluate(self, split: str = "eval") -> dict[str, float]:
        """Mean squared error per domain on the task's fixed held-out sets (``split="eval"``,
        the rows that score the run) or on its validation sets (``"validation"``,
        `Signal.VALIDATION`: as many examples, drawn after every other set of the task)."""
        return dict(zip(self.domains, self._held_out_loss(split=check_split(split)).tolist()))

    def _held_out_loss(self, theta: np.ndarray | None = None, split: str = "eval") -> np.ndarray:
        """(K,) mean squared error per domain on the held-out (or validation) sets, at the
        run's parameters or at flat `theta`."""
        if theta is None:
            return self._runs.held_out_loss(self._row, split)
        return self._runs.loss_of(theta[None], split)[0]

    def _forward(self, x: np.ndarray, theta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hidden activations and predictions for inputs of shape (..., input_dim), at the run's
        parameters or at flat `theta`, the leading axes kept."""
        h1, h2, pred = self._runs.forward(x, (self._theta if theta is None else theta)[None])
        lead = x.shape[:-1]
        return h1[0].reshape(*lead, -1), h2[0].reshape(*lead, -1), pred[0].reshape(lead)

    def objective(self, split: str = "eval") -> float:
        """The task's objective: target-weighted mean held-out loss (lower is better), on the
        rows that score the run or (``split="validation"``) on the validation split, which a
        search that chooses by the objective should read."""
        return float(self._objective_weights @ np.array(list(self.evaluate(split).values())))

    def domain_gradients(self) -> np.ndarray:
        """Gradient of each domain's probe-set loss w.r.t. the three weight matrices, (K, D):
        one forward and backward pass over every domain's probe set together, then one
        product per layer and domain."""
        return self._runs.domain_gradients(self._row)

    def twin(self) -> ToyBackend:
        """A fresh backend of the same task (`Signal.TWIN`). Reset with the same seed it starts
        from the same student and draws the same uniform numbers, which `train` maps to domains
        through the mixture's CDF and to examples within a domain: common random numbers, so
        two mixtures are compared on the same draws. The task's data is shared (cached)."""
        return ToyBackend(self.config)

    def weight_stats(self) -> WeightStats:
        theta = self._theta
        return WeightStats(
            names=LAYER_NAMES,
            norms=self._runs.layer_norms(theta[None])[0],
            update_norms=self._runs.layer_norms((theta - self._runs.previous_theta[self._row])[None])[0],
        )

    def __getstate__(self) -> dict[str, Any]:
        """What `pickle` and `copy.deepcopy` carry: the configuration (the task's seed
        included) and `state_dict`, a few KB. Not the task's data (9 MB at K=5): the copy
        rebuilds it from the seed, and its checksum must match the original's. A copy of a run
        on a shared store (`share_runs`) is a run on its own."""
        return {"config": self.config, "state": self.state_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]
        self.load_state_dict(state["state"])

    def state_dict(self) -> dict[str, Any]:
        """Configuration fingerprint, data checksum and the run's row (`ToyRuns.state_dict`: a
        ``"restart"`` key only when one is planned, so a run without one saves what it always did)."""
        return {"fingerprint": self.config.fingerprint(), "data_checksum": self._task.checksum, **self._runs.state_dict(self._row)}

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
        self._runs.load_state_dict(self._row, state)

    # ------------------------------------------------------------------ what-if (Signal.WHATIF)
    def simulate(
        self,
        probes: np.ndarray,
        steps: int,
        candidates: np.ndarray,
        method: str = "merge",
        lr_scale: float = 2.0,
        rank: int | None = None,
        split: str = "eval",
        per_sequence: bool = False,
    ) -> WhatIfResult:
        """Held-out losses of probe mixtures and candidates from the current state
        (`mixgym.llm_backend.whatif`); the run is left bit-identical.

        Each branch -- a probe, or for ``method="exact"`` a candidate -- copies the
        parameters, trains them by SGD with fresh momentum for `steps` steps on its mixture
        (`whatif.probe_learning_rates` of ``lr_scale * learning_rate``), drawing batches
        from a generator of its own (`whatif.probe_seed`, the same for every branch of the
        request), and is evaluated; the run's
        parameters, momentum, step and generator are never written. The branches train
        together, as extra rows of one batched SGD call. ``"merge"`` candidates
        are the current parameters plus the weighted probe deltas, each matrix's delta
        truncated to its top `rank` singular directions when `rank` is given (a stand-in for
        a LoRA adapter of that rank; probe losses are then those of the truncated deltas).
        Losses are on `split`'s rows; every example's domain is drawn from its branch's mixture
        whatever `per_sequence` says (a toy batch is mixed per example).
        """
        request = validate_request(probes, steps, candidates, method, len(self.domains), lr_scale, rank, split, per_sequence)
        digest = hashlib.sha256(self._theta.tobytes() + f"|{self.step}|{self._seed}".encode()).hexdigest()
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

    def _branches(self, theta0: np.ndarray, mixtures: np.ndarray, request: WhatIfRequest) -> np.ndarray:
        """(n, P) parameter deltas of what-if branches from `theta0`, one per mixture, trained
        together (fresh momentum, each branch's batches from `whatif.probe_seed`)."""
        runs, n = self._runs, len(mixtures)
        rates = probe_learning_rates(request.lr_scale * self.config.learning_rate, request.steps).astype(np.float32)
        generators = [np.random.default_rng(probe_seed(self._seed, self.step)) for _ in range(n)]
        _, rows = runs.draw(generators, mixtures, request.steps)
        inputs = self._task.input_dim
        theta = np.tile(theta0, (n, 1))
        learning_rates = np.broadcast_to(rates[:, None, None], (request.steps, n, 1))
        runs.sgd(theta, np.zeros_like(theta), rows[..., :inputs], rows[..., inputs : inputs + 1], learning_rates)
        return theta - theta0

    def _simulate(self, request: WhatIfRequest) -> WhatIfResult:
        theta0 = self._theta.copy()
        deltas = [self._truncate(d, request.rank) for d in self._branches(theta0, request.probes, request)]
        mixtures = request.candidate_mixtures
        if request.method == "merge":
            candidates = [theta0 + np.tensordot(w, deltas, axes=1).astype(np.float32) for w in request.candidates]
        else:
            candidates = list(theta0 + self._branches(theta0, mixtures, request))
        steps = request.steps * (len(deltas) + (len(candidates) if request.method == "exact" else 0))
        k, split = len(self.domains), request.split
        return WhatIfResult(
            base_loss=self._held_out_loss(theta0, split),
            probe_loss=self._runs.loss_of(theta0 + np.array(deltas).reshape(len(deltas), -1), split).reshape(len(deltas), k),
            candidate_loss=self._runs.loss_of(np.array(candidates).reshape(len(candidates), -1), split).reshape(len(candidates), k),
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
        for matrix, where in zip(self._runs.params(delta), self._runs.layer_slices):
            u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
            out[where] = ((u[:, :rank] * s[:rank]) @ vt[:rank]).astype(np.float32).ravel()
        return out


def train_together(backends: list[ToyBackend], mixtures: list[np.ndarray], n_steps: int, step_norms: bool = True) -> list[TrainStats]:
    """`ToyBackend.train` of several runs of one shared store (`ToyBackend.share_runs`) in one
    batched call: backend i trains `n_steps` on ``mixtures[i]``, exactly as ``backends[i].train``
    alone would. Without `step_norms` the stats carry no per-step weight norms."""
    start = time.perf_counter()
    if not backends:
        return []
    runs = backends[0]._runs
    if any(b._runs is not runs for b in backends):
        raise ValueError("train_together needs backends on one shared store of runs (ToyBackend.share_runs)")
    k = len(backends[0].domains)
    checked = np.stack([validate_mixture(m, k) for m in mixtures])
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps!r}")
    out = runs.train([b._row for b in backends], checked, n_steps, step_norms)
    wall_time = (time.perf_counter() - start) / len(backends)
    stats = []
    for i, backend in enumerate(backends):
        domain, squared = out["domain"][i].ravel(), (out["errors"][i, ..., 0] ** 2).ravel()
        samples = np.bincount(domain, minlength=k)
        loss_sum = np.bincount(domain, weights=squared, minlength=k)
        stats.append(
            TrainStats(
                samples=samples,
                train_loss=np.where(samples > 0, loss_sum / np.maximum(samples, 1), np.nan),
                tokens=int(samples.sum()) * backend.config.input_dim,
                wall_time=wall_time,
                learning_rate=backend.learning_rate(backend.step - 1),
                token_ids=out["tokens"][i].astype(np.int64).reshape(n_steps, -1),
                step_weight_norms=out["step_norms"][i] if step_norms else None,
            )
        )
    return stats
