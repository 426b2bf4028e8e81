"""`MixtureDriver`: any mixgym agent chooses the data mixture of a training loop that is not ours.

The loop trains; every ``steps_per_decision`` optimizer steps the driver turns what the loop
reported -- per-domain training losses (`observe`), held-out losses (the ``evaluate``
function), optionally the norms of chosen weight matrices and per-domain gradients -- into
the observation and reward of a real `MixingEnv`, asks the agent for the next mixture and
sets it on the `MixtureDataset`. There is no second copy of the environment's feature and
reward code: the driver *is* a `MixingEnv` whose backend (`ExternalBackend`) is the user's
loop, so observations, rewards and ``info`` are those `MixingEnv` computes (same layout, same
reward, the same numbers from the same inputs), and every agent `make_agent`/`load_agent`
knows drives it unchanged.

Two ways an agent runs:

- *acting* (``learn=False``; bandits, static mixtures, DoReMi, a policy loaded from a file in
  proxy mode): at each decision the driver calls ``env.step`` with the action chosen at the
  previous one -- the backend hands over the statistics the loop gathered meanwhile -- then
  ``agent.observe(info)`` (agents that read ``info``) and ``agent.predict(obs)``. Bandits
  adapt as they always do; SB3 policies act deterministically.
- *learning online* (``learn=True``; the default for SB3 presets given by name): the agent's
  own ``learn`` runs in a thread and drives the env as it would any other; its ``env.step``
  blocks in the backend until the loop has trained the decision's steps. Exactly one of the
  two threads runs at any time. So SB3's warm-ups, replay buffers, exploration noise and
  gradient steps are SB3's own.

The agent has random states of its own (Python, numpy and torch's global generators are
swapped in while it runs and out when the loop runs), so neither draws from the other's
stream: a loop trains the same with any agent, and a resumed run continues both streams.

`state_dict` is taken at the last point where the agent was about to choose (for a learning
SB3 agent, the start of its rollout: the same points `mixgym.experiment` checkpoints at), plus
what the loop reported since; `load_state_dict` then continues bit-identically on CPU: the
same mixtures, observations and rewards as a run never interrupted.

A plain PyTorch loop (any model that gives per-example losses)::

    from mixgym.integrations import MixtureDataset, MixtureDriver

    data = MixtureDataset({"code": code_rows, "prose": prose_rows}, seed=0)
    loader = data.loader(batch_size=8)
    driver = MixtureDriver("exp3", data, total_steps=200, steps_per_decision=20,
                           evaluate=lambda: held_out_loss_per_domain(model))
    driver.start()
    for step, batch in enumerate(loader, start=1):
        losses = per_example_loss(model, batch)            # shape (8,)
        losses.mean().backward(); optimizer.step(); optimizer.zero_grad()
        driver.observe(step, losses.detach(), domains=batch["domain"])
        if step == 200:
            break
    driver.close()

(The README's "Use your own trainer" has a complete loop with a small model; `tests/test_readme.py`
runs it.)
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from mixgym.agents import InfoObserver, SB3Agent, load_agent, make_agent
from mixgym.agents.base import agent_spec, read_metadata
from mixgym.agents.compare import env_for
from mixgym.checkpoint import capture_rng_state, restore_rng_state
from mixgym.envs.rewards import make_reward
from mixgym.integrations.dataset import MixtureDataset
from mixgym.llm_backend.base import BackendInfo, Signal, TrainStats, WeightStats

STATE_FORMAT = "mixgym-mixture-driver/1"


class RunEnded(Exception):
    """Raised inside a learning agent's thread when the loop closes the driver."""


class RandomStates:
    """A private set of the global random states (Python, numpy, torch CPU), swapped in by
    `active` and out again at its end, so code run inside draws from its own streams."""

    def __init__(self, seed: int) -> None:
        import random

        import torch

        outer = capture_rng_state()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.states = capture_rng_state()
        restore_rng_state(outer)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer = capture_rng_state()
        restore_rng_state(self.states)
        try:
            yield
        finally:
            self.states = capture_rng_state()
            restore_rng_state(outer)


