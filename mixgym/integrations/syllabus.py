"""Syllabus curricula as mixing agents, and mixgym's mixers as Syllabus curricula.

Syllabus (Sullivan et al., "Syllabus: Portable Curricula for Reinforcement Learning Agents",
arXiv 2411.11318; code RyanNavillus/Syllabus, ``pip install syllabus-rl``) keeps a curriculum
-- a distribution over a `TaskSpace` of tasks, updated from what the agent's episodes report --
apart from the RL loop. A data mixture is a distribution over domains, so each domain is a
task here, and any curriculum that keeps a sampling distribution (``_sample_distribution``,
which Syllabus asks of every curriculum that "maintains a true probability distribution") is
a mixing policy: its distribution is the mixture of the next decision.

How a decision reaches the curriculum (`CurriculumMixer.observe`). Every domain trained in
the decision (``info["samples"] > 0``) has played its task for that decision:

- its score is the per-domain ``signal``: ``"loss_drop"`` (default) the relative decrease of
  the domain's training loss over the decision, ``(before - after) / before`` (learning
  progress made on the domain); ``"loss"`` its training loss (a domain the model still finds
  hard scores high, as in ODM's bandits);
- its progress, Syllabus's success flag, is 1.0 when the loss fell and 0.0 otherwise;
- the curriculum then gets Syllabus's three updates for the domain, in the order its
  environment wrappers send them: ``update_on_step(task, None, score, ...)`` (only when it
  ``requires_step_updates``), ``update_task_progress(task, progress)`` and, since a decision
  ends that domain's "episode", ``update_on_episode(score, steps, task, progress)``.

Named curricula (``make_agent("syllabus:<name>", env)``; the bench and the CLI take the same
names): ``syllabus:domain-randomization`` (uniform, Syllabus's baseline),
``syllabus:learning-progress`` (`OnlineLearningProgress`, Kanitscheider et al. 2021, updated
once a decision: ``update_interval`` = K episodes), ``syllabus:plr`` (Prioritized Level Replay,
Jiang et al. 2021: Syllabus's PLR `TaskSampler` -- rank-transformed scores, temperature 0.1,
staleness 0.1 -- fed the per-domain score; Syllabus's PLR wrappers compute scores from a
value function the mixer does not have, and ``DirectPrioritizedLevelReplay`` in syllabus-rl
0.7 calls a method its sampler lacks, so the sampler is used directly). Any other curriculum
object drives an env through `curriculum_agent`.

A saved agent holds its options and the per-decision scores of the run in progress; loading
replays them into a fresh curriculum (the curricula named here are deterministic given their
updates), so no pickle is involved.

>>> from mixgym.envs import MixingEnv
>>> from mixgym.agents import evaluate, make_agent
>>> env = MixingEnv(action_map="simplex", total_steps=60)
>>> agent = make_agent("syllabus:plr", env)
>>> results = evaluate(agent, env, episodes=1, seed=0)
>>> round(float(agent.predict(None)[0].sum()), 5)
1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import DependencyNotInstalled

from mixgym.agents.base import EnvFacts
from mixgym.agents.mixer import Mixer, MixerAgent, MixerConfig, as_json, register_mixer
from mixgym.validation import number

SIGNALS = ("loss_drop", "loss")


def import_syllabus() -> Any:
    """The ``syllabus`` package, imported without its side effect on numpy.

    Importing ``syllabus.curricula`` (its PLR sampler, syllabus-rl 0.7) runs
    ``np.seterr(all="raise")``, so every later floating-point warning anywhere in the process --
    an ``exp`` that underflows to 0 in DoReMi, a 0/0 that a caller handles -- becomes an
    exception. This imports it and puts numpy's settings back; import Syllabus through it (or
    before anything else, knowing that).
    """
    settings = np.geterr()
    try:
        import syllabus.core
        import syllabus.curricula
        import syllabus.task_space
    except ImportError as error:
        raise DependencyNotInstalled(
            f'Syllabus curricula need syllabus-rl ({error.name} is missing): pip install "mixgym[syllabus]"'
        ) from error
    finally:
        np.seterr(**settings)
    if not _UNLINKED:
        # importing syllabus.core makes a shared-memory list at class level that nothing frees, so
        # every process (bench workers too) would end with the resource tracker's "leaked
        # shared_memory" warning; unlinking its name keeps the mapping valid in this process
        syllabus.core.GymnasiumEvaluationWrapper.env_count.shm.unlink()
        _UNLINKED.append(True)
    return syllabus


_UNLINKED: list[bool] = []


def domain_task_space(domains: list[str] | tuple[str, ...]) -> Any:
    """The K domains as a Syllabus `DiscreteTaskSpace`: task i is domain i, named by it."""
    syllabus = import_syllabus()
    return syllabus.task_space.DiscreteTaskSpace(len(domains), list(domains))


def domain_signals(before: np.ndarray, info: dict[str, Any], signal: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-domain score, per-domain progress) of one decision (see the module docstring).

    Args:
        before: each domain's training loss before the decision (``info["train_loss"]`` of
            the previous step or of ``reset``).
        info: the decision's ``info``.
        signal: ``"loss_drop"`` or ``"loss"``.
    """
    after = np.asarray(info["train_loss"], dtype=np.float64)
    drop = (before - after) / np.maximum(np.abs(before), 1e-12)
    score = drop if signal == "loss_drop" else after
    return score, (after < before).astype(np.float64)


