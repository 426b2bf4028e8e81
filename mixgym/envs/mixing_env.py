"""MixingEnv: language-model pretraining as a Gymnasium environment."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mixgym.envs.action_maps import ActionMap
from mixgym.envs.features import LAYER_FEATURES, TWIN_FEATURES, ObservationLayout, resolve_features
from mixgym.envs.phases import Phase, mask_mixture, parse_phases, phase_index
from mixgym.envs.rewards import Reward, RewardFn, Snapshot, call_reward, make_reward, reward_components
from mixgym.llm_backend import (
    WHATIF_BACKENDS,
    Backend,
    Signal,
    TrainStats,
    backend_options,
    check_options,
    make_backend,
    require_signals,
)
from mixgym.llm_backend.whatif import WhatIfRequest, WhatIfResult, validate_request
from mixgym.llm_backend.objectives import Objective, ObjectiveSpec, make_objective
from mixgym.tasks import get_task
from mixgym.validation import integer

_DEFAULT_LAYERS = 3
BUDGETS = ("steps", "compute")
TIMED = ("train", "eval", "signals", "reward", "twin", "whatif")
"""Parts of a decision whose wall-clock time `MixingEnv.timings` keeps."""


@dataclass(frozen=True)
class DecisionPlan:
    """What one decision trains (`MixingEnv.plan_decision`): the backend's mixture (masked to
    the phase), its optimizer steps, and the baseline twin's mixture (None without a twin)."""

    mixture: np.ndarray
    n_steps: int
    baseline: np.ndarray | None


class MixingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Choose the data mixture of a pretraining run, one decision at a time.

    ## Description

    One episode is one pretraining run of a backend (the fast `ToyBackend` or a
    `transformers` causal LM through `HFBackend`). Every `steps_per_action` optimizer steps
    the agent picks a mixture over the K data domains; the backend trains on batches drawn
    from it; the environment observes the training dynamics and pays a reward. This is the
    loop of ODM (bandit), AC-ODM (DDPG) and HDS (SAC), with the loop and the agent apart.

    ## Action Space

    ``Box(-1, 1, (K,), float32)`` mapped to a mixture by ``action_map`` (default
    ``"softmax"``: ``(1 - eps) * softmax(a / temperature) + eps / K`` with temperature 0.5 and
    eps 0.05, so each domain keeps at least 1% at K=5). ``"normalize"`` clips to >= 0 and
    divides by the sum (same floor); ``"simplex"`` (``Box(0, 1, (K,))``) takes the mixture
    weights, divided by their sum, for bandits and fixed schedules. See
    `mixgym.envs.action_maps`.

    Actions outside the space are clipped to it (``out_of_bounds="clip"``, the default): that
    is what a Gymnasium user expects, since MuJoCo's and Pendulum's environments clip, and
    what stock Gaussian policies rely on (skrl's samples beyond the bounds and leaves clipping
    to the environment). ``out_of_bounds="raise"`` refuses them (beyond 1e-5) with a
    `ValueError` that names `gymnasium.wrappers.ClipAction`. Actions with NaN or inf, of the
    wrong shape or, for "simplex", with no positive weight always raise `ValueError`.

    ## Observation Space

    A flat ``Box`` of float32 made of blocks chosen by ``observation``. The default, ``"v1"``
    (``-v1`` ids), has size 6K + 1, or 7K + 1 with the advantage rewards:

    | index         | block        | observation                                         | min | max |
    |---------------|--------------|-----------------------------------------------------|-----|-----|
    | 0 .. K-1      | loss_z       | z-score of per-domain training loss                 | -3  | 3   |
    | K .. 2K-1     | dloss_z      | z-score of its change since the previous decision   | -3  | 3   |
    | 2K .. 3K-1    | share        | share of the decision's samples per domain: the     | 0   | 1   |
    |               |              | previous realised mixture (reset: 0)                |     |     |
    | 3K .. 4K-1    | eval_ratio   | held-out loss / held-out loss at reset              | 0   | 5   |
    | 4K .. 5K-1    | mixture      | the mixture chosen at the previous decision         | 0   | 1   |
    |               |              | (reset: uniform)                                    |     |     |
    | 5K .. 6K-1    | cumulative   | share of all samples since reset (reset: 0)         | 0   | 1   |
    | 6K            | progress     | optimizer steps / budget                            | 0   | 1   |
    | 6K+1 .. 7K    | baseline_    | only with a reward that runs a baseline twin: the   | 0   | 5   |
    |               | ratio        | twin's held-out loss / held-out loss at reset       |     |     |

    ``"v0"`` (``-v0`` ids; AC-ODM's and HDS's state) has size 4K + 2L + 1 (L = 3 chosen
    weight matrices): loss_z, dloss_z, share, eval_ratio as above (indices 0 .. 4K-1), then

    | index           | block    | observation                                         | min | max |
    |-----------------|----------|-----------------------------------------------------|-----|-----|
    | 4K .. 4K+L-1    | norm_z   | z-score of the chosen matrices' norms (zeros if the | -3  | 3   |
    |                 |          | backend reports none)                               |     |     |
    | 4K+L .. 4K+2L-1 | update_z | z-score of the norms of their last update           | -3  | 3   |
    | 4K+2L           | progress | optimizer steps / budget                            | 0   | 1   |

    Any list of blocks and layout names works, in the order given (``["v1", "norm_z",
    "update_z"]`` adds the weight norms to v1; asking for them by name on a backend without
    weight norms is an error). All features are size-invariant, so a policy moves between
    backends with the same K (details in `mixgym.envs.features`).

    Only with ``phases``, K more entries follow, after whichever layout:

    | index              | observation                                           | min | max |
    |--------------------|-------------------------------------------------------|-----|-----|
    | last K             | 1 if the domain is available in the next decision's   | 0   | 1   |
    |                    | phase, else 0                                         |     |     |

    ## Rewards

    - ``"alignment"`` (default; AC-ODM): mixture-weighted z-scored gradient-alignment score
      ``m . z(s)`` with ``s_i = sum_{j!=i} <g_i, g_j> / mean_k ||g_k||`` and z AC-ODM's
      ``mean_std_norm`` (``reward_kwargs={"alignment": "cosine"}`` or ``"raw"`` for ``m . s``).
    - ``"holistic"`` (HDS): ``w_align * alignment + w_div * diversity + w_stab * stability``,
      weights 1, 10, 10, alignment z-scored and stability per optimizer step as HDS computes
      them (``reward_kwargs`` sets the weights, ``alignment``, ``stability="per-step"|
      "per-decision"`` and ``diversity="mtld"|"progress-over-mtld"|"released"``).
    - ``"eval_loss"``: decrease of the objective (``objective=``, below).
    - ``"advantage"``: counterfactual -- the change of ``B_t - A_t``, the objective of a
      baseline twin (the same run, same initial model and random numbers, trained in lock-step
      on ``reward_kwargs={"baseline": "uniform" | "natural" | K weights}``) minus the agent's;
      the undiscounted return of an episode is exactly the final advantage ``B_T - A_T``.
      ``"advantage_terminal"`` pays that advantage once, at the last decision (a ``TimeLimit``
      that truncates the run earlier cuts it off). The twin doubles training and evaluation
      (``timings["last"]["twin"]``); a backend without ``twin()`` (`Signal.TWIN`) is refused.
    - any callable ``(before: Snapshot, after: Snapshot, env) -> float | (float, dict)``.

    Formulas and sources are in `mixgym.envs.rewards`; components go to ``info["reward/<name>"]``.

    ## Starting State

    ``reset(seed=s)`` starts a fresh run: the backend's model, optimizer and data order are
    seeded from the environment's ``np_random``, so the same seed and actions give
    bit-identical observations and rewards on CPU.

    ``copy.deepcopy(env)`` and a pickle round trip, at any point of an episode, give an env
    that continues bit-identically to the original and apart from it (branch-and-compare,
    look-ahead, sending a live run to a worker). A toy backend's pickle carries its
    configuration and training state, a few hundred KB, and rebuilds the task's data from its
    seed (checked by checksum); an HF backend's carries configuration, model, optimizer and
    RNG states and reads its corpus folder again.

    ## Episode End

    Terminated when the backend's optimizer-step budget ``total_steps`` is spent (the last
    decision may train fewer than ``steps_per_action`` steps), after
    ``ceil(total_steps / steps_per_action)`` decisions (with ``phases``, that count per phase:
    a decision never straddles two phases). With ``budget="compute"`` the budget is compute:
    the run's optimizer steps plus what-if compute (`what_if`, in main-step equivalents), so
    the episode ends when that total reaches ``total_steps`` (a decision trains at most the
    steps left, rounded up; the backend's learning-rate schedule still spans ``total_steps``,
    since it cannot know what the agent will spend). Truncation is left to a ``TimeLimit``
    wrapper (``gymnasium.make(..., max_episode_steps=n)``).

    ## What-if simulation

    On a backend with `Signal.WHATIF` (toy and hf), ``env.unwrapped.what_if(probes, steps,
    candidates, method="merge", lr_scale=2.0, rank=None)`` returns the held-out losses that
    probe mixtures, and interpolations of their parameter deltas, would give from the current
    state, leaving the run bit-identical (`mixgym.llm_backend.whatif`; OP-Mix, the ``opmix``
    agent, uses it). Its compute is charged to the run: ``info["compute/*"]`` counts it, and
    under ``budget="compute"`` it is part of the budget. ``what_if_cost`` prices a request
    without running it.

    ## Many runs at once

    ``gymnasium.make_vec(toy_id, num_envs=N)`` gives `mixgym.envs.vector.ToyVectorEnv`: N of these
    envs whose toy runs train, evaluate and give probe gradients in batched calls, each
    sub-env bit-identical to this env seeded ``seed + i``. It splits `step` where the arithmetic
    is: `plan_decision` (the checks and the mixture), the backends' ``train``, then
    `finish_decision` (evaluation, observation, reward, info). ``init_kwargs`` holds the
    keywords an env was made with, so more like it can be made
    (`mixgym.agents.make_agent`'s ``n_envs``).

    ## Phases

    ``phases=[(steps, [domains...]), ...]`` cuts the run into phases, each with the domains
    that exist in it (a continual run whose domain set grows; `mixgym.envs.phases`). The
    steps must add up to ``total_steps``. K stays fixed: the mixture is masked to the
    available domains and renormalised (an action with no weight on any of them is an
    error), and the observation gains the availability mask above.

    ## Info

    Flat keys with numpy values, the same keys at ``reset`` as at every ``step`` (as TorchRL
    and Gymnasium's vector envs need):

    | key                  | value                                                          |
    |----------------------|----------------------------------------------------------------|
    | ``mixture``          | (K,) the mixture chosen (reset: uniform)                       |
    | ``realised_mixture`` | (K,) share of the decision's samples per domain: what was      |
    |                      | actually trained on (reset: zeros)                             |
    | ``train_loss``       | (K,) this decision's mean training loss; for a domain not      |
    |                      | sampled, its last known value (reset: the held-out loss)       |
    | ``eval_loss``        | (K,) held-out loss at the last evaluation                      |
    | ``eval_fresh``       | bool: evaluated at this decision                               |
    | ``objective``        | the run's objective of the held-out losses (``objective=``)    |
    | ``samples``          | (K,) int: examples trained per domain (reset: zeros)           |
    | ``tokens``           | int: tokens trained on since reset                             |
    | ``step``             | int: optimizer steps since reset                               |
    | ``decision``         | int: decisions since reset                                     |
    | ``learning_rate``    | learning rate of the last optimizer step (reset: 0)            |
    | ``reward/<name>``    | each component of the reward (scalar or (K,); reset: zeros)    |
    | ``compute/main``     | int: the run's optimizer steps since reset (= ``step``)        |
    | ``compute/whatif``   | what-if compute since reset, in main-step equivalents          |
    | ``compute/total``    | main + what-if: what ``budget="compute"`` counts               |
    | ``compute/probe_steps`` | int: optimizer steps taken in what-if branches since reset  |
    | ``compute/whatif_calls`` | int: `what_if` calls since reset                           |
    | ``phase``            | int: the next decision's phase (only with ``phases``)          |
    | ``available``        | (K,) 1.0 for the domains of that phase (only with ``phases``)  |

    The reward's components are those it declares (`Reward.components`); a plain callable's
    appear from the first ``step`` (or at reset too, if it has a ``components`` dict). The
    last decision's components are also on ``env.unwrapped.reward_components`` as a dict.
    With ``phases``, ``mixture`` is the masked mixture the backend sampled from, and at reset
    the uniform mixture over the first phase's domains.
    Wall-clock ``timings`` (seconds in train, eval, twin -- the baseline twin's training and
    evaluation, 0 without one --, signals, reward and what-if calls made before the decision:
    the last decision's,
    and summed over the env's life, across resets, so that an auto-reset at the end of a run
    does not erase them) are on ``env.unwrapped.timings``, and in ``info["timings/<part>"]``
    only with ``info_timings=True`` (zeros at reset): by default ``info`` is exactly
    reproducible from the seed, as Gymnasium's checker demands.

    ## Arguments

    ```python
    gymnasium.make("mixgym/Mixing-v1", backend="toy", reward="alignment", action_map="softmax",
                   temperature=0.5, eps=0.05, steps_per_action=10, total_steps=None,
                   eval_every=1, reward_kwargs=None, info_timings=False, budget="steps",
                   phases=None, render_mode=None, observation="v1", out_of_bounds="clip",
                   task=None, objective=None, **backend_kwargs)
    ```

    An unknown keyword raises `mixgym.llm_backend.UnexpectedOptionError`, a `TypeError`
    worded as Python's own (``MixingEnv() got an unexpected keyword argument 'frameskip'``,
    which TorchRL's ``GymEnv`` relies on) that lists the known options; it is also a
    `ValueError`.

    - ``backend``: ``"toy"`` (default), ``"hf"`` or a `Backend` instance; ``backend_kwargs`` go to
      `make_backend` (e.g. ``num_domains=22`` for the toy, ``model=`` and ``corpus=`` for hf;
      ``forced_fraction=f`` for either spreads that share of each decision's samples evenly
      over the domains, as AC-ODM and HDS do with 22/144; by default 0, so the run trains on
      the mixture chosen, in expectation).
    - ``task``: a named task (`mixgym.tasks`: ``"classic5"``, ``"pile22"``, ``"hf-pile"``), which
      sets the backend, its options and the objective; ``backend_kwargs`` override them.
    - ``objective``: what ``info["objective"]`` and the ``"eval_loss"`` reward score:
      ``"domain-mean"`` (the papers' unweighted mean over the domains that are not junk),
      ``"natural"`` (size-weighted), ``"worst-domain"``, or K weights
      (`mixgym.llm_backend.objectives`); None is the task's, else the backend's
      ``target_weights``, else "domain-mean".
    - ``total_steps``: optimizer-step budget (default: the backend's; the toy's is 1000).
    - ``eval_every``: evaluate held-out loss every this many decisions (and at the end).
    - ``observation``: ``"v1"``, ``"v0"`` or a list of blocks (see Observation Space).
    - ``budget``: ``"steps"`` (the episode is ``total_steps`` optimizer steps) or
      ``"compute"`` (optimizer steps plus what-if compute; see Episode End).
    - ``phases``: None, or a list of ``(steps, domains)`` (see Phases).
    - ``render_mode``: ``"human"`` prints the ``"ansi"`` table at every reset and step (what
      RL Zoo3's ``enjoy`` and Tianshou's watch mode ask for; no pygame needed), ``"ansi"``
      returns it from `render`, ``"rgb_array"`` returns a bar chart image.

    ## Version History

    - v0: initial version; ``info`` flattened (``info["rewards"][name]`` became
      ``info["reward/<name>"]``, also on ``env.unwrapped.reward_components``), numpy values,
      the same keys at reset as at step, ``realised_mixture`` added; ``out_of_bounds``
      (clip by default: out-of-bounds actions used to raise) and ``render_mode="human"``
      added; unknown keywords raise `UnexpectedOptionError` (a `TypeError` and `ValueError`);
      copies (deepcopy, pickle) continue bit-identically; ``compute/*`` keys, what-if
      simulation, ``budget`` and ``phases`` added. The ``"advantage"`` rewards work with every
      version (rewards are options, not versions).
    - v1: observation layout "v1": the previous chosen mixture, the share of all data seen so
      far and, under the advantage rewards, the twin's held-out losses added; the weight-norm
      blocks opt-in (they barely move on the toy). ``-v0`` ids keep the v0 layout bit for bit;
      `MixingEnv`'s default is v1.
      ``task=`` and named ``objective=`` added (the default objective is unchanged: the mean
      over non-noise domains on the toy, over all domains of an ordinary corpus). Every toy id
      has a ``vector_entry_point`` (`ToyVectorEnv`: ``make_vec`` without a mode now batches
      the runs, with the same numbers as ``vectorization_mode="sync"``); ``task=`` also takes a
      task file (``mixgym calibrate``).

    >>> import gymnasium, mixgym
    >>> env = gymnasium.make("mixgym/Mixing-v1", num_domains=4, total_steps=40)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (25,)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> round(float(info["mixture"].sum()), 6), int(info["step"])
    (1.0, 10)
    """

    metadata = {"render_modes": ["human", "ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        backend: str | Backend | None = None,
        reward: str | Reward | RewardFn = "alignment",
        action_map: str = "softmax",
        temperature: float = 0.5,
        eps: float = 0.05,
        steps_per_action: int = 10,
        total_steps: int | None = None,
        eval_every: int = 1,
        reward_kwargs: dict[str, Any] | None = None,
        info_timings: bool = False,
        budget: str = "steps",
        phases: Any = None,
        render_mode: str | None = None,
        observation: str | Sequence[str] = "v1",
        out_of_bounds: str = "clip",
        task: str | None = None,
        objective: ObjectiveSpec | None = None,
        **backend_kwargs: Any,
    ) -> None:
        own = [name for name in inspect.signature(MixingEnv.__init__).parameters if name not in ("self", "backend_kwargs")]
        given = locals()
        self.init_kwargs: dict[str, Any] = {**{name: given[name] for name in own}, **backend_kwargs}
        """The keywords this env was made with (`mixgym.agents.make_agent`'s ``n_envs`` makes more
        envs like it)."""
        # a backend instance comes configured: then MixingEnv takes no backend options at all
        kind = backend if backend is not None else get_task(task).backend if task is not None else "toy"
        backend_known = backend_options(kind) if isinstance(kind, str) else ()
        check_options(type(self).__name__, backend_kwargs, own + list(backend_known))
        integer("steps_per_action", steps_per_action, 1)
        integer("eval_every", eval_every, 1)
        if total_steps is not None:
            integer("total_steps", total_steps, 1)
        if not isinstance(budget, str) or budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if not isinstance(info_timings, (bool, np.bool_)):
            raise TypeError(f"info_timings must be true or false, got {info_timings!r}")
        if reward_kwargs is not None and not isinstance(reward_kwargs, dict):
            raise TypeError(f"reward_kwargs must be a mapping of the reward's options, got {reward_kwargs!r}")
        if "num_domains" in backend_kwargs:
            integer("num_domains (K)", backend_kwargs["num_domains"], 2)
        if task is not None:
            preset = get_task(task)
            if backend is not None and backend != preset.backend:
                raise ValueError(f"task {task!r} runs on the {preset.backend!r} backend, not {backend!r}")
            backend = preset.backend
            backend_kwargs = preset.backend_kwargs(backend_kwargs)
            objective = preset.objective if objective is None else objective
        self.task = task
        backend = "toy" if backend is None else backend
        if isinstance(backend, str):
            if total_steps is not None:
                backend_kwargs["total_steps"] = int(total_steps)
            self.backend: Backend = make_backend(backend, **backend_kwargs)
        else:
            if total_steps is not None and total_steps != backend.total_steps:
                raise ValueError(
                    f"total_steps={total_steps!r} differs from the backend instance's budget {backend.total_steps!r}"
                )
            self.backend = backend
        k = len(self.backend.domains)
        if k < 2:
            raise ValueError(f"a mixing problem needs K >= 2 domains, got {k}: {self.backend.domains}")

        self.reward_fn = make_reward(reward, **(reward_kwargs or {}))
        needed = getattr(self.reward_fn, "requires", frozenset())
        require_signals(self.backend, needed, f"reward {getattr(self.reward_fn, 'name', reward)!r}")
        self._needs_gradients = Signal.GRADIENTS in needed
        self._reward_shapes = reward_components(self.reward_fn, k)
        self.reward_components: dict[str, Any] = {}
        """The last decision's reward components (also in ``info`` as ``reward/<name>``)."""
        self._has_weights = Signal.WEIGHT_NORMS in self.backend.signals
        self.twin: Backend | None = None
        """The baseline twin (a reward that needs one, `Signal.TWIN`): the same run, trained in
        lock-step on `baseline_mixture`."""
        self.baseline_mixture: np.ndarray | None = None
        if Signal.TWIN in needed:
            self.baseline_mixture = self.reward_fn.baseline_mixture(self.domains, self.backend.info.domain_sizes)  # type: ignore[union-attr]
            self.twin = self.backend.twin()  # type: ignore[attr-defined]

        self.action_mapper = ActionMap(action_map, k, temperature, eps, out_of_bounds)
        self.steps_per_action = int(steps_per_action)
        self.eval_every = int(eval_every)
        self.render_mode = render_mode
        self.info_timings = bool(info_timings)
        self.timings: dict[str, dict[str, float]] = {"last": {}, "total": {}}
        num_layers = len(self.backend.weight_stats().names) if self._has_weights else _DEFAULT_LAYERS
        features = resolve_features(observation, twin=self.twin is not None)
        asked = {observation} if isinstance(observation, str) else set(observation)
        if asked & set(LAYER_FEATURES) and not self._has_weights:
            raise ValueError(
                f"observation blocks {sorted(asked & set(LAYER_FEATURES))} need weight norms, "
                f"which {type(self.backend).__name__} does not report"
            )
        if asked & set(TWIN_FEATURES) and self.twin is None:
            raise ValueError(f"observation block 'baseline_ratio' needs a reward with a baseline twin, not {reward!r}")
        self.layout = ObservationLayout(k, num_layers, features)
        self.budget = budget
        self.phases: tuple[Phase, ...] | None = (
            None if phases is None else parse_phases(phases, self.domains, self.backend.total_steps)
        )
        """The run's phases (`mixgym.envs.phases`), or None: every domain always available."""
        self.action_space = self.action_mapper.space
        self.observation_space = self.layout.space()
        if self.phases is not None:
            box = self.observation_space
            self.observation_space = gym.spaces.Box(
                np.concatenate([box.low, np.zeros(k, dtype=np.float32)]),
                np.concatenate([box.high, np.ones(k, dtype=np.float32)]),
                dtype=np.float32,
            )
        self.objective: Objective = make_objective(objective, self.backend.info, k)
        """What ``info["objective"]`` and the "eval_loss" reward score (`mixgym.llm_backend.objectives`)."""
        self._snapshot: Snapshot | None = None
        self._whatif = {"compute": 0.0, "probe_steps": 0, "calls": 0}
        self._whatif_wall = 0.0
        self._shown = False  # "human" mode: this decision's table is printed

    @property
    def domains(self) -> list[str]:
        return list(self.backend.domains)

    @property
    def num_decisions(self) -> int:
        """Decisions in one episode: ceil(total_steps / steps_per_action), summed over the phases
        when there are phases (a decision never straddles two); fewer when what-if compute ends
        a ``budget="compute"`` episode early."""
        spans = [p.steps for p in self.phases] if self.phases is not None else [self.backend.total_steps]
        return sum(-(-span // self.steps_per_action) for span in spans)

    @property
    def phase(self) -> Phase | None:
        """The phase the next decision trains in (None without phases)."""
        return None if self.phases is None else self.phases[phase_index(self.phases, self.backend.step)]

    @property
    def compute(self) -> float:
        """Compute spent since reset, in main optimizer steps: the run's steps plus what-if
        compute in main-step equivalents."""
        return self.backend.step + self._whatif["compute"]

    def what_if(
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
        """Ask the backend what held-out losses probe mixtures and interpolations of their
        deltas would give from the current state (`mixgym.llm_backend.whatif`; ``split=
        "validation"`` scores them on rows disjoint from those that score the run, where the
        backend has `Signal.VALIDATION`), and charge the
        compute to this run (``info["compute/whatif"]``; under ``budget="compute"`` it counts
        towards the budget). The run itself is left bit-identical. An answer served from the
        backend's cache is charged the compute it stands for, so a resumed run accounts exactly
        as the uninterrupted one did.

        Raises `ValueError` for a backend without the capability, a malformed request, a probe
        weighting a domain outside the current phase, or (``budget="compute"``) a request that
        would leave no compute for another optimizer step; `RuntimeError` outside an episode.
        """
        self._require_whatif()
        request = validate_request(probes, steps, candidates, method, len(self.domains), lr_scale, rank, split, per_sequence)
        if split != "eval" and Signal.VALIDATION not in self.backend.signals:
            raise ValueError(
                f"what_if(split={split!r}) needs a backend with the {Signal.VALIDATION.value!r} signal, which "
                f"{type(self.backend).__name__} does not provide"
            )
        if self._snapshot is None:
            raise RuntimeError("call reset() before what_if()")
        if self._done():
            raise RuntimeError("the episode has terminated (budget spent); call reset()")
        phase = self.phase
        if phase is not None and np.any(request.probes[:, ~phase.available] > 0):
            outside = [d for d, a, w in zip(self.domains, phase.available, request.probes.max(axis=0)) if not a and w > 0]
            raise ValueError(f"what-if probes weight domain(s) {outside} outside the current phase {list(phase.domains)}")
        if self.budget == "compute":
            cost = self.what_if_cost(probes, steps, candidates, method, rank)
            if self.compute + cost >= self.backend.total_steps:
                raise ValueError(
                    f"the what-if request costs {cost:.1f} main-step equivalents, and only "
                    f"{self.backend.total_steps - self.compute:.1f} of the compute budget remain (budget='compute')"
                )
        result = self.backend.simulate(  # type: ignore[attr-defined]
            request.probes, request.steps, request.candidates, method, lr_scale, rank, **_request_options(request)
        )
        self._whatif["compute"] += result.cost
        self._whatif["probe_steps"] += result.probe_steps
        self._whatif["calls"] += 1
        self._whatif_wall += result.wall_time
        return result

    def what_if_cost(
        self, probes: np.ndarray, steps: int, candidates: np.ndarray, method: str = "merge", rank: int | None = None
    ) -> float:
        """What `what_if` would charge, in main-step equivalents, without running it."""
        self._require_whatif()
        return float(self.backend.whatif_cost(probes, steps, candidates, method, rank))  # type: ignore[attr-defined]

    def _require_whatif(self) -> None:
        if Signal.WHATIF not in self.backend.signals:
            raise ValueError(
                f"what-if simulation needs a backend with the {Signal.WHATIF.value!r} signal, which "
                f"{type(self.backend).__name__} does not provide; backends that do: {', '.join(WHATIF_BACKENDS)}"
            )

    def _done(self) -> bool:
        """The budget is spent: every optimizer step taken, or (``budget="compute"``) all compute."""
        total = self.backend.total_steps
        return self.backend.step >= total or (self.budget == "compute" and self.compute >= total)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        run_seed = int(self.np_random.integers(2**31 - 1))
        self.backend.reset(run_seed)
        eval_loss = self._evaluate(self.backend)
        if self.twin is not None:
            self.twin.reset(run_seed)  # common random numbers: the same init and draws
        k = len(self.domains)
        self._initial_eval = eval_loss
        self._decision = 0
        self._tokens = 0
        self._whatif = {"compute": 0.0, "probe_steps": 0, "calls": 0}
        self._whatif_wall = 0.0
        self._snapshot = Snapshot(
            step=self.backend.step,
            mixture=None,
            train_loss=eval_loss.copy(),
            samples=np.zeros(k, dtype=np.int64),
            eval_loss=eval_loss,
            weights=self.backend.weight_stats() if self._has_weights else None,
            cumulative_samples=np.zeros(k, dtype=np.int64),
            baseline_eval_loss=None if self.twin is None else self._evaluate(self.twin),
        )
        obs = self._observation(self._snapshot, self._snapshot.train_loss)
        self.reward_components = {name: np.zeros(shape) for name, shape in self._reward_shapes.items()}
        phase = self.phase
        initial = np.full(k, 1.0 / k) if phase is None else phase.available / phase.available.sum()
        info = self._info(initial, self._snapshot, fresh=True, learning_rate=0.0)
        if self.info_timings:
            info.update({f"timings/{key}": np.float64(0.0) for key in TIMED})
        self._shown = False
        if self.render_mode == "human":
            self.render()
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        plan = self.plan_decision(action)
        t0 = time.perf_counter()
        stats = self.backend.train(plan.mixture, plan.n_steps)
        t1 = time.perf_counter()
        if self.twin is None:
            return self.finish_decision(plan, stats, train_time=t1 - t0)
        self.twin.train(plan.baseline, plan.n_steps)
        return self.finish_decision(plan, stats, train_time=t1 - t0, twin_time=time.perf_counter() - t1)

    def plan_decision(self, action: np.ndarray) -> DecisionPlan:
        """The first half of `step`: check the episode and the action and say what the backend
        (and the baseline twin) must train. `step` is ``plan_decision``, the backend's ``train``
        calls, then `finish_decision`; `mixgym.envs.vector.ToyVectorEnv` runs the middle for
        every sub-environment in one batched call."""
        if self._snapshot is None:
            raise RuntimeError("call reset() before step()")
        if self._done():
            raise RuntimeError("the episode has terminated (budget spent); call reset()")
        mixture = self.action_mapper(action)
        phase = self.phase
        end = self.backend.total_steps if phase is None else phase.end
        n_steps = min(self.steps_per_action, end - self.backend.step)
        if phase is not None:
            mixture = mask_mixture(mixture, phase)
        if self.budget == "compute":
            n_steps = min(n_steps, math.ceil(self.backend.total_steps - self.compute))
        baseline = None
        if self.twin is not None:
            assert self.baseline_mixture is not None
            baseline = self.baseline_mixture if phase is None else mask_mixture(self.baseline_mixture, phase)  # the baseline sees the agent's phases
        return DecisionPlan(mixture, int(n_steps), baseline)

    def will_evaluate(self, plan: DecisionPlan) -> bool:
        """Whether the decision `plan` ends with a held-out evaluation (every `eval_every`-th
        decision, and the last)."""
        total, steps_after = self.backend.total_steps, self.backend.step + plan.n_steps
        spent = steps_after >= total or (self.budget == "compute" and steps_after + self._whatif["compute"] >= total)
        return spent or (self._decision + 1) % self.eval_every == 0

    def finish_decision(
        self, plan: DecisionPlan, stats: TrainStats, train_time: float = 0.0, twin_time: float = 0.0
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The second half of `step`, once the backend (and the twin) trained as `plan` says:
        evaluate, observe, pay the reward; returns `step`'s 5-tuple."""
        before = self._snapshot
        assert before is not None
        mixture = plan.mixture
        bad = (stats.samples > 0) & ~np.isfinite(stats.train_loss)
        if bad.any():
            names = [d for d, b in zip(self.domains, bad) if b]
            raise FloatingPointError(f"non-finite training loss at step {self.backend.step} in domain(s) {names}")
        t1 = time.perf_counter()
        self._decision += 1
        terminated = self._done()
        fresh = terminated or self._decision % self.eval_every == 0
        eval_loss = self._evaluate(self.backend) if fresh else before.eval_loss
        t2 = time.perf_counter()
        baseline_eval, twin_eval_time = before.baseline_eval_loss, 0.0
        if self.twin is not None and fresh:
            baseline_eval = self._evaluate(self.twin)
            twin_eval_time = time.perf_counter() - t2
        sampled = stats.samples > 0
        after = Snapshot(
            step=self.backend.step,
            mixture=mixture,
            train_loss=np.where(sampled, stats.train_loss, before.train_loss),
            samples=stats.samples,
            eval_loss=eval_loss,
            weights=self.backend.weight_stats() if self._has_weights else None,
            gradients=self.backend.domain_gradients() if self._needs_gradients else None,
            token_ids=stats.token_ids,
            progress=self.backend.step / self.backend.total_steps,
            step_weight_norms=stats.step_weight_norms,
            cumulative_samples=before.cumulative_samples + stats.samples,
            baseline_eval_loss=baseline_eval,
        )
        t3 = time.perf_counter()
        result = call_reward(self.reward_fn, before, after, self)
        t4 = time.perf_counter()
        self._tokens += stats.tokens
        self._snapshot = after
        obs = self._observation(after, before.train_loss)
        self.reward_components = dict(result.components)
        info = self._info(mixture, after, fresh=fresh, learning_rate=stats.learning_rate)
        last = {
            "train": train_time, "eval": t2 - t1, "twin": twin_time + twin_eval_time,
            "signals": t3 - t2 - twin_eval_time, "reward": t4 - t3, "whatif": self._whatif_wall,
        }
        self._whatif_wall = 0.0
        total = self.timings["total"]
        self.timings = {"last": last, "total": {key: total.get(key, 0.0) + value for key, value in last.items()}}
        if self.info_timings:
            info.update({f"timings/{key}": np.float64(value) for key, value in last.items()})
        self._shown = False
        if self.render_mode == "human":
            self.render()
        return obs, result.value, terminated, False, info

    def _observation(self, snap: Snapshot, previous_train_loss: np.ndarray) -> np.ndarray:
        """The layout's features, then the availability mask of the next decision's phase."""
        obs = self.layout.build(snap, previous_train_loss, self._initial_eval)
        phase = self.phase
        return obs if phase is None else np.concatenate([obs, phase.available.astype(np.float32)])

    def _info(self, mixture: np.ndarray, snap: Snapshot, fresh: bool, learning_rate: float) -> dict[str, Any]:
        """The flat ``info`` dict (see the class docstring's Info table)."""
        total = snap.samples.sum()
        info: dict[str, Any] = {
            "mixture": np.asarray(mixture, dtype=np.float64),
            "realised_mixture": snap.samples / total if total > 0 else np.zeros(len(snap.samples)),
            "train_loss": snap.train_loss,
            "eval_loss": snap.eval_loss.copy(),  # not the object an earlier info holds (Gymnasium's checker)
            "eval_fresh": np.bool_(fresh),
            "objective": np.float64(self.objective(snap.eval_loss)),
            "samples": np.asarray(snap.samples, dtype=np.int64),
            "tokens": np.int64(self._tokens),
            "step": np.int64(snap.step),
            "decision": np.int64(self._decision),
            "learning_rate": np.float64(learning_rate),
            "compute/main": np.int64(snap.step),
            "compute/whatif": np.float64(self._whatif["compute"]),
            "compute/total": np.float64(snap.step + self._whatif["compute"]),
            "compute/probe_steps": np.int64(self._whatif["probe_steps"]),
            "compute/whatif_calls": np.int64(self._whatif["calls"]),
        }
        if self.phases is not None:
            index = phase_index(self.phases, snap.step)
            info["phase"] = np.int64(index)
            info["available"] = self.phases[index].available.astype(np.float64)
        for name, value in self.reward_components.items():
            info[f"reward/{name}"] = np.asarray(value, dtype=np.float64) if np.ndim(value) else np.float64(value)
        return info

    def _evaluate(self, backend: Backend) -> np.ndarray:
        losses = backend.evaluate()
        values = np.array([losses[d] for d in backend.domains], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            names = [d for d, v in zip(backend.domains, values) if not np.isfinite(v)]
            which = "baseline twin's " if backend is self.twin else ""
            raise FloatingPointError(f"non-finite {which}held-out loss at step {backend.step} in domain(s) {names}")
        return values

    def render(self) -> str | np.ndarray | None:
        """The last decision: ``"ansi"`` gives a text table of mixture and held-out losses;
        ``"human"`` prints that table once per decision (reset and step call it themselves, so a
        client's own ``render()`` call after them prints nothing more) and returns None;
        ``"rgb_array"`` a (120, 24K, 3) image with one bar per domain, its height the
        domain's weight (blue) beside its held-out loss relative to reset (orange, capped at 1).
        """
        if self.render_mode is None or self._snapshot is None:
            return None
        snap = self._snapshot
        k = len(self.domains)
        mixture = snap.mixture if snap.mixture is not None else np.full(k, 1.0 / k)
        if self.render_mode in ("ansi", "human"):
            rows = [f"step {snap.step}/{self.backend.total_steps}"]
            rows += [f"{d:>12s}  weight {w:6.3f}  eval loss {e:8.4f}" for d, w, e in zip(self.domains, mixture, snap.eval_loss)]
            if self.render_mode == "human":
                if not self._shown:
                    print("\n".join(rows), flush=True)
                    self._shown = True
                return None
            return "\n".join(rows)
        height, width = 120, 24
        image = np.full((height, width * k, 3), 255, dtype=np.uint8)
        relative = np.clip(snap.eval_loss / self._initial_eval, 0.0, 1.0)
        for i, (weight, loss) in enumerate(zip(mixture, relative)):
            for offset, value, colour in ((2, weight, (31, 119, 180)), (12, loss, (255, 127, 14))):
                top = height - int(round(value * (height - 4)))
                image[top:, i * width + offset : i * width + offset + 9] = colour
        return image

    def state_dict(self) -> dict[str, Any]:
        """The environment's state (backend, snapshot, counters, RNG, timings) for checkpoints."""
        return {
            "backend": self.backend.state_dict(),
            "twin": None if self.twin is None else self.twin.state_dict(),
            "snapshot": self._snapshot,
            "initial_eval": getattr(self, "_initial_eval", None),
            "decision": getattr(self, "_decision", 0),
            "tokens": getattr(self, "_tokens", 0),
            "np_random": self.np_random.bit_generator.state,
            "timings": self.timings,
            "reward_components": self.reward_components,
            "whatif": dict(self._whatif),
            "whatif_cache": self.backend.whatif_cache.state_dict() if hasattr(self.backend, "whatif_cache") else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict`."""
        self.backend.load_state_dict(state["backend"])
        if (state.get("twin") is None) != (self.twin is None):
            have = "runs" if self.twin is not None else "does not run"
            raise ValueError(f"state and environment disagree on the baseline twin: this env {have} one (reward {self.reward_fn!r})")
        if self.twin is not None:
            self.twin.load_state_dict(state["twin"])
        self._snapshot = state["snapshot"]
        self._initial_eval = state["initial_eval"]
        self._decision = state["decision"]
        self._tokens = state["tokens"]
        self.np_random.bit_generator.state = state["np_random"]
        self.timings = state["timings"]
        self.reward_components = state.get("reward_components", {})
        self._whatif = dict(state.get("whatif") or {"compute": 0.0, "probe_steps": 0, "calls": 0})
        self._whatif_wall = 0.0
        if hasattr(self.backend, "whatif_cache"):
            self.backend.whatif_cache.load_state_dict(state.get("whatif_cache", {}))


def _request_options(request: WhatIfRequest) -> dict[str, Any]:
    """The request's `split` and `per_sequence` as keywords, only when not their defaults, so
    that a backend written before them (no such parameters) still answers plain requests."""
    options: dict[str, Any] = {"split": request.split} if request.split != "eval" else {}
    return {**options, "per_sequence": True} if request.per_sequence else options