class MatrixNorms:
    """Norms of chosen weight matrices of a torch model and of their change since `mark`.

    The matrices are those `HFBackend` reports (`mixgym.llm_backend.hf._chosen_matrices`:
    by default the MLP output matrices of three layers spread through the network, as AC-ODM
    and HDS read), or the named parameters `layers`.
    """

    def __init__(self, model: Any, layers: Sequence[str] | None = None) -> None:
        from mixgym.llm_backend.hf import _chosen_matrices

        self.matrices = _chosen_matrices(model, tuple(layers) if layers is not None else None)
        self._marked = [p.detach().clone() for _, p in self.matrices]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.matrices)

    def mark(self) -> None:
        """Remember the weights now (the start of a decision)."""
        for saved, (_, p) in zip(self._marked, self.matrices):
            saved.copy_(p.detach())

    def stats(self) -> WeightStats:
        import torch

        with torch.no_grad():
            norms = [float(p.detach().double().norm()) for _, p in self.matrices]
            updates = [float((p.detach() - m).double().norm()) for (_, p), m in zip(self.matrices, self._marked)]
        return WeightStats(names=self.names, norms=np.array(norms), update_norms=np.array(updates))

    def state_dict(self) -> list[Any]:
        return [m.clone() for m in self._marked]

    def load_state_dict(self, state: list[Any]) -> None:
        for saved, value in zip(self._marked, state):
            saved.copy_(value)


