"""The toy backend: it learns, its gradients are right, its oracle is non-uniform."""

import numpy as np
import pytest

from mixgym.envs import MixingEnv
from mixgym.llm_backend.base import domains_of, draw_domains
from mixgym.llm_backend.oracle import oracle_mixture, schedule_objective, search_schedule
from mixgym.llm_backend.toy import DomainSpec, ToyBackend, ToyConfig, default_domains


def test_held_out_loss_falls_for_every_learnable_domain() -> None:
    backend = ToyBackend()
    backend.reset(seed=0)
    before = backend.evaluate()
    backend.train(np.full(5, 0.2), 1000)
    after = backend.evaluate()
    for name in ("easy", "hard", "redundant", "conflict"):
        assert after[name] < 0.5 * before[name], (name, before[name], after[name])


def test_training_in_chunks_equals_one_call_bit_for_bit() -> None:
    one, many = ToyBackend(), ToyBackend()
    one.reset(seed=3)
    many.reset(seed=3)
    mixture = np.array([0.1, 0.2, 0.3, 0.2, 0.2])
    one.train(mixture, 30)
    for _ in range(3):
        many.train(mixture, 10)
    assert one.evaluate() == many.evaluate()


def test_the_run_trains_on_the_mixture_chosen_unless_forced_examples_are_asked_for() -> None:
    hard = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    plain = ToyBackend()
    assert np.array_equal(plain.train(hard, 10).samples, [0, 320, 0, 0, 0])  # 10 steps x 32 examples
    forced = ToyBackend(forced_fraction=22 / 144)
    # round(0.1528 * 320) = 49 forced examples: 9 per domain, 4 more to distinct domains
    nearly_hard = np.array([1e-9, 1.0 - 4e-9, 1e-9, 1e-9, 1e-9])
    samples = forced.train(nearly_hard, 10).samples
    assert samples.sum() == 320 and samples[[0, 2, 3, 4]].min() >= 9 and samples[[0, 2, 3, 4]].max() <= 10
    assert samples[1] == 320 - samples[[0, 2, 3, 4]].sum()
    # a domain of weight 0 (masked out by a phase) gets no forced example
    assert np.array_equal(forced.train(hard, 10).samples, [0, 320, 0, 0, 0])
    # the default keeps the fingerprint of every task defined before the option existed
    assert ToyConfig().fingerprint() == ToyConfig(forced_fraction=0.0).fingerprint() != forced.config.fingerprint()


def test_drawn_domains_follow_the_mixture_in_expectation() -> None:
    rng = np.random.default_rng(0)
    mixture = np.array([0.7, 0.2, 0.1])
    plain = np.bincount(draw_domains(mixture, 30_000, 0.0, rng), minlength=3) / 30_000
    assert np.allclose(plain, mixture, atol=0.01)
    forced = np.bincount(draw_domains(mixture, 30_000, 0.3, rng), minlength=3) / 30_000
    assert np.allclose(forced, 0.7 * mixture + 0.3 / 3, atol=0.01)
    tiny = draw_domains(np.array([0.998, 0.001, 0.001]), 7, 3 / 7, rng)  # 3 forced: one per domain
    assert sorted(np.bincount(tiny, minlength=3))[:2] == [1, 1]
    one_hot = draw_domains(np.array([1.0, 0.0, 0.0]), 7, 3 / 7, rng)  # weight 0: no forced draw
    assert np.bincount(one_hot, minlength=3).tolist() == [7, 0, 0]


def test_a_domain_of_weight_zero_is_never_drawn() -> None:
    # a phase masks the last domain out; the CDF's rounding error (0.1 + 0.2 + 0.7 < 1 in floats)
    # must not hand a uniform number just under 1 to it
    mixture = np.array([0.1, 0.2, 0.7 - 1e-12, 0.0])
    edges = np.array([0.0, 0.1, 0.3 - 1e-15, 0.31, 1.0 - 1e-13, np.nextafter(1.0, 0.0)])
    assert domains_of(mixture, edges).tolist() == [0, 1, 1, 2, 2, 2]
    assert domains_of(np.array([0.0, 0.5, 0.0, 0.5, 0.0]), np.array([0.0, 0.49, 0.5, 0.999999])).tolist() == [1, 1, 3, 3]
    rng = np.random.default_rng(0)
    assert not np.isin(draw_domains(np.array([0.0, 0.3, 0.0, 0.7, 0.0]), 50_000, 0.2, rng), [0, 2, 4]).any()
    backend = ToyBackend(num_domains=4)  # the toy's own draws (no forced share) too
    backend.reset(seed=0)
    assert backend.train(mixture, 50).samples[3] == 0


