"""The observation: size-invariant training-dynamics features, as AC-ODM and HDS build them.

Every feature is a z-score across domains (or layers), a share, a ratio or a progress
fraction, so its scale does not depend on the model's size or the loss's units: a policy
learned on a small proxy model reads a large target model's run the same way (the
proxy-to-target transfer AC-ODM relies on). The observation is a list of blocks, in order;
for K domains and L chosen matrices:

=========== ===== ======= ======= ======================================================== ==== ====
block       size  min     max     meaning                                                  v0   v1
=========== ===== ======= ======= ======================================================== ==== ====
loss_z      K     -3      3       z(per-domain training loss)                              x    x
dloss_z     K     -3      3       z(change of that loss since the previous decision)       x    x
share       K     0       1       share of the decision's samples per domain: the          x    x
                                  previous decision's realised mixture (reset: 0)
eval_ratio  K     0       5       held-out loss / held-out loss at reset (clipped)         x    x
mixture     K     0       1       the mixture chosen at the previous decision                   x
                                  (reset: uniform), free of the sampling noise of ``share``
cumulative  K     0       1       share of all samples since reset per domain (reset: 0):       x
                                  what the model has been trained on so far
norm_z      L     -3      3       z(||W_l||) across the L matrices                         x
update_z    L     -3      3       z(||W_l - W_l(previous)||)                               x
progress    1     0       1       optimizer steps / budget                                 x    x
baseline_   K     0       5       the baseline twin's held-out loss / held-out loss at          (x)
ratio                             reset (clipped); only when the reward runs a twin
=========== ===== ======= ======= ======================================================== ==== ====

``"v0"`` is AC-ODM's and HDS's state (and `mixgym/Mixing-v0`'s); ``"v1"`` (the default of
`MixingEnv` and the ``-v1`` ids) adds what the agent did -- the chosen mixture and the data
seen so far -- and leaves out the weight-norm blocks, which barely move on the toy (their
s.d. over a run is 0.02-0.10) and are opt-in: ``observation=["v1", "norm_z", "update_z"]``.
When the reward runs a baseline twin (``"advantage"``), v1 ends with ``baseline_ratio``: that
reward is a function of the twin's held-out loss as much as of the agent's, and without it the
state would not say where the return stands (a critic could not tell a transient dip of the
agent's loss from a lasting gain).
z(v) = (v - mean(v)) / std(v) clipped to [-3, 3], all zeros when v is constant (AC-ODM's
state normalisation). In "v0", a backend without weight norms gives zeros for the layer
blocks; asking for them by name on such a backend is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from mixgym.envs.rewards import Snapshot, zscore

Z_CLIP = 3.0
EVAL_RATIO_MAX = 5.0


_BLOCKS: dict[str, tuple[str, float, float]] = {
    # name: (size: "K" domains, "L" layers or "1"; min; max)
    "loss_z": ("K", -Z_CLIP, Z_CLIP),
    "dloss_z": ("K", -Z_CLIP, Z_CLIP),
    "share": ("K", 0.0, 1.0),
    "eval_ratio": ("K", 0.0, EVAL_RATIO_MAX),
    "mixture": ("K", 0.0, 1.0),
    "cumulative": ("K", 0.0, 1.0),
    "norm_z": ("L", -Z_CLIP, Z_CLIP),
    "update_z": ("L", -Z_CLIP, Z_CLIP),
    "progress": ("1", 0.0, 1.0),
    "baseline_ratio": ("K", 0.0, EVAL_RATIO_MAX),
}
FEATURES = tuple(_BLOCKS)
"""Every observation block (see the module docstring's table)."""
LAYER_FEATURES = ("norm_z", "update_z")
TWIN_FEATURES = ("baseline_ratio",)
LAYOUTS: dict[str, tuple[str, ...]] = {
    "v0": ("loss_z", "dloss_z", "share", "eval_ratio", "norm_z", "update_z", "progress"),
    "v1": ("loss_z", "dloss_z", "share", "eval_ratio", "mixture", "cumulative", "progress"),
}
"""Named layouts: v0 (AC-ODM/HDS's state, `mixgym/Mixing-v0`) and v1 (the default)."""


def resolve_features(observation: str | Sequence[str], twin: bool = False) -> tuple[str, ...]:
    """The block names of `observation`: a layout name, or a list of block and layout names
    (a layout name stands for its blocks), each block at most once. With a baseline `twin`,
    "v1" ends with ``baseline_ratio``."""
    if not isinstance(observation, (str, list, tuple)) or not all(isinstance(name, str) for name in observation):
        raise TypeError(f"observation must be a layout name or a list of block/layout names, got {observation!r}")
    names = [observation] if isinstance(observation, str) else list(observation)
    blocks: list[str] = []
    for name in names:
        if name in LAYOUTS:
            blocks += LAYOUTS[name] + (TWIN_FEATURES if name == "v1" and twin else ())
        elif name in _BLOCKS:
            blocks.append(name)
        else:
            raise ValueError(
                f"unknown observation block or layout {name!r}; layouts: {', '.join(LAYOUTS)}; blocks: {', '.join(FEATURES)}"
            )
    if not blocks:
        raise ValueError(f"observation {observation!r} names no block; layouts: {', '.join(LAYOUTS)}")
    repeated = sorted({b for b in blocks if blocks.count(b) > 1})
    if repeated:
        raise ValueError(f"observation {observation!r} repeats block(s) {repeated}")
    return tuple(blocks)


@dataclass(frozen=True)
class ObservationLayout:
    """Where each feature block sits in the flat observation vector."""

    num_domains: int
    num_layers: int
    features: tuple[str, ...] = LAYOUTS["v0"]
    _slices: dict[str, slice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", resolve_features(self.features))
        sizes = {"K": self.num_domains, "L": self.num_layers, "1": 1}
        parts, start = {}, 0
        for name in self.features:
            parts[name] = slice(start, start + sizes[_BLOCKS[name][0]])
            start = parts[name].stop
        object.__setattr__(self, "_slices", parts)

    @property
    def size(self) -> int:
        return max((where.stop for where in self._slices.values()), default=0)

    def slices(self) -> dict[str, slice]:
        """Block name -> its slice of the observation, in layout order."""
        return dict(self._slices)

    def space(self) -> spaces.Box:
        low = np.empty(self.size, dtype=np.float32)
        high = np.empty(self.size, dtype=np.float32)
        for name, where in self.slices().items():
            low[where], high[where] = _BLOCKS[name][1:]
        return spaces.Box(low, high, dtype=np.float32)

    def build(self, now: Snapshot, previous_train_loss: np.ndarray, initial_eval: np.ndarray) -> np.ndarray:
        """The observation at snapshot `now`."""
        obs = np.zeros(self.size, dtype=np.float32)
        for name, where in self._slices.items():
            value = self._block(name, now, previous_train_loss, initial_eval)
            if value is not None:
                obs[where] = value
        return obs

    def _block(self, name: str, now: Snapshot, previous_train_loss: np.ndarray, initial_eval: np.ndarray) -> np.ndarray | float | None:
        """One block's values; None leaves it at zero."""
        if name == "loss_z":
            return zscore(now.train_loss, Z_CLIP)
        if name == "dloss_z":
            return zscore(now.train_loss - previous_train_loss, Z_CLIP)
        if name == "share":
            return _shares(now.samples)
        if name == "eval_ratio":
            return _ratio(now.eval_loss, initial_eval)
        if name == "mixture":
            return now.mixture if now.mixture is not None else 1.0 / self.num_domains
        if name == "cumulative":
            return None if now.cumulative_samples is None else _shares(now.cumulative_samples)
        if name == "norm_z":
            return None if now.weights is None else zscore(now.weights.norms, Z_CLIP)
        if name == "update_z":
            return None if now.weights is None else zscore(now.weights.update_norms, Z_CLIP)
        if name == "baseline_ratio":
            return None if now.baseline_eval_loss is None else _ratio(now.baseline_eval_loss, initial_eval)
        return min(now.progress, 1.0)  # progress


def _ratio(eval_loss: np.ndarray, initial_eval: np.ndarray) -> np.ndarray:
    """Held-out loss relative to the run's held-out loss at reset, clipped to [0, 5]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(initial_eval > 0, eval_loss / initial_eval, 1.0)
    return np.clip(ratio, 0.0, EVAL_RATIO_MAX)


def _shares(samples: np.ndarray) -> np.ndarray | None:
    """Samples per domain as shares of their total; None (zeros) when there are none."""
    total = samples.sum()
    return samples / total if total > 0 else None