class ExternalBackend:
    """A `Backend` whose training happens in someone else's loop (`MixtureDriver` feeds it).

    `train` hands the mixture to the loop and returns what the loop did with it over the
    decision's steps; `evaluate`, `weight_stats` and `domain_gradients` ask the loop's model
    now. An external run cannot be restarted: `reset` after training started only marks the
    end of the episode, and `evaluate` then returns the last held-out losses.
    """

    def __init__(self, driver: MixtureDriver, domains: Sequence[str], total_steps: int, info: BackendInfo, signals: frozenset[Signal]) -> None:
        self._driver = driver
        self.domains = list(domains)
        self.total_steps = int(total_steps)
        self.signals = signals
        self._info = info
        self._step = 0
        self._ended = False
        self._last_eval: dict[str, float] = {}

    @property
    def step(self) -> int:
        return self._step

    @property
    def info(self) -> BackendInfo:
        return self._info

    def reset(self, seed: int) -> None:
        self._ended = self._step > 0

    def train(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        stats = self._driver._exchange(np.asarray(mixture, dtype=np.float64), int(n_steps))
        self._step += int(n_steps)
        return stats

    def evaluate(self) -> dict[str, float]:
        if not self._ended:
            self._last_eval = self._driver._evaluate()
        return dict(self._last_eval)

    def domain_gradients(self) -> np.ndarray:
        return self._driver._gradients()

    def weight_stats(self) -> WeightStats:
        return self._driver._weights()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step, "ended": self._ended, "last_eval": dict(self._last_eval)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step, self._ended, self._last_eval = int(state["step"]), bool(state["ended"]), dict(state["last_eval"])

    def __getstate__(self) -> dict[str, Any]:
        """Refused: a copy would be cut off from the loop that trains the model, and would
        silently never see another step (the toy and HF backends copy their whole run)."""
        raise TypeError(
            "an environment over your own training loop (MixtureDriver, MixtureCallback) cannot be copied or "
            "pickled: its run lives in your loop; save driver.state_dict() or the Trainer's checkpoint instead"
        )


class _Capture(BaseCallback):
    """In a learning agent's thread: keep the state at each point where the agent is about to
    choose (a rollout's start), and record every decision's ``info`` and reward."""

    def __init__(self, driver: MixtureDriver, fresh: bool) -> None:
        super().__init__()
        self.driver = driver
        self.fresh = fresh

    def _on_training_start(self) -> None:
        if self.fresh:  # learn() reset the env: the run's decision 0
            self.driver._record(self.training_env.reset_infos[0], float("nan"))  # type: ignore[union-attr]

    def _on_rollout_start(self) -> None:
        self.driver._captured = self.driver._snapshot()

    def _on_step(self) -> bool:
        info, reward = self.locals["infos"][0], float(np.asarray(self.locals["rewards"])[0])
        self.driver._record(info, reward)
        self.driver.last = (np.asarray(self.locals["new_obs"])[0], reward, info)
        return True


class MixtureDriver:
    """Lets agent `agent` choose the mixture of an external training loop (module docstring).

    Args:
        agent: a registered agent name (`mixgym.agents.AGENTS`: made here, with
            `agent_options`) or the path of a saved agent (loaded onto this driver's env: same
            K, action map and observation layout).
        dataset: the `MixtureDataset` the loop reads (its mixture is set at each decision),
            or just the domain names when the loop samples by itself (then read `mixture`).
        total_steps: optimizer steps of the run.
        steps_per_decision: optimizer steps between decisions (the env's ``steps_per_action``).
        evaluate: held-out loss per domain of the loop's model now (a mapping by name or K
            numbers); called at the start and at every decision (``eval_every``).
        weights: a torch model whose chosen matrices' norms feed the observation and the
            holistic reward (`MatrixNorms`; ``weight_layers`` names other matrices), any object
            with `MatrixNorms`'s ``mark()`` and ``stats()``, or None.
        gradients: a function returning per-domain gradients (K, D) of the decision, for the
            alignment and holistic rewards, or None.
        learn: let an SB3 agent learn online in its own thread (None: when given by name).
        seed: seed of the agent (its options' ``seed``), of its random states and of the env.
        env_options: `MixingEnv` options (``reward``, ``reward_kwargs``, ``action_map``,
            ``eval_every``, layout options); unless given, the agent's action map and, for an
            agent that learns, its paper's reward (``eval_loss`` otherwise).
        agent_options: options of `make_agent`.
        trusted: a saved agent may run code when loaded (`load_agent`'s ``trusted``): say so
            for a file this installation did not write.
        examples_per_step: examples one optimizer step consumes, all readers together (for
            the dataset; default: its loader's batch size x readers).
        lookahead: examples the loop reads ahead of the step it trains (accelerate: a batch).
        domain_sizes: natural sizes (tokens) per domain, when `dataset` is only names.
        objective_weights: weights of the per-domain held-out losses in the objective.
        domain_kinds: each domain's kind (``"text"``, ``"noise"``, ...): the default
            "domain-mean" objective leaves junk (noise) domains out; None: every domain counts.
    """

    def __init__(
        self,
        agent: str | Path,
        dataset: MixtureDataset | Sequence[str],
        total_steps: int,
        steps_per_decision: int = 50,
        *,
        evaluate: Callable[[], Mapping[str, float] | Sequence[float]],
        weights: Any = None,
        weight_layers: Sequence[str] | None = None,
        gradients: Callable[[], np.ndarray] | None = None,
        learn: bool | None = None,
        seed: int = 0,
        env_options: Mapping[str, Any] | None = None,
        agent_options: Mapping[str, Any] | None = None,
        trusted: bool = False,
        examples_per_step: int | None = None,
        lookahead: int = 0,
        domain_sizes: Sequence[float] | None = None,
        objective_weights: Sequence[float] | None = None,
        domain_kinds: Sequence[str] | None = None,
    ) -> None:
        for name, value in (("total_steps", total_steps), ("steps_per_decision", steps_per_decision)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not callable(evaluate):
            raise ValueError(f"evaluate must be a function returning the held-out loss per domain, got {evaluate!r}")
        self.dataset = dataset if isinstance(dataset, MixtureDataset) else None
        names = list(self.dataset.domains if self.dataset is not None else dataset)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"a mixture needs at least 2 distinct domains, got {names}")
        self.domains = names
        self.total_steps = int(total_steps)
        self.steps_per_decision = int(steps_per_decision)
        self.seed = int(seed)
        self._evaluate_fn = evaluate
        self._gradients_fn = gradients
        self.weights = weights if weights is None or hasattr(weights, "stats") else MatrixNorms(weights, weight_layers)
        self._rng = RandomStates(self.seed)

        options = dict(env_options or {})
        name, saved = self._agent_name(agent)
        if saved is not None:
            options.setdefault("action_map", saved["env"]["action_map"])
        # the agent's paper set-up (`env_for`) gives an agent that learns its reward; one that
        # only acts never reads the reward, and the plain one needs no gradients
        learns = learn if learn is not None else saved is None
        options.setdefault("reward", agent_spec(name).env_options.get("reward", "eval_loss") if learns else "eval_loss")
        reward = options["reward"]
        needed = getattr(make_reward(reward, **options.get("reward_kwargs", {})) if isinstance(reward, str) else reward, "requires", frozenset())
        self._wants_tokens = Signal.TOKENS in needed
        signals = {Signal.TOKENS} if self._wants_tokens else set()
        signals |= {Signal.WEIGHT_NORMS} if self.weights is not None else set()
        signals |= {Signal.GRADIENTS} if gradients is not None else set()
        sizes = self.dataset.domain_tokens if self.dataset is not None else domain_sizes
        info = BackendInfo(
            domain_sizes=np.asarray(sizes if sizes is not None else [], dtype=np.float64),
            tokens_per_sample=int(self.dataset.seq_len or 1) if self.dataset is not None else 1,
            objective_weights=None if objective_weights is None else np.asarray(objective_weights, dtype=np.float64),
            domain_kinds=None if domain_kinds is None else tuple(domain_kinds),
        )
        self.backend = ExternalBackend(self, names, self.total_steps, info, frozenset(signals))
        self._step_norms: list[np.ndarray] = []
        self.env = env_for(name, {"backend": self.backend, "steps_per_action": self.steps_per_decision, **options})
        self._step_norms = []  # the env read the norms to count the matrices; the run's first row comes at reset
        with self._rng.active():  # SB3 seeds the global generators when it builds a model
            if saved is not None:
                self.agent = load_agent(agent, self.env, trusted=trusted)
            else:
                self.agent = make_agent(name, self.env, **{"seed": self.seed, **dict(agent_options or {})})
        if learn is None:
            learn = saved is None and isinstance(self.agent, SB3Agent)
        if learn and not isinstance(self.agent, SB3Agent):
            raise ValueError(f"learn=True is for SB3 agents; agent {name!r} adapts by observing, without a learning thread")
        self.learn = bool(learn)
        self.name = name
        self.history: list[dict[str, Any]] = []
        """Every decision: the env's ``info`` (reset first) with ``reward``."""
        self.last: tuple[np.ndarray, float, dict[str, Any]] | None = None
        """The last (observation, reward, info) the env returned."""

        self._examples_per_step = examples_per_step
        self._lookahead = int(lookahead)
        self._action: np.ndarray | None = None
        self._mixture: np.ndarray | None = None
        self._decision_start = 0
        self._step = 0
        self._reset_sums()
        self._started = False
        self._pending: TrainStats | None = None
        self._captured: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._to_loop: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._to_agent: queue.Queue[tuple[str, Any]] = queue.Queue()

    @staticmethod
    def _agent_name(agent: str | Path) -> tuple[str, dict[str, Any] | None]:
        if isinstance(agent, Path) or (isinstance(agent, str) and (agent.endswith(".zip") or "/" in agent)):
            _, meta = read_metadata(agent)
            return str(meta["agent"]), meta
        if not isinstance(agent, str):
            raise ValueError(f"agent must be an agent name or the path of a saved agent, got {agent!r}")
        agent_spec(agent)  # unknown names: an error listing the known ones
        return agent, None

    # ------------------------------------------------------------------ the loop's side
    def mixture(self) -> np.ndarray:
        """The mixture the loop should train on now."""
        if self._mixture is None:
            raise RuntimeError("call start() first")
        return self._mixture.copy()

    @property
    def decision_steps(self) -> list[int]:
        """The optimizer steps after which the agent decides."""
        return [*range(self.steps_per_decision, self.total_steps, self.steps_per_decision), self.total_steps]

    def _next_decision(self, step: int) -> int:
        return min((s for s in self.decision_steps if s > step), default=self.total_steps)

    def start(self, step: int = 0) -> np.ndarray:
        """Start the run (the agent sees the reset and chooses the first mixture); returns it."""
        if self._started:
            raise RuntimeError("the driver has started already")
        self._started = True
        self._step = self._decision_start = int(step)
        self._bind(step)
        if self.learn:
            with self._rng.active():
                self._launch(reset=True)
                mixture = self._wait_for_mixture()
            if mixture is None:
                raise RuntimeError(f"agent {self.name!r} finished learning before its first decision")
            self._set(mixture)
        else:
            with self._rng.active():
                obs, info = self.env.reset(seed=self.seed)
                if isinstance(self.agent, InfoObserver):
                    self.agent.reset_run(info)
                self._record(info, float("nan"))
                self._choose(obs)
        return self.mixture()

    def observe(
        self,
        step: int,
        losses: Any,
        *,
        domains: Any = None,
        tokens: Any = None,
        samples: Any = None,
        token_ids: Any = None,
        learning_rate: float | None = None,
        step_weight_norms: Any = None,
    ) -> np.ndarray:
        """Report optimizer step `step` (1-based, increasing); returns the mixture to train on next.

        Args:
            losses: per-example losses with `domains` (each example's domain index), or
                per-domain mean losses (K numbers, NaN where a domain had no example, or a
                mapping by name) with `samples` (examples per domain; default: what the
                dataset served in the step).
            tokens: per-example token counts, the weights of the per-example losses (default 1);
                with per-domain losses, the step's token count (default: the dataset's count).
            token_ids: the step's token ids (rows, length), needed by the holistic reward.
            learning_rate: the step's learning rate (goes to ``info``).
            step_weight_norms: the chosen matrices' norms after each optimizer step reported
                here (rows, L), for HDS's per-step stability term, when the loop tracks them
                itself; by default they are read from `weights` at every call.
        Call it at least at every decision step (`decision_steps`); the decision runs there,
        and per-step quantities are per call.
        """
        if not self._started:
            raise RuntimeError("call start() before observe()")
        if not isinstance(step, (int, np.integer)) or step <= self._step:
            raise ValueError(f"steps must increase: got step {step!r} after step {self._step}")
        if step > self.total_steps:
            raise ValueError(f"step {step} is beyond the run's total_steps={self.total_steps}")
        due = self._next_decision(self._decision_start)
        if step > due:
            raise ValueError(f"observe() skipped the decision at step {due} (got step {step}): call it at every decision step")
        served = None
        if self.dataset is not None:
            now = self.dataset.consumed(step=step).examples
            served, self._last_examples = now - self._last_examples, now
            if domains is not None:
                given = np.bincount(_numpy(domains).astype(np.int64).reshape(-1), minlength=len(self.domains))
                if not np.array_equal(given[: len(served)], served):
                    raise RuntimeError(
                        f"step {step}: the loop reported examples per domain {given.tolist()}, but the dataset served "
                        f"{served.tolist()} since the last step: the loop's batches are not the dataset's stream "
                        "(another batch size or loader than the one bound, reordered or dropped batches?)"
                    )
        self._add(losses, domains, tokens, served if samples is None else samples, token_ids, learning_rate)
        if step_weight_norms is not None:
            self._step_norms.extend(np.atleast_2d(_numpy(step_weight_norms)))
        elif self.weights is not None:
            self._step_norms.append(self.weights.stats().norms)
        self._step = int(step)
        if step == due:
            self._decide()
        return self.mixture()

    def close(self) -> None:
        """End the run: stop a learning agent's thread and release the dataset's workers."""
        if self._thread is not None and self._thread.is_alive():
            self._to_agent.put(("stop", None))
            self._thread.join(timeout=60)
        if self.dataset is not None:
            self.dataset.close()

    # ------------------------------------------------------------------ decisions
    def _bind(self, step: int | None) -> None:
        """Bind the dataset to the loop's steps (`step`: the loop's step at the dataset's
        position; None keeps the binding its loaded state has)."""
        if self.dataset is None:
            return
        per_step = self._examples_per_step
        if per_step is None:
            if self.dataset._examples_per_step is None:
                raise ValueError("the dataset is not bound to the loop: build its loader with dataset.loader(...) or pass examples_per_step")
            per_step = self.dataset._examples_per_step
        batch = self.dataset.batch_size or per_step
        self.dataset.bind(batch, per_step, step=step, decisions=len(self.decision_steps) + 1, lookahead=self._lookahead)
        self._last_examples = self.dataset.accounting().examples

    def _set(self, mixture: np.ndarray) -> None:
        """The agent chose `mixture` at the current step: the loop follows it until the next decision."""
        self._mixture = np.asarray(mixture, dtype=np.float64)
        if self.weights is not None:
            self.weights.mark()
        self._decision_start = self._step
        if self.dataset is not None:
            until = self._next_decision(self._step)
            self.dataset.set_mixture(self._mixture, step=self._step, until=until if until < self.total_steps else None)

    def _choose(self, obs: np.ndarray) -> None:
        """Acting mode: the agent's action for `obs`, and the mixture it means."""
        action, _ = self.agent.predict(obs, deterministic=True)
        self._action = np.asarray(action)
        self._captured = None
        self._set(self.env.action_mapper(self._action))

    def _decide(self) -> None:
        stats = self._stats()
        self._reset_sums()
        if self.learn:
            self._pending = stats
            with self._rng.active():
                self._to_agent.put(("stats", stats))
                message = self._wait_for_mixture()
            if message is not None:
                self._set(message)
            return
        assert self._action is not None
        self._pending = stats
        with self._rng.active():
            obs, reward, terminated, truncated, info = self.env.step(self._action)
            if isinstance(self.agent, InfoObserver):
                self.agent.observe(info)
            self._record(info, float(reward))
            self.last = (obs, float(reward), info)
            if terminated or truncated:
                self._action = None
            else:
                self._choose(obs)

    def _exchange(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        """The backend's `train`: in the agent's thread, publish the mixture and wait for the
        decision's statistics; when acting, return those the loop just gathered."""
        if self.learn and threading.current_thread() is self._thread:
            self._to_loop.put(("mixture", mixture))
            kind, payload = self._to_agent.get()
            if kind == "stop":
                raise RunEnded("the training loop closed the driver")
            stats = payload
        else:
            stats, self._pending = self._pending, None
            if stats is None:
                raise RuntimeError("the environment stepped without statistics from the loop")
            if not np.allclose(mixture, self._mixture, rtol=0, atol=1e-12):
                raise RuntimeError(f"the env trained mixture {mixture} but the loop followed {self._mixture}")
        steps = self._step - self._decision_start
        if steps != n_steps:
            raise RuntimeError(f"the decision lasted {steps} steps, the environment expected {n_steps}")
        return stats

    def _wait_for_mixture(self) -> np.ndarray | None:
        """Wait while the agent's thread runs, until it publishes a mixture (None: it finished).
        Call it with the agent's random states active."""
        kind, payload = self._to_loop.get()
        if kind == "error":
            raise RuntimeError(f"agent {self.name!r} failed while learning") from payload
        if kind == "done":
            return None
        return payload

    def _launch(self, reset: bool, remaining: int | None = None) -> None:
        total = remaining if remaining is not None else self.env.num_decisions

        def run() -> None:
            try:
                self.agent.learn(total, callback=_Capture(self, reset), reset_num_timesteps=reset)
            except RunEnded:
                return
            except BaseException as error:  # handed to the loop's thread, which raises it
                self._to_loop.put(("error", error))
                return
            self._to_loop.put(("done", None))

        self._thread = threading.Thread(target=run, name=f"mixgym-agent-{self.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ statistics
    def _reset_sums(self) -> None:
        k = len(self.domains)
        self._loss_sum = np.zeros(k)
        self._loss_weight = np.zeros(k)
        self._samples = np.zeros(k, dtype=np.int64)
        self._tokens = 0
        self._counted_tokens = False
        self._token_ids: list[np.ndarray] = []
        self._learning_rate = 0.0
        # the norms at a decision's start are those after the previous decision's last step
        self._step_norms: list[np.ndarray] = self._step_norms[-1:] if getattr(self, "_step_norms", None) else []
        self._started_at = time.perf_counter()
        self._accounted_at = None if self.dataset is None else self.dataset.accounting().tokens

    def _add(self, losses: Any, domains: Any, tokens: Any, samples: Any, token_ids: Any, learning_rate: float | None) -> None:
        k = len(self.domains)
        if domains is not None:
            values = _numpy(losses)
            ids = _numpy(domains).astype(np.int64).reshape(-1)
            values = values.reshape(-1)
            if values.shape != ids.shape:
                raise ValueError(f"losses {values.shape} and domains {ids.shape} must have one entry per example")
            if ids.size and (ids.min() < 0 or ids.max() >= k):
                raise ValueError(f"domain indices must be in [0, {k}), got {sorted(set(ids.tolist()) - set(range(k)))}")
            weights = np.ones_like(values) if tokens is None else _numpy(tokens).reshape(-1).astype(np.float64)
            np.add.at(self._loss_sum, ids, values * weights)
            np.add.at(self._loss_weight, ids, weights)
            np.add.at(self._samples, ids, 1)
            self._tokens += int(weights.sum()) if tokens is not None else 0
            self._counted_tokens |= tokens is not None
        else:
            if isinstance(losses, Mapping):
                unknown = sorted(set(losses) - set(self.domains))
                if unknown:
                    raise ValueError(f"losses name unknown domain(s) {unknown}; the domains: {self.domains}")
                values = np.array([losses.get(d, np.nan) for d in self.domains], dtype=np.float64)
            else:
                values = _numpy(losses).reshape(-1)
            if values.shape != (k,):
                raise ValueError(f"per-domain losses must be {k} numbers (domains {self.domains}), got shape {values.shape}")
            if samples is None:
                raise ValueError("give samples= (examples per domain) with per-domain losses, or a dataset to count them")
            counts = _numpy(samples).astype(np.int64).reshape(-1)
            if counts.shape != (k,):
                raise ValueError(f"samples must be {k} counts (domains {self.domains}), got shape {counts.shape}")
            seen = counts > 0
            self._loss_sum[seen] += values[seen] * counts[seen]
            self._loss_weight[seen] += counts[seen]
            self._samples += counts
            if tokens is not None:
                self._tokens += int(tokens)
                self._counted_tokens = True
        if token_ids is not None:
            self._token_ids.append(_numpy(token_ids).astype(np.int64).reshape(len(_numpy(token_ids)), -1))
        if learning_rate is not None:
            self._learning_rate = float(learning_rate)

    def _stats(self) -> TrainStats:
        with np.errstate(invalid="ignore", divide="ignore"):
            train_loss = np.where(self._loss_weight > 0, self._loss_sum / np.maximum(self._loss_weight, 1e-300), np.nan)
        if np.any((self._samples > 0) & ~np.isfinite(train_loss)):
            raise FloatingPointError(f"non-finite training loss at step {self._step}: {dict(zip(self.domains, train_loss))}")
        tokens = self._tokens
        if not self._counted_tokens and self._accounted_at is not None:
            tokens = int((self.dataset.accounting().tokens - self._accounted_at).sum())  # type: ignore[union-attr]
        token_ids = None
        if self._wants_tokens:
            if not self._token_ids:
                raise ValueError(f"reward {self.env.reward_fn!r} reads the tokens trained on: pass token_ids= to observe()")
            token_ids = np.concatenate(self._token_ids)
        return TrainStats(
            samples=self._samples.copy(),
            train_loss=train_loss,
            tokens=int(tokens),
            wall_time=time.perf_counter() - self._started_at,
            learning_rate=self._learning_rate,
            token_ids=token_ids,
            step_weight_norms=np.stack(self._step_norms) if len(self._step_norms) > 1 else None,
        )

    def _evaluate(self) -> dict[str, float]:
        losses = self._evaluate_fn()
        if isinstance(losses, Mapping):
            missing = [d for d in self.domains if d not in losses]
            if missing:
                raise ValueError(f"evaluate() gave no held-out loss for domain(s) {missing}")
            return {d: float(losses[d]) for d in self.domains}
        values = np.asarray(losses, dtype=np.float64).reshape(-1)
        if values.shape != (len(self.domains),):
            raise ValueError(f"evaluate() must give {len(self.domains)} losses (domains {self.domains}), got {values.shape}")
        return dict(zip(self.domains, values.tolist()))

    def _weights(self) -> WeightStats:
        assert self.weights is not None
        stats = self.weights.stats()
        if not self._step_norms:  # the run's start: the first row of the per-step norms
            self._step_norms = [stats.norms]
        return stats

    def _gradients(self) -> np.ndarray:
        assert self._gradients_fn is not None
        return np.asarray(self._gradients_fn(), dtype=np.float64)

    def _record(self, info: dict[str, Any], reward: float) -> None:
        self.history.append({**info, "reward": reward})

    # ------------------------------------------------------------------ checkpoints
    def _snapshot(self) -> dict[str, Any]:
        """The agent, env and agent random states now (the agent is about to choose)."""
        agent_state = self.agent.checkpoint_state() if hasattr(self.agent, "checkpoint_state") else None
        return {"agent": agent_state, "env": self.env.state_dict(), "rng": capture_rng_state() if self.learn else self._rng.states}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (see the module docstring); pickle it with
        `mixgym.checkpoint.encode`."""
        if not self._started:
            raise RuntimeError("nothing to save before start()")
        if self.learn:
            if self._captured is None:
                raise RuntimeError("the learning agent has not reached a decision point yet")
            captured = self._captured
        else:
            captured = self._snapshot()
        return {
            "format": STATE_FORMAT,
            "agent_name": self.name,
            "domains": list(self.domains),
            "learn": self.learn,
            **captured,
            "step": self._step,
            "decision_start": self._decision_start,
            "mixture": None if self._mixture is None else self._mixture.tolist(),
            "action": None if self._action is None else self._action.tolist(),
            "sums": {
                "loss_sum": self._loss_sum.copy(), "loss_weight": self._loss_weight.copy(), "samples": self._samples.copy(),
                "tokens": self._tokens, "token_ids": [t.copy() for t in self._token_ids], "learning_rate": self._learning_rate,
                "counted_tokens": self._counted_tokens, "accounted_at": self._accounted_at,
                "step_norms": [n.copy() for n in self._step_norms],
            },
            "weights": None if self.weights is None else self.weights.state_dict(),
            "history": list(self.history),
            "dataset": None if self.dataset is None else self.dataset.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], replay: bool = False) -> np.ndarray:
        """Continue from `state_dict`'s output, instead of `start`; returns the mixture in force.

        `replay` goes to `MixtureDataset.load_state_dict` (the loop re-reads its data from the
        start and skips what it trained on)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a MixtureDriver state (format {STATE_FORMAT!r})")
        if state["agent_name"] != self.name or state["domains"] != self.domains or bool(state["learn"]) != self.learn:
            raise ValueError(
                f"the state is of agent {state['agent_name']!r} on domains {state['domains']} (learn={state['learn']}); "
                f"this driver runs {self.name!r} on {self.domains} (learn={self.learn})"
            )
        if self._started:
            raise RuntimeError("load_state_dict replaces start(): call it on a fresh driver")
        self._started = True
        if self.dataset is not None and state["dataset"] is not None:
            self.dataset.load_state_dict(state["dataset"], replay=replay)
        self._step = int(state["step"])
        self._bind(None)
        self._decision_start = int(state["decision_start"])
        sums = state["sums"]
        self._loss_sum, self._loss_weight, self._samples = sums["loss_sum"].copy(), sums["loss_weight"].copy(), sums["samples"].copy()
        self._tokens, self._token_ids, self._learning_rate = sums["tokens"], [t.copy() for t in sums["token_ids"]], sums["learning_rate"]
        self._accounted_at = None if self.dataset is None else state["sums"]["accounted_at"]
        self._counted_tokens = sums["counted_tokens"]
        self._step_norms = [n.copy() for n in sums["step_norms"]]
        self.history = list(state["history"])
        with self._rng.active():
            self.env.load_state_dict(state["env"])
            if state["agent"] is not None:
                self.agent.restore_checkpoint_state(state["agent"])  # type: ignore[attr-defined]
        self._rng.states = state["rng"]
        if self.weights is not None and state["weights"] is not None:
            self.weights.load_state_dict(state["weights"])
        self._mixture = np.asarray(state["mixture"], dtype=np.float64)
        if self.learn:
            done = int(getattr(self.agent, "num_timesteps", 0))
            with self._rng.active():
                self._launch(reset=False, remaining=self.env.num_decisions - done)
                again = self._wait_for_mixture()
            if again is None or not np.array_equal(again, self._mixture):
                raise RuntimeError(
                    f"the resumed agent chose {again} for the decision in progress, the checkpoint recorded {self._mixture}: "
                    "its state did not restore exactly"
                )
        else:
            self._action = None if state["action"] is None else np.asarray(state["action"])
        return self.mixture()


def _numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64) if not isinstance(values, np.ndarray) else values
