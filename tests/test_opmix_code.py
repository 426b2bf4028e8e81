"""OP-Mix as its code runs it: the run restarted after the prefix, the stage-2 probe share, the fit
on the objective, candidates scored on a validation split, probe budgets and the re-planned
equal-compute run; the backends' validation split and restart they rest on."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from mixgym.agents import evaluate, make_agent
from mixgym.agents.opmix import OpMixConfig, equal_compute_steps, propose
from mixgym.envs import MixingEnv
from mixgym.llm_backend import Signal
from mixgym.llm_backend.toy import ToyBackend

FAST = {"fit_restarts": 3, "lr_scale": 0.5, "probe_fraction": 0.05}


# --------------------------------------------------------------------------- the validation split
def test_the_toy_validation_split_is_its_own_rows_and_leaves_the_task_unchanged() -> None:
    backend = ToyBackend(total_steps=50)
    task = backend._task
    assert task.valid_x.shape == task.eval_x.shape and not task.valid_x.flags.writeable
    for k in range(len(backend.domains)):  # no validation example is a scoring, probe or training example
        rows = {row.tobytes() for row in task.valid_x[k]}
        others = np.concatenate([task.eval_x[k], task.probe_x[k], task.train[:, : task.input_dim]])
        assert len(rows) == len(task.valid_x[k]) and rows.isdisjoint(row.tobytes() for row in others)
    backend.train(np.full(5, 0.2), 50)
    scoring, validation = backend.evaluate(), backend.evaluate(split="validation")
    assert scoring == backend.evaluate(split="eval") and scoring.keys() == validation.keys()
    assert all(0.5 < validation[d] / scoring[d] < 2 for d in scoring) and scoring != validation
    weights = backend.config.objective_weights()
    assert backend.objective() == pytest.approx(weights @ list(scoring.values()))
    assert backend.objective("validation") == pytest.approx(weights @ list(validation.values()))
    with pytest.raises(ValueError, match="unknown held-out split 'test'"):
        backend.evaluate(split="test")


def test_what_if_scores_on_the_split_asked_for() -> None:
    env = MixingEnv(total_steps=100, action_map="simplex", reward="eval_loss")
    env.reset(seed=0)
    env.step(np.full(5, 0.2))
    probes, candidates = np.eye(5)[:2], np.array([[1.0, 0.0], [0.5, 0.5]])
    on_eval = env.what_if(probes, 5, candidates, lr_scale=0.5)
    on_validation = env.what_if(probes, 5, candidates, lr_scale=0.5, split="validation")
    backend = env.unwrapped.backend
    assert np.allclose(on_validation.base_loss, list(backend.evaluate(split="validation").values()))
    assert np.allclose(on_eval.base_loss, list(backend.evaluate().values()))
    assert not np.allclose(on_eval.candidate_loss, on_validation.candidate_loss)

    class NoValidation(ToyBackend):
        signals = ToyBackend.signals - {Signal.VALIDATION}

    bare = MixingEnv(backend=NoValidation(total_steps=100), action_map="simplex", reward="eval_loss")
    bare.reset(seed=0)
    with pytest.raises(ValueError, match="split='validation'.* 'validation' signal, which NoValidation"):
        bare.what_if(probes, 5, candidates, split="validation")
    with pytest.raises(ValueError, match="score_split='validation' needs a backend with the 'validation' signal"):
        make_agent("opmix", bare)
    make_agent("opmix", bare, score_split="eval")  # the code's choice still runs


def test_opmix_scores_its_candidates_on_the_validation_split() -> None:
    histories = {}
    for split in ("validation", "eval"):
        env = MixingEnv(total_steps=100, action_map="simplex", reward="eval_loss")
        agent = make_agent("opmix", env, seed=0, score_split=split, **FAST)
        evaluate(agent, env, episodes=1, seed=1)
        histories[split] = agent.mixer.history[0]
    assert histories["validation"]["split"] == "validation"
    assert histories["validation"]["probes"] == histories["eval"]["probes"]
    assert not np.allclose(histories["validation"]["candidate_loss"], histories["eval"]["candidate_loss"])


def test_doremi_can_decide_on_the_validation_split() -> None:
    env = MixingEnv(total_steps=60, action_map="simplex", reward="eval_loss")
    finals = {}
    for signal in ("eval_loss", "validation_loss"):
        agent = make_agent("doremi", env, signal=signal, reference_seeds=(7,))
        finals[signal] = evaluate(agent, env, episodes=1, seed=0).per_domain("mixture").iloc[-1].to_numpy()
    assert np.isclose(finals["validation_loss"].sum(), 1) and not np.allclose(finals["eval_loss"], finals["validation_loss"])

    class NoValidation(ToyBackend):
        signals = ToyBackend.signals - {Signal.VALIDATION}

    with pytest.raises(ValueError, match="signal='validation_loss' needs a backend with the 'validation' signal"):
        make_agent("doremi", MixingEnv(backend=NoValidation(total_steps=60), action_map="simplex"), signal="validation_loss")


# --------------------------------------------------------------------------- the restart
def cosine(peak: float, step: int, length: int) -> float:
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(step / length, 1.0))))


def test_a_planned_restart_anneals_the_prefix_then_starts_again_at_the_peak() -> None:
    backend = ToyBackend(total_steps=1000)
    peak = backend.config.learning_rate
    plain = [backend.learning_rate(s) for s in (0, 199, 200, 999)]
    backend.plan_restart(200)
    assert backend.learning_rate(0) == peak and np.isclose(backend.learning_rate(199), cosine(peak, 199, 200))
    assert backend.learning_rate(200) == peak and np.isclose(backend.learning_rate(999), cosine(peak, 799, 800))
    backend.train(np.full(5, 0.2), 200)
    assert np.abs(backend._velocity).sum() > 0
    state = backend.state_dict()
    backend.restart_optimizer()
    assert not backend._velocity.any()
    copy = ToyBackend(total_steps=1000)
    copy.load_state_dict(state)
    assert copy.learning_rate(200) == peak  # the plan is part of the saved state
    backend.reset(seed=0)
    assert [backend.learning_rate(s) for s in (0, 199, 200, 999)] == plain  # reset clears it
    with pytest.raises(ValueError, match="restart step must be"):
        backend.plan_restart(1000)


def test_opmix_restarts_the_run_after_its_prefix_as_the_code_does() -> None:
    class Recording(ToyBackend):
        def restart_optimizer(self) -> None:
            self.restarts.append(self.step)
            super().restart_optimizer()

        def train(self, mixture: np.ndarray, n_steps: int):
            stats = super().train(mixture, n_steps)
            self.rates[self.step] = stats.learning_rate
            return stats

    runs = {}
    for restart in (False, True):
        backend = Recording(total_steps=200)
        backend.restarts, backend.rates = [], {}
        env = MixingEnv(backend=backend, action_map="simplex", reward="eval_loss", steps_per_action=10)
        agent = make_agent("opmix", env, seed=0, restart_after_prefix=restart, **FAST)
        runs[restart] = evaluate(agent, env, episodes=1, seed=3).decisions.set_index("step"), backend
        assert agent.mixer.history[0]["restarted"] is restart and agent.mixer.history[0]["step"] == 40
    peak = ToyBackend().config.learning_rate
    (restarted, backend), (continuous, plain) = runs[True], runs[False]
    assert backend.restarts == [40] and plain.restarts == []  # a fresh optimizer where the final stage starts
    # the prefix's schedule is annealed over its 40 steps; the final stage's starts at the peak
    assert np.isclose(backend.rates[40], cosine(peak, 39, 40)) and np.isclose(backend.rates[50], cosine(peak, 9, 160))
    assert np.isclose(plain.rates[50], cosine(peak, 49, 200))
    assert not np.isclose(restarted.loc[200, "objective"], continuous.loc[200, "objective"])


def test_the_restart_is_refused_where_the_backend_cannot_restart() -> None:
    class NoRestart(ToyBackend):
        signals = ToyBackend.signals - {Signal.RESTART}

    with pytest.raises(ValueError, match="restart_after_prefix=True needs a backend with the 'restart' signal"):
        make_agent("opmix", MixingEnv(backend=NoRestart(total_steps=100), action_map="simplex"), restart_after_prefix=True)


def test_the_hf_backend_restarts_its_schedule_and_optimizer() -> None:
    torch = pytest.importorskip("torch")
    from mixgym.llm_backend.hf import HFBackend

    torch.set_num_threads(1)
    backend = HFBackend(model="pythia-tiny", total_steps=20, seq_len=32, micro_batch_size=2, grad_accumulation=1)
    assert {Signal.RESTART, Signal.VALIDATION} <= backend.signals
    backend.plan_restart(10)
    schedule = backend.scheduler.lr_lambdas[0]
    assert schedule(9) == pytest.approx(backend.config.min_lr_ratio) and schedule(10) == 1.0
    backend.train(np.full(5, 0.2), 10)
    state = backend.state_dict()
    assert backend.optimizer.state and state["restart"] == 10
    backend.restart_optimizer()
    assert not backend.optimizer.state
    assert backend.optimizer.param_groups[0]["lr"] == pytest.approx(backend.config.learning_rate)  # step 10: peak
    copy = HFBackend(model="pythia-tiny", total_steps=20, seq_len=32, micro_batch_size=2, grad_accumulation=1)
    copy.load_state_dict(state)
    assert copy.scheduler.lr_lambdas[0](10) == 1.0 and copy.scheduler.lr_lambdas[0](9) == schedule(9)
    # the validation rows are the chunks after those that score the run
    scoring, validation = backend.evaluate(), backend.evaluate(split="validation")
    assert scoring.keys() == validation.keys() and scoring != validation
    for eval_batch, valid_batch in zip(backend._eval_batches, backend._valid_batches):
        assert not any(torch.equal(v, e) for v in valid_batch for e in eval_batch)


def test_hf_probes_mix_per_sequence() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from mixgym.llm_backend.hf_lora import _micro_batch

    class Stream:
        def __init__(self, value: int) -> None:
            self.value = value

        def take(self, count: int):
            return torch.full((count, 3), self.value)

    streams = [Stream(0), Stream(1), Stream(2)]
    assert _micro_batch(streams, np.int64(1), 2).tolist() == [[1] * 3] * 2
    assert _micro_batch(streams, np.array([2, 0, 2]), 3)[:, 0].tolist() == [2, 0, 2]


# --------------------------------------------------------------------------- probes, fit, compute
def test_a_later_phase_of_several_new_domains_probes_for_half_of_it() -> None:
    phases = [(100, ["easy", "hard", "noise"]), (100, ["easy", "hard", "noise", "redundant", "conflict"])]
    env = MixingEnv(total_steps=200, action_map="simplex", phases=phases, reward="eval_loss")
    agent = make_agent("opmix", env, seed=0, fit_restarts=3, lr_scale=0.5)
    mixer = agent.mixer
    assert mixer.design(0, np.full(5, 0.2)).steps == 10  # pretrain_opm.py:68: 10% of the first phase
    second = mixer.design(1, np.array([1 / 3, 1 / 3, 1 / 3, 0, 0]))
    assert second.steps == 50 and len(second.probes) == 3  # the chain's stage 2: 5,000 of 10,000 steps


def test_the_fit_can_follow_the_objective_and_leave_junk_out() -> None:
    env = MixingEnv(total_steps=100, action_map="simplex", reward="eval_loss")
    agent = make_agent("opmix", env, seed=0, fit_weights="objective", **FAST)
    evaluate(agent, env, episodes=1, seed=0)
    record = agent.mixer.history[0]
    assert record["fitted_domains"] == [0, 1, 3, 4] and len(record["laws"]) == 4  # the noise domain is out
    slopes = np.random.default_rng(0).normal(size=(3, 4))
    prior = np.full(4, 0.25)
    assert np.allclose(propose(slopes, 0.05, prior), propose(slopes, 0.05, prior, weights=np.full(3, 1 / 3)), atol=1e-6)
    with pytest.raises(ValueError, match="fit_weights must be one of mean, objective"):
        OpMixConfig(fit_weights="worst")


def test_more_parameters_than_candidates_is_warned_about() -> None:
    env = MixingEnv(num_domains=22, total_steps=100, action_map="simplex")
    with pytest.warns(UserWarning, match="fits laws of 24 parameters .* to 12 candidates"):
        make_agent("opmix", env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_agent("opmix", MixingEnv(total_steps=100, action_map="simplex"))  # 6 parameters, 12 points


def test_probe_budget_sizes_the_probes_to_a_share_of_the_run() -> None:
    env = MixingEnv(total_steps=1000, action_map="simplex")
    agent = make_agent("opmix", env, probe_budget=0.4)
    design = agent.mixer.design(0, np.full(5, 0.2))
    one_more = env.what_if_cost(design.probes, design.steps + 1, design.candidates, rank=16)
    assert agent.mixer.planned_cost[0] <= 400 < one_more
    with pytest.raises(ValueError, match="probe_steps or probe_budget, not both"):
        OpMixConfig(probe_budget=0.4, probe_steps=10)


def test_equal_compute_replans_the_run_to_the_budget() -> None:
    def make(steps: int) -> MixingEnv:
        return MixingEnv(total_steps=steps, action_map="simplex")

    config = OpMixConfig(probe_budget=0.4)
    steps = equal_compute_steps(1000, make, config)

    def spent(n: int) -> float:
        return n + sum(make_agent("opmix", make(n), probe_budget=0.4).mixer.planned_cost)

    assert spent(steps) <= 1000 < spent(steps + 1) and 650 < steps < 750


def test_hf_what_if_on_the_validation_split_with_per_sequence_probes_leaves_the_run_as_it_was() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from mixgym.llm_backend.hf import HFBackend

    torch.set_num_threads(1)
    backend = HFBackend(model="pythia-tiny", total_steps=20, seq_len=32, micro_batch_size=2, grad_accumulation=2)
    backend.train(np.full(5, 0.2), 2)
    before = backend.state_dict()
    probes, candidates = np.vstack([np.full(5, 0.2), 0.9 * np.eye(5)[0] + 0.02]), np.array([[0.5, 0.5]])
    mixed = backend.simulate(probes, 2, candidates, split="validation", per_sequence=True)
    plain = backend.simulate(probes, 2, candidates, split="validation")
    assert np.allclose(mixed.base_loss, list(backend.evaluate(split="validation").values()), atol=1e-5)
    assert np.all(np.isfinite(mixed.candidate_loss)) and not np.allclose(mixed.probe_loss, plain.probe_loss)
    after = backend.state_dict()
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert before["step"] == after["step"] and before["streams"][0]["position"] == after["streams"][0]["position"]


def test_the_oracle_search_can_score_its_candidates_on_the_validation_split() -> None:
    from mixgym.agents import make_config
    from mixgym.llm_backend.oracle import schedule_objectives, search_schedule
    from mixgym.llm_backend.toy import ToyConfig

    config = ToyConfig(num_domains=3, total_steps=60)
    schedules = np.array([[[0.2, 0.3, 0.5]], [[0.6, 0.2, 0.2]]])
    on_eval = schedule_objectives(config, schedules, (0, 1))
    on_valid = schedule_objectives(config, schedules, (0, 1), split="validation")
    assert on_eval.shape == on_valid.shape == (2,) and not np.array_equal(on_eval, on_valid)  # other rows
    valid = search_schedule(config, seeds=(0, 1), n_random=1, rounds=1, use_cache=False, split="validation")
    assert valid.objective == pytest.approx(schedule_objectives(config, valid.mixtures[None], (0, 1), split="validation")[0])
    assert make_config("oracle", search_split="validation").search_split == "validation"
    with pytest.raises(ValueError, match=r"split"):
        search_schedule(config, seeds=(0, 1), split="test")
