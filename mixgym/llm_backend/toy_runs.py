"""Many runs of one toy task as arrays with a leading run axis: the arithmetic of `ToyBackend`.

Why: one toy run's SGD step is eight products of 32 x 32 matrices, so calling numpy once per
run spends most of its time in call overhead, not arithmetic. `ToyRuns` keeps the state of R
runs of one task (parameters, momentum, step, seed, sampling generator per run) as (R, ...)
arrays and advances any subset of them with one numpy call per operation: each SGD step is
one stacked ``matmul`` over the runs; held-out losses and probe gradients share the task's
fixed inputs, so their first layer is one large product for every run at once. This is how
the fast environments of the field batch (gymnax, Brax, EnvPool: a struct of arrays with an
env axis, one call advancing all of them).

Bit-identity. A run's numbers do not depend on which other runs share the call: numpy's
stacked ``matmul`` calls the same BLAS routine on each run's slice that a single run's
product calls, elementwise operations are per element, and reductions run over the same
contiguous axis. `ToyBackend` is a view of one row of a `ToyRuns` (its own one-row store, or
a row of a shared one in `mixgym.envs.vector.ToyVectorEnv`), so a single run and a batched
run execute the same code; `tests/test_vector.py` checks every number of every reward bit
for bit against the single environment.

Every run draws its batches from its own generator, one call per run (the draws must be the
single run's draws); the CDF lookup and the gather from the task's table are then one call
for all runs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mixgym.llm_backend.base import domains_of, draw_domains

if TYPE_CHECKING:
    from mixgym.llm_backend.toy import ToyConfig, _Task


class ToyRuns:
    """The training state of R runs of one toy task (see the module docstring).

    Attributes:
        theta, velocity, previous_theta: (R, P) float32: each run's flat parameter vector (the
            three weight matrices one after another), SGD momentum, and parameters before its
            last `train` call.
        steps, seeds: (R,) int64: optimizer steps taken and the seed of the last reset.
        rngs: each run's sampling generator.
    """

    def __init__(self, config: "ToyConfig", task: "_Task", num_runs: int = 1) -> None:
        self.config = config
        self.task = task
        d, h = task.input_dim, config.hidden_dim
        self.shapes: list[tuple[int, int]] = [(d, h), (h, h), (h, 1)]
        bounds = np.cumsum([0] + [a * b for a, b in self.shapes])
        self.layer_slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.size = int(bounds[-1])
        self.theta = np.zeros((0, self.size), dtype=np.float32)
        self.velocity = np.zeros_like(self.theta)
        self.previous_theta = np.zeros_like(self.theta)
        self.steps = np.zeros(0, dtype=np.int64)
        self.seeds = np.zeros(0, dtype=np.int64)
        self.restarts = np.zeros(0, dtype=np.int64)
        """Per run, the step of a planned restart (`ToyBackend.plan_restart`), -1 for none."""
        self.rngs: list[np.random.Generator] = []
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self.add(num_runs)

    @property
    def num_runs(self) -> int:
        return len(self.steps)

    def add(self, count: int) -> range:
        """Append `count` runs (reset with seed 0); returns their row indices."""
        first = self.num_runs
        grow = np.zeros((count, self.size), dtype=np.float32)
        self.theta = np.concatenate([self.theta, grow])
        self.velocity = np.concatenate([self.velocity, grow])
        self.previous_theta = np.concatenate([self.previous_theta, grow])
        self.steps = np.concatenate([self.steps, np.zeros(count, dtype=np.int64)])
        self.seeds = np.concatenate([self.seeds, np.zeros(count, dtype=np.int64)])
        self.restarts = np.concatenate([self.restarts, np.full(count, -1, dtype=np.int64)])
        self.rngs += [np.random.default_rng(0) for _ in range(count)]
        rows = range(first, first + count)
        for row in rows:
            self.reset(row, 0)
        return rows

    # ------------------------------------------------------------------ one run's state
    def params(self, theta: np.ndarray) -> list[np.ndarray]:
        """Views of flat parameter vectors (..., P) shaped as the three weight matrices."""
        lead = theta.shape[:-1]
        return [theta[..., where].reshape(*lead, *shape) for where, shape in zip(self.layer_slices, self.shapes)]

    def reset(self, row: int, seed: int) -> None:
        """Fresh student (1/sqrt(fan-in) init), zero momentum, sampling generator from `seed`."""
        init_rng, self.rngs[row] = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self.seeds[row] = int(seed)
        theta = self.theta[row]
        for w in self.params(theta):
            w[...] = init_rng.standard_normal(w.shape) / np.sqrt(w.shape[0])
        self.velocity[row] = 0.0
        self.previous_theta[row] = theta
        self.steps[row] = 0
        self.restarts[row] = -1
        self.forget(row)

    def forget(self, row: int) -> None:
        """Drop the cached held-out losses and gradients of `row` (its parameters changed)."""
        self._cache.pop(("eval", row), None)
        self._cache.pop(("grad", row), None)

    def state_dict(self, row: int) -> dict[str, Any]:
        state = {
            "step": int(self.steps[row]),
            "theta": self.theta[row].copy(),
            "velocity": self.velocity[row].copy(),
            "previous_theta": self.previous_theta[row].copy(),
            "rng": copy.deepcopy(self.rngs[row].bit_generator.state),
            "seed": int(self.seeds[row]),
        }
        if self.restarts[row] >= 0:
            state["restart"] = int(self.restarts[row])
        return state

    def load_state_dict(self, row: int, state: dict[str, Any]) -> None:
        self.steps[row] = int(state["step"])
        self.theta[row] = state["theta"]
        self.velocity[row] = state["velocity"]
        self.previous_theta[row] = state["previous_theta"]
        self.rngs[row].bit_generator.state = copy.deepcopy(state["rng"])
        self.seeds[row] = int(state.get("seed", 0))
        self.restarts[row] = -1 if state.get("restart") is None else int(state["restart"])
        self.forget(row)

    def learning_rate(self, step: int, row: int) -> float:
        """Run `row`'s rate at `step`: cosine decay from `learning_rate` to 10% of it over the
        budget, or over each of the two runs of a planned restart."""
        total, restart = self.config.total_steps, int(self.restarts[row])
        if restart < 0:
            progress = min(step / total, 1.0)
        elif step < restart:
            progress = min(step / restart, 1.0)
        else:
            progress = min((step - restart) / max(1, total - restart), 1.0)
        return self.config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    # ------------------------------------------------------------------ training
    def draw(
        self, rngs: Sequence[np.random.Generator], mixtures: np.ndarray, n_steps: int, forced_fraction: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(domains (n, T, B), rows (n, T, B, d' + 1 + tokens) of the task's training table) of
        `n_steps` batches per generator, run i's drawn with ``rngs[i]`` on ``mixtures[i]``."""
        cfg, task = self.config, self.task
        shape = (n_steps, cfg.batch_size)
        if forced_fraction:
            domain = np.stack([draw_domains(m, n_steps * cfg.batch_size, forced_fraction, r).reshape(shape) for m, r in zip(mixtures, rngs)])
            position = np.stack([r.random(shape) for r in rngs])
        else:
            draws = np.stack([r.random((*shape, 2)) for r in rngs])
            domain = np.stack([domains_of(m, u) for m, u in zip(mixtures, draws[..., 0])])
            position = draws[..., 1]
        index = task.offsets[domain] + (position * task.sizes[domain]).astype(np.int64)
        return domain, task.train[index]

    def train(self, rows: Sequence[int], mixtures: np.ndarray, n_steps: int, step_norms: bool = True) -> dict[str, np.ndarray]:
        """`n_steps` SGD steps of each run in `rows`, run i on ``mixtures[i]`` (checked by the
        caller); returns per run its domains (n, T, B), squared errors (n, T, B), token ids
        (n, T, B, d) and, with `step_norms`, the three matrices' norms before and after every
        step (n, T + 1, 3)."""
        rows = list(rows)
        domain, batches = self.draw([self.rngs[r] for r in rows], mixtures, n_steps, self.config.forced_fraction)
        inputs = self.task.input_dim
        xs, ys = batches[..., :inputs], batches[..., inputs : inputs + 1]
        theta, velocity = self.theta[rows], self.velocity[rows]
        self.previous_theta[rows] = theta
        learning_rates = np.array(
            [[self.learning_rate(int(self.steps[r]) + t, r) for r in rows] for t in range(n_steps)], dtype=np.float32
        )[..., None]
        norms = np.empty((len(rows), n_steps + 1, 3)) if step_norms else None
        if norms is not None:
            norms[:, 0] = self.layer_norms(theta)
        errors = self.sgd(theta, velocity, xs, ys, learning_rates, norms)
        self.theta[rows], self.velocity[rows] = theta, velocity
        self.steps[rows] += n_steps
        for r in rows:
            self.forget(r)
        out = {"domain": domain, "errors": errors, "tokens": batches[..., inputs + 1 :]}
        if norms is not None:
            out["step_norms"] = norms
        return out

    def sgd(
        self,
        theta: np.ndarray,
        velocity: np.ndarray,
        xs: np.ndarray,
        ys: np.ndarray,
        learning_rates: np.ndarray,
        norms: np.ndarray | None = None,
    ) -> np.ndarray:
        """SGD with momentum on the runs' flat (n, P) `theta` and `velocity`, updated in place:
        one step per batch ``xs[:, t]`` (n, B, d') with targets ``ys[:, t]`` (n, B, 1) at rate
        ``learning_rates[t]`` (n, 1); returns the errors (n, T, B, 1), and writes each step's
        weight norms to ``norms[:, t + 1]`` if given. Every array is allocated once per call
        and written with ``out=``: at these sizes numpy's per-call overhead, not arithmetic, is
        most of the cost, and one call serves every run."""
        n, n_steps, batch = xs.shape[:3]
        w1, w2, w3 = self.params(theta)
        grad = np.empty_like(theta)
        g1, g2, g3 = self.params(grad)
        w2_t, w3_t = w2.transpose(0, 2, 1), w3.transpose(0, 2, 1)
        h1, h2, d1, d2, slope = (np.empty((n, batch, w2.shape[1]), dtype=np.float32) for _ in range(5))
        d_out = np.empty((n, batch, 1), dtype=np.float32)
        errors = np.empty((n, n_steps, batch, 1), dtype=np.float32)
        update = np.empty_like(theta)
        scale, momentum, one = np.float32(2.0 / self.config.batch_size), np.float32(self.config.momentum), np.float32(1)
        for t in range(n_steps):
            x, err = xs[:, t], errors[:, t]
            np.tanh(np.matmul(x, w1, out=h1), out=h1)
            np.tanh(np.matmul(h1, w2, out=h2), out=h2)
            np.subtract(np.matmul(h2, w3, out=err), ys[:, t], out=err)
            np.multiply(err, scale, out=d_out)
            np.matmul(d_out, w3_t, out=d2)  # the outer product d_out w3^T
            np.multiply(d2, np.subtract(one, np.multiply(h2, h2, out=slope), out=slope), out=d2)  # tanh' = 1 - h^2
            np.matmul(d2, w2_t, out=d1)
            np.multiply(d1, np.subtract(one, np.multiply(h1, h1, out=slope), out=slope), out=d1)
            np.matmul(x.transpose(0, 2, 1), d1, out=g1)
            np.matmul(h1.transpose(0, 2, 1), d2, out=g2)
            np.matmul(h2.transpose(0, 2, 1), d_out, out=g3)
            velocity *= momentum
            velocity += grad
            theta -= np.multiply(velocity, learning_rates[t], out=update)
            if norms is not None:
                norms[:, t + 1] = self.layer_norms(theta)
        return errors

    def layer_norms(self, thetas: np.ndarray) -> np.ndarray:
        """(n, L) Frobenius norms of the three matrices in each row of `thetas` (n, P): one
        ``reduceat`` over the contiguous matrices, summed in float64."""
        starts = [p.start for p in self.layer_slices]
        return np.sqrt(np.add.reduceat(thetas * thetas, starts, axis=1, dtype=np.float64))

    # ------------------------------------------------------------------ evaluation
    def forward(self, x: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hidden activations (n, M, h) and predictions (n, M) of the runs' flat parameters
        `theta` (n, P) on inputs `x` (..., d') that every run shares (held-out or probe sets;
        the leading axes are flattened to M rows). The first layer is one product of the
        shared inputs with every run's first matrix side by side."""
        w1, w2, w3 = self.params(theta)
        h1 = np.tanh(self._shared_product(x.reshape(-1, x.shape[-1]), w1))
        h2 = np.tanh(np.matmul(h1, w2))
        return h1, h2, np.matmul(h2, w3)[..., 0]

    def _chunks(self, theta: np.ndarray, examples: int) -> list[np.ndarray]:
        """`theta` (n, P) cut into groups of runs whose activations on `examples` shared inputs
        stay within about 256 KB: measured on this machine, 64 runs of K=22 held-out losses
        at once were 1.7x slower per run than one at a time (the activations left the cache),
        and 4-8 runs of K=5 1.2x faster."""
        size = max(1, (1 << 16) // max(1, examples * self.config.hidden_dim))
        return [theta[i : i + size] for i in range(0, len(theta), size)]

    def loss_of(self, theta: np.ndarray, split: str = "eval") -> np.ndarray:
        """(n, K) mean squared error per domain on the held-out sets (or, ``split="validation"``,
        the validation sets) of flat parameters (n, P)."""
        task = self.task
        x, y = (task.eval_x, task.eval_y) if split == "eval" else (task.valid_x, task.valid_y)
        parts = []
        for chunk in self._chunks(theta, y.size):
            _, _, pred = self.forward(x, chunk)
            parts.append(((pred.reshape(len(chunk), *y.shape) - y) ** 2).mean(axis=-1, dtype=np.float64))
        return np.concatenate(parts)

    def held_out_loss(self, row: int, split: str = "eval") -> np.ndarray:
        """(K,) held-out loss of run `row` on `split` (the held-out sets from the cache
        `prefetch` filled, else computed)."""
        cached = self._cache.get(("eval", row)) if split == "eval" else None
        return cached if cached is not None else self.loss_of(self.theta[row : row + 1], split)[0]

    def domain_gradients(self, row: int) -> np.ndarray:
        """(K, D) float64 probe-set gradient of each domain for run `row` (cached or computed)."""
        cached = self._cache.get(("grad", row))
        return cached if cached is not None else self.gradients_of(self.theta[row : row + 1])[0]

    def prefetch(self, eval_rows: Sequence[int], gradient_rows: Sequence[int]) -> None:
        """Compute the held-out losses of `eval_rows` and the probe gradients of
        `gradient_rows` in one batched call each, for `held_out_loss` and `domain_gradients` to
        serve until the run's parameters next change."""
        for kind, rows, compute in (("eval", eval_rows, self.loss_of), ("grad", gradient_rows, self.gradients_of)):
            rows = list(rows)
            if rows:
                for row, value in zip(rows, compute(self.theta[rows])):
                    self._cache[(kind, row)] = value

    def gradients_of(self, theta: np.ndarray) -> np.ndarray:
        """(n, K, D) float64: gradient of each domain's probe-set loss w.r.t. the three weight
        matrices, per run: one forward and backward pass over every domain's probe set and a
        group of runs together (`_chunks`), then one product per layer, run and domain."""
        return np.concatenate([self._gradients(chunk) for chunk in self._chunks(theta, self.task.probe_y.size)])

    def _gradients(self, theta: np.ndarray) -> np.ndarray:
        task = self.task
        n = len(theta)
        k, p = task.probe_y.shape
        h1, h2, pred = self.forward(task.probe_x, theta)
        h1, h2 = h1.reshape(n, k, p, -1), h2.reshape(n, k, p, -1)
        d_out = (pred.reshape(n, k, p) - task.probe_y)[..., None] * np.float32(2.0 / self.config.probe_size)  # (n, K, P, 1)
        _, w2, w3 = self.params(theta)
        d2 = np.matmul(d_out, w3.transpose(0, 2, 1)[:, None]) * (1 - h2 * h2)
        width = d2.shape[-1]
        d1 = (np.matmul(d2.reshape(n, -1, width), w2.transpose(0, 2, 1)) * (1 - (h1 * h1).reshape(n, -1, width))).reshape(h1.shape)
        # the first layer's inputs are every run's: one product per domain serves all runs
        first = np.stack([self._shared_product(task.probe_x[j].T, d1[:, j]) for j in range(k)], axis=1)
        per_layer = [first] + [np.matmul(np.swapaxes(a, -1, -2), b) for a, b in ((h1, d2), (h2, d_out))]
        return np.concatenate([g.reshape(n, k, -1) for g in per_layer], axis=2).astype(np.float64)

    @staticmethod
    def _shared_product(shared: np.ndarray, per_run: np.ndarray) -> np.ndarray:
        """(n, A, C): ``shared @ per_run[i]`` for every run i, as one product of `shared` (A, B)
        with the runs' (B, C) matrices side by side."""
        n, b, c = per_run.shape
        side_by_side = np.ascontiguousarray(per_run.transpose(1, 0, 2)).reshape(b, n * c)
        return np.dot(shared, side_by_side).reshape(len(shared), n, c).transpose(1, 0, 2)
