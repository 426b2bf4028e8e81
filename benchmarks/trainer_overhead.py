"""What steering a Hugging Face Trainer costs: wall time per optimizer step of the same run

- (a) a stock Trainer on a map-style dataset of the same packed rows (the baseline),
- (b) the Trainer on a `MixtureDataset` with a fixed mixture, no callback (the dataset's cost),
- (c) (b) plus `MixtureCallback` driven by exp3 (hooks, held-out evaluation, decisions), and
  (c') the same with 2 instead of 16 held-out rows per domain (the evaluation's share),
- (d) (b) plus `MixtureCallback` with hds learning online, per-domain gradients and the
  holistic reward (SAC's learn in its own thread, a checkpointable snapshot per decision),

and the same question outside the Trainer (issue 15's generic driver):

- (e) a plain PyTorch loop (AdamW, the model's own loss) over a shuffled DataLoader of the
  same packed rows (the baseline of (f)),
- (f) the loop on `MixtureDataset.loader` with `MixtureDriver` and exp3: per-row losses from
  the logits, ``driver.observe`` every step, the same held-out rows and weight norms as (c),
  and (f') with 2 held-out rows per domain as (c'),

each repeated, the variants alternating, in this process with one torch thread (no DataLoader
workers: all the work is this process's). Prints a markdown table -- median CPU time and wall
time per step, each with its ratio to the variant's baseline ((a) for the Trainer variants, (e)
for the plain loops) -- and, with ``--out``, writes it. On a shared machine the CPU time of the
process is the steadier measure: wall time also counts the waits for other jobs.

    python benchmarks/trainer_overhead.py --steps 60 --repeats 5 --out benchmarks/results/trainer_overhead.md
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
from mixgym.integrations import MixtureCallback, MixtureDataset, MixtureDriver
from mixgym.integrations.hf_trainer import HeldOut, row_losses
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

    def new_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config)

    def trainer_for(dataset: Any, callbacks: list[Any], output: str) -> Callable[[], Any]:
        model = new_model()
        options = transformers.TrainingArguments(
            output, max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=1e-3, report_to=[],
            use_cpu=True, disable_tqdm=True, save_strategy="no", logging_steps=args.every, seed=0, log_level="error",
        )
        trainer = transformers.Trainer(model=model, args=options, train_dataset=dataset, callbacks=callbacks)
        trainer.remove_callback(transformers.PrinterCallback)
        return trainer.train

    def mixture_dataset(**options: Any) -> MixtureDataset:
        return MixtureDataset(texts, tokenizer=tokenizer, seq_len=args.seq_len, seed=0, **options)

    def baseline(output: str) -> Callable[[], Any]:
        return trainer_for(flat, [], output)

    def dataset_only(output: str) -> Callable[[], Any]:
        return trainer_for(mixture_dataset(), [], output)

    def exp3(output: str) -> Callable[[], Any]:
        data = mixture_dataset()
        return trainer_for(data, [MixtureCallback(data, "exp3", held_out, steps_per_decision=args.every)], output)

    def exp3_small_eval(output: str) -> Callable[[], Any]:
        data = mixture_dataset()
        return trainer_for(data, [MixtureCallback(data, "exp3", held_out, steps_per_decision=args.every, eval_rows=2)], output)

    def hds(output: str) -> Callable[[], Any]:
        data = mixture_dataset(block_size=args.batch)
        callback = MixtureCallback(
            data, "hds", held_out, steps_per_decision=args.every, gradients=True,
            agent_options={"net_width": 64, "batch_size": 8},
        )
        return trainer_for(data, [callback], output)

    def plain_loop(output: str) -> Callable[[], Any]:
        model = new_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = torch.utils.data.DataLoader(
            torch.from_numpy(rows), batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(0)
        )

        def run() -> None:
            for _, ids in zip(range(args.steps), loader):
                model(input_ids=ids, labels=ids).loss.backward()
                optimizer.step()
                optimizer.zero_grad()

        return run

    def plain_loop_driver(output: str, eval_rows: int = 16) -> Callable[[], Any]:
        model = new_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        data = mixture_dataset()
        loader = data.loader(batch_size=args.batch)
        held = HeldOut(held_out, data, rows=eval_rows)
        driver = MixtureDriver(
            "exp3", data, total_steps=args.steps, steps_per_decision=args.every, evaluate=lambda: held(model), weights=model
        )

        def run() -> None:
            driver.start()
            for step, batch in zip(range(1, args.steps + 1), loader):
                output = model(input_ids=batch["input_ids"], labels=batch["labels"])
                output.loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                sums, counts = row_losses(output.logits.detach(), batch["labels"])
                driver.observe(step, sums / counts, domains=batch["domain"], tokens=counts)
            driver.close()

        return run

    variants: dict[str, Callable[[str], Callable[[], Any]]] = {
        "(a) stock Trainer, map-style dataset": baseline,
        "(b) MixtureDataset, fixed mixture": dataset_only,
        "(c) + MixtureCallback, exp3 (16 held-out rows per domain)": exp3,
        "(c') + MixtureCallback, exp3, 2 held-out rows per domain": exp3_small_eval,
        "(d) + MixtureCallback, hds online, gradients": hds,
        "(e) plain PyTorch loop, shuffled DataLoader": plain_loop,
        "(f) plain loop + MixtureDataset + MixtureDriver, exp3 (16 held-out rows per domain)": plain_loop_driver,
        "(f') the same, 2 held-out rows per domain": lambda output: plain_loop_driver(output, eval_rows=2),
    }
    baseline_of = {name: "(e)" if name.startswith("(f") else "(a)" for name in variants}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, make in variants.items():
            with tempfile.TemporaryDirectory() as output:
                run = make(output)
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                seconds[name].append((time.perf_counter() - start) / args.steps)
                cpu[name].append((time.process_time() - start_cpu) / args.steps)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {seconds[name][-1] * 1000:.1f} ms/step wall, "
                  f"{cpu[name][-1] * 1000:.1f} CPU", flush=True)

    medians = {name: statistics.median(values) for name, values in seconds.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    base = {key: next(medians[name] for name in variants if name.startswith(key)) for key in ("(a)", "(e)")}
    cpu_base = {key: next(cpu_medians[name] for name in variants if name.startswith(key)) for key in ("(a)", "(e)")}
    load = os.getloadavg()
    lines = [
        f"`python benchmarks/trainer_overhead.py --steps {args.steps} --every {args.every} --repeats {args.repeats}` "
        f"({args.model}, seq_len {args.seq_len}, batch {args.batch}, {len(texts)} domains, one torch thread; "
        f"load average after the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})",
        "",
        "| variant | median CPU ms / step | CPU ratio to its baseline | median wall ms / step | wall ratio | "
        "all repeats, CPU ms | all repeats, wall ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in variants:
        key = baseline_of[name]
        lines.append(
            f"| {name} | {cpu_medians[name] * 1000:.1f} | {cpu_medians[name] / cpu_base[key]:.2f} to {key} | "
            f"{medians[name] * 1000:.1f} | {medians[name] / base[key]:.2f} | {', '.join(f'{v * 1000:.0f}' for v in cpu[name])} | "
            f"{', '.join(f'{v * 1000:.0f}' for v in seconds[name])} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
