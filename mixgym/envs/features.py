"""The observation: size-invariant training-dynamics features, as AC-ODM and HDS build them.

Every feature is a z-score across domains (or layers), a share, a ratio or a progress
fraction, so its scale does not depend on the model's size or the loss's units: a policy
learned on a small proxy model reads a large target model's run the same way (the
proxy-to-target transfer AC-ODM relies on). Layout, for K domains and L chosen matrices:

================================ =========== ======= ======= ===================================
slice                            name        min     max     meaning
================================ =========== ======= ======= ===================================
[0, K)                           loss_z      -3      3       z(per-domain training loss)
[K, 2K)                          dloss_z     -3      3       z(change of that loss since the
                                                             previous decision)
[2K, 3K)                         share       0       1       share of the decision's samples
[3K, 4K)                         eval_ratio  0       5       held-out loss / held-out loss at
                                                             reset (clipped)
[4K, 4K+L)                       norm_z      -3      3       z(||W_l||) across the L matrices
[4K+L, 4K+2L)                    update_z    -3      3       z(||W_l - W_l(previous)||)
4K+2L                            progress    0       1       optimizer steps / budget
================================ =========== ======= ======= ===================================

z(v) = (v - mean(v)) / std(v) clipped to [-3, 3], all zeros when v is constant (AC-ODM's
state normalisation). A backend without weight norms gives zeros for the layer features.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from mixgym.envs.rewards import Snapshot, zscore

Z_CLIP = 3.0
EVAL_RATIO_MAX = 5.0


@dataclass(frozen=True)
class ObservationLayout:
    """Where each feature sits in the flat observation vector."""

    num_domains: int
    num_layers: int

    @property
    def size(self) -> int:
        return 4 * self.num_domains + 2 * self.num_layers + 1

    @functools.cached_property
    def _slices(self) -> dict[str, slice]:
        k, n = self.num_domains, self.num_layers
        return {
            "loss_z": slice(0, k),
            "dloss_z": slice(k, 2 * k),
            "share": slice(2 * k, 3 * k),
            "eval_ratio": slice(3 * k, 4 * k),
            "norm_z": slice(4 * k, 4 * k + n),
            "update_z": slice(4 * k + n, 4 * k + 2 * n),
            "progress": slice(4 * k + 2 * n, 4 * k + 2 * n + 1),
        }

    def slices(self) -> dict[str, slice]:
        """Feature name -> its slice of the observation vector."""
        return dict(self._slices)

    def space(self) -> spaces.Box:
        low = np.empty(self.size, dtype=np.float32)
        high = np.empty(self.size, dtype=np.float32)
        bounds = {
            "loss_z": (-Z_CLIP, Z_CLIP),
            "dloss_z": (-Z_CLIP, Z_CLIP),
            "share": (0.0, 1.0),
            "eval_ratio": (0.0, EVAL_RATIO_MAX),
            "norm_z": (-Z_CLIP, Z_CLIP),
            "update_z": (-Z_CLIP, Z_CLIP),
            "progress": (0.0, 1.0),
        }
        for name, where in self.slices().items():
            low[where], high[where] = bounds[name]
        return spaces.Box(low, high, dtype=np.float32)

    def build(self, now: Snapshot, previous_train_loss: np.ndarray, initial_eval: np.ndarray) -> np.ndarray:
        """The observation at snapshot `now`."""
        parts = self._slices
        obs = np.zeros(self.size, dtype=np.float32)
        obs[parts["loss_z"]] = zscore(now.train_loss, Z_CLIP)
        obs[parts["dloss_z"]] = zscore(now.train_loss - previous_train_loss, Z_CLIP)
        total = now.samples.sum()
        if total > 0:
            obs[parts["share"]] = now.samples / total
        ratio = np.divide(now.eval_loss, initial_eval, out=np.ones(self.num_domains), where=initial_eval > 0)
        obs[parts["eval_ratio"]] = np.clip(ratio, 0.0, EVAL_RATIO_MAX)
        if now.weights is not None:
            obs[parts["norm_z"]] = zscore(now.weights.norms, Z_CLIP)
            obs[parts["update_z"]] = zscore(now.weights.update_norms, Z_CLIP)
        obs[parts["progress"]] = min(now.progress, 1.0)
        return obs
