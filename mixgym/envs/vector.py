"""ToyVectorEnv: N toy runs advanced by one call, bit-identical to N single environments.

Why: a toy run's decision is ten SGD steps on 32 x 32 matrices, so one environment spends
most of its time in numpy's call overhead. The vector environment keeps N `MixingEnv`s whose
toy backends are rows of one shared `mixgym.llm_backend.toy_runs.ToyRuns`, and splits each
sub-environment's `step` where the arithmetic is: every sub-environment plans its decision
(`MixingEnv.plan_decision`), the backends (and baseline twins, as extra rows) train in one
batched call per step count (`mixgym.llm_backend.toy.train_together`), held-out losses and
probe gradients of every run that needs them are computed in one batched call each
(`ToyRuns.prefetch`), then every sub-environment finishes its decision with its own feature
and reward code (`MixingEnv.finish_decision`). The numbers are therefore those of the single
environment: sub-environment i reset with ``seed + i`` gives, bit for bit, what
``gymnasium.make(id).reset(seed=seed + i)`` followed by the same actions gives.

What is batched and what is not: training, evaluation and probe gradients are; observations,
rewards (MTLD included), ``info`` and reward callables run per sub-environment, and so do
``reset`` (its first evaluation), what-if calls (``env.envs[i].what_if``) and the HF
backend (refused: use ``vectorization_mode="sync"``).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from mixgym.envs.mixing_env import DecisionPlan, MixingEnv
from mixgym.llm_backend.toy import ToyBackend, train_together
from mixgym.llm_backend.toy_runs import ToyRuns
from mixgym.tasks import get_task
from mixgym.validation import integer


class ToyVectorEnv(VectorEnv):
    """`num_envs` toy `MixingEnv`s stepped together (see the module docstring).

    ``gymnasium.make_vec("mixgym/Mixing-v1", num_envs=64)`` returns one (every toy id's
    ``vector_entry_point``); ``vectorization_mode="sync"`` or ``"async"`` still gives Gymnasium's
    own vector envs. Keywords are `MixingEnv`'s, shared by every sub-environment, plus:

    - ``autoreset_mode``: `gymnasium.vector.AutoresetMode` (or its value): ``NEXT_STEP``
      (default, as Gymnasium's vector envs: the step after an episode ends resets that
      sub-environment, ignoring its action, with reward 0) or ``SAME_STEP`` (reset at once;
      the last observation and info in ``info["final_obs"]`` and ``info["final_info"]``).
    - ``max_episode_steps``: truncate an episode after that many decisions (as ``TimeLimit``).

    ``info`` stacks the sub-environments' infos with ``_key`` masks, as Gymnasium's vector
    envs do. ``copy.deepcopy`` and pickle give a vector env that continues bit-identically.

    >>> import gymnasium, mixgym
    >>> envs = gymnasium.make_vec("mixgym/Mixing-v1", num_envs=4, total_steps=40)
    >>> obs, info = envs.reset(seed=0)
    >>> obs.shape, info["objective"].shape
    ((4, 31), (4,))
    >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    >>> rewards.shape, info["step"].tolist()
    ((4,), [10, 10, 10, 10])
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": MixingEnv.metadata["render_modes"]}

    def __init__(
        self,
        num_envs: int = 1,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.num_envs = integer("num_envs", num_envs, 1)
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            known = ", ".join(m.value for m in AutoresetMode)
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; choose one of {known}") from None
        if mode is AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported: use NEXT_STEP or SAME_STEP")
        self.autoreset_mode = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.max_episode_steps = None if max_episode_steps is None else integer("max_episode_steps", max_episode_steps, 1)
        backend = env_kwargs.get("backend")
        task = env_kwargs.get("task")
        kind = backend if backend is not None else get_task(task).backend if task is not None else "toy"
        if kind != "toy":
            what = repr(kind) if isinstance(kind, str) else f"a {type(kind).__name__} instance"
            raise ValueError(
                f"the native vector env batches toy runs built from the toy's options, not backend {what}; "
                "use gymnasium.make_vec(..., vectorization_mode='sync') for it"
            )
        self.envs = [MixingEnv(**copy.deepcopy(env_kwargs)) for _ in range(self.num_envs)]
        self._share_runs()
        first = self.envs[0]
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._observations = create_empty_array(self.single_observation_space, self.num_envs)
        self._rewards = np.zeros(self.num_envs, dtype=np.float64)
        self._terminations = np.zeros(self.num_envs, dtype=np.bool_)
        self._truncations = np.zeros(self.num_envs, dtype=np.bool_)
        self._autoreset_envs = np.zeros(self.num_envs, dtype=np.bool_)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._started = False
        self._stats: dict[int, Any] = {}

    def _share_runs(self) -> None:
        """Move every sub-environment's backend (and twin) onto one shared store of runs."""
        backends = [b for env in self.envs for b in (env.backend, env.twin) if b is not None]
        first: ToyBackend = backends[0]  # type: ignore[assignment]
        for backend in backends:
            if backend.config.fingerprint() != first.config.fingerprint():  # type: ignore[attr-defined]
                raise ValueError("every sub-environment of a vector env must run the same toy task")
        self.runs = ToyRuns(first.config, first._task, 0)
        for backend, row in zip(backends, self.runs.add(len(backends))):
            backend.share_runs(self.runs, row)  # type: ignore[attr-defined]
        reward = self.envs[0].reward_fn
        # per-step weight norms are only read by HDS's stability term; a callable may read anything
        self._step_norms = not hasattr(reward, "requires") or getattr(reward, "name", "") == "holistic"

    # ------------------------------------------------------------------ Gymnasium's vector API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-environment (``seed`` an int gives ``seed + i``, a list one each), or
        those of ``options["reset_mask"]`` (a bool array), as Gymnasium's vector envs do."""
        if seed is None or isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: a list of seeds needs num_envs={self.num_envs} entries, got {len(seeds)}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=np.bool_)
        elif not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True entry, got {mask!r}")
        elif not self._started:
            raise RuntimeError("reset the vector env without a reset_mask first")
        infos: dict[str, Any] = {}
        observations = list(self._observations)
        for i in np.flatnonzero(mask):
            observations[i], info = self.envs[i].reset(seed=seeds[i], options=options or None)
            self._terminations[i] = self._truncations[i] = self._autoreset_envs[i] = False
            self._elapsed[i] = 0
            infos = self._add_info(infos, info, int(i))
        self._started = True
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        return self._observations.copy(), infos

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        infos: list[dict[str, Any] | None] = [None] * self.num_envs
        observations = list(self._observations)
        plans: dict[int, DecisionPlan] = {}
        for i, env in enumerate(self.envs):
            if self.autoreset_mode is AutoresetMode.NEXT_STEP and self._autoreset_envs[i]:
                observations[i], infos[i] = env.reset()
                self._rewards[i], self._terminations[i], self._truncations[i] = 0.0, False, False
                self._elapsed[i] = 0
            else:
                plans[i] = env.plan_decision(actions[i])
        self._train(plans)
        failures = []
        for i, plan in plans.items():
            env = self.envs[i]
            try:
                obs, reward, terminated, _, info = env.finish_decision(plan, self._stats.pop(i))
            except FloatingPointError as error:
                failures.append((i, error))
                continue
            self._elapsed[i] += 1
            truncated = self.max_episode_steps is not None and self._elapsed[i] >= self.max_episode_steps
            observations[i], self._rewards[i], self._terminations[i], self._truncations[i] = obs, reward, terminated, truncated
            if self.autoreset_mode is AutoresetMode.SAME_STEP and (terminated or truncated):
                observations[i], reset_info = env.reset()
                info = {"final_obs": obs, "final_info": info, **reset_info}
                self._elapsed[i] = 0
            infos[i] = info
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        self._autoreset_envs = self._terminations | self._truncations
        stacked = self._stack_infos(infos)
        result = (self._observations.copy(), self._rewards.copy(), self._terminations.copy(), self._truncations.copy(), stacked)
        if failures:
            i, error = failures[0]
            failed = FloatingPointError(
                f"sub-environment {i} of {self.num_envs}: {error} (the other sub-environments' decisions are done: "
                "their results are on this error's .results)"
            )
            failed.results = result  # type: ignore[attr-defined]
            raise failed from error
        return result

    def _stack_infos(self, infos: list[dict[str, Any] | None]) -> dict[str, Any]:
        """Gymnasium's stacked info (``_key`` masks) of the sub-environments' infos (None: no
        info). When every sub-environment reports the same flat keys -- every step without an
        episode end -- each key is one ``np.stack``; otherwise `VectorEnv._add_info`, key by key."""
        first = infos[0]
        flat = first is not None and all(np.isscalar(v) or isinstance(v, np.ndarray) for v in first.values())
        if flat and all(info is not None and info.keys() == first.keys() for info in infos):
            everyone = np.ones(self.num_envs, dtype=np.bool_)
            stacked: dict[str, Any] = {}
            for key, value in first.items():  # type: ignore[union-attr]
                # the dtype `_add_info` gives: the value's type for Python and numpy numbers, the
                # array's for arrays, else object (np.bool_ is no np.number: object, as there)
                if type(value) in (int, float, bool) or isinstance(value, np.number):
                    dtype: Any = type(value)
                else:
                    dtype = value.dtype if isinstance(value, np.ndarray) else object
                column = np.empty((self.num_envs, *np.shape(value)), dtype=dtype)
                for i, info in enumerate(infos):
                    column[i] = info[key]  # type: ignore[index]
                stacked[key], stacked[f"_{key}"] = column, everyone.copy()
            return stacked
        out: dict[str, Any] = {}
        for i, info in enumerate(infos):
            if info is not None:
                if "final_obs" in info:  # Gymnasium adds the final step's before the reset's
                    out = self._add_info(out, {"final_obs": info["final_obs"], "final_info": info["final_info"]}, i)
                    info = {k: v for k, v in info.items() if k not in ("final_obs", "final_info")}
                out = self._add_info(out, info, i)
        return out

    def _check_actions(self, actions: Any) -> np.ndarray:
        array = np.asarray(actions)
        expected = (self.num_envs, *self.single_action_space.shape)  # type: ignore[misc]
        if array.shape != expected:
            raise ValueError(f"actions must have shape {expected} (num_envs, K), got {array.shape}")
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"actions must be numbers, got dtype {array.dtype}")
        bad = ~np.isfinite(array).all(axis=tuple(range(1, array.ndim)))
        if bad.any():
            raise ValueError(f"actions of sub-environment(s) {np.flatnonzero(bad).tolist()} are not finite: {array[bad][0]!r}")
        return array

    def _train(self, plans: dict[int, DecisionPlan]) -> None:
        """Train every planned decision (backends and twins) in one batched call per step
        count, then prefetch the held-out losses and probe gradients the decisions will read."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, plan in plans.items():
            groups[plan.n_steps].append(i)
        self._stats = {}
        evaluated, gradients = [], []
        for n_steps, members in groups.items():
            backends, mixtures = [], []
            for i in members:
                env, plan = self.envs[i], plans[i]
                backends.append(env.backend)
                mixtures.append(plan.mixture)
                if env.twin is not None:
                    backends.append(env.twin)
                    mixtures.append(plan.baseline)
                fresh = env.will_evaluate(plan)
                if fresh:
                    evaluated += [b._row for b in (env.backend, env.twin) if b is not None]  # type: ignore[union-attr]
                if env._needs_gradients:
                    gradients.append(env.backend._row)  # type: ignore[attr-defined]
            stats = iter(train_together(backends, mixtures, n_steps, self._step_norms))  # type: ignore[arg-type]
            for i in members:
                self._stats[i] = next(stats)
                if self.envs[i].twin is not None:
                    next(stats)
        self.runs.prefetch(evaluated, gradients)

    def render(self) -> tuple[Any, ...] | None:
        """Each sub-environment's `MixingEnv.render`, as Gymnasium's vector envs give them."""
        return None if self.render_mode is None else tuple(env.render() for env in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method (or read an attribute) of every sub-environment."""
        results = []
        for env in self.envs:
            value = getattr(env, name)
            results.append(value(*args, **kwargs) if callable(value) else value)
        return tuple(results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs one value per sub-environment ({self.num_envs}), got {len(values)}")
        for env, value in zip(self.envs, values):
            setattr(env, name, value)

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, Any]:
        """The sub-environments pickle as single environments (each backend as its own run);
        `__setstate__` puts them back on one shared store."""
        state = self.__dict__.copy()
        del state["runs"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._share_runs()

