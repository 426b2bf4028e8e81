"""On-policy SB3 models (PPO) that stop, checkpoint and resume between any two decisions.

SB3's on-policy ``learn`` collects rollouts of ``n_steps`` decisions (PPO: 2,048) and trains
on each full one; its only hook inside a rollout is a callback's ``on_step``, called after
``env.step`` and *before* the decision is stored in the rollout buffer
(stable_baselines3/common/on_policy_algorithm.py, ``collect_rollouts``). Left alone, such a
model learns in whole rollouts: ``learn(5000)`` runs 6,144 decisions, and a checkpoint or a
stop can only happen every 2,048. Three pieces make it exact, with SB3's extension points
only (a callback and ``rollout_buffer_class``):

- `RolloutTracker` (added by `SB3Agent.learn`) ends ``learn`` after exactly the decisions
  asked for: its ``on_step`` returns False at the budget. The rollout that is then partly
  filled is not trained on -- PPO trains on full rollouts only -- so a ``learn(n)`` with n
  not a multiple of ``n_steps`` leaves its last ``n mod n_steps`` decisions untrained.
- `rollout_state` captures, from inside ``on_step``, the rollout buffer's filled part and
  the decision in flight (observation, action, value, log-probability, reward, done, info,
  next observation), so a checkpoint can be taken after any decision.
- `restore_rollout` puts them back: the buffer is refilled (`ResumableRolloutBuffer` keeps
  its contents through the ``reset`` that starts the next ``collect_rollouts``), the
  decision in flight is stored as SB3 would have stored it, and the model collects only the
  rest of the rollout (``n_steps`` is lowered for that one rollout and restored at its end).
  The resumed run then trains on the same full rollouts, drawing the same random numbers,
  as a run that was never interrupted.

A decision that completes a rollout is not a checkpoint point (the buffer would resume full,
with nothing left to collect): `SB3Agent.checkpoint_after_step` is False there, and the
checkpoint waits for the next rollout's start, after the gradient steps.
Not covered: gSDE (``use_sde=True``) draws new exploration noise at every rollout start,
so a run resumed mid-rollout with gSDE differs from an uninterrupted one.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

_STORED = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs")
"""The rollout buffer's arrays filled during collection (returns and advantages are computed
from them when the rollout ends)."""


class ResumableRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer, refillable from a checkpoint: `refill` makes the next ``reset``
    (the one that opens ``collect_rollouts``) keep the contents."""

    _keep_once = False

    def reset(self) -> None:
        if self._keep_once:
            self._keep_once = False
            return
        super().reset()

    def contents(self) -> dict[str, Any]:
        """The filled part of the buffer (copies)."""
        return {"pos": int(self.pos), **{name: getattr(self, name)[: self.pos].copy() for name in _STORED}}

    def refill(self, contents: dict[str, Any]) -> None:
        """Restore `contents` into a fresh buffer and keep them through the next ``reset``."""
        super().reset()
        pos = int(contents["pos"])
        if not 0 <= pos < self.buffer_size:
            raise ValueError(f"a saved rollout of {pos} decisions does not fit a buffer of {self.buffer_size}")
        for name in _STORED:
            getattr(self, name)[:pos] = contents[name]
        self.pos = pos
        self._keep_once = True


class RolloutTracker(BaseCallback):
    """Ends ``learn`` at its budget, knows whether a decision is in flight, and gives the
    model back its full rollout length after a resumed partial rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = False
        self._end = 0

    def _on_training_start(self) -> None:
        self._end = int(self.model._total_timesteps)  # type: ignore[attr-defined]

    def _on_rollout_start(self) -> None:
        self.in_flight = False

    def _on_step(self) -> bool:
        self.in_flight = True  # until SB3 stores it, right after on_step returns True
        return self.model.num_timesteps < self._end

    def _on_rollout_end(self) -> None:
        self.in_flight = False
        self.model.n_steps = self.model.rollout_buffer.buffer_size  # type: ignore[attr-defined]


def room_after_step(model: OnPolicyAlgorithm) -> bool:
    """Whether storing the decision in flight leaves the rollout unfinished."""
    return model.rollout_buffer.pos + 1 < model.rollout_buffer.buffer_size


@contextmanager
def full_rollout_length(model: OnPolicyAlgorithm) -> Iterator[None]:
    """``n_steps`` at its configured value while the model is saved (SB3's ``load`` sizes the
    rollout buffer from it), whatever the partial rollout in progress has lowered it to."""
    lowered = model.n_steps
    model.n_steps = model.rollout_buffer.buffer_size
    try:
        yield
    finally:
        model.n_steps = lowered


def rollout_state(model: OnPolicyAlgorithm, tracker: RolloutTracker, step_locals: dict[str, Any]) -> dict[str, Any]:
    """The rollout in progress: the buffer's filled part and, if `tracker` says a decision is
    in flight, that decision from ``collect_rollouts``'s locals (`step_locals`)."""
    buffer = model.rollout_buffer
    if not isinstance(buffer, ResumableRolloutBuffer):
        raise TypeError(f"checkpointing inside a rollout needs rollout_buffer_class=ResumableRolloutBuffer, got {type(buffer).__name__}")
    in_flight = None
    if tracker.in_flight:
        in_flight = {
            "last_obs": np.copy(model._last_obs),  # type: ignore[arg-type]
            "last_episode_starts": np.copy(model._last_episode_starts),  # type: ignore[arg-type]
            "new_obs": np.copy(step_locals["new_obs"]),
            "actions": np.copy(step_locals["actions"]),
            "values": step_locals["values"].detach().clone(),
            "log_probs": step_locals["log_probs"].detach().clone(),
            "rewards": np.copy(step_locals["rewards"]),
            "dones": np.copy(step_locals["dones"]),
            "infos": copy.deepcopy(step_locals["infos"]),
        }
    return {"buffer": buffer.contents(), "in_flight": in_flight}


def restore_rollout(model: OnPolicyAlgorithm, state: dict[str, Any]) -> None:
    """Put `rollout_state`'s output back into a freshly loaded model (see the module docstring)."""
    buffer = model.rollout_buffer
    if not isinstance(buffer, ResumableRolloutBuffer):
        raise TypeError(f"resuming inside a rollout needs rollout_buffer_class=ResumableRolloutBuffer, got {type(buffer).__name__}")
    buffer.refill(state["buffer"])
    step = state["in_flight"]
    if step is not None:
        # what collect_rollouts does after on_step returns True (on_policy_algorithm.py in SB3 2.9)
        rewards, dones, infos = step["rewards"], step["dones"], step["infos"]
        model._update_info_buffer(infos, dones)
        actions = step["actions"].reshape(-1, 1) if isinstance(model.action_space, spaces.Discrete) else step["actions"]
        for index, done in enumerate(dones):
            if done and infos[index].get("terminal_observation") is not None and infos[index].get("TimeLimit.truncated", False):
                terminal = model.policy.obs_to_tensor(infos[index]["terminal_observation"])[0]
                with th.no_grad():
                    rewards[index] += model.gamma * model.policy.predict_values(terminal)[0]  # type: ignore[arg-type]
        buffer.add(step["last_obs"], actions, rewards, step["last_episode_starts"], step["values"], step["log_probs"])
        model._last_obs = step["new_obs"]
        model._last_episode_starts = dones
    if buffer.pos >= buffer.buffer_size:
        raise ValueError("a saved rollout must leave at least one decision to collect")
    model.n_steps = buffer.buffer_size - buffer.pos
