"""`HFBackend`'s what-if probes (`Signal.WHATIF`) as peft LoRA adapters, as OP-Mix trains them.

Every request works on a deep copy of the model (the run's model, optimizer, schedule, data
streams and generators are never touched, and peft's ``requires_grad`` changes stay on the
copy), or, with ``HFConfig(whatif_in_place=True)``, for a model too large to hold twice, on the
run's model itself: the adapters are its only trainable parameters, so its weights are never
written, and afterwards every LoRA layer is replaced by the layer it wraps and every
``requires_grad`` flag and train/eval mode is set back (`_restored`); both give the same answers. On the copy, each branch -- a probe, or for ``method="exact"`` a candidate -- is one LoRA
adapter trained alone for the request's steps with AdamW (fresh state, no weight decay: HF's
``TrainingArguments`` default, which OP-Mix's `train.py:183-210` keeps) at
`whatif.probe_learning_rates` of ``lr_scale`` x the run's peak rate, the run's batch shape
(``micro_batch_size`` x ``grad_accumulation`` micro-batches of one domain each, drawn from the
branch's mixture; with the request's ``per_sequence`` each sequence's domain is drawn from the
mixture instead, as OP-Mix's probes read one weighted, shuffled dataset: `train.py:118-128`,
`src/data.py:65-130`) and gradient clipping, on data streams of its own. The whole request runs
under a forked torch generator seeded from `whatif.probe_seed` (LoRA's initialisation and
dropout never draw from the run's generators), re-seeded before each branch, so every branch
sees the same initialisation, dropout masks and uniform draws (common random numbers).

Adapters (`lora_config`): rank r (default 16) and alpha 2r, dropout 0.05, on every linear (or
GPT-2 ``Conv1D``) projection of the attention and MLP blocks, not on the LM head -- OP-Mix's
settings: ``lora_r=16, lora_alpha=32`` (`pipeline/pretrain_opm.py:387-390`), dropout 0.05
(`src/argparser.py:55-59`), all attention and FFN projections with the LM head excluded
(`src/argparser.py:61-74`, ``lora_exclude_modules=["transformer.ff_out"]`` at
`pipeline/pretrain_opm.py:390`).

Candidates are evaluated exactly, with no merged copies: a "merge" candidate has every probe's
adapter active at once, adapter p scaled by the candidate's weight w_p (peft's ``set_scale``),
which computes ``W x + sum_p w_p (alpha / r) B_p A_p x`` -- the current weights plus the weighted
probe deltas, OP-Mix's ``theta_0 + sum_c w_c dLoRA_c`` (`pipeline/pretrain.py:229-299`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixgym.llm_backend.base import domains_of
from mixgym.llm_backend.whatif import (
    WhatIfRequest,
    WhatIfResult,
    forward_flops,
    probe_learning_rates,
    training_flops,
)

DEFAULT_RANK = 16
"""LoRA rank when a request gives none (`pipeline/pretrain_opm.py:388`)."""
ALPHA_PER_RANK = 2
"""alpha = 2 r: OP-Mix's 32 at rank 16 (`pipeline/pretrain_opm.py:388-389`)."""
LORA_DROPOUT = 0.05
"""`src/argparser.py:55-59`."""


PEFT_FOR_TRANSFORMERS_5 = "0.18"
"""The first peft release that works with transformers 5 (older ones import APIs it removed)."""


def import_peft() -> Any:
    """peft, or gymnasium's `DependencyNotInstalled` naming the extra (or the version needed)."""
    from gymnasium.error import DependencyNotInstalled

    try:
        import peft
    except ImportError as error:
        raise DependencyNotInstalled(f'{error.name} is not installed; pip install "mixgym[hf]"') from error
    import transformers
    from packaging.version import Version  # a dependency of transformers

    if Version(transformers.__version__).major >= 5 and Version(peft.__version__) < Version(PEFT_FOR_TRANSFORMERS_5):
        raise DependencyNotInstalled(
            f"peft {peft.__version__} does not work with transformers {transformers.__version__}; "
            'pip install "peft>=0.18" (or pip install "mixgym[hf]")'
        )
    return peft


def _projections(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every linear or GPT-2 ``Conv1D`` projection but the LM head."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head
    ]


