"""Per-domain gradients of chosen matrices, collected from the training micro-batches.

The alignment and holistic rewards need one gradient per domain on a few chosen matrices
(AC-ODM and HDS read three MLP output matrices) and use only inner products of them: the
Gram matrix ``W = G G^T`` and the norms ``||g_k|| = sqrt(W_kk)``. `DomainGradients` sums
each micro-batch's gradient into its domain's row as the backward pass produces it:

- A tensor hook on each chosen matrix sees the gradient of that micro-batch alone, before
  it is added to ``.grad`` -- and, under DDP, before the reducer averages it across ranks
  (the reducer hooks the accumulation that follows). The hook only reads it and returns
  None (a hook that returns a tensor would replace the gradient). So the sums are local
  per rank; `reduce` adds them across ranks once per `train` call (once per decision).
  This is why the ``.grad`` differencing AC-ODM uses cannot serve under DDP: there the
  last micro-batch's backward pass all-reduces the accumulated ``.grad``, and its
  difference is no longer that micro-batch's own gradient.
- ``exact``: the rows are the D-dimensional sums themselves, K x D floats. At AC-ODM's
  1B scale (three 2048 x 8192 matrices, 22 domains) that is 22 x 50.3M x 4 bytes = 4.4 GB
  per rank.
- ``sketch`` (Johnson-Lindenstrauss): each micro-batch's gradient is projected by a fixed
  random map S: R^D -> R^r and the rows are r-dimensional, K x r floats (O(K r) memory,
  11 MiB at K = 22, r = 65536: 0.3% of the exact 4.1 GiB). S is a sparse JL transform (CountSketch, Charikar, Chen &
  Farach-Colton 2002; "feature hashing", Weinberger et al. 2009): coordinate i goes to
  bucket h(i) with sign s(i), h 2-wise and s 4-wise independent hash functions, computed
  from the coordinate's index and a fixed seed (`HashedProjection`), so S is never stored.
  S is linear, so the sketch of a domain's sum of gradients is the sum of the sketches.

The error bound of the sketch. For fixed x, y in R^D, ``<Sx, Sy>`` is unbiased and

    Var <Sx, Sy> = (||x||^2 ||y||^2 + <x, y>^2 - 2 sum_i x_i^2 y_i^2) / r
                 <= 2 ||x||^2 ||y||^2 / r,

(derivation: the error is sum_{i != j} x_i y_j s_i s_j [h(i) = h(j)]; only the pairs
(i, j), (j, i) survive the expectation of the square, each with probability 1/r), so by
Chebyshev, each Gram entry is within ``t * sqrt(2 / r) * ||g_i|| ||g_j||`` of the exact
one with probability at least 1 - 1/t^2: 0.55% of ``||g_i|| ||g_j||`` per standard
deviation at r = 65536. The alignment scores add K - 1 such entries, each scaled by
1 / mean_k ||g_k||, so their error is at most sqrt(2 / r) (||g_i|| sum_{j != i} ||g_j|| /
mean_k ||g_k|| + |s_i|) per standard deviation -- large relative to the scores when the
domains' gradients are nearly orthogonal (cosines of 0.05-0.1 on pythia-small).
`tests/test_gradient_signal.py` checks both bounds on real gradients;
`benchmarks/gradient_sketch.py` measures the error of the alignment scores.

The default (`HFConfig.gradient_sketch_dim` = "auto") keeps exact sums while they take at
most `AUTO_EXACT_LIMIT_BYTES` and sketches to `AUTO_SKETCH_DIM` dimensions above. The
dimension is that benchmark's: on pythia-small's gradients the smallest r it tried
(1024 ... 262144) whose alignment scores stayed within 5% (median relative error) and whose
z-scores moved by less than 0.1 at every measured step, with the top domain kept every time
(r = 4096: 8-15%, z moves up to 0.24; BENCHMARKS.md, "Beyond one machine"). Its hashing costs
the same for every r (O(D) per micro-batch), so a large r costs only memory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

AUTO_SKETCH_DIM = 65536
"""Sketch dimension r of the "auto" setting above the exact-size limit (module docstring)."""
AUTO_EXACT_LIMIT_BYTES = 256 * 2**20
"""The "auto" setting keeps exact sums while K x D x 4 bytes is at most this."""
SKETCH_SEED = 20240917
"""Seed of the hash functions of every sketch: the projection is the same in every run,
rank and reset, so sketched gradients of different decisions and runs are comparable."""

_PRIME = 2**31 - 1  # hash arithmetic modulo a Mersenne prime: every product fits in int64
_CHUNK = 1 << 20  # coordinates hashed at once (bounds the temporary memory at ~50 MB)


def sketch_dim_for(setting: int | str | None, num_domains: int, dim: int) -> int | None:
    """The sketch dimension a `HFConfig.gradient_sketch_dim` setting gives (None: exact)."""
    if setting == "auto":
        return None if num_domains * dim * 4 <= AUTO_EXACT_LIMIT_BYTES else AUTO_SKETCH_DIM
    return None if setting is None else int(setting)


class HashedProjection:
    """The fixed sparse JL map S: R^dim -> R^width of the module docstring.

    ``S[h(i), i] = s(i)`` and zero elsewhere, where h(i) = p_h(i) mod width and s(i) =
    1 - 2 (p_s(i) mod 2) for random polynomials p_h of degree 1 (2-wise independent) and
    p_s of degree 3 (4-wise independent) over the integers modulo 2^31 - 1, their
    coefficients drawn from `seed`. Nothing of size `dim` is kept: the hashes of a block of
    coordinates are computed when the block is projected.
    """

    def __init__(self, dim: int, width: int, seed: int = SKETCH_SEED) -> None:
        if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width < 1:
            raise ValueError(f"the sketch dimension must be an integer >= 1, got {width!r}")
        if dim >= _PRIME:
            raise ValueError(f"cannot sketch {dim} coordinates (at most {_PRIME - 1})")
        self.dim, self.width = int(dim), int(width)
        rng = np.random.default_rng(seed)
        self._bucket_coefficients = [int(c) for c in rng.integers(1, _PRIME, 2)]
        self._sign_coefficients = [int(c) for c in rng.integers(1, _PRIME, 4)]

    @staticmethod
    def _polynomial(coefficients: list[int], index: Any) -> Any:
        value = index.new_full(index.shape, coefficients[0])
        for coefficient in coefficients[1:]:
            value = (value * index + coefficient) % _PRIME
        return value

    def add_(self, out: Any, values: Any, offset: int = 0) -> None:
        """``out += S[:, offset : offset + n] @ values`` for a flat tensor of n values (the
        coordinates ``offset .. offset + n - 1`` of the projected vector); `out` has
        `width` entries."""
        import torch

        flat = values.reshape(-1)
        for start in range(0, flat.numel(), _CHUNK):
            block = flat[start : start + _CHUNK]
            first = offset + start
            index = torch.arange(first, first + block.numel(), device=block.device, dtype=torch.int64)
            buckets = self._polynomial(self._bucket_coefficients, index) % self.width
            signs = 1.0 - 2.0 * (self._polynomial(self._sign_coefficients, index) % 2).to(out.dtype)
            out.index_add_(0, buckets, block.to(out.dtype) * signs)

    def project(self, rows: Any) -> Any:
        """``rows @ S^T`` for a (n, dim) tensor: the sketch of each row, (n, width) float64."""
        import torch

        out = torch.zeros(rows.shape[0], self.width, dtype=torch.float64, device=rows.device)
        for row, target in zip(rows, out):
            self.add_(target, row)
        return out


class DomainGradients:
    """Per-domain sums of micro-batch gradients of `params`, by tensor hooks (module docstring).

    Use: ``with signal.recording(domain): loss.backward()`` for each training micro-batch;
    after the call's last micro-batch, `reduce` (sum over ranks); `means` gives the rows.
    Backward passes outside `recording` (a probe, an evaluation) are ignored.
    """

    def __init__(self, params: list[Any], num_domains: int, sketch_dim: int | None) -> None:
        import torch

        sizes = [p.numel() for p in params]
        self.offsets = [int(o) for o in np.cumsum([0] + sizes[:-1])]
        self.dim = sum(sizes)
        self.projection = HashedProjection(self.dim, sketch_dim) if sketch_dim is not None else None
        width, dtype = (self.dim, torch.float32) if self.projection is None else (self.projection.width, torch.float64)
        self.sums = torch.zeros(num_domains, width, dtype=dtype, device=params[0].device)
        self.counts = np.zeros(num_domains, dtype=np.int64)
        self._domain: int | None = None
        self._handles = [p.register_hook(self._hook(offset)) for p, offset in zip(params, self.offsets)]

    @property
    def sketched(self) -> bool:
        return self.projection is not None

    def _hook(self, offset: int) -> Any:
        def add_gradient(grad: Any) -> None:
            if self._domain is None:
                return None
            row = self.sums[self._domain]
            if self.projection is None:
                row[offset : offset + grad.numel()].add_(grad.reshape(-1))
            else:
                self.projection.add_(row, grad, offset)
            return None  # a returned tensor would replace the gradient

        return add_gradient

    @contextlib.contextmanager
    def recording(self, domain: int) -> Iterator[None]:
        """Add the gradients of the backward pass run inside to `domain`'s row."""
        self._domain = domain
        try:
            yield
        finally:
            self._domain = None
        self.counts[domain] += 1

    def clear(self) -> None:
        """Forget the sums (start of a `train` call)."""
        self.sums.zero_()
        self.counts[:] = 0

    def reduce(self, replicas: Any) -> None:
        """Average the sums over the ranks of `replicas` (each rank saw its own share of every
        micro-batch; the counts are the same on every rank)."""
        replicas.sum_(self.sums)
        if replicas.world_size > 1:
            self.sums /= replicas.world_size

    def means(self, scale: float) -> np.ndarray:
        """(K, D) or, sketched, (K, r) float64: each domain's mean micro-batch gradient times
        `scale` (zeros for a domain without micro-batches)."""
        sums = self.sums.double().cpu().numpy()
        return sums * (scale / np.maximum(self.counts, 1)[:, None])

    def state(self) -> tuple[Any, np.ndarray]:
        return self.sums.detach().cpu().clone(), self.counts.copy()

    def load(self, state: tuple[Any, np.ndarray]) -> None:
        sums, counts = state
        if tuple(sums.shape) != tuple(self.sums.shape):
            raise ValueError(f"gradient sums of shape {tuple(sums.shape)} do not fit this backend's {tuple(self.sums.shape)}")
        self.sums.copy_(sums)
        self.counts[:] = counts

    def remove(self) -> None:
        """Unhook from the matrices (the model is being replaced)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
