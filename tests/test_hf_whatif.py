"""The what-if capability on HFBackend: peft LoRA probes on a copy, the run left bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from mixgym.llm_backend.hf import HFBackend  # noqa: E402
from mixgym.llm_backend.hf_lora import adapter_parameters, compute_parameters  # noqa: E402
from mixgym.llm_backend.whatif import WhatIfCache  # noqa: E402

K = 5
PROBES = np.vstack([np.full(K, 1 / K), 0.9 * np.eye(K)[:2] + 0.1 / K])
CANDIDATES = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
SMALL = {"model": "pythia-tiny", "total_steps": 20, "seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 2}


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    torch.set_num_threads(1)
    backend = HFBackend(**SMALL)
    backend.reset(1)
    backend.train(np.full(K, 1 / K), 3)
    return backend


@pytest.mark.parametrize("method", ["merge", "exact"])
def test_simulate_leaves_the_hf_run_bit_identical(backend: HFBackend, method: str) -> None:
    state = backend.state_dict()
    flags = {name: p.requires_grad for name, p in backend.model.named_parameters()}
    global_rng = torch.get_rng_state()
    modules = {name for name, _ in backend.model.named_modules()}
    result = backend.simulate(PROBES, 2, CANDIDATES, method, rank=4)
    assert equal(state, backend.state_dict())
    assert flags == {name: p.requires_grad for name, p in backend.model.named_parameters()}
    assert modules == {name for name, _ in backend.model.named_modules()}  # no adapter left on the model
    assert torch.equal(global_rng, torch.get_rng_state())
    assert result.probe_loss.shape == (3, K) and result.candidate_loss.shape == (2, K)
    assert np.allclose(result.base_loss, list(backend.evaluate().values()))
    assert np.all(np.isfinite(result.candidate_loss))


def test_a_run_with_what_if_calls_equals_one_without() -> None:
    torch.set_num_threads(1)
    plain, asked = HFBackend(**SMALL), HFBackend(**SMALL)
    for backend in (plain, asked):
        backend.reset(7)
    mixtures = np.random.default_rng(0).dirichlet(np.ones(K), 3)
    for mixture in mixtures:
        asked.simulate(PROBES, 1, CANDIDATES, "merge", rank=2)
        a, b = plain.train(mixture, 2), asked.train(mixture, 2)
        assert np.array_equal(a.train_loss, b.train_loss, equal_nan=True)
    assert equal(plain.state_dict(), asked.state_dict())
    assert plain.evaluate() == asked.evaluate()


def test_one_hot_candidates_are_their_probes_and_answers_are_cached(backend: HFBackend) -> None:
    backend.whatif_cache = WhatIfCache()
    one_hot = np.eye(3)
    merged = backend.simulate(PROBES, 2, one_hot, "merge", rank=4)
    assert not merged.cached
    # all adapters active, scaled 1 for the candidate's probe and 0 for the others, is the probe
    assert np.allclose(merged.candidate_loss, merged.probe_loss, atol=1e-5)
    again = backend.simulate(PROBES, 2, one_hot, "merge", rank=4)
    assert again.cached and np.array_equal(again.candidate_loss, merged.candidate_loss)
    backend.whatif_cache = WhatIfCache()
    assert np.array_equal(backend.simulate(PROBES, 2, one_hot, "merge", rank=4).candidate_loss, merged.candidate_loss)
    # the probes moved the model: the uniform probe's loss is not the base loss
    assert not np.allclose(merged.probe_loss[0], merged.base_loss)


def test_cost_counts_lora_steps_and_evaluations(backend: HFBackend) -> None:
    params = compute_parameters(backend.model)
    adapter = adapter_parameters(backend.model, 4)
    tokens = 2 * 2 * 32
    held_out = sum(batch.numel() for batch in backend._eval_batches)
    main = 6 * params * tokens
    expected = (
        3 * 2 * (4 * (params + adapter) + 2 * adapter) * tokens
        + 2 * params * held_out
        + 3 * 2 * (params + adapter) * held_out
        + 2 * 2 * (params + 3 * adapter) * held_out
    ) / main
    assert backend.whatif_cost(PROBES, 2, CANDIDATES, "merge", rank=4) == pytest.approx(expected)
    result = backend.simulate(PROBES, 2, CANDIDATES, "merge", rank=4)
    assert result.cost == pytest.approx(expected) and result.probe_steps == 6
    # a LoRA step costs about two thirds of a main step (no weight gradients for the model)
    assert 0.6 < backend.whatif_cost(PROBES[:1], 100, np.ones((1, 1)), rank=4) / 100 < 1.0
    # LoRA of rank r on every projection but the head: r (in + out) each
    assert adapter_parameters(backend.model, 8) == 2 * adapter


def test_lora_is_on_every_projection_but_the_head(backend: HFBackend) -> None:
    from mixgym.llm_backend.hf_lora import lora_config

    config = lora_config(backend.model, 16)
    assert config.r == 16 and config.lora_alpha == 32 and config.lora_dropout == 0.05
    targets = set(config.target_modules)
    assert "embed_out" not in targets
    assert {"gpt_neox.layers.0.attention.query_key_value", "gpt_neox.layers.0.mlp.dense_4h_to_h"} <= targets


def test_bad_requests_are_refused(backend: HFBackend) -> None:
    with pytest.raises(ValueError, match=r"candidates must have shape \(n, 3\)"):
        backend.simulate(PROBES, 2, np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="steps"):
        backend.simulate(PROBES, 0, CANDIDATES)


def test_a_peft_too_old_for_transformers_5_is_named(monkeypatch) -> None:
    import peft
    import transformers
    from gymnasium.error import DependencyNotInstalled

    from mixgym.llm_backend.hf_lora import import_peft

    monkeypatch.setattr(transformers, "__version__", "5.0.0")
    monkeypatch.setattr(peft, "__version__", "0.17.1")
    with pytest.raises(DependencyNotInstalled, match=r'peft 0.17.1 does not work with transformers 5.0.0; pip install "peft>=0.18"'):
        import_peft()
    monkeypatch.setattr(peft, "__version__", "0.18.0")
    assert import_peft() is peft


@pytest.mark.parametrize("method", ["merge", "exact"])
def test_in_place_probes_answer_as_the_copy_does_and_leave_the_run_as_it_was(method: str) -> None:
    torch.set_num_threads(1)
    plain, copying, in_place = HFBackend(**SMALL), HFBackend(**SMALL), HFBackend(**SMALL, whatif_in_place=True)
    for backend in (plain, copying, in_place):
        backend.reset(3)
        backend.train(np.full(K, 1 / K), 2)
    model = in_place.model
    state = in_place.state_dict()
    parameters = [(name, p, p.requires_grad) for name, p in model.named_parameters()]
    modules = [(name, type(m), m.training) for name, m in model.named_modules()]
    model.gpt_neox.layers[0].mlp.training = False  # a mode of the run's own, to be kept
    expected = copying.simulate(PROBES, 2, CANDIDATES, method, rank=4)
    got = in_place.simulate(PROBES, 2, CANDIDATES, method, rank=4)
    for field in ("base_loss", "probe_loss", "candidate_loss"):
        assert np.array_equal(getattr(expected, field), getattr(got, field))
    assert got.cost == expected.cost
    assert equal(state, in_place.state_dict())
    assert [(name, p, p.requires_grad) for name, p in model.named_parameters()] == parameters  # the optimizer's tensors
    assert not model.gpt_neox.layers[0].mlp.training
    model.gpt_neox.layers[0].mlp.training = True
    assert [(name, type(m), m.training) for name, m in model.named_modules()] == modules  # no LoRA layer left
    assert not hasattr(model, "peft_config")
    for backend in (plain, in_place):
        backend.train(np.full(K, 1 / K), 2)
    assert equal(plain.state_dict(), in_place.state_dict())
    assert in_place.config.fingerprint() == plain.config.fingerprint()


def test_whatif_in_place_is_a_bool() -> None:
    with pytest.raises(TypeError, match="whatif_in_place must be true or false, got 1"):
        HFBackend(**SMALL, whatif_in_place=1)


def test_in_place_probes_give_the_model_back_when_a_probe_fails(monkeypatch) -> None:
    from mixgym.llm_backend import hf_lora

    torch.set_num_threads(1)
    backend = HFBackend(**SMALL, whatif_in_place=True)
    backend.reset(3)
    state = backend.state_dict()
    modules = [(name, type(m), m.training) for name, m in backend.model.named_modules()]
    flags = [p.requires_grad for p in backend.model.parameters()]

    def fail(*args, **kwargs):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(hf_lora, "_train_adapter", fail)
    with pytest.raises(RuntimeError, match="probe failed"):
        backend.simulate(PROBES, 2, CANDIDATES, "merge", rank=4)
    assert [(name, type(m), m.training) for name, m in backend.model.named_modules()] == modules
    assert [p.requires_grad for p in backend.model.parameters()] == flags
    assert equal(state, backend.state_dict())