def lora_config(model: Any, rank: int) -> Any:
    """The peft `LoraConfig` of a probe of `rank` on `model` (module docstring)."""
    from transformers.pytorch_utils import Conv1D

    peft = import_peft()
    targets = _projections(model)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no linear projection besides its LM head to put LoRA adapters on")
    return peft.LoraConfig(
        r=rank,
        lora_alpha=ALPHA_PER_RANK * rank,
        lora_dropout=LORA_DROPOUT,
        target_modules=[name for name, _ in targets],
        fan_in_fan_out=any(isinstance(module, Conv1D) for _, module in targets),
        bias="none",
    )


def _micro_batch(streams: list[Any], domains: Any, size: int) -> Any:
    """`size` sequences from the stream of `domains` (one domain), or, an array of `size`
    domains (``per_sequence``), sequence i from the stream of ``domains[i]``."""
    import torch

    if np.ndim(domains) == 0:
        return streams[int(domains)].take(size)
    return torch.cat([streams[int(d)].take(1) for d in domains])


@dataclass(frozen=True)
class ProbeSetting:
    """What the probes need from the run.

    Attributes:
        train_chunks: per domain, its (n, seq_len) training chunks.
        eval_batches: per domain, its fixed held-out batch (on the device).
        micro_batch_size: sequences per micro-batch.
        grad_accumulation: micro-batches per optimizer step.
        peak_learning_rate: the run's peak learning rate.
        betas: AdamW betas (the run's).
        grad_clip: gradient-norm clip (the run's).
        device: torch device.
    """

    train_chunks: list[Any]
    eval_batches: list[Any]
    micro_batch_size: int
    grad_accumulation: int
    peak_learning_rate: float
    betas: tuple[float, float]
    grad_clip: float
    device: Any


def compute_parameters(model: Any) -> int:
    """Parameters a token's forward pass multiplies by: all but embedding lookups (an LM
    head tied to the input embedding counts once, as the head)."""
    import torch

    return sum(
        p.numel()
        for module in model.modules()
        if not isinstance(module, torch.nn.Embedding)
        for p in module.parameters(recurse=False)
    )


def adapter_parameters(model: Any, rank: int) -> int:
    """Parameters of one LoRA adapter of `rank`: r (in + out) per adapted projection."""
    return rank * sum(sum(module.weight.shape) for _, module in _projections(model))


def whatif_cost(model: Any, setting: ProbeSetting, request: WhatIfRequest) -> float:
    """Main-step equivalents of `request` (`mixgym.llm_backend.whatif`): LoRA steps (forward
    and backward through model and adapter, weight gradients of the adapter only) and
    evaluations (forward through the model and the active adapters)."""
    params = compute_parameters(model)
    adapter = adapter_parameters(model, request.rank or DEFAULT_RANK)
    step_tokens = setting.micro_batch_size * setting.grad_accumulation * setting.train_chunks[0].shape[1]
    held_out = sum(batch.numel() for batch in setting.eval_batches)
    probes, candidates = len(request.probes), len(request.candidates)
    exact = request.method == "exact"
    branches = probes + (candidates if exact else 0)
    flops = branches * request.steps * training_flops(params + adapter, adapter, step_tokens)
    flops += forward_flops(params, held_out) + probes * forward_flops(params + adapter, held_out)
    flops += candidates * forward_flops(params + (1 if exact else probes) * adapter, held_out)
    return flops / training_flops(params, params, step_tokens)


def simulate(
    model: Any, setting: ProbeSetting, request: WhatIfRequest, seed: np.random.SeedSequence, in_place: bool = False
) -> WhatIfResult:
    """Train the request's adapters on a copy of `model` -- or, `in_place`, on `model` itself
    -- and evaluate (module docstring)."""
    import torch

    peft = import_peft()
    rank = request.rank or DEFAULT_RANK
    config = lora_config(model, rank)
    torch_seed = int(seed.generate_state(1)[0])
    probe_names = [f"probe{i}" for i in range(len(request.probes))]
    branches = list(zip(probe_names, request.probes))
    if request.method == "exact":
        branches += [(f"candidate{c}", m) for c, m in enumerate(request.candidate_mixtures)]
    cuda = setting.device.type == "cuda"
    with torch.random.fork_rng(devices=[setting.device.index or 0] if cuda else []), _restored(model, in_place):
        wrapped = None
        for name, mixture in branches:
            torch.manual_seed(torch_seed)
            with warnings.catch_warnings():  # peft calls a transformers 5 API it deprecated; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                if wrapped is None:
                    wrapped = peft.get_peft_model(model if in_place else copy.deepcopy(model), config, adapter_name=name)
                else:
                    wrapped.add_adapter(name, config)
            _train_adapter(wrapped, name, mixture, request, setting, seed)
        assert wrapped is not None
        wrapped.eval()
        with torch.no_grad():
            with wrapped.disable_adapter():
                base_loss = held_out_losses(wrapped, setting.eval_batches)
            probe_loss = [_scaled_losses(wrapped, [name], [1.0], setting) for name in probe_names]
            if request.method == "merge":
                candidate_loss = [_scaled_losses(wrapped, probe_names, list(w), setting) for w in request.candidates]
            else:
                candidate_loss = [
                    _scaled_losses(wrapped, [f"candidate{c}"], [1.0], setting) for c in range(len(request.candidates))
                ]
    k = len(setting.eval_batches)
    return WhatIfResult(
        base_loss=base_loss,
        probe_loss=np.array(probe_loss).reshape(len(probe_names), k),
        candidate_loss=np.array(candidate_loss).reshape(len(request.candidates), k),
        candidate_mixtures=request.candidate_mixtures,
        probe_steps=len(branches) * request.steps,
        evaluations=1 + len(probe_names) + len(request.candidates),
        cost=whatif_cost(model, setting, request),
        wall_time=0.0,
    )