def test_train_reports_the_weight_norms_after_every_step() -> None:
    backend = ToyBackend()
    backend.reset(seed=2)
    before = backend.weight_stats().norms
    stats = backend.train(np.full(5, 0.2), 7)
    assert stats.step_weight_norms.shape == (8, 3)
    assert np.allclose(stats.step_weight_norms[0], before) and np.allclose(stats.step_weight_norms[-1], backend.weight_stats().norms)
    assert np.all(np.diff(stats.step_weight_norms, axis=0) != 0)  # every step moved every matrix


def test_domain_gradients_match_finite_differences() -> None:
    backend = ToyBackend(ToyConfig(num_domains=3, hidden_dim=8, input_dim=4, probe_size=16))
    backend.reset(seed=1)
    grads = backend.domain_gradients()
    task, theta = backend._task, backend._theta
    assert grads.shape == (3, theta.size)

    def probe_loss(domain: int) -> float:
        _, _, pred = backend._forward(task.probe_x[domain].astype(np.float64))
        return float(((pred - task.probe_y[domain]) ** 2).mean())

    rng = np.random.default_rng(0)
    original = theta.copy()
    for index in rng.choice(theta.size, 12, replace=False):
        for domain in range(3):
            eps = 1e-2
            theta[index] = original[index] + eps
            up = probe_loss(domain)
            theta[index] = original[index] - eps
            down = probe_loss(domain)
            theta[index] = original[index]
            assert (up - down) / (2 * eps) == pytest.approx(grads[domain, index], rel=0.05, abs=2e-4)


def test_state_dict_round_trip_resumes_bit_identically() -> None:
    backend = ToyBackend()
    backend.reset(seed=5)
    backend.train(np.full(5, 0.2), 40)
    state = backend.state_dict()
    first = backend.train(np.array([0.5, 0.2, 0.1, 0.1, 0.1]), 40)
    expected = backend.evaluate()
    resumed = ToyBackend()
    resumed.load_state_dict(state)
    second = resumed.train(np.array([0.5, 0.2, 0.1, 0.1, 0.1]), 40)
    assert resumed.evaluate() == expected
    assert np.array_equal(first.train_loss, second.train_loss)
    with pytest.raises(ValueError, match="fingerprint"):
        ToyBackend(num_domains=3).load_state_dict(state)


def test_any_k_from_2_to_32() -> None:
    for k in (2, 3, 7, 22, 32):
        backend = ToyBackend(num_domains=k, total_steps=20)
        assert len(backend.domains) == len(set(backend.domains)) == k
        backend.train(np.full(k, 1 / k), 20)
        assert backend.domain_gradients().shape[0] == k
    kinds = {spec.kind for spec in default_domains(22)}
    assert kinds == {"easy", "hard", "noise", "redundant", "conflict", "related"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_domains": 1}, r"num_domains must be an integer in \[2, 10000\], got 1"),
        ({"learning_rate": -1.0}, "learning_rate.*-1.0"),
        ({"target_weights": (1.0, 2.0)}, "target_weights"),
        ({"batch_size": 0}, "batch_size.*0"),
        ({"forced_fraction": 1.5}, "forced_fraction.*1.5"),
        ({"forced_fraction": -0.1}, "forced_fraction.*-0.1"),
    ],
)
def test_bad_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ToyConfig(**kwargs)


def test_bad_domain_spec_and_mixture_raise() -> None:
    with pytest.raises(ValueError, match="'weird'"):
        DomainSpec("x", "weird", 1.0, 0.1, 10)
    with pytest.raises(ValueError, match="noise.*1.5"):
        DomainSpec("x", "easy", 1.0, 1.5, 10)
    backend = ToyBackend()
    with pytest.raises(ValueError, match="sum to 1"):
        backend.train(np.full(5, 0.3), 1)
    with pytest.raises(ValueError, match="n_steps.*0"):
        backend.train(np.full(5, 0.2), 0)


