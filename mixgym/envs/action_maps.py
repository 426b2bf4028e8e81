"""Maps from an agent's action to a mixture (a probability vector over the K domains).

Why a floor: a domain whose weight reaches 0 is never sampled again, so nothing the agent
observes can tell it that the domain became useful. ODM keeps an exploration floor eps_t
and HDS gives every domain one micro-batch per decision for the same reason. The "softmax"
and "normalize" maps mix their result with the uniform distribution:
``mixture = (1 - eps) * p + eps / K``, so every domain keeps at least eps/K.

========== ===================== ============================================================
name       action space          mixture
========== ===================== ============================================================
softmax    Box(-1, 1, (K,))      (1 - eps) * softmax(a / temperature) + eps / K
normalize  Box(-1, 1, (K,))      (1 - eps) * max(a, 0) / sum(max(a, 0)) + eps / K; an action
                                 with no positive entry gives the uniform mixture
simplex    Box(0, 1, (K,))       a / sum(a): the action is the mixture's weights, normalised
                                 (any sample of the space is valid, as Gymnasium requires);
                                 an all-zero action is an error. For bandits and schedules
========== ===================== ============================================================

Actions outside the space are clipped to it by default (``out_of_bounds="clip"``), as
Gymnasium's MuJoCo and Pendulum environments do, so a stock Gaussian policy that samples
beyond the bounds (skrl's, or SB3's PPO without its own clipping) works unchanged;
``out_of_bounds="raise"`` refuses them instead (beyond a tolerance of 1e-5), naming
`gymnasium.wrappers.ClipAction`. NaN, inf and wrong shapes always raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from mixgym.validation import number

ACTION_MAPS = ("softmax", "normalize", "simplex")
OUT_OF_BOUNDS = ("clip", "raise")
_BOUND_TOLERANCE = 1e-5
INVERSE_BOUND = 0.99
"""`ActionMap.inverse` keeps actions in [-0.99, 0.99]: strictly inside the bounds, where a tanh
actor's pre-activation stays finite (atanh(0.99) = 2.6)."""


MIN_TEMPERATURE = 1e-6
"""The lowest softmax temperature: already there the map is an argmax to the last bit (logit
gaps of 1e6, exp(-1e6) == 0), and far below it ``a / temperature`` overflows to inf - inf = NaN."""


@dataclass(frozen=True)
class ActionMap:
    """A validated action-to-mixture map.

    Attributes:
        name: one of `ACTION_MAPS`.
        num_domains: K.
        temperature: softmax temperature (softmax only), at least `MIN_TEMPERATURE`; lower
            makes mixtures more extreme.
        eps: share of the mixture spread uniformly (softmax and normalize), in [0, 1].
        out_of_bounds: ``"clip"`` actions outside the space to it, or ``"raise"``.
    """

    name: str
    num_domains: int
    temperature: float = 0.5
    eps: float = 0.05
    out_of_bounds: str = "clip"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in ACTION_MAPS:
            raise ValueError(f"unknown action_map {self.name!r}; choose one of {', '.join(ACTION_MAPS)}")
        number("temperature", self.temperature, minimum=MIN_TEMPERATURE)
        number("eps", self.eps, 0.0, 1.0)
        if self.out_of_bounds not in OUT_OF_BOUNDS:
            raise ValueError(f"unknown out_of_bounds {self.out_of_bounds!r}; choose one of {', '.join(OUT_OF_BOUNDS)}")

    @property
    def space(self) -> spaces.Box:
        """The action space this map accepts."""
        low = 0.0 if self.name == "simplex" else -1.0
        return spaces.Box(low, 1.0, shape=(self.num_domains,), dtype=np.float32)

    def __call__(self, action: object) -> np.ndarray:
        """Validate `action` and return its mixture (float64, shape (K,), sums to 1)."""
        a = _as_vector(action, self.num_domains)
        low = 0.0 if self.name == "simplex" else -1.0
        if self.out_of_bounds == "clip":
            a = np.clip(a, low, 1.0)
        elif np.any(a < low - _BOUND_TOLERANCE) or np.any(a > 1.0 + _BOUND_TOLERANCE):
            raise ValueError(
                f"action {a!r} lies outside the action space [{low}, 1]^{self.num_domains} (out_of_bounds='raise'); "
                "clip it with gymnasium.wrappers.ClipAction or make the env with out_of_bounds='clip'"
            )
        if self.name == "simplex":
            a = np.clip(a, 0.0, None)
            if not a.sum() > 0:
                raise ValueError(f"a 'simplex' action needs a positive weight, got {a!r}")
            return a / a.sum()
        if self.name == "softmax":
            z = a / self.temperature
            p = np.exp(z - z.max())
            p /= p.sum()
        else:
            positive = np.clip(a, 0.0, None)
            total = positive.sum()
            p = positive / total if total > 0 else np.full(self.num_domains, 1.0 / self.num_domains)
        return (1.0 - self.eps) * p + self.eps / self.num_domains

    def inverse(self, mixture: np.ndarray) -> np.ndarray:
        """A centred action strictly inside the bounds that this map turns into `mixture`.

        Used to put a warm-up policy's mixture (ODM's, a fixed prior) into a replay buffer as
        the action that produced it, and as the target of behaviour cloning; an action on the
        bound would teach a tanh actor to saturate. With ``B`` = `INVERSE_BOUND`:

        - "softmax": the logits ``temperature * log p`` (p the mixture with the floor taken
          out), shifted to mean zero when that fits in [-B, B]; otherwise shifted as little
          from mean zero as keeps them inside (softmax is shift-invariant, so the mixture is
          still exact); a mixture beyond reach (log-ratio range over ``2 B / temperature``)
          gets its logits scaled into [-B, B]: the most extreme reachable mixture with the
          same order, a tempered version of it.
        - "normalize": ``p``, scaled down to B at most (the map is scale-invariant, not
          shift-invariant, so there is no mean-zero form).
        - "simplex": the mixture itself.

        Exact unless the mixture lies below the eps floor or beyond reach.
        """
        m = np.asarray(mixture, dtype=np.float64)
        if self.name == "simplex":
            return m.astype(np.float32)
        k = self.num_domains
        p = np.clip((m - self.eps / k) / max(1.0 - self.eps, 1e-12), 1e-12, None)
        p /= p.sum()
        if self.name == "normalize":
            return (p * min(1.0, INVERSE_BOUND / p.max())).astype(np.float32)
        z = np.log(p) * self.temperature
        top, bottom = z.max(), z.min()
        if top - bottom <= 2 * INVERSE_BOUND:
            shift = min(max(z.mean(), top - INVERSE_BOUND), bottom + INVERSE_BOUND)
            a = z - shift
        else:
            a = (z - 0.5 * (top + bottom)) * (2 * INVERSE_BOUND / (top - bottom))
        return a.astype(np.float32)


def _as_vector(action: object, num_domains: int) -> np.ndarray:
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"action {action!r} cannot be read as {num_domains} numbers: {error}") from None
    if a.shape != (num_domains,):
        raise ValueError(f"action must have shape ({num_domains},), got shape {a.shape}: {action!r}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {action!r}")
    return a
