"""`MixtureCallback`: any mixgym agent steers the data mixture of a Hugging Face ``Trainer`` run.

The plug-in shape of foundation-model-stack/fms-acceleration's online-data-mixing plugin (an
``IterableDataset`` plus a ``TrainerCallback``), with every mixgym agent behind it and no
patching of the Trainer::

    train = MixtureDataset({"code": code, "prose": prose}, tokenizer=tokenizer, seq_len=512)
    mixing = MixtureCallback(train, "exp3", eval_sets={"code": code_val, "prose": prose_val})
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[mixing])
    trainer.train()

Every ``steps_per_decision`` optimizer steps the callback hands a `MixtureDriver` (a real
`MixingEnv` whose backend is this run) what the run did:

- per-domain training loss: a forward hook on the model computes each training row's loss
  from the logits the model returns anyway (its labels, shifted, -100 ignored) and tags it
  with its domain -- the dataset's stream says which domain each position holds, and the
  Trainer consumes positions in order (``TrainingArguments(dataloader_in_order=True)``, the
  default); when the batches carry the dataset's tags (``remove_unused_columns=False``) the
  hook also checks them. A domain's loss over a step is token-weighted, over a decision
  example-weighted; with several processes the per-domain sums are all-reduced (so are the
  gradient sums), and every process's agent sees the same numbers;
- held-out loss per domain on the first ``eval_rows`` rows of each domain's eval set
  (`HeldOut`, packed like the training data);
- norms of the chosen weight matrices (``weights=True``: the MLP output matrices of three
  layers, as AC-ODM/HDS; `MatrixNorms`);
- per-domain gradients of those matrices (``gradients=True``), summed by tensor hooks as each
  micro-batch's backward pass produces them, before accumulation, clipping or DDP's
  reduction (`mixgym.llm_backend.gradient_signal.DomainGradients`, exact or, for large
  matrices, a JL sketch); a micro-batch must then hold one domain (``MixtureDataset(
  block_size=per_device_train_batch_size)``);

and sets the agent's next mixture on the dataset, from the next optimizer step (plus the one
batch ``accelerate`` reads ahead). The mixture, per-domain losses, examples and epochs go to
the Trainer's log at each decision (``mixgym/...`` keys: `trainer.state.log_history`, the
console, and TensorBoard/W&B when the callback comes before their callbacks: `install`).

What it does not reproduce: AC-ODM's and HDS's forced micro-batch per domain and step
(``forced_fraction``, which `env_for` gives those agents on mixgym's own backends): here every
example's domain is drawn from the mixture.

Checkpoints: `on_save` writes the driver's state (agent, environment, accumulated statistics,
the dataset's position and schedule) as ``mixgym_mixture.ckpt`` in the Trainer's checkpoint
folder; ``trainer.train(resume_from_checkpoint=...)`` reads it back and the run continues with
the same examples, mixtures and agent decisions as one never interrupted (the dataset resumes
at its saved position; with ``ignore_data_skip=False`` the Trainer re-reads and skips the
batches it trained on, and the stream replays them identically).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from mixgym.checkpoint import atomic_write_bytes, decode, encode
from mixgym.llm_backend.gradient_signal import DomainGradients, sketch_dim_for
from mixgym.integrations.dataset import MixtureDataset, collate
from mixgym.integrations.driver import MatrixNorms, MixtureDriver
from mixgym.integrations.sources import make_source

MIXTURE_FILE = "mixgym_mixture.ckpt"
TAGS = ("domain", "index", "epoch", "position")


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the sum of next-token losses and the number of tokens predicted (labels
    shifted by one, -100 ignored), as a causal LM's own loss counts them. Row by row, so the
    float32 log-softmax of one row at a time is all the extra memory."""
    targets = labels[:, 1:]
    sums, counts = [], []
    for row_logits, row_targets in zip(logits[:, :-1], targets):
        keep = row_targets != -100
        loss = torch.nn.functional.cross_entropy(row_logits[keep].float(), row_targets[keep], reduction="sum")
        sums.append(loss)
        counts.append(keep.sum())
    return torch.stack(sums).detach(), torch.stack(counts)