def alignment_reward_after_warmup(domains: tuple[DomainSpec, ...], alignment: str, **config: object) -> float:
    """Mean alignment reward over a few decisions, after the model has learned the mean target."""
    backend = ToyBackend(ToyConfig(domains=domains, total_steps=400, **config))
    env = MixingEnv(backend=backend, reward="alignment", reward_kwargs={"alignment": alignment})
    env.reset(seed=0)
    rewards = [env.step(np.zeros(2, dtype=np.float32))[1] for _ in range(20)]
    return float(np.mean(rewards[10:]))


@pytest.mark.parametrize("alignment", ["raw", "cosine"])
def test_alignment_reward_is_positive_for_shared_structure_and_negative_for_conflict(alignment: str) -> None:
    # the uncentred forms keep the sign (the default z-scored form is centred: m . z = 0 at uniform)
    shared = (DomainSpec("hard", "hard", 2.5, 0.05, 5000), DomainSpec("copy", "redundant", 2.5, 0.05, 5000))
    conflicting = (DomainSpec("easy", "easy", 0.5, 0.05, 5000), DomainSpec("anti", "conflict", 0.5, 0.05, 5000))
    assert alignment_reward_after_warmup(shared, alignment) > 0
    # with no domain tag and identical inputs, the conflict cannot be resolved by the model
    assert alignment_reward_after_warmup(conflicting, alignment, domain_tag=0.0, conflict_offset=0.0) < 0


def test_oracle_is_clearly_non_uniform_and_beats_uniform() -> None:
    config = ToyConfig(total_steps=600)
    oracle = oracle_mixture(config, seeds=(0, 1, 2), n_random=8, rounds=3)
    assert oracle.mixture.shape == (5,) and oracle.mixture.sum() == pytest.approx(1.0)
    noise = ToyBackend(config).domains.index("noise")
    assert oracle.mixture[noise] < 0.05  # junk gets almost nothing
    assert oracle.mixture.max() > 0.3  # and the rest is not uniform either
    uniform = schedule_objective(ToyBackend(config), np.full((1, 5), 0.2), seeds=(0, 1, 2))
    assert oracle.objective < 0.9 * uniform  # at least 10% lower held-out loss on the search seeds


def test_oracle_is_cached_and_a_schedule_never_loses_to_it() -> None:
    config = ToyConfig(num_domains=3, total_steps=200)
    first = oracle_mixture(config, seeds=(0, 1), n_random=4, rounds=2)
    again = oracle_mixture(config, seeds=(0, 1), n_random=4, rounds=2)
    assert again is first
    schedule = search_schedule(config, phases=2, seeds=(0, 1), n_random=4, rounds=2)
    assert schedule.mixtures.shape == (2, 3)
    assert schedule.objective <= first.objective
    with pytest.raises(ValueError, match="phases.*0"):
        search_schedule(config, phases=0)


def test_a_domain_can_name_the_domain_it_repeats_relates_to_or_contradicts() -> None:
    specs = (
        DomainSpec("a", "easy", 0.5, 0.05, 2000),
        DomainSpec("b", "hard", 2.5, 0.05, 2000),
        DomainSpec("c", "redundant", 0.5, 0.05, 2000, source="a"),
        DomainSpec("d", "redundant", 2.5, 0.05, 2000),  # no source: the first hard domain, as before
    )
    backend = ToyBackend(ToyConfig(domains=specs, total_steps=300))
    backend.reset(0)
    backend.train(np.array([1.0, 0.0, 0.0, 0.0]), 300)  # train on "a" only
    losses = backend.evaluate()
    assert abs(losses["c"] - losses["a"]) < 0.05 < losses["d"] - losses["a"]  # c is a's data, d is b's
    with pytest.raises(ValueError, match="only kinds redundant, related, conflict, duplicate, contradict, primer take a source, not 'easy'"):
        DomainSpec("x", "easy", 1.0, 0.1, 10, source="a")
    with pytest.raises(ValueError, match=r"domain 'c': source 'd' must name an earlier domain; earlier domains: \['a', 'b'\]"):
        ToyConfig(domains=specs[:2] + (DomainSpec("c", "conflict", 0.5, 0.05, 10, source="d"), specs[3]))
