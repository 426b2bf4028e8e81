"""A real transformers.Trainer steered by mixgym agents through MixtureCallback: the mixture
changes and the served counts follow it, resume from a Trainer checkpoint continues the exact
example sequence, workers, a saved SB3 policy in proxy mode, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from mixgym.agents import make_agent  # noqa: E402
from mixgym.data import SAMPLE_CORPUS  # noqa: E402
from mixgym.envs import MixingEnv  # noqa: E402
from mixgym.integrations import MixtureCallback, MixtureDataset  # noqa: E402
from mixgym.llm_backend.corpus import load_corpus  # noqa: E402
from mixgym.llm_backend.hf import preset_config  # noqa: E402
from mixgym.llm_backend.tokenizer import corpus_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DOMAINS = ("c", "changelogs", "licenses")
SEQ_LEN = 32
BATCH = 4



@pytest.fixture(scope="module")
def corpus() -> Any:
    return load_corpus(SAMPLE_CORPUS)


@pytest.fixture(scope="module")
def tokenizer(corpus: Any) -> Any:
    return corpus_tokenizer(corpus.train_texts(), corpus.path)


def domains_of(corpus: Any, split: str) -> dict[str, list[str]]:
    return {d.name: list(getattr(d, split)) for d in corpus.domains if d.name in DOMAINS}


def model_for(tokenizer: Any) -> Any:
    config = preset_config("gpt2-tiny", tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


class Recorder(transformers.TrainerCallback):
    """Records the stream positions the model trains on (the dataset's tags reach the
    model's forward pre-hooks with remove_unused_columns=False) and can stop the run."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.positions: list[int] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def grab(module, args, kwargs):
            if module.training and "position" in kwargs:
                self.positions += kwargs["position"].tolist()

        self.handle = model.register_forward_pre_hook(grab, with_kwargs=True, prepend=True)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.stop_at:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.handle.remove()


def run(
    corpus: Any,
    tokenizer: Any,
    output: Path,
    agent: Any = "exp3",
    max_steps: int = 24,
    stop_at: int | None = None,
    resume: bool = False,
    workers: int = 0,
    ignore_data_skip: bool = True,
    block_size: int = 1,
    **callback_options: Any,
) -> tuple[Any, MixtureCallback, Recorder, MixtureDataset]:
    train = MixtureDataset(domains_of(corpus, "train"), tokenizer=tokenizer, seq_len=SEQ_LEN, seed=0, block_size=block_size)
    mixing = MixtureCallback(train, agent, domains_of(corpus, "validation"), steps_per_decision=4, eval_rows=4, **callback_options)
    recorder = Recorder(stop_at)
    args = transformers.TrainingArguments(
        output_dir=str(output), max_steps=max_steps, per_device_train_batch_size=BATCH, learning_rate=2e-3,
        logging_steps=4, save_steps=10, report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=workers, remove_unused_columns=False, ignore_data_skip=ignore_data_skip,
    )
    trainer = transformers.Trainer(model=model_for(tokenizer), args=args, train_dataset=train, callbacks=[recorder, mixing])
    mixing.install(trainer)
    trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer, mixing, recorder, train


def test_exp3_steers_a_trainer_and_the_served_counts_follow_the_mixture(corpus: Any, tokenizer: Any, tmp_path: Path) -> None:
    trainer, mixing, recorder, train = run(corpus, tokenizer, tmp_path)
    assert trainer.callback_handler.callbacks[0] is mixing  # install(): reporters after it see its metrics
    history = mixing.history
    assert [int(h["step"]) for h in history] == [0, 4, 8, 12, 16, 20, 24]
    chosen = np.array([h["mixture"] for h in history[1:]])  # the mixture each decision trained on
    assert not np.allclose(chosen[0], chosen[-1])  # EXP3 left uniform after its K ln K exploration rounds
    served = np.array([h["samples"] for h in history[1:]])
    assert served.sum() == 24 * BATCH and recorder.positions == list(range(24 * BATCH))
    book = train.accounting()
    assert book.examples.tolist() == served.sum(0).tolist() and book.tokens.sum() == 24 * BATCH * SEQ_LEN
    # what was served follows what was chosen: 16 examples a decision, drawn from its mixture
    expected = (chosen * BATCH * 4).sum(0)
    assert np.abs(served.sum(0) - expected).max() < 0.35 * expected.max()
    train_losses = np.array([h["train_loss"] for h in history[1:]])
    assert np.all(np.isfinite(train_losses[served > 0])) and np.all(np.array([h["eval_loss"] for h in history]) > 0)
    logged = [entry for entry in trainer.state.log_history if "mixgym/mixture/c" in entry and "loss" in entry]
    assert [e["step"] for e in logged] == [4, 8, 12, 16, 20, 24]
    assert logged[-1]["mixgym/examples/licenses"] == book.examples[2]
    assert np.isclose(logged[-1]["mixgym/mixture/c"], history[-1]["mixture"][0])


@pytest.mark.parametrize(("workers", "ignore_data_skip"), [(0, True), (2, False)])
def test_resume_from_a_trainer_checkpoint_continues_the_exact_example_sequence(
    corpus: Any, tokenizer: Any, tmp_path: Path, workers: int, ignore_data_skip: bool
) -> None:
    whole, mixing, recorder, _ = run(corpus, tokenizer, tmp_path / "whole", max_steps=14, workers=workers)
    first, _, head, _ = run(corpus, tokenizer, tmp_path / "cut", max_steps=14, stop_at=10, workers=workers)
    assert (tmp_path / "cut" / "checkpoint-10" / "mixgym_mixture.ckpt").exists()
    second, resumed, tail, train = run(
        corpus, tokenizer, tmp_path / "cut", max_steps=14, resume=True, workers=workers, ignore_data_skip=ignore_data_skip
    )
    assert head.positions + tail.positions == recorder.positions == list(range(14 * BATCH))
    for a, b in zip(mixing.history, resumed.history, strict=True):
        assert np.array_equal(a["mixture"], b["mixture"]) and np.array_equal(a["samples"], b["samples"])
        assert np.array_equal(a["train_loss"], b["train_loss"], equal_nan=True) and a["reward"] == pytest.approx(b["reward"], nan_ok=True)
    assert train.accounting().examples.tolist() == np.sum([h["samples"] for h in mixing.history], axis=0).tolist()
    final = {k: v for k, v in whole.model.state_dict().items()}
    assert all(torch.equal(final[k], v) for k, v in second.model.state_dict().items())


def test_a_saved_sb3_policy_steers_a_trainer_in_proxy_mode(corpus: Any, tokenizer: Any, tmp_path: Path) -> None:
    proxy = MixingEnv(num_domains=len(DOMAINS), total_steps=60, steps_per_action=4, reward="eval_loss")
    agent = make_agent("td3", proxy, seed=0, sb3_kwargs={"learning_starts": 5})
    agent.learn(total_timesteps=12)
    path = tmp_path / "td3.zip"
    agent.save(path)
    _, mixing, _, train = run(corpus, tokenizer, tmp_path / "run", agent=path, max_steps=16)
    assert mixing.driver is not None and not mixing.driver.learn  # proxy mode: it acts
    chosen = np.array([h["mixture"] for h in mixing.history[1:]])
    assert len(chosen) == 4 and len({tuple(np.round(m, 6)) for m in chosen}) > 1  # it reacts to what it observes
    assert train.accounting().examples.sum() == 16 * BATCH


def test_hds_learns_online_inside_a_trainer_with_per_domain_gradients(corpus: Any, tokenizer: Any, tmp_path: Path) -> None:
    options = {"net_width": 16, "batch_size": 4, "warmup_fraction": 0.25}
    _, mixing, _, _ = run(
        corpus, tokenizer, tmp_path, agent="hds", max_steps=16, block_size=BATCH, gradients=True, agent_options=options
    )
    driver = mixing.driver
    assert driver is not None and driver.learn and driver.env.reward_fn.name == "holistic"
    history = mixing.history
    assert len(history) == 5 and all(h["samples"].sum() == 4 * BATCH for h in history[1:])
    assert all(np.count_nonzero(h["samples"] % BATCH) == 0 for h in history[1:])  # one domain per micro-batch
    scores = np.array([h["reward/alignment_scores"] for h in history[1:]])
    assert np.all(np.isfinite(scores)) and np.any(scores != 0)  # gradients reached the alignment reward
    assert all(np.isfinite(h["reward"]) for h in history[1:])
    assert driver.agent.num_timesteps == 4  # SAC's own learn() took the four decisions


def test_bad_input_is_refused_before_training(corpus: Any, tokenizer: Any, tmp_path: Path) -> None:
    train = MixtureDataset(domains_of(corpus, "train"), tokenizer=tokenizer, seq_len=SEQ_LEN)
    held_out = domains_of(corpus, "validation")
    with pytest.raises(ValueError, match="missing \\['licenses'\\]"):
        MixtureCallback(train, "exp3", {k: v for k, v in held_out.items() if k != "licenses"})
    small = preset_config("gpt2-tiny", 1000, 0, 0, 1)
    mixing = MixtureCallback(train, "exp3", held_out, steps_per_decision=2)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    trainer = transformers.Trainer(model=transformers.AutoModelForCausalLM.from_config(small), args=args, train_dataset=train, callbacks=[mixing])
    with pytest.raises(ValueError, match="model's vocabulary has 1000 ids: the dataset was tokenised with another tokenizer"):
        trainer.train()


def test_when_every_domain_reaches_max_epochs_the_trainer_stops(corpus: Any, tokenizer: Any, tmp_path: Path) -> None:
    tiny = {name: texts[:2] for name, texts in domains_of(corpus, "train").items()}
    train = MixtureDataset(tiny, tokenizer=tokenizer, seq_len=SEQ_LEN, max_epochs=1)
    total = int(train.sizes.sum())
    mixing = MixtureCallback(train, "uniform", domains_of(corpus, "validation"), steps_per_decision=5, eval_rows=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=10_000, per_device_train_batch_size=BATCH, report_to=[], use_cpu=True, disable_tqdm=True,
        save_strategy="no",
    )
    trainer = transformers.Trainer(model=model_for(tokenizer), args=args, train_dataset=train, callbacks=[mixing])
    with pytest.warns(UserWarning, match="every domain reached its max_epochs"):
        trainer.train()
    assert train.accounting().examples.sum() == total and trainer.state.global_step == -(-total // BATCH)