class HeldOut:
    """Held-out loss per domain: the first `rows` rows of each domain's eval set, packed like
    the training data (the dataset's tokenizer, ``seq_len`` and text column)."""

    def __init__(self, eval_sets: Mapping[str, Any], dataset: MixtureDataset, rows: int = 16, batch_size: int = 8) -> None:
        missing = [d for d in dataset.domains if d not in eval_sets]
        unknown = sorted(set(eval_sets) - set(dataset.domains))
        if missing or unknown:
            raise ValueError(
                f"eval_sets must hold one held-out set per domain {dataset.domains}: missing {missing}, unknown {unknown}"
            )
        self.batch_size = int(batch_size)
        self.batches: dict[str, list[dict[str, torch.Tensor]]] = {}
        for name in dataset.domains:
            source = make_source(name, eval_sets[name], dataset.tokenizer, dataset.seq_len, dataset.text_column)
            reader = source.reader()
            examples = []
            for row in range(min(rows, source.size)):
                ids = torch.from_numpy(reader.get(row, 0))
                examples.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
            self.batches[name] = [collate(examples[i : i + batch_size], dataset.pad_id) for i in range(0, len(examples), batch_size)]

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        training = model.training
        model.eval()
        losses = {}
        try:
            with torch.no_grad():
                for name, batches in self.batches.items():
                    total, tokens = 0.0, 0
                    for batch in batches:
                        batch = {k: v.to(device) for k, v in batch.items()}
                        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                        sums, counts = row_losses(logits, batch["labels"])
                        total += float(sums.sum())
                        tokens += int(counts.sum())
                    losses[name] = total / max(tokens, 1)
        finally:
            model.train(training)
        return losses


