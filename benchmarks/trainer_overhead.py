"""What steering a Hugging Face Trainer costs: wall time per optimizer step of the same run

- (a) a stock Trainer on a map-style dataset of the same packed rows (the baseline),
- (b) the Trainer on a `MixtureDataset` with a fixed mixture, no callback (the dataset's cost),
- (c) (b) plus `MixtureCallback` driven by exp3 (hooks, held-out evaluation, decisions), and
  (c') the same with 2 instead of 16 held-out rows per domain (the evaluation's share),
- (d) (b) plus `MixtureCallback` with hds learning online, per-domain gradients and the
  holistic reward (SAC's learn in its own thread, a checkpointable snapshot per decision),

each repeated, the variants alternating, in this process with one torch thread. Prints a
markdown table (median seconds per step and the ratio to (a)) and, with ``--out``, writes it.

    python benchmarks/trainer_overhead.py --steps 60 --repeats 3 --out benchmarks/results/trainer_overhead.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import datasets
import numpy as np
import torch
import transformers

from mixgym.data import SAMPLE_CORPUS
from mixgym.integrations import MixtureCallback, MixtureDataset
from mixgym.llm_backend.corpus import load_corpus
from mixgym.llm_backend.hf import preset_config
from mixgym.llm_backend.tokenizer import corpus_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--every", type=int, default=10, help="optimizer steps per decision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="gpt2-tiny")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()

    corpus = load_corpus(SAMPLE_CORPUS)
    tokenizer = corpus_tokenizer(corpus.train_texts(), corpus.path)
    texts = {d.name: list(d.train) for d in corpus.domains}
    held_out = {d.name: list(d.validation) for d in corpus.domains}
    config = preset_config(args.model, tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    packed = MixtureDataset(texts, tokenizer=tokenizer, seq_len=args.seq_len)
    rows = np.concatenate([s._chunks for s in packed.sources]).astype(np.int64)  # the same rows, map-style
    flat = datasets.Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()})

    def trainer_for(dataset: Any, callbacks: list[Any], output: str) -> transformers.Trainer:
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
        options = transformers.TrainingArguments(
            output, max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=1e-3, report_to=[],
            use_cpu=True, disable_tqdm=True, save_strategy="no", logging_steps=args.every, seed=0, log_level="error",
        )
        trainer = transformers.Trainer(model=model, args=options, train_dataset=dataset, callbacks=callbacks)
        trainer.remove_callback(transformers.PrinterCallback)
        return trainer

    def mixture_dataset(**options: Any) -> MixtureDataset:
        return MixtureDataset(texts, tokenizer=tokenizer, seq_len=args.seq_len, seed=0, **options)

    def baseline(output: str) -> transformers.Trainer:
        return trainer_for(flat, [], output)

    def dataset_only(output: str) -> transformers.Trainer:
        return trainer_for(mixture_dataset(), [], output)

    def exp3(output: str) -> transformers.Trainer:
        data = mixture_dataset()
        return trainer_for(data, [MixtureCallback(data, "exp3", held_out, steps_per_decision=args.every)], output)

    def exp3_small_eval(output: str) -> transformers.Trainer:
        data = mixture_dataset()
        return trainer_for(data, [MixtureCallback(data, "exp3", held_out, steps_per_decision=args.every, eval_rows=2)], output)

    def hds(output: str) -> transformers.Trainer:
        data = mixture_dataset(block_size=args.batch)
        callback = MixtureCallback(
            data, "hds", held_out, steps_per_decision=args.every, gradients=True,
            agent_options={"net_width": 64, "batch_size": 8},
        )
        return trainer_for(data, [callback], output)

    variants: dict[str, Callable[[str], transformers.Trainer]] = {
        "(a) stock Trainer, map-style dataset": baseline,
        "(b) MixtureDataset, fixed mixture": dataset_only,
        "(c) + MixtureCallback, exp3 (16 held-out rows per domain)": exp3,
        "(c') + MixtureCallback, exp3, 2 held-out rows per domain": exp3_small_eval,
        "(d) + MixtureCallback, hds online, gradients": hds,
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, make in variants.items():
            with tempfile.TemporaryDirectory() as output:
                trainer = make(output)
                start = time.perf_counter()
                trainer.train()
                seconds[name].append((time.perf_counter() - start) / args.steps)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {seconds[name][-1] * 1000:.1f} ms/step", flush=True)

    base = statistics.median(seconds[next(iter(variants))])
    load = os.getloadavg()
    lines = [
        f"`python benchmarks/trainer_overhead.py --steps {args.steps} --every {args.every} --repeats {args.repeats}` "
        f"({args.model}, seq_len {args.seq_len}, batch {args.batch}, {len(texts)} domains, one torch thread; "
        f"load average after the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})",
        "",
        "| variant | median ms / step | ratio to (a) | all repeats (ms) |",
        "|---|---|---|---|",
    ]
    for name, values in seconds.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median * 1000:.1f} | {median / base:.2f} | {', '.join(f'{v * 1000:.0f}' for v in values)} |")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
