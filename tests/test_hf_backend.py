"""HFBackend: real causal LMs pretrained on the sample corpus, per-domain gradients from
micro-batch differencing, bit-identical resume, the environment on top, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mixgym
from mixgym.data import SAMPLE_CORPUS
from mixgym.envs import REWARDS, MixingEnv
from mixgym.llm_backend import Signal
from mixgym.llm_backend.hf import PRESETS, HFBackend

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = {"seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 3}
UNIFORM = np.full(5, 0.2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("preset", ["pythia-tiny", "gpt2-tiny", "llama-tiny"])
def test_loss_falls_for_gpt_neox_gpt2_and_llama(preset: str) -> None:
    backend = HFBackend(model=preset, total_steps=30, seq_len=64, micro_batch_size=4, grad_accumulation=2)
    before = backend.evaluate()
    stats = backend.train(UNIFORM, n_steps=30)
    after = backend.evaluate()
    assert all(after[d] < before[d] - 0.3 for d in backend.domains), (before, after)
    assert np.all(np.isfinite(stats.train_loss)) and stats.samples.sum() == 30 * 2 * 4
    assert stats.token_ids.shape == (240, 64) and stats.tokens == 240 * 64
    assert backend.step == 30 and stats.learning_rate == pytest.approx(1e-4)  # cosine ends at 10% of 1e-3
    assert type(backend.model).__name__.lower().startswith(PRESETS[preset]["model_type"].replace("_", ""))


def test_differencing_equals_separate_backward_passes_with_no_extra_forward() -> None:
    config = {"seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 8, "total_steps": 10, "forced_fraction": 5 / 8}
    backend = HFBackend(model="pythia-tiny", **config)
    backend.train(UNIFORM, n_steps=2)  # move off the initial weights first
    state = backend.state_dict()
    forwards = []
    hook = backend.model.register_forward_hook(lambda module, args, output: forwards.append(1))
    mixture = np.array([0.5, 0.2, 0.1, 0.1, 0.1])
    stats = backend.train(mixture, n_steps=1)
    hook.remove()
    assert len(forwards) == 8  # one forward per training micro-batch, none for the gradients
    plan = backend.micro_batch_domains.ravel()
    assert set(plan) == set(range(5))  # every domain got a micro-batch (forced_fraction 5/8)

    reference = HFBackend(model="pythia-tiny", **config)
    reference.load_state_dict(state)
    names = backend.weight_stats().names
    params = [reference.model.get_parameter(n) for n in names]
    batches = torch.from_numpy(stats.token_ids).split(2)
    expected = np.zeros((5, sum(p.numel() for p in params)))
    for domain, batch in zip(plan, batches):
        loss = reference.model(input_ids=batch, labels=batch).loss
        grads = torch.autograd.grad(loss, params)
        expected[domain] += torch.cat([g.reshape(-1) for g in grads]).double().numpy()
    expected /= np.bincount(plan, minlength=5)[:, None]
    got = backend.domain_gradients()
    assert got.shape == expected.shape and got.dtype == np.float64
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    assert np.linalg.norm(got - expected) < 1e-4 * np.linalg.norm(expected)


def test_probe_mode_runs_an_extra_pass_at_the_current_weights_and_changes_nothing() -> None:
    backend = HFBackend(model="gpt2-tiny", gradient_mode="probe", total_steps=10, **TINY)
    backend.train(UNIFORM, n_steps=2)
    before = backend.state_dict()
    first = backend.domain_gradients()
    assert first.shape == (5, 3 * 256 * 64) and np.all(np.isfinite(first)) and np.all(np.linalg.norm(first, axis=1) > 0)
    np.testing.assert_array_equal(backend.domain_gradients(), first)
    after = backend.state_dict()
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert backend.step == 2


def test_gradient_mode_off_is_a_plain_loop_that_alignment_rewards_refuse() -> None:
    backend = HFBackend(model="pythia-tiny", gradient_mode="off", total_steps=4, **TINY)
    assert Signal.GRADIENTS not in backend.signals
    with pytest.raises(ValueError, match="gradients.*does not provide"):
        MixingEnv(backend=backend, reward="alignment", steps_per_action=2)
    env = MixingEnv(backend=backend, reward="eval_loss", steps_per_action=2)
    env.reset(seed=0)
    assert np.isfinite(env.step(np.zeros(5, dtype=np.float32))[1])


def test_state_dict_round_trip_resumes_bit_identically() -> None:
    options = {"model": "llama-tiny", "total_steps": 12, **TINY}
    first = HFBackend(**options)
    first.reset(seed=3)
    mixture = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    first.train(mixture, n_steps=3)
    state = first.state_dict()
    continued = [first.train(mixture, n_steps=2) for _ in range(2)]
    second = HFBackend(**options)  # a fresh process would build it the same way
    second.load_state_dict(state)
    resumed = [second.train(mixture, n_steps=2) for _ in range(2)]
    for a, b in zip(continued, resumed):
        np.testing.assert_array_equal(a.train_loss, b.train_loss)
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        assert a.learning_rate == b.learning_rate
    assert first.step == second.step == 7
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    np.testing.assert_array_equal(first.domain_gradients(), second.domain_gradients())
    assert first.evaluate() == second.evaluate()
    np.testing.assert_array_equal(first.weight_stats().update_norms, second.weight_stats().update_norms)
    with pytest.raises(ValueError, match="fingerprint"):
        HFBackend(model="llama-tiny", total_steps=13, **TINY).load_state_dict(state)


def test_the_run_trains_on_the_mixture_chosen_unless_forced_micro_batches_are_asked_for() -> None:
    one_hot = np.array([1.0, 0, 0, 0, 0])
    plain = HFBackend(model="pythia-tiny", total_steps=10, **TINY)
    stats = plain.train(one_hot, n_steps=2)  # 6 micro-batches, all from the mixture
    assert stats.samples.tolist() == [12, 0, 0, 0, 0] and np.isnan(stats.train_loss[1])
    skewed = np.array([0.96, 0.01, 0.01, 0.01, 0.01])
    forced = HFBackend(model="pythia-tiny", total_steps=10, forced_fraction=5 / 6, **TINY)
    stats = forced.train(skewed, n_steps=2)  # 5 of 6 forced: one per domain, one drawn
    assert np.all(stats.samples >= 2) and stats.samples.sum() == 12 and np.all(np.isfinite(stats.train_loss))
    stats = forced.train(skewed, n_steps=1)  # 3 micro-batches: round(2.5) = 2 forced, to 2 distinct domains
    assert stats.samples.sum() == 6 and np.count_nonzero(stats.samples) <= 3
    stats = forced.train(np.array([0.5, 0.5, 0, 0, 0]), n_steps=2)  # a domain of weight 0 (masked by a phase) gets none
    assert stats.samples[2:].sum() == 0 and stats.samples[:2].min() >= 4
    with pytest.raises(ValueError, match="forced_fraction.*2"):
        HFBackend(model="pythia-tiny", forced_fraction=2, **TINY)
    with pytest.raises(ValueError, match="unexpected keyword argument .every_domain."):
        HFBackend(model="pythia-tiny", every_domain=True, **TINY)


def test_train_reports_the_weight_norms_after_every_step() -> None:
    backend = HFBackend(model="pythia-tiny", total_steps=10, **TINY)
    before = backend.weight_stats().norms
    stats = backend.train(UNIFORM, n_steps=3)
    assert stats.step_weight_norms.shape == (4, 3)
    np.testing.assert_allclose(stats.step_weight_norms[0], before)
    np.testing.assert_allclose(stats.step_weight_norms[-1], backend.weight_stats().norms)
    assert np.all(np.diff(stats.step_weight_norms, axis=0) != 0)


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_check_env_passes_with_the_hf_backend(reward: str) -> None:
    env = MixingEnv(backend="hf", model="pythia-tiny", corpus=SAMPLE_CORPUS, reward=reward, total_steps=4, steps_per_action=2, **TINY)
    check_env(env, skip_render_check=False)


def test_gym_make_runs_an_episode_with_the_same_info_as_the_toy() -> None:
    env = gym.make("mixgym/Mixing-v0", backend="hf", model="gpt2-tiny", reward="holistic", total_steps=6, steps_per_action=2, seq_len=64, micro_batch_size=2, grad_accumulation=3)
    toy = gym.make("mixgym/Mixing-v0", reward="holistic", total_steps=20)
    toy.reset(seed=0)
    toy_info = toy.step(toy.action_space.sample())[4]
    obs, _ = env.reset(seed=0)
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward)
    assert set(info) == set(toy_info)
    assert info["step"] == 6 and info["tokens"] == 6 * 3 * 2 * 64
    assert 0 < info["reward/diversity"] <= 1  # MTLD of the 64-token sequences trained on


def test_models_from_a_config_object_a_config_file_and_a_local_folder(tmp_path: Path) -> None:
    from transformers import GPT2Config

    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=4096)
    backend = HFBackend(model=config, total_steps=2, **TINY)
    assert backend.model.config.n_layer == 2 and backend.model.config.eos_token_id == backend.tokenizer.eos_id
    assert len(backend.weight_stats().names) == 2  # fewer than three layers: all of them
    file = tmp_path / "config.json"
    file.write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
                                "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 4096}))
    assert HFBackend(model=file, total_steps=2, **TINY).model.config.num_hidden_layers == 3
    backend.train(UNIFORM, n_steps=2)
    backend.model.save_pretrained(tmp_path / "pretrained")
    loaded = HFBackend(model=tmp_path / "pretrained", total_steps=2, **TINY)
    assert loaded.evaluate() == backend.evaluate()  # training continues from the saved weights
    loaded.train(UNIFORM, n_steps=1)
    loaded.reset(seed=5)
    assert loaded.evaluate() == backend.evaluate()  # and every reset restores them


def test_tokenizer_trained_cached_and_loaded_from_a_folder(tmp_path: Path) -> None:
    backend = HFBackend(model="pythia-tiny", vocab_size=600, tokenizer_cache=tmp_path / "cache", total_steps=2, **TINY)
    assert backend.tokenizer.vocab_size == 600 and backend.model.config.vocab_size == 600
    (cached,) = (tmp_path / "cache").iterdir()
    again = HFBackend(model="pythia-tiny", vocab_size=600, tokenizer_cache=tmp_path / "cache", total_steps=2, **TINY)
    assert again.tokenizer.source == str(cached)
    from_folder = HFBackend(model="gpt2-tiny", tokenizer=cached, total_steps=2, **TINY)
    assert from_folder.tokenizer.fingerprint() == backend.tokenizer.fingerprint()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(cached)).eos_token == "<|endoftext|>"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"model": "pythia-huge"}, ValueError, "unknown model 'pythia-huge'.*pythia-tiny, neox-micro, pythia-small, gpt2-tiny, llama-tiny"),
        ({"seq_len": 1024}, ValueError, "seq_len=1024 exceeds the model's maximum of 512"),
        ({"corpus": "/nonexistent/corpus"}, ValueError, "does not exist"),
        ({"gradient_mode": "exact"}, ValueError, "gradient_mode 'exact'"),
        ({"layers": ["gpt_neox.layers.0.mlp.nope.weight"]}, ValueError, "unknown parameter"),
        ({"micro_batch_size": 0}, ValueError, "micro_batch_size.*0"),
        ({"learnng_rate": 1e-3}, ValueError, "learnng_rate"),
        ({"target_weights": (1, 1)}, ValueError, "target_weights must be 5"),
        ({"tokenizer": "/nonexistent/tokenizer"}, ValueError, "tokenizer folder"),
    ],
)
def test_bad_options_raise_before_training(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        HFBackend(**{"total_steps": 2, **TINY, **options})


def test_a_users_config_gets_a_tokenizer_of_its_vocabulary_size(tmp_path: Path) -> None:
    from transformers import MistralConfig, Qwen2Config

    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}
    cache = tmp_path / "cache"
    for config_class, vocab in ((MistralConfig, 512), (Qwen2Config, 700)):
        backend = HFBackend(model=config_class(vocab_size=vocab, **shape), tokenizer_cache=cache, total_steps=2, **TINY)
        assert backend.tokenizer.vocab_size == vocab and backend.model.config.vocab_size == vocab
        assert np.isfinite(backend.train(UNIFORM, n_steps=2).train_loss).all()  # 6 micro-batches: every domain
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["bpe512", "bpe700"]  # cached per size
    again = HFBackend(model=MistralConfig(vocab_size=512, **shape), tokenizer_cache=cache, total_steps=2, **TINY)
    assert again.tokenizer.source.startswith(str(cache))
    with pytest.raises(ValueError, match="vocab_size 256 is too small"):
        HFBackend(model=MistralConfig(vocab_size=256, **shape), total_steps=2, **TINY)


def test_vocabulary_mismatch_and_too_little_text_are_refused(tmp_path: Path) -> None:
    from transformers import GPTNeoXConfig

    small = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000)
    with pytest.raises(ValueError, match=r"tokenizer .*from vocab_size=4096\) has 4096 ids but the model's vocabulary has 1000"):
        HFBackend(model=small, vocab_size=4096, total_steps=2, **TINY)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "long.txt").write_text("\n\n".join(f"paragraph {i} " * 50 for i in range(20)))
    (corpus / "short.txt").write_text("tiny\n\nweeny")
    with pytest.raises(ValueError, match="domain 'short' has .* fewer than one sequence of seq_len=32"):
        HFBackend(corpus=corpus, vocab_size=300, tokenizer_cache=tmp_path / "tok", total_steps=2, **TINY)


def test_missing_dependencies_say_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from gymnasium.error import DependencyNotInstalled

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(DependencyNotInstalled, match=r'pip install "mixgym\[hf\]"'):
        HFBackend()


def test_importing_mixgym_imports_no_torch() -> None:
    code = "import sys, mixgym, mixgym.llm_backend.corpus; print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert mixgym.MixingEnv is MixingEnv


def test_dropout_uses_the_backends_own_rng_so_resume_stays_exact_beside_other_torch_users() -> None:
    from transformers import GPT2Config

    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=4096, resid_pdrop=0.3)
    first = HFBackend(model=config, total_steps=6, **TINY)
    first.train(UNIFORM, n_steps=2)
    state = first.state_dict()
    torch.manual_seed(1)
    a = first.train(UNIFORM, n_steps=2)
    second = HFBackend(model=config, total_steps=6, **TINY)
    second.load_state_dict(state)
    torch.manual_seed(2)  # an agent drawing from torch's global RNG in between changes nothing
    torch.rand(100)
    b = second.train(UNIFORM, n_steps=2)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)


GUARD = '''
import json, os, socket
LOG = os.environ["MIXGYM_TEST_CONNECTIONS"]
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

def _record(what):
    with open(LOG, "a") as handle:
        handle.write(json.dumps(what) + "\\n")

def _local(host):
    return host in ("localhost", "127.0.0.1", "::1", "") or str(host).startswith("127.")

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _record(["connect", str(address[0])])
        raise OSError("network disabled by the test's socket guard")
    return _connect(self, address)

def getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _record(["resolve", str(host)])
        raise socket.gaierror("network disabled by the test's socket guard")
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
'''

RUN = """
import numpy as np
from mixgym.envs import MixingEnv
env = MixingEnv(backend="hf", model="pythia-tiny", corpus={corpus!r}, total_steps=2, steps_per_action=1, seq_len=32,
                micro_batch_size=2, grad_accumulation=1)
env.reset(seed=0)
env.step(env.action_space.sample())
print("ran")
"""


def test_an_hf_run_sends_nothing_to_the_network_whatever_the_environment_says(tmp_path) -> None:
    import shutil

    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    corpus = tmp_path / "corpus"  # a copy: no cached tokenizer or dataset to lean on
    shutil.copytree(SAMPLE_CORPUS, corpus, ignore=shutil.ignore_patterns(".tokenizers"))
    log = tmp_path / "connections.jsonl"
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_OFFLINE")}
    env.update(PYTHONPATH=str(guard), MIXGYM_TEST_CONNECTIONS=str(log), HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", TRANSFORMERS_OFFLINE="0")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", RUN.format(corpus=str(corpus))], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "ran" in done.stdout, done.stderr[-3000:]
    attempts = log.read_text().splitlines() if log.exists() else []
    assert attempts == [], attempts