@contextlib.contextmanager
def _restored(model: Any, in_place: bool) -> Iterator[None]:
    """With `in_place`, give `model` back as it was after peft worked on it: every LoRA layer
    replaced by the layer it wraps (the same module, so the same parameters the run's optimizer
    holds), then every parameter's ``requires_grad`` and every module's train/eval mode as they
    were (peft freezes the base weights; the probes switch modes), and no attribute peft added
    (``peft_config``) left on any module. Runs on errors too."""
    if not in_place:
        yield
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training, set(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        from peft.tuners.lora import LoraLayer

        wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
        for name, module in wrapped:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        for module, training, attributes in modes:
            module.training = training
            for added in set(vars(module)) - attributes:  # peft's bookkeeping, e.g. peft_config
                delattr(module, added)


def _set_active(model: Any, names: list[str], scales: list[float]) -> None:
    """Activate adapters `names`, each scaled by its factor times alpha / r."""
    from peft.tuners.lora import LoraLayer

    model.base_model.set_adapter(names)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, scale in zip(names, scales):
                module.set_scale(name, float(scale))


def held_out_losses(model: Any, batches: list[Any]) -> np.ndarray:
    """(K,) mean next-token loss of `model` (put in eval mode) on each domain's batch."""
    import torch

    model.eval()
    with torch.no_grad():
        return np.array([float(model(input_ids=batch, labels=batch).loss) for batch in batches])


def _scaled_losses(model: Any, names: list[str], scales: list[float], setting: ProbeSetting) -> np.ndarray:
    _set_active(model, names, scales)
    return held_out_losses(model, setting.eval_batches)


def _train_adapter(
    model: Any, name: str, mixture: np.ndarray, request: WhatIfRequest, setting: ProbeSetting, seed: np.random.SeedSequence
) -> None:
    """Train adapter `name` alone (the only one active and trainable) on `mixture`."""
    import torch

    from mixgym.llm_backend.hf import _DomainStream

    _set_active(model, [name], [1.0])
    params = [p for p in model.parameters() if p.requires_grad]
    rates = probe_learning_rates(request.lr_scale * setting.peak_learning_rate, request.steps)
    optimizer = torch.optim.AdamW(params, lr=float(rates[0]), betas=setting.betas, weight_decay=0.0)
    plan_seed, *stream_seeds = np.random.SeedSequence(seed.entropy).spawn(1 + len(setting.train_chunks))
    streams = [_DomainStream(chunks) for chunks in setting.train_chunks]
    for stream, stream_seed in zip(streams, stream_seeds):
        stream.reset(stream_seed)
    shape = (request.steps, setting.grad_accumulation) + ((setting.micro_batch_size,) if request.per_sequence else ())
    plan = domains_of(mixture, np.random.default_rng(plan_seed).random(shape))
    model.train()
    for rate, step_domains in zip(rates, plan):
        for group in optimizer.param_groups:
            group["lr"] = float(rate)
        for domain in step_domains:
            batch = _micro_batch(streams, domain, setting.micro_batch_size).to(setting.device)
            loss = model(input_ids=batch, labels=batch).loss
            (loss / setting.grad_accumulation).backward()
        torch.nn.utils.clip_grad_norm_(params, setting.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