class CurriculumMixer:
    """A Syllabus curriculum as a mixgym `Mixer`: the curriculum's sampling distribution is the
    mixture; each decision updates it per domain (module docstring).

    Args:
        build: makes a fresh curriculum (called at every run's start and on load).
        signal: the per-domain score, one of `SIGNALS`.
        floor: share of the mixture spread uniformly over the K domains (0: the curriculum's
            distribution as it is).
    """

    def __init__(self, build: Callable[[], Any], num_domains: int, signal: str = "loss_drop", floor: float = 0.0):
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {list(SIGNALS)}, got {signal!r}")
        self._build = build
        self.num_domains = num_domains
        self.signal = signal
        self.floor = floor
        self.curriculum = build()
        self.history: list[dict[str, Any]] = []
        self._before: dict[int, np.ndarray] = {}
        self._last_step: dict[int, int] = {}

    def reset(self, info: dict[str, Any]) -> None:
        """A new run: a fresh curriculum (as ODM's bandits restart with every run)."""
        self.curriculum = self._build()
        self.history = []
        self._before = {}
        self.start_run(info)

    def start_run(self, info: dict[str, Any], env_id: int = 0) -> None:
        """Run `env_id` (re)starts and the curriculum goes on: one curriculum shared by the runs of
        a vector env, as Syllabus keeps one curriculum in sync across its environments."""
        self._before[env_id] = np.asarray(info["train_loss"], dtype=np.float64)
        self._last_step[env_id] = 0

    def observe(self, info: dict[str, Any], env_id: int = 0) -> None:
        """A decision of run `env_id` finished: update the curriculum for each domain it trained."""
        if env_id not in self._before:
            raise ValueError(f"the curriculum mixer observed run {env_id} before it started (reset or start_run)")
        score, progress = domain_signals(self._before[env_id], info, self.signal)
        trained = np.asarray(info["samples"]) > 0
        steps = int(info["step"]) - self._last_step[env_id]
        record = {"env": env_id, "trained": trained.tolist(), "score": as_json(score), "progress": as_json(progress)}
        self._update(record, steps, info)
        self.history.append({**record, "steps": steps})
        self._before[env_id] = np.asarray(info["train_loss"], dtype=np.float64)
        self._last_step[env_id] = int(info["step"])

    def _update(self, record: dict[str, Any], steps: int, info: dict[str, Any] | None) -> None:
        curriculum = self.curriculum
        for task, trained in enumerate(record["trained"]):
            if not trained:
                continue
            score, progress = record["score"][task], record["progress"][task]
            env_id = record["env"]
            if curriculum.requires_step_updates:
                curriculum.update_on_step(task, None, score, False, False, info or {}, progress, env_id=env_id)
            curriculum.update_task_progress(task, progress, env_id=env_id)
            curriculum.update_on_episode(score, max(steps, 1), task, progress, env_id=env_id)

    def mixture(self) -> np.ndarray:
        curriculum = self.curriculum
        k = self.num_domains
        if curriculum._should_use_startup_sampling():  # Syllabus's own start: uniform random tasks
            distribution = np.full(k, 1.0 / k)
        else:
            try:
                distribution = np.asarray(curriculum._sample_distribution(), dtype=np.float64)
            except NotImplementedError:
                raise ValueError(
                    f"{type(curriculum).__name__} keeps no sampling distribution (_sample_distribution), "
                    "so it cannot give a mixture"
                ) from None
        if distribution.shape != (k,) or not np.all(np.isfinite(distribution)) or distribution.sum() <= 0:
            distribution = np.full(k, 1.0 / k)  # PLR before any domain is scored: all unseen, all equal
        distribution = np.clip(distribution, 0.0, None)
        distribution = distribution / distribution.sum()
        return (1.0 - self.floor) * distribution + self.floor / k

    def state_dict(self) -> dict[str, Any]:
        runs = {str(env): {"before": as_json(self._before[env]), "step": self._last_step[env]} for env in self._before}
        return {"history": self.history, "runs": runs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curriculum = self._build()
        self.history = []
        for record in state["history"]:
            if len(record["trained"]) != self.num_domains:
                raise ValueError(f"saved curriculum history is not for K={self.num_domains} domains")
            self.mixture()  # a run asks for the mixture before each decision (OnlineLearningProgress
            # takes its baseline at the first ask), so the replay asks too
            self._update(record, int(record["steps"]), None)
            self.history.append(dict(record))
        runs = state["runs"]
        self._before = {int(env): np.asarray(run["before"], dtype=np.float64) for env, run in runs.items()}
        self._last_step = {int(env): int(run["step"]) for env, run in runs.items()}


@dataclass(frozen=True)
class SyllabusConfig(MixerConfig):
    """Options every Syllabus agent has."""

    signal: str = field(
        default="loss_drop",
        metadata={"help": "per-domain score: 'loss_drop' (relative fall of the training loss) or 'loss'"},
    )
    floor: float = field(default=0.0, metadata={"help": "share of the mixture spread uniformly (0: none)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {list(SIGNALS)}, got {self.signal!r}")
        number("floor", self.floor, 0.0, 1.0)


@dataclass(frozen=True)
class LearningProgressConfig(SyllabusConfig):
    """Options of ``syllabus:learning-progress`` (Syllabus's `OnlineLearningProgress` defaults)."""

    ema_alpha: float = field(default=0.1, metadata={"help": "EMA rate of the fast success estimate (Syllabus: 0.1)"})
    p_theta: float = field(default=0.1, metadata={"help": "reweighting of success rates (Syllabus: 0.1)"})
    uniform_prob: float = field(default=0.25, metadata={"help": "share mixed with uniform (Syllabus: 0.25)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        number("ema_alpha", self.ema_alpha, above=0.0, maximum=1.0)
        number("p_theta", self.p_theta, 0.0, below=0.5)
        number("uniform_prob", self.uniform_prob, 0.0, 1.0)


@dataclass(frozen=True)
class PlrConfig(SyllabusConfig):
    """Options of ``syllabus:plr`` (Syllabus's PLR `TaskSampler` defaults)."""

    temperature: float = field(default=0.1, metadata={"help": "rank-transform temperature (PLR: 0.1)"})
    staleness_coef: float = field(default=0.1, metadata={"help": "weight of staleness vs score (PLR: 0.1)"})
    alpha: float = field(default=1.0, metadata={"help": "EMA rate of a domain's score (Syllabus: 1.0, the newest)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        number("temperature", self.temperature, above=0.0)
        number("staleness_coef", self.staleness_coef, 0.0, 1.0)
        number("alpha", self.alpha, above=0.0, maximum=1.0)


def _plr_curriculum(task_space: Any, config: PlrConfig) -> Any:
    """Syllabus's PLR sampler behind the `Curriculum` API, scored by the mixer's signal."""
    syllabus = import_syllabus()

    class ScoredLevelReplay(syllabus.core.Curriculum):
        def __init__(self) -> None:
            super().__init__(task_space)
            self.sampler = syllabus.curricula.TaskSampler(
                list(range(self.num_tasks)),  # the encoded tasks: domain indices
                1,
                strategy="value_l1",  # only names the score PLR would compute; the mixer gives it
                temperature=config.temperature,
                staleness_coef=config.staleness_coef,
                alpha=config.alpha,
            )

        def update_on_episode(self, episode_return, length, task, progress, env_id=None) -> None:
            super().update_on_episode(episode_return, length, task, progress, env_id)
            self.sampler.update_task_score(0, task, episode_return, episode_return, 1)
            self.sampler._update_staleness(task)

        def _sample_distribution(self) -> list[float]:
            if self.sampler.unseen_task_weights.all():  # nothing scored yet: PLR's weights are 0/0
                return [1.0 / self.num_tasks] * self.num_tasks
            return list(self.sampler.sample_weights())

    return ScoredLevelReplay()


def _builders() -> dict[str, Callable[[Any, Any, EnvFacts], Any]]:
    def domain_randomization(space: Any, config: SyllabusConfig, facts: EnvFacts) -> Any:
        return import_syllabus().curricula.DomainRandomization(space)

    def learning_progress(space: Any, config: LearningProgressConfig, facts: EnvFacts) -> Any:
        return import_syllabus().curricula.OnlineLearningProgress(
            space,
            ema_alpha=config.ema_alpha,
            p_theta=config.p_theta,
            uniform_prob=config.uniform_prob,
            update_interval=facts.num_domains,
        )

    def plr(space: Any, config: PlrConfig, facts: EnvFacts) -> Any:
        return _plr_curriculum(space, config)

    return {"domain-randomization": domain_randomization, "learning-progress": learning_progress, "plr": plr}


CURRICULA: dict[str, tuple[str, type]] = {
    "domain-randomization": ("Syllabus's DomainRandomization: the uniform mixture", SyllabusConfig),
    "learning-progress": ("Syllabus's OnlineLearningProgress over domains", LearningProgressConfig),
    "plr": ("Syllabus's Prioritized Level Replay sampler over domains", PlrConfig),
}
"""The curricula registered as agents ``syllabus:<name>``: (summary, options)."""


def _mixer_for(name: str, config: SyllabusConfig, facts: EnvFacts) -> CurriculumMixer:
    build = _builders()[name]
    space = domain_task_space(facts.domains)
    return CurriculumMixer(lambda: build(space, config, facts), facts.num_domains, config.signal, config.floor)


def _register(name: str, summary: str, config: type) -> None:
    def build(env: gym.Env | None, cfg: SyllabusConfig, facts: EnvFacts) -> Mixer:
        return _mixer_for(name, cfg, facts)

    def restore(cfg: SyllabusConfig, facts: EnvFacts, state: dict[str, Any]) -> Mixer:
        mixer = _mixer_for(name, cfg, facts)
        mixer.load_state_dict(state)
        return mixer

    register_mixer(f"syllabus:{name}", summary + ' (pip install "mixgym[syllabus]")', config, build, restore)


for _name, (_summary, _config) in CURRICULA.items():
    _register(_name, _summary, _config)


def curriculum_agent(
    curriculum: Any | Callable[[], Any], env: gym.Env, signal: str = "loss_drop", floor: float = 0.0
) -> MixerAgent:
    """Any Syllabus curriculum (or a function making a fresh one for each run) as an agent on
    `env`, over the env's domains. Such an agent is for driving runs; it is not saved (its
    curriculum is the caller's object) -- register it with `register_mixer` to save it.

    >>> from mixgym.envs import MixingEnv
    >>> syllabus = import_syllabus()
    >>> env = MixingEnv(action_map="simplex", total_steps=20)
    >>> space = domain_task_space(env.domains)
    >>> agent = curriculum_agent(lambda: syllabus.curricula.DomainRandomization(space), env)
    >>> agent.predict(None)[0]
    array([0.2, 0.2, 0.2, 0.2, 0.2], dtype=float32)
    """
    facts = EnvFacts.of(env)
    build = curriculum if callable(curriculum) and not hasattr(curriculum, "task_space") else (lambda: curriculum)
    mixer = CurriculumMixer(build, facts.num_domains, signal, floor)
    if mixer.curriculum.num_tasks != facts.num_domains:
        raise ValueError(
            f"the curriculum's task space has {mixer.curriculum.num_tasks} tasks, the env {facts.num_domains} domains "
            f"{list(facts.domains)}; build it on domain_task_space(env.unwrapped.domains)"
        )
    config = SyllabusConfig(signal=signal, floor=floor)
    return MixerAgent(f"syllabus:{type(mixer.curriculum).__name__}", config, mixer, facts, env)


def mixer_curriculum(agent: MixerAgent) -> Any:
    """The reverse: a mixgym mixer agent (``odm``, ``exp3``, ``doremi``, a static mixture...) as
    a Syllabus `Curriculum` over its domains, for a loop driven by Syllabus. Its distribution
    is the mixer's mixture; ``update_on_step`` passes the step's ``info`` to the mixer when it
    carries mixgym's per-domain keys (``train_loss``, ``samples``, ``step``), so such a loop
    must report them."""
    syllabus = import_syllabus()
    keys = ("train_loss", "samples", "step")

    class MixerCurriculum(syllabus.core.Curriculum):
        def __init__(self) -> None:
            super().__init__(domain_task_space(agent.facts.domains))
            self.agent = agent

        @property
        def requires_step_updates(self) -> bool:
            return True

        def update_on_step(self, task, obs, rew, term, trunc, info, progress, env_id=None) -> None:
            if all(key in info for key in keys):
                self.agent.observe(info)

        def _sample_distribution(self) -> list[float]:
            return [float(x) for x in self.agent.mixer.mixture()]

    return MixerCurriculum()


__all__ = [
    "CURRICULA",
    "CurriculumMixer",
    "LearningProgressConfig",
    "PlrConfig",
    "SyllabusConfig",
    "curriculum_agent",
    "domain_signals",
    "domain_task_space",
    "import_syllabus",
    "mixer_curriculum",
]