class MixtureCallback(TrainerCallback):
    """Lets a mixgym agent choose the mixture of a ``Trainer`` run on a `MixtureDataset`.

    Args:
        dataset: the Trainer's ``train_dataset``.
        agent: an agent name (`mixgym.agents.AGENTS`) or the path of a saved agent.
        eval_sets: per domain, its held-out data (the training data's formats).
        steps_per_decision: optimizer steps between decisions.
        eval_rows: held-out rows per domain; eval_batch_size: rows per forward pass.
        weights: report the chosen matrices' norms (True), or name the matrices (a list).
        gradients: report per-domain gradients of those matrices (single-domain micro-batches).
        learn, seed, env_options, agent_options, trusted: as `MixtureDriver` (an agent by name
            learns online if it is an SB3 preset; the reward defaults to its paper's, or
            ``eval_loss``); ``trusted`` also lets a resume read a ``mixgym_mixture.ckpt`` this
            installation did not write (it is unpickled: it can run code).
    """

    def __init__(
        self,
        dataset: MixtureDataset,
        agent: str | Path,
        eval_sets: Mapping[str, Any],
        steps_per_decision: int = 50,
        *,
        eval_rows: int = 16,
        eval_batch_size: int = 8,
        weights: bool | Sequence[str] = True,
        gradients: bool = False,
        learn: bool | None = None,
        seed: int = 0,
        env_options: Mapping[str, Any] | None = None,
        agent_options: Mapping[str, Any] | None = None,
        trusted: bool = False,
    ) -> None:
        if not isinstance(dataset, MixtureDataset):
            raise ValueError(f"MixtureCallback steers a MixtureDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.agent = agent
        self.held_out = HeldOut(eval_sets, dataset, eval_rows, eval_batch_size)
        self.steps_per_decision = steps_per_decision
        self.weights = weights
        self.gradients = gradients
        self.options = {"learn": learn, "seed": seed, "env_options": env_options, "agent_options": agent_options, "trusted": trusted}
        self.trusted = trusted
        self.driver: MixtureDriver | None = None
        self._model: torch.nn.Module | None = None
        self._handles: list[Any] = []
        self._grads: DomainGradients | None = None
        self._recording = contextlib.ExitStack()
        self._rows: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor | None]] = []
        self._micro_batches = 0
        self._pending = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ setup
    def install(self, trainer: Any) -> MixtureCallback:
        """Put this callback first in `trainer`'s callbacks, so the reporting callbacks
        (TensorBoard, W&B) that come after it see the ``mixgym/...`` metrics it adds to each
        log; returns it."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        return self

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every decision's ``info`` and reward (`MixtureDriver.history`)."""
        return [] if self.driver is None else self.driver.history

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None, **kwargs: Any) -> None:
        if model is None or train_dataloader is None:
            raise RuntimeError("MixtureCallback needs the Trainer's model and train dataloader")
        inner = getattr(train_dataloader, "dataset", None)
        inner = getattr(inner, "dataset", inner)  # accelerate's IterableDatasetShard
        if inner is not self.dataset:
            raise ValueError(f"the Trainer trains on {type(inner).__name__}, not the MixtureDataset this callback steers")
        if not getattr(args, "dataloader_in_order", True):
            raise ValueError("MixtureCallback needs the batches in stream order: TrainingArguments(dataloader_in_order=True)")
        vocabulary = model.get_input_embeddings().num_embeddings
        if self.dataset.max_token_id >= vocabulary:
            raise ValueError(
                f"the data holds token id {self.dataset.max_token_id} but the model's vocabulary has {vocabulary} ids: "
                "the dataset was tokenised with another tokenizer than the model's"
            )
        ranks = int(args.world_size)
        batch = int(args.per_device_train_batch_size)
        kind = type(train_dataloader).__name__
        lookahead = batch * ranks if kind == "DataLoaderDispatcher" else batch if kind == "DataLoaderShard" else 0
        self.dataset.shard_by_rank = False  # accelerate hands each process its part of the one stream
        self._model = model
        self._rank, self._ranks, self._batch = int(args.process_index), ranks, batch
        if self.gradients and self.dataset.block_size % batch:
            raise ValueError(
                f"per-domain gradients need single-domain micro-batches: MixtureDataset(block_size={batch}) "
                f"(the per-device batch size), not block_size={self.dataset.block_size}"
            )
        layers = None if isinstance(self.weights, bool) else list(self.weights)
        norms = MatrixNorms(model, layers) if (self.weights or self.gradients) else None
        if self.gradients:
            assert norms is not None
            params = [p for _, p in norms.matrices]
            sketch = sketch_dim_for("auto", len(self.dataset.domains), sum(p.numel() for p in params))
            self._grads = DomainGradients(params, len(self.dataset.domains), sketch)
        self._scale = float(args.gradient_accumulation_steps)
        self.driver = MixtureDriver(
            self.agent,
            self.dataset,
            total_steps=int(state.max_steps),
            steps_per_decision=self.steps_per_decision,
            evaluate=lambda: self.held_out(model),
            weights=norms if self.weights else None,
            gradients=self._gradient_means if self._grads is not None else None,
            examples_per_step=batch * int(args.gradient_accumulation_steps) * ranks,
            lookahead=lookahead,
            **self.options,
        )
        if state.global_step > 0:
            path = self._checkpoint(args, state)
            saved = decode(path.read_bytes(), str(path), trusted=self.trusted)
            self.driver.load_state_dict(saved, replay=not args.ignore_data_skip)
        else:
            self.driver.start(step=0)
        self._first_position = self.dataset.position_of(state.global_step)
        self._micro_batches = 0
        self._handles = [
            model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            model.register_forward_hook(self._after_forward, with_kwargs=True),
        ]

    def _checkpoint(self, args: Any, state: Any) -> Path:
        candidates = [Path(p) for p in (getattr(args, "resume_from_checkpoint", None),) if isinstance(p, str)]
        candidates.append(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        for folder in candidates:
            if (folder / MIXTURE_FILE).exists():
                return folder / MIXTURE_FILE
        raise FileNotFoundError(
            f"the run resumes at step {state.global_step} but {[str(c) for c in candidates]} hold no {MIXTURE_FILE}: "
            "was the checkpoint written by a run with this MixtureCallback?"
        )

    # ------------------------------------------------------------------ hooks
    def _training(self, module: torch.nn.Module) -> bool:
        return module.training and torch.is_grad_enabled()

    def _before_forward(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        tags = {name: kwargs.pop(name) for name in TAGS if name in kwargs}
        if not self._training(module):
            return args, kwargs
        rows = kwargs["input_ids"].shape[0]
        start = self._first_position + (self._micro_batches * self._ranks + self._rank) * self._batch
        domains = self.dataset.domains_at(start, start + rows)
        if "position" in tags:
            served = tags["position"].reshape(-1).cpu().numpy()
            if not np.array_equal(served, np.arange(start, start + rows)):
                raise RuntimeError(
                    f"micro-batch {self._micro_batches} holds stream positions {served.tolist()}, expected "
                    f"{start}..{start + rows - 1}: the Trainer's batches are not the dataset's stream in order"
                )
        self._pending = domains
        if self._grads is not None:
            if len(set(domains.tolist())) != 1:
                raise RuntimeError(f"micro-batch {self._micro_batches} mixes domains {sorted(set(domains.tolist()))}: see block_size")
            self._recording.close()
            self._recording.enter_context(self._grads.recording(int(domains[0])))
        self._micro_batches += 1
        return args, kwargs

    def _after_forward(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not self._training(module):
            return
        logits = getattr(output, "logits", None)
        if logits is None:
            raise RuntimeError("MixtureCallback needs the model's logits to tag each row's loss with its domain")
        ids = kwargs["input_ids"]
        labels = kwargs.get("labels")
        if labels is None:
            mask = kwargs.get("attention_mask")
            labels = ids if mask is None else ids.masked_fill(mask == 0, -100)
        sums, counts = row_losses(logits.detach(), labels)
        keep = ids.detach().cpu() if self.driver is not None and self.driver._wants_tokens else None
        self._rows.append((sums, counts, self._pending, keep))

    def _gradient_means(self) -> np.ndarray:
        """Each domain's mean micro-batch gradient times the accumulation steps: the gradient
        of its mean loss. Under several processes each saw its own micro-batches, so sums and
        counts are added over them."""
        assert self._grads is not None
        sums, counts = self._grads.sums, self._grads.counts
        if self._ranks > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            sums = sums.clone()
            torch.distributed.all_reduce(sums)
            totals = torch.from_numpy(counts).to(sums.device)
            torch.distributed.all_reduce(totals)
            counts = totals.cpu().numpy()
        return sums.double().cpu().numpy() * (self._scale / np.maximum(counts, 1)[:, None])

    # ------------------------------------------------------------------ events
    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._recording.close()  # the micro-batch's backward pass is done

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._recording.close()  # the step's last backward pass is done

    def on_step_end(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None, **kwargs: Any) -> None:
        assert self.driver is not None
        if not self._rows:
            return
        k = len(self.dataset.domains)
        domains = torch.from_numpy(np.concatenate([r[2] for r in self._rows]))
        device = self._rows[0][0].device
        # per domain: loss sum, tokens, examples of this process's rows, added over processes
        totals = torch.zeros(3, k, dtype=torch.float64, device=device)
        totals[0].index_add_(0, domains.to(device), torch.cat([r[0] for r in self._rows]).double())
        totals[1].index_add_(0, domains.to(device), torch.cat([r[1] for r in self._rows]).double())
        totals[2].index_add_(0, domains.to(device), torch.ones(len(domains), dtype=torch.float64, device=device))
        if self._ranks > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        totals = totals.cpu().numpy()
        token_ids = torch.cat([r[3] for r in self._rows]).numpy() if self._rows[0][3] is not None else None
        self._rows = []
        before = len(self.driver.history)
        learning_rate = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None
        with np.errstate(invalid="ignore", divide="ignore"):
            losses = np.where(totals[1] > 0, totals[0] / totals[1], np.nan)
        self.driver.observe(
            int(state.global_step), losses, samples=totals[2].astype(np.int64), tokens=int(totals[1].sum()),
            token_ids=token_ids, learning_rate=learning_rate,
        )
        if len(self.driver.history) > before:
            control.should_log = True  # every decision goes to the Trainer's log
            if self._grads is not None:
                self._grads.clear()
        if self.dataset.accounting().ended:
            control.should_training_stop = True  # every domain reached max_epochs (the dataset warned)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.driver is None or not self.driver.history or logs is None:
            return
        last = self.driver.history[-1]
        book = self.dataset.accounting()
        metrics = {"mixgym/reward": float(last["reward"]), "mixgym/objective": float(last["objective"])}
        for i, name in enumerate(self.dataset.domains):
            for key in ("mixture", "realised_mixture", "train_loss", "eval_loss"):
                metrics[f"mixgym/{key}/{name}"] = float(last[key][i])
            metrics[f"mixgym/examples/{name}"] = float(book.examples[i])
            metrics[f"mixgym/epochs/{name}"] = float(book.epochs[i])
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.driver is None or not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / MIXTURE_FILE, encode(self.driver.state_dict()))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._recording.close()
        if self._grads is not None:
            self._grads.remove()
        if self.driver is not None:
            self.driver.close()

