"""HFBackend: any `transformers` causal language model, pretrained from scratch on a local
multi-domain corpus, driven one mixture at a time.

The training step, as ODM, AC-ODM and HDS take it::

    for each optimizer step:
        for each of grad_accumulation micro-batches:
            domain = the next domain of the plan (drawn from the mixture)
            loss = model(micro-batch of that domain)      # forward
            (loss / grad_accumulation).backward()          # accumulate .grad; hooks add
                                                           # this micro-batch's gradient of
                                                           # the chosen matrices to domain's row
        clip gradients; AdamW step; learning-rate schedule step

Presets (random initialisation; no dropout, as Pythia; parameter counts at the default
4096-token vocabulary):

============ ========== ====== ====== ===== ======= ============== ==========
preset       family     layers hidden heads MLP     MLP output     parameters
============ ========== ====== ====== ===== ======= ============== ==========
pythia-tiny  GPT-NeoX   4      64     4     256     dense_4h_to_h  0.72M
neox-micro   GPT-NeoX   2      64     4     256     dense_4h_to_h  0.62M (0.23M at 1,024 ids: ``lm-small``)
gpt2-tiny    GPT-2      4      64     4     256     c_proj         0.49M
llama-tiny   Llama      4      64     4     192     down_proj      0.74M
pythia-small GPT-NeoX   6      384    6     1536    dense_4h_to_h  13.8M
============ ========== ====== ====== ===== ======= ============== ==========

All have 512 positions. ``model=`` also takes a `transformers` config object, a config
file (JSON with ``model_type``), or a local folder: with weights, training continues from
them (every `reset` restores them); with only ``config.json``, it starts from random
weights. The tokenizer's end-of-text, beginning and padding ids are written into the
model's config; a tokenizer with more ids than the model's vocabulary is refused (a larger
model vocabulary, padded as Pythia's, is allowed).

Per-domain gradients (`domain_gradients`, for the alignment and holistic rewards) come
from the training micro-batches themselves (``gradient_mode="training"``, what AC-ODM/HDS
compute): a tensor hook on each chosen matrix adds each micro-batch's gradient to its
domain's row as the backward pass produces it; rows are averaged over the domain's
micro-batches of the last `train` call. No extra forward or backward pass. The rows are the
exact sums (K x D floats) or, above a size limit or when asked, a fixed random projection of
them to r dimensions that keeps their inner products to a stated error
(``gradient_sketch_dim``; `mixgym.llm_backend.gradient_signal`). ``gradient_mode="probe"``
instead runs one extra forward and backward pass per domain on a fixed training batch when
`domain_gradients` is called; ``"off"`` reports no gradients (a plain training loop). The
chosen matrices default to the MLP output matrices of three layers spread through the
network (first, middle, last), as AC-ODM/HDS read three MLP output matrices; `layers`
names others.

Device and precision (`mixgym.llm_backend.devices`): ``device="auto"`` trains on the GPU
when there is one, in bf16 autocast with fp32 master weights and the fused AdamW kernel;
``compile`` runs the model through `torch.compile`. Several processes (torchrun, DDP) train
one run through `mixgym.llm_backend.distributed`; `HFBackend` itself is one process, its
`replicas` the group it trains with (`mixgym.llm_backend.replicas`).

Sequences are packed: each domain's documents, each followed by the end-of-text token, are
concatenated and cut into chunks of `seq_len` tokens; each domain walks its chunks in a
fresh random order every epoch (a small domain repeats). Held-out loss is the mean loss on
the first `eval_sequences` chunks of each domain's validation split (fixed).

Needs ``pip install "mixgym[hf]"`` (torch, transformers, datasets, tokenizers), imported
only when an `HFBackend` is built.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from mixgym.llm_backend.base import (
    BackendInfo,
    Signal,
    TrainStats,
    WeightStats,
    check_forced_fraction,
    check_options,
    check_split,
    draw_domains,
    validate_mixture,
)
from mixgym.llm_backend.corpus import DEFAULT_VALIDATION_FRACTION, Corpus, load_corpus
from mixgym.llm_backend.devices import PRECISIONS, adamw_options, autocast, autocast_dtype, compiled, resolve_device
from mixgym.llm_backend.gradient_signal import DomainGradients, sketch_dim_for
from mixgym.llm_backend.hf_memory import HeadsMismatch, check_heads, estimate_memory, parameter_count
from mixgym.llm_backend.offline import force_offline
from mixgym.llm_backend.progress import bar, stages
from mixgym.llm_backend.replicas import Replicas, SingleProcess
from mixgym.llm_backend.tokenizer import DEFAULT_VOCAB_SIZE, MIN_VOCAB_SIZE, TextTokenizer, corpus_tokenizer, load_tokenizer
from mixgym.llm_backend.whatif import WhatIfCache, WhatIfResult, cached_simulation, probe_seed, validate_request
from mixgym.resources import check_memory, gib
from mixgym.validation import check_field_types, integer

PRESETS: dict[str, dict[str, Any]] = {
    "pythia-tiny": {
        "model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 256, "max_position_embeddings": 512, "hidden_dropout": 0.0, "attention_dropout": 0.0,
    },
    "neox-micro": {
        "model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 256, "max_position_embeddings": 512, "hidden_dropout": 0.0, "attention_dropout": 0.0,
    },
    "pythia-small": {
        "model_type": "gpt_neox", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6,
        "intermediate_size": 1536, "max_position_embeddings": 512, "hidden_dropout": 0.0, "attention_dropout": 0.0,
    },
    "gpt2-tiny": {
        "model_type": "gpt2", "n_embd": 64, "n_layer": 4, "n_head": 4, "n_positions": 512,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    },
    "llama-tiny": {
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 192, "max_position_embeddings": 512,
    },
}
"""Named model shapes (see the module docstring's table)."""

MLP_OUTPUT_SUFFIXES = (
    "mlp.dense_4h_to_h.weight",  # GPT-NeoX / Pythia
    "mlp.c_proj.weight",  # GPT-2
    "mlp.down_proj.weight",  # Llama, Mistral, Qwen, ...
    "mlp.fc2.weight",  # OPT-style, Phi
    "mlp.fc_out.weight",  # GPT-J
)
"""Names (suffixes) of the MLP output matrix in common causal-LM families."""

GRADIENT_MODES = ("training", "probe", "off")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class HFConfig:
    """Configuration of an `HFBackend`.

    Attributes:
        model: a preset name (`PRESETS`), a `transformers` config object, a config file
            (JSON with ``model_type``) or a local model folder.
        corpus: the corpus folder (`mixgym.llm_backend.corpus`); None is the packaged
            sample corpus (`mixgym.data.SAMPLE_CORPUS`).
        tokenizer: a local tokenizer folder; None trains a byte-level BPE of `vocab_size`
            ids on the corpus' training split (cached beside the corpus, one per size).
        vocab_size: ids of the trained tokenizer (ignored when `tokenizer` is given); None
            is the model config's ``vocab_size`` when `model` is a config, a config file or
            a folder (so a user's own config fits the tokenizer trained for it), and 4096
            for a preset.
        tokenizer_cache: where to cache trained tokenizers instead of beside the corpus.
        validation_fraction: held-out share of a domain that gives no split.
        total_steps: optimizer-step budget of one run (the schedule's length).
        seq_len: tokens per sequence; at most the model's maximum positions.
        micro_batch_size: sequences per micro-batch (one domain per micro-batch).
        grad_accumulation: micro-batches per optimizer step.
        forced_fraction: share of each `train` call's ``n_steps * grad_accumulation``
            micro-batches spread evenly over the domains of positive weight, the rest drawn from
            the mixture and all shuffled together (`mixgym.llm_backend.base.draw_domains`; a
            domain of weight 0, as a phase masks one, gets none). AC-ODM and HDS give
            every domain one micro-batch per optimizer step, 22 of 144, so that every domain
            has a gradient and a loss; their presets set 22/144 through
            `mixgym.agents.compare.env_for`. The realised mixture then leans towards uniform:
            ``(1 - f) * mixture + f * uniform`` in expectation. 0 (the default): every
            micro-batch is drawn from the mixture, so the run trains on the mixture chosen, in
            expectation, and a domain may go without a gradient in a decision (its row of
            `domain_gradients` is then zeros).
        learning_rate: peak AdamW learning rate (Pythia-70M's 1e-3).
        warmup_fraction: share of `total_steps` of linear warm-up (at least one step;
            Pythia's 1%).
        min_lr_ratio: the cosine decay ends at this fraction of the peak (Pythia's 0.1).
        weight_decay: AdamW weight decay of matrices (not of biases and norms; Pythia's 0.1).
        betas: AdamW betas (Pythia's).
        grad_clip: clip the gradient's global norm to this (Pythia's 1.0).
        gradient_mode: ``"training"``, ``"probe"`` or ``"off"`` (module docstring).
        gradient_sketch_dim: ``"training"`` gradients kept exact (None), sketched to this
            many dimensions (an integer r), or ``"auto"``: exact while the K x D sums take
            at most 256 MiB, else r = 65536 (`mixgym.llm_backend.gradient_signal`).
        layers: names of the chosen matrices (gradients, weight norms); None is the MLP
            output matrix of three layers spread through the network.
        eval_sequences: validation chunks per domain in the fixed evaluation batches.
        target_weights: weights of the per-domain held-out losses in the objective; None
            is uniform.
        device: ``"auto"`` (the GPU if there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
            (`mixgym.llm_backend.devices`).
        precision: ``"auto"`` (bf16 autocast on a GPU that has it, fp32 elsewhere),
            ``"bf16"`` or ``"fp32"``; parameters and optimizer state stay fp32.
        fused_adamw: use the fused AdamW kernel; None: on CUDA only.
        compile: run the model through `torch.compile` (True, or a backend name).
        whatif_in_place: train the what-if probes' LoRA adapters on the run's model itself
            instead of a deep copy (no second copy of the weights, for a model too large to
            hold twice); the answers are the same and the run is left bit-identical either way
            (`mixgym.llm_backend.hf_lora`), so it is not part of the `fingerprint`.
        progress: progress bars (`tqdm.auto`, which a notebook renders) for loading the corpus,
            training or loading the tokenizer, tokenising, building the model, and each
            decision's optimizer steps; None (default): shown when stderr is a terminal or in
            a notebook; False silences them (`mixgym.llm_backend.progress`). Not part of the
            `fingerprint`.
    """

    model: Any = "pythia-tiny"
    corpus: str | Path | None = None
    tokenizer: str | Path | None = None
    vocab_size: int | None = None
    tokenizer_cache: str | Path | None = None
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    total_steps: int = 200
    seq_len: int = 128
    micro_batch_size: int = 8
    grad_accumulation: int = 4
    forced_fraction: float = 0.0
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    gradient_mode: str = "training"
    gradient_sketch_dim: int | str | None = "auto"
    layers: tuple[str, ...] | None = None
    eval_sequences: int = 8
    target_weights: tuple[float, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    fused_adamw: bool | None = None
    compile: bool | str = False
    whatif_in_place: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("betas", "layers", "target_weights"):  # YAML and JSON give lists
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        check_field_types(self)  # learning_rate="x", betas=0.9: named here, not as a TypeError from torch
        for name in ("total_steps", "seq_len", "micro_batch_size", "grad_accumulation", "eval_sequences", "vocab_size"):
            value = getattr(self, name)
            if name == "vocab_size" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 (a sequence predicts its next tokens), got {self.seq_len!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name in ("warmup_fraction", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        check_forced_fraction(self.forced_fraction)
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient_mode {self.gradient_mode!r}; choose one of {', '.join(GRADIENT_MODES)}")
        sketch = self.gradient_sketch_dim
        if sketch not in (None, "auto") and (not isinstance(sketch, (int, np.integer)) or isinstance(sketch, bool) or sketch < 1):
            raise ValueError(f"gradient_sketch_dim must be None (exact), 'auto' or an integer >= 1, got {sketch!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.fused_adamw not in (None, True, False):
            raise ValueError(f"fused_adamw must be None (auto), true or false, got {self.fused_adamw!r}")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise ValueError(f"compile must be true, false or a torch.compile backend name, got {self.compile!r}")
        if not isinstance(self.whatif_in_place, (bool, np.bool_)):
            raise TypeError(f"whatif_in_place must be true or false, got {self.whatif_in_place!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers or not all(isinstance(n, str) for n in self.layers):
                raise ValueError(f"layers must be a non-empty list of parameter names, got {self.layers!r}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.target_weights is not None:
            object.__setattr__(self, "target_weights", tuple(float(w) for w in self.target_weights))

    def fingerprint(self) -> str:
        """A short hash of the configuration (for checkpoints)."""
        fields = asdict(replace(self, model=None))
        del fields["whatif_in_place"]  # where the probes run, not what they answer
        del fields["progress"]  # what is shown, not what is computed
        fields["model"] = self.model.to_json_string() if hasattr(self.model, "to_json_string") else str(self.model)
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def preset_config(name: str, vocab_size: int, bos_id: int = 0, eos_id: int = 0, pad_id: int = 1) -> Any:
    """The `transformers` config of a preset (`PRESETS`) for a vocabulary and special ids."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
    _, transformers = _import_torch_transformers()
    fields = dict(PRESETS[name])
    return transformers.AutoConfig.for_model(
        fields.pop("model_type"), vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, **fields
    )


def _import_torch_transformers() -> tuple[Any, Any]:
    """torch and transformers, or gymnasium's `DependencyNotInstalled` naming the extra."""
    force_offline()
    try:
        import torch
        import transformers
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled(f'{error.name} is not installed; pip install "mixgym[hf]"') from error
    return torch, transformers


def _model_spec(model: Any, transformers: Any) -> tuple[Any, Path | None]:
    """(a config to build from, or None for a preset; the folder of pretrained weights, if any)."""
    if isinstance(model, transformers.PretrainedConfig):
        return copy.deepcopy(model), None
    if isinstance(model, str) and model in PRESETS:
        return None, None
    path = Path(model).expanduser() if isinstance(model, (str, Path)) else None
    if path is None or not (path.is_dir() or path.is_file()):  # a FIFO would block the read
        raise ValueError(
            f"unknown model {model!r}: give a preset ({', '.join(PRESETS)}), a transformers config object, "
            "a config file or a local model folder"
        )
    try:
        if path.is_dir():
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            weights = path if any((path / name).exists() for name in _WEIGHT_FILES) else None
            return config, weights
        fields = json.loads(path.read_text())
        model_type = fields.pop("model_type")
        check_heads(SimpleNamespace(**fields))
        return transformers.AutoConfig.for_model(model_type, **fields), None
    except HeadsMismatch:
        raise
    except Exception as error:  # json's, transformers' and huggingface_hub's validators each raise their own kinds
        raise ValueError(f"cannot read a model config from {str(path)!r}: {type(error).__name__}: {error}") from None


def _tokenizer_vocab_size(vocab_size: int | None, model_config: Any) -> int:
    """Ids of the BPE to train: the user's `vocab_size`, else the model config's (None for a
    preset: the default 4096)."""
    if vocab_size is not None:
        return int(vocab_size)
    if model_config is None:
        return DEFAULT_VOCAB_SIZE
    size = getattr(model_config, "vocab_size", None)
    if not isinstance(size, int) or size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"the model config's vocab_size {size!r} is too small for a trained byte-level BPE (at least "
            f"{MIN_VOCAB_SIZE} ids): give a tokenizer folder (tokenizer=...) or a config with a larger vocab_size"
        )
    return size


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _chosen_matrices(model: Any, layers: tuple[str, ...] | None) -> list[tuple[str, Any]]:
    """The matrices whose gradients and norms the backend reports."""
    params = dict(model.named_parameters())
    if layers is not None:
        unknown = [n for n in layers if n not in params]
        if unknown:
            matrices = [n for n, p in params.items() if p.dim() == 2]
            raise ValueError(f"unknown parameter(s) {unknown} in layers; the model's matrices include {matrices[:12]}")
        return [(n, params[n]) for n in layers]
    outputs = [n for n in params if n.endswith(MLP_OUTPUT_SUFFIXES)]
    if not outputs:
        raise ValueError(
            f"found no MLP output matrix (a parameter ending in one of {MLP_OUTPUT_SUFFIXES}) in "
            f"{type(model).__name__}; name the matrices to watch with layers=[...]"
        )
    picks = sorted({int(round(i)) for i in np.linspace(0, len(outputs) - 1, min(3, len(outputs)))})
    return [(outputs[i], params[outputs[i]]) for i in picks]


@dataclass
class WarmupCosine:
    """Learning-rate multiplier of step s (0-based): linear warm-up to 1 over `warmup_steps`,
    then cosine decay to `min_ratio` at the last step of the budget, ``total_steps - 1``
    (and flat after)."""

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(1, self.total_steps - 1 - self.warmup_steps), 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class RestartedSchedule:
    """Two schedules back to back: `first` for steps before `at`, `second` (counted from `at`)
    after (`HFBackend.plan_restart`)."""

    first: WarmupCosine
    second: WarmupCosine
    at: int

    def __call__(self, step: int) -> float:
        return self.first(step) if step < self.at else self.second(step - self.at)


class _DomainStream:
    """One domain's training chunks, walked in a fresh random order every epoch."""

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks  # (n, seq_len) int64 tensor
        self.rng = np.random.default_rng()
        self.order = np.zeros(0, dtype=np.int64)
        self.position = 0

    def reset(self, seed: np.random.SeedSequence) -> None:
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.chunks))
        self.position = 0

    def take(self, count: int, rows: slice = slice(None)) -> Any:
        """The next `count` chunks, of which only `rows` are read (a process's share)."""
        picks = []
        while len(picks) < count:
            if self.position == len(self.order):
                self.order, self.position = self.rng.permutation(len(self.chunks)), 0
            picks.append(int(self.order[self.position]))
            self.position += 1
        return self.chunks[picks[rows]]

    def state(self) -> dict[str, Any]:
        return {"rng": copy.deepcopy(self.rng.bit_generator.state), "order": self.order.copy(), "position": self.position}

    def load(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.order, self.position = state["order"].copy(), int(state["position"])


class HFBackend:
    """A `transformers` causal LM pretrained on a local multi-domain corpus (module docstring).

    >>> backend = HFBackend(model="gpt2-tiny", total_steps=4, seq_len=32, micro_batch_size=2, grad_accumulation=3)
    >>> backend.domains
    ['c', 'changelogs', 'licenses', 'manpages', 'python']
    >>> stats = backend.train(np.full(5, 0.2), n_steps=2)
    >>> stats.token_ids.shape, int(stats.samples.sum()), backend.domain_gradients().shape
    ((12, 32), 12, (5, 49152))
    """

    def __init__(self, config: HFConfig | None = None, replicas: Replicas | None = None, **overrides: Any) -> None:
        """`replicas`: the processes this one trains with (default: none,
        `mixgym.llm_backend.replicas.SingleProcess`); `overrides` replace fields of `config`."""
        config = config or HFConfig()
        if overrides:
            check_options(type(self).__name__, overrides, HFConfig.__dataclass_fields__)
            config = replace(config, **overrides)
        self.config = config
        self.replicas: Replicas = replicas or SingleProcess()
        if config.micro_batch_size % self.replicas.world_size:
            raise ValueError(
                f"micro_batch_size={config.micro_batch_size} (sequences per micro-batch, all processes together) is "
                f"not divisible by the world size {self.replicas.world_size}: every process trains an equal share"
            )
        torch, transformers = _import_torch_transformers()
        self._device = torch.device(resolve_device(config.device, torch.cuda.is_available(), self.replicas.local_rank, torch.cuda.device_count()))
        bf16 = self._device.type == "cuda" and torch.cuda.is_bf16_supported()
        self._autocast_dtype = autocast_dtype(config.precision, self._device.type, bf16)
        model_config, self._pretrained = _model_spec(config.model, transformers)
        with stages(["loading the corpus", "tokenizer", "tokenising", "building the model"], config.progress) as stage:
            self._build(config, model_config, transformers, stage)

    def _build(self, config: HFConfig, model_config: Any, transformers: Any, stage: Any) -> None:
        """The corpus, tokenizer, data and model, each stage shown by `stage` (`__init__`)."""
        import torch

        stage("loading the corpus")
        self.corpus: Corpus = load_corpus(self._corpus_path(), config.validation_fraction)
        self.domains = self.corpus.names
        if config.tokenizer is not None:
            stage("loading the tokenizer")
            self.tokenizer: TextTokenizer = load_tokenizer(config.tokenizer)
        else:
            stage("training or loading the tokenizer (trained once per corpus, then cached)")
            vocab_size = _tokenizer_vocab_size(config.vocab_size, model_config)
            self.tokenizer = corpus_tokenizer(self.corpus.train_texts(), self.corpus.path, vocab_size, config.tokenizer_cache)
        self._model_config = self._finish_model_config(model_config)
        limit = _max_positions(self._model_config)
        if limit is not None and config.seq_len > limit:
            raise ValueError(f"seq_len={config.seq_len} exceeds the model's maximum of {limit} positions")
        check_heads(self._model_config)
        self._check_memory(torch)
        self._initial_weights = None
        if self._pretrained is not None:
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(str(self._pretrained), local_files_only=True)
            except Exception as error:  # safetensors, torch and transformers each raise their own kinds
                raise ValueError(
                    f"cannot load the model weights in {str(self._pretrained)!r} ({type(error).__name__}: {error}): "
                    "the files are damaged or not a model of this config"
                ) from None
            self._initial_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stage("tokenising")
        self._make_data()
        if config.target_weights is not None:
            w = np.asarray(config.target_weights, dtype=np.float64)
            if w.shape != (len(self.domains),) or np.any(w < 0) or not w.sum() > 0:
                raise ValueError(
                    f"target_weights must be {len(self.domains)} non-negative numbers with a positive sum "
                    f"(domains {self.domains}), got {config.target_weights!r}"
                )
            self._objective_weights: np.ndarray | None = w / w.sum()
        else:
            self._objective_weights = None
        self.signals = frozenset(
            {Signal.WEIGHT_NORMS, Signal.TOKENS, Signal.TWIN, Signal.WHATIF, Signal.RESTART}
            | ({Signal.GRADIENTS} if config.gradient_mode != "off" else set())
            | ({Signal.VALIDATION} if all(len(batch) for batch in self._valid_batches) else set())
        )
        self.whatif_cache = WhatIfCache()
        """Answers of `simulate`, kept across resets (keyed by a digest of the state)."""
        self.total_steps = config.total_steps
        self.micro_batch_domains = np.zeros((0, config.grad_accumulation), dtype=np.int64)
        """The domain of every micro-batch of the last `train` call, (n_steps, grad_accumulation)."""
        self.replicas.agree(self._fingerprint())
        stage("building the model")
        self.reset(seed=0)

    # ------------------------------------------------------------------ construction
    def _corpus_path(self) -> Path:
        if self.config.corpus is not None:
            return Path(self.config.corpus)
        from mixgym.data import SAMPLE_CORPUS

        return SAMPLE_CORPUS

    def _check_memory(self, torch: Any) -> None:
        """Refuse a model too large for the device before building it (`estimate_memory`)."""
        cfg = self.config
        needed = estimate_memory(self._model_config, cfg.micro_batch_size // self.replicas.world_size, cfg.seq_len, self._pretrained is not None)
        name = repr(str(cfg.model)) if isinstance(cfg.model, (str, Path)) else f"({type(cfg.model).__name__})"
        what = f"model {name} ({gib(parameter_count(self._model_config) * 4)} of fp32 weights; micro_batch_size={cfg.micro_batch_size}, seq_len={cfg.seq_len})"
        advice = "use a smaller model, micro_batch_size or seq_len"
        if self._device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self._device)
            if needed > free:
                raise ValueError(f"{what} needs about {gib(needed)} of GPU memory, more than the {gib(free)} free on {self._device}: {advice}")
        else:
            check_memory(needed, what, advice)

    def _finish_model_config(self, model_config: Any) -> Any:
        """The model's config with the tokenizer's vocabulary and special ids."""
        tok = self.tokenizer
        if model_config is None:
            return preset_config(self.config.model, tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id)
        if tok.vocab_size > model_config.vocab_size:
            given = f"tokenizer={self.config.tokenizer!r}" if self.config.tokenizer else f"vocab_size={self.config.vocab_size}"
            raise ValueError(
                f"the tokenizer ({tok.source}, from {given}) has {tok.vocab_size} ids but the model's vocabulary has "
                f"{model_config.vocab_size}: give a smaller vocab_size, a matching tokenizer, or leave both out to "
                "train one of the model's size"
            )
        model_config.bos_token_id, model_config.eos_token_id, model_config.pad_token_id = tok.bos_id, tok.eos_id, tok.pad_id
        return model_config

    def _make_data(self) -> None:
        """Tokenise the corpus into per-domain chunk streams, evaluation and probe batches."""
        import torch

        cfg = self.config
        self._streams, self._eval_batches, self._valid_batches, self._probe_batches, sizes = [], [], [], [], []
        for domain in self.corpus.domains:
            chunks = {}
            for split, texts in (("train", domain.train), ("validation", domain.validation)):
                ids = self.tokenizer.encode_documents(texts)
                count = len(ids) // cfg.seq_len
                if count == 0:
                    raise ValueError(
                        f"domain {domain.name!r} has {len(ids)} {split} tokens, fewer than one sequence of "
                        f"seq_len={cfg.seq_len}: add text to it or lower seq_len"
                    )
                chunks[split] = torch.from_numpy(ids[: count * cfg.seq_len].astype(np.int64)).view(count, cfg.seq_len)
            sizes.append(chunks["train"].numel())
            self._streams.append(_DomainStream(chunks["train"]))
            self._eval_batches.append(chunks["validation"][: cfg.eval_sequences].to(self._device))
            # Signal.VALIDATION: the next chunks of the split, never those that score the run
            self._valid_batches.append(chunks["validation"][cfg.eval_sequences : 2 * cfg.eval_sequences].to(self._device))
            spread = np.linspace(0, len(chunks["train"]) - 1, cfg.micro_batch_size).round().astype(np.int64)
            self._probe_batches.append(chunks["train"][spread].to(self._device))
        self._domain_sizes = np.array(sizes, dtype=np.float64)

    # ------------------------------------------------------------------ protocol
    @property
    def step(self) -> int:
        return self._step

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            domain_sizes=self._domain_sizes.copy(),
            tokens_per_sample=self.config.seq_len,
            objective_weights=self._objective_weights,
            domain_kinds=self.corpus.kinds,
        )

    def reset(self, seed: int) -> None:
        """Fresh model (random init from `seed`, or the pretrained weights), optimizer,
        schedule, data order and RNGs."""
        import torch

        cfg = self.config
        from transformers import AutoModelForCausalLM

        init_seed, torch_seed, mixture_seed, *domain_seeds = np.random.SeedSequence(seed).spawn(3 + len(self.domains))
        self._seed = int(seed)
        # Let the previous run go first: two models and optimizer states alive at once would
        # double the peak memory of every reset.
        self.model = self._training_model = self.optimizer = self.scheduler = self._gradients = None
        self._matrices, self._previous_weights = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed.generate_state(1)[0]))
            model = AutoModelForCausalLM.from_config(self._model_config)
        if self._initial_weights is not None:
            model.load_state_dict(self._initial_weights)
        self.model = model.to(self._device)
        self._training_model = compiled(torch, self.replicas.wrap(self.model), cfg.compile)
        self._matrices = _chosen_matrices(self.model, cfg.layers)
        matrices = [p for _, p in self._matrices]
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.learning_rate,
            betas=cfg.betas,
            **adamw_options(self._device.type, cfg.fused_adamw),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._plain_schedule())
        seed_value = int(torch_seed.generate_state(1)[0]) + self.replicas.rank  # each process its own dropout
        self._rng_states = {"cpu": torch.Generator().manual_seed(seed_value).get_state()}
        if self._device.type == "cuda":
            self._rng_states["cuda"] = torch.Generator(device=self._device).manual_seed(seed_value).get_state()
        self._mixture_rng = np.random.default_rng(mixture_seed)
        for stream, domain_seed in zip(self._streams, domain_seeds):
            stream.reset(domain_seed)
        if cfg.gradient_mode == "training":
            sketch = sketch_dim_for(cfg.gradient_sketch_dim, len(self.domains), sum(p.numel() for p in matrices))
            self._gradients = DomainGradients(matrices, len(self.domains), sketch)
        self._previous_weights = [p.detach().clone() for p in matrices]
        self._step = 0
        self._restart = None

    def twin(self) -> HFBackend:
        """A second run of the same model, corpus and settings (`Signal.TWIN`), sharing the
        tokenised chunks, evaluation and probe batches (read only) but with its own model,
        optimizer, data cursors and RNGs. Reset with the same seed it starts from the same
        weights and replays the same random numbers: each domain's chunk order comes from its
        own stream, the micro-batch plan draws the same uniform numbers whatever the mixture
        (mapped to domains through its CDF, `draw_plan`), and dropout draws from the run's own
        torch generator. It doubles the memory and compute of training; the twin records no
        per-domain gradients (``gradient_mode="off"``: the hooks read gradients without changing
        them, and nothing reads the twin's).
        """
        twin = copy.copy(self)
        twin.config = replace(self.config, gradient_mode="off")
        twin.signals = self.signals - {Signal.GRADIENTS}
        twin._streams = [_DomainStream(stream.chunks) for stream in self._streams]
        twin.reset(seed=0)  # rebinds model, optimizer, scheduler, RNGs and cursors: nothing mutable is shared
        return twin

    def draw_plan(self, mixture: np.ndarray, n_steps: int) -> np.ndarray:
        """The domain of each micro-batch of a `train` call, (n_steps, grad_accumulation),
        drawn from `mixture` (see `HFConfig.forced_fraction`)."""
        mixture = validate_mixture(mixture, len(self.domains))
        if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        total = int(n_steps) * self.config.grad_accumulation
        plan = draw_domains(mixture, total, self.config.forced_fraction, self._mixture_rng)
        return plan.reshape(int(n_steps), self.config.grad_accumulation)

    def train(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        """`n_steps` AdamW steps; each micro-batch's domain drawn from `mixture` (see
        `HFConfig.forced_fraction`)."""
        return self.train_plan(self.draw_plan(mixture, n_steps))

    def train_plan(self, plan: np.ndarray) -> TrainStats:
        """One AdamW step per row of `plan` (n_steps, grad_accumulation), one micro-batch of
        the named domain per entry: `train` with its domains already drawn. Every process of
        a distributed run trains rank 0's plan; each its own share of each micro-batch.
        `TrainStats.token_ids` are the whole micro-batches on rank 0, None on other ranks."""
        import torch

        start = time.perf_counter()
        cfg, k = self.config, len(self.domains)
        plan = np.asarray(plan, dtype=np.int64)
        if plan.ndim != 2 or plan.shape[1] != cfg.grad_accumulation or len(plan) < 1 or plan.min() < 0 or plan.max() >= k:
            raise ValueError(f"a plan is (n_steps >= 1, {cfg.grad_accumulation}) domain indices in 0..{k - 1}, got {plan!r}")
        self.micro_batch_domains = plan
        self._previous_weights = [p.detach().clone() for _, p in self._matrices]
        gradients = self._gradients
        if gradients is not None:
            gradients.clear()
        loss_sums = torch.zeros(k, dtype=torch.float64, device=self._device)
        rows = self.replicas.rows(cfg.micro_batch_size)
        batches = []
        step_norms = [self._matrix_norms()]
        self.model.train()
        shown = cfg.progress if self.replicas.rank == 0 else False
        steps = bar(len(plan), f"decision: {len(plan)} optimizer steps", shown, leave=False)
        with self._own_rng(), steps:
            for step_domains in plan:
                for slot, domain in enumerate(map(int, step_domains)):
                    batch = self._streams[domain].take(cfg.micro_batch_size, rows)
                    batches.append(batch)
                    batch = batch.to(self._device, non_blocking=True)
                    with self.replicas.sync(last=slot == len(step_domains) - 1):
                        with autocast(torch, self._device.type, self._autocast_dtype):
                            loss = self._training_model(input_ids=batch, labels=batch).loss
                        with gradients.recording(domain) if gradients is not None else contextlib.nullcontext():
                            (loss / cfg.grad_accumulation).backward()
                    loss_sums[domain] += loss.detach()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step_norms.append(self._matrix_norms())
                self._step += 1
                steps.update(1)
        self.replicas.sum_(loss_sums)
        if gradients is not None:
            gradients.reduce(self.replicas)
        micro_batches = np.bincount(plan.ravel(), minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = loss_sums.cpu().numpy() / (np.maximum(micro_batches, 1) * self.replicas.world_size)
            train_loss = np.where(micro_batches > 0, means, np.nan)
        token_ids = self.replicas.gather_rows(torch.stack(batches))
        return TrainStats(
            samples=micro_batches * cfg.micro_batch_size,
            train_loss=train_loss,
            tokens=int(micro_batches.sum()) * cfg.micro_batch_size * cfg.seq_len,
            wall_time=time.perf_counter() - start,
            learning_rate=self._last_learning_rate(),
            token_ids=None if token_ids is None else token_ids.numpy(),
            step_weight_norms=torch.stack(step_norms).cpu().numpy(),
        )

    def _matrix_norms(self) -> Any:
        """(L,) float64 tensor: the chosen matrices' Frobenius norms, left on the device (one
        transfer per `train` call, not one per step)."""
        import torch

        with torch.no_grad():
            return torch.stack([p.detach().double().norm() for _, p in self._matrices])

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with the backend's own torch RNG streams (dropout, if the model has any), so
        that other torch users in the process (an SB3 agent) neither disturb nor see them."""
        import torch

        cuda = self._device.type == "cuda"
        with torch.random.fork_rng(devices=[self._device.index or 0] if cuda else []):
            torch.set_rng_state(self._rng_states["cpu"])
            if cuda:
                torch.cuda.set_rng_state(self._rng_states["cuda"], self._device)
            yield
            self._rng_states["cpu"] = torch.get_rng_state()
            if cuda:
                self._rng_states["cuda"] = torch.cuda.get_rng_state(self._device)

    def _last_learning_rate(self) -> float:
        """The learning rate of the last optimizer step taken."""
        return self.config.learning_rate * self.scheduler.lr_lambdas[0](max(self._step - 1, 0))

    def evaluate(self, split: str = "eval") -> dict[str, float]:
        """Mean next-token loss per domain on its fixed validation chunks: the first
        ``eval_sequences`` (``split="eval"``, the rows that score the run) or the next
        ``eval_sequences`` (``"validation"``, `Signal.VALIDATION`, for agents' decisions). Each
        process evaluates its share of the chunks; the sums are combined."""
        import torch

        batches = self._split_batches(split)
        self.model.eval()
        sums = torch.zeros(len(self.domains), dtype=torch.float64, device=self._device)
        with torch.no_grad(), autocast(torch, self._device.type, self._autocast_dtype):
            for i, batch in enumerate(batches):
                part = batch[self.replicas.rows(len(batch))]
                if len(part):
                    sums[i] = self.model(input_ids=part, labels=part).loss.double() * len(part)
        self.replicas.sum_(sums)
        return {name: float(total) / len(batch) for name, total, batch in zip(self.domains, sums.tolist(), batches)}

    def _split_batches(self, split: str) -> list[Any]:
        if check_split(split) == "eval":
            return self._eval_batches
        short = [d for d, batch in zip(self.domains, self._valid_batches) if not len(batch)]
        if short:
            raise ValueError(
                f"no validation rows for domain(s) {short}: their validation split has no chunk beyond the "
                f"eval_sequences={self.config.eval_sequences} that score the run; raise validation_fraction or "
                "lower eval_sequences"
            )
        return self._valid_batches

    def _plain_schedule(self) -> WarmupCosine:
        cfg = self.config
        return WarmupCosine(max(1, math.ceil(cfg.warmup_fraction * cfg.total_steps)), cfg.total_steps, cfg.min_lr_ratio)

    def plan_restart(self, step: int) -> None:
        """Make this run two runs that meet at `step` (`Signal.RESTART`, as OP-Mix's prefix and
        final Trainer jobs: `pipeline/pretrain_opm.py:337-349` warm-up scaled to the prefix,
        `:787-801` ``warmup_steps=0`` at the peak rate): the warm-up-cosine schedule over
        ``[0, step)`` with the run's warm-up share of those steps, then over ``[step,
        total_steps)`` from the peak with no warm-up. Call before the run reaches `step`;
        `reset` clears it; `restart_optimizer` at `step`."""
        integer("restart step", step, 1, self.total_steps - 1)
        if self._step > step:
            raise ValueError(f"cannot plan a restart at step {step}: the run is already at step {self._step}")
        self._install_restart(int(step))

    def _install_restart(self, step: int) -> None:
        cfg = self.config
        schedule = RestartedSchedule(
            WarmupCosine(max(1, math.ceil(cfg.warmup_fraction * step)), step, cfg.min_lr_ratio),
            WarmupCosine(0, cfg.total_steps - step, cfg.min_lr_ratio),
            step,
        )
        self.scheduler.lr_lambdas[0] = schedule
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * schedule(self.scheduler.last_epoch)  # the next step's rate, as LambdaLR sets it
        self._restart: int | None = step

    def restart_optimizer(self) -> None:
        """A fresh AdamW from now on (`Signal.RESTART`): its moments and step counts dropped, as
        a new Trainer job starts with a new optimizer."""
        self.optimizer.state.clear()

    def domain_gradients(self) -> np.ndarray:
        """(K, D) float64: per-domain gradients of the mean next-token loss w.r.t. the chosen
        matrices, flattened and concatenated in `weight_stats().names` order; (K, r) when
        sketched (`HFConfig.gradient_sketch_dim`): their fixed random projection, which keeps
        inner products and norms, all the rewards use.

        ``"training"``: each domain's mean micro-batch gradient over the last `train` call
        (zeros before the first call, or for a domain that got no micro-batch).
        ``"probe"``: the gradient at the current weights on each domain's fixed probe batch.
        """
        import torch

        if self.config.gradient_mode == "off":
            raise RuntimeError("gradient_mode='off': this backend reports no gradients")
        if self._gradients is not None:
            return self._gradients.means(self.config.grad_accumulation)
        matrices = [p for _, p in self._matrices]
        self.model.eval()
        rows = []
        for batch in self._probe_batches:
            loss = self.model(input_ids=batch, labels=batch).loss
            grads = torch.autograd.grad(loss, matrices)
            rows.append(torch.cat([g.reshape(-1) for g in grads]).double().cpu().numpy())
        return np.stack(rows)

    def weight_stats(self) -> WeightStats:
        import torch

        updates = []
        with torch.no_grad():
            for (_, p), before in zip(self._matrices, self._previous_weights):
                updates.append(float((p - before).double().norm()))
        norms = self._matrix_norms().cpu().numpy()
        return WeightStats(names=tuple(n for n, _ in self._matrices), norms=norms, update_norms=np.array(updates))

    def _fingerprint(self) -> str:
        payload = f"{self.config.fingerprint()}|{self.tokenizer.fingerprint()}|{self.domains}|{self._domain_sizes.tolist()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def process_state(self) -> dict[str, Any]:
        """The part of `state_dict` that is this process's own: its torch RNG streams and
        its data positions (a distributed run keeps one per process)."""
        return {"torch_rng": {k: v.clone() for k, v in self._rng_states.items()}, "streams": [s.state() for s in self._streams]}

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, schedule, data positions, every RNG and the last call's
        gradient sums and weights, copied: resuming from it is bit-identical on CPU."""
        return {
            "fingerprint": self._fingerprint(),
            "step": self._step,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            "mixture_rng": copy.deepcopy(self._mixture_rng.bit_generator.state),
            "previous_weights": [w.clone() for w in self._previous_weights],
            "gradients": None if self._gradients is None else self._gradients.state(),
            "micro_batch_domains": self.micro_batch_domains.copy(),
            "seed": self._seed,
            **({"restart": self._restart} if self._restart is not None else {}),
            **self.process_state(),
        }

    def __getstate__(self) -> dict[str, Any]:
        """What `pickle` and `copy.deepcopy` carry: the configuration and `state_dict`.

        Not the corpus nor its tokens: a real corpus is hundreds of MB of token ids, and the
        folder it came from is where the copy runs too (on this machine, or a worker that
        trains on it), so the copy reads it again (`load_corpus` keeps loaded corpora in
        memory, the tokenizer comes from its cache) and `load_state_dict`'s fingerprint check
        refuses a corpus or tokenizer that changed in between. Nor the torch and tokenizers
        objects, which are rebuilt (a module object cannot be pickled). A process of a
        distributed run cannot be copied: its process group stays with its processes.
        """
        if not isinstance(self.replicas, SingleProcess):
            raise TypeError(
                f"a distributed HFBackend (rank {self.replicas.rank} of {self.replicas.world_size}) cannot be pickled "
                "or copied; save and load its state_dict instead"
            )
        return {"config": self.config, "state": self.state_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]
        self.load_state_dict(state["state"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self._fingerprint():
            raise ValueError(
                f"state is from a backend with fingerprint {state.get('fingerprint')!r} (configuration, tokenizer "
                f"and corpus); this backend's is {self._fingerprint()!r}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        if state.get("restart") is not None:  # the schedule's shape first, then its position
            self._install_restart(int(state["restart"]))
        elif self._restart is not None:
            self.scheduler.lr_lambdas[0] = self._plain_schedule()
            self._restart = None
        self.scheduler.load_state_dict(copy.deepcopy(state["scheduler"]))
        self._step = int(state["step"])
        self._rng_states = {k: v.clone() for k, v in state["torch_rng"].items()}
        self._mixture_rng.bit_generator.state = copy.deepcopy(state["mixture_rng"])
        for stream, stream_state in zip(self._streams, state["streams"]):
            stream.load(stream_state)
        self._previous_weights = [w.clone().to(self._device) for w in state["previous_weights"]]
        if self._gradients is not None and state["gradients"] is not None:
            self._gradients.load(state["gradients"])
        self.micro_batch_domains = state["micro_batch_domains"].copy()
        self._seed = int(state.get("seed", 0))

    # ------------------------------------------------------------------ what-if (Signal.WHATIF)
    def simulate(
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
        """Held-out losses of probe mixtures and candidates from the current state, by LoRA
        adapters trained on a copy of the model, or on the model itself with
        ``whatif_in_place`` (`mixgym.llm_backend.hf_lora`); the run is left bit-identical.
        Losses on `split`'s rows (`evaluate`); `per_sequence` mixes each probe micro-batch
        sequence by sequence. Needs peft (``pip install "mixgym[hf]"``)."""
        from mixgym.llm_backend import hf_lora

        request = validate_request(probes, steps, candidates, method, len(self.domains), lr_scale, rank, split, per_sequence)
        key = request.key(self._fingerprint(), self._state_digest())
        seed = probe_seed(self._seed, self._step)
        in_place = self.config.whatif_in_place
        return cached_simulation(
            self.whatif_cache, key, lambda: hf_lora.simulate(self.model, self._probe_setting(split), request, seed, in_place)
        )

    def whatif_cost(
        self, probes: np.ndarray, steps: int, candidates: np.ndarray, method: str = "merge", rank: int | None = None
    ) -> float:
        """Main-step equivalents `simulate` would spend (`hf_lora.whatif_cost`)."""
        from mixgym.llm_backend import hf_lora

        request = validate_request(probes, steps, candidates, method, len(self.domains), rank=rank)
        return hf_lora.whatif_cost(self.model, self._probe_setting(), request)

    def _probe_setting(self, split: str = "eval") -> Any:
        from mixgym.llm_backend.hf_lora import ProbeSetting

        cfg = self.config
        return ProbeSetting(
            train_chunks=[stream.chunks for stream in self._streams],
            eval_batches=self._split_batches(split),
            micro_batch_size=cfg.micro_batch_size,
            grad_accumulation=cfg.grad_accumulation,
            peak_learning_rate=cfg.learning_rate,
            betas=cfg.betas,
            grad_clip=cfg.grad_clip,
            device=self._device,
        )

    def _state_digest(self) -> str:
        """A hash of the model's weights, the step and the run's seed (what a probe depends on)."""
        import torch

        digest = hashlib.sha256(f"{self._step}|{self._seed}".encode())
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
