"""What does driving a distributed run through MixingEnv and an RL agent cost? (issue 14)

Same model, corpus, seed and number of optimizer steps on 2 processes (gloo on CPU; each
run a fresh pair of processes started by `mixgym.llm_backend.distributed.launch`), run

(a) as a plain DDP training loop written out below with the pieces a user would take --
    the corpus, its tokenizer, the preset's `transformers` model, AdamW and the warm-up /
    cosine schedule, `DistributedDataParallel` (set up as the backend does it, without a
    broadcast of the model's constant buffers before every forward pass: that broadcast,
    DDP's default, made the plain loop 1.6 times slower here) with ``no_sync`` for all but
    the last micro-batch of a step -- each micro-batch of a uniformly drawn domain, each process its
    half of it; held-out loss at the start and the end;
(b) through `MixingEnv` with the holistic reward (HDS) on the distributed backend, driven by
    the ``hds`` agent (SAC as in `benchmarks/hf_overhead.py`): rank 0 owns the environment
    and the agent and sends every backend call to rank 1; per-domain gradients by tensor
    hooks, all-reduced once per decision; token ids gathered for the reward's MTLD; weight
    norms. Held-out loss at reset and at the end only (``eval_every`` = the run's decisions),
    as (a); (b)'s timed region includes building the agent and SB3's automatic reset after
    the last decision.

Runs alternate a, b, a, b, ... (`--repeats` pairs). Reported per pair: rank 0's wall time
of the timed region, each process's CPU time and peak resident memory (``ru_maxrss``, its
own: each process is fresh and imports the same libraries before measuring), and the
ratios b/a. The load average is printed beside every run (a shared machine).

    python benchmarks/distributed_overhead.py                        # ~10 minutes on 2 cores
    python benchmarks/distributed_overhead.py --steps 10 --repeats 1  # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import resource
import statistics
import time
from typing import Any

from mixgym.llm_backend.distributed import launch

STEPS_PER_ACTION = 5


def _backend_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": options["model"],
        "total_steps": options["steps"],
        "seq_len": options["seq_len"],
        "micro_batch_size": options["micro_batch_size"],
        "grad_accumulation": options["grad_accumulation"],
    }


def _plain_loop(rank: int, world_size: int, init_method: str, options: dict[str, Any]) -> dict[str, Any]:
    """(a): a plain DDP loop on the same model, data and schedule."""
    import numpy as np
    import stable_baselines3  # noqa: F401  (imported by both kinds: the same baseline memory)
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from mixgym.data import SAMPLE_CORPUS
    from mixgym.llm_backend.corpus import load_corpus
    from mixgym.llm_backend.distributed import DataParallel, session
    from mixgym.llm_backend.hf import HFConfig, WarmupCosine, preset_config
    from mixgym.llm_backend.tokenizer import DEFAULT_VOCAB_SIZE, corpus_tokenizer

    torch.set_num_threads(1)
    config = HFConfig(**_backend_options(options))
    corpus = load_corpus(SAMPLE_CORPUS)
    vocab_size = DEFAULT_VOCAB_SIZE if config.vocab_size is None else config.vocab_size  # a preset's, as the backend does
    tokenizer = corpus_tokenizer(corpus.train_texts(), corpus.path, vocab_size)
    chunks, evals = [], []
    for domain in corpus.domains:
        for split, out in ((domain.train, chunks), (domain.validation, evals)):
            ids = tokenizer.encode_documents(split)
            count = len(ids) // config.seq_len
            out.append(torch.from_numpy(ids[: count * config.seq_len].astype(np.int64)).view(count, config.seq_len))
    evals = [e[: config.eval_sequences] for e in evals]
    model_config = preset_config(config.model, tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    # (b) builds its backend, and so a first model, before its timed region: so does (a), so
    # that neither times transformers' lazy imports of the model's code
    AutoModelForCausalLM.from_config(model_config)
    with session(init_method=init_method, rank=rank, world_size=world_size, timeout_s=600) as current:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.manual_seed(options["seed"])
        model = AutoModelForCausalLM.from_config(model_config)
        ddp = DataParallel(current).wrap(model)  # DDP as the backend sets it up: no buffer broadcast per forward
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate, betas=config.betas,
        )
        warmup = max(1, math.ceil(config.warmup_fraction * config.total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, config.total_steps, config.min_lr_ratio))
        share = config.micro_batch_size // world_size
        rng = np.random.default_rng(options["seed"])  # the same draws on every process

        def evaluate() -> list[float]:
            model.eval()
            sums = torch.zeros(len(evals), dtype=torch.float64)
            with torch.no_grad():
                for i, batch in enumerate(evals):
                    part = batch[rank::world_size]
                    sums[i] = model(input_ids=part, labels=part).loss.double() * len(part)
            dist.all_reduce(sums)
            return (sums / torch.tensor([len(e) for e in evals])).tolist()

        evaluate()
        model.train()
        for _ in range(config.total_steps):
            for slot in range(config.grad_accumulation):
                domain = int(rng.integers(len(chunks)))
                picks = rng.integers(len(chunks[domain]), size=config.micro_batch_size)
                batch = chunks[domain][picks[rank * share : (rank + 1) * share]]
                with ddp.no_sync() if slot < config.grad_accumulation - 1 else contextlib.nullcontext():
                    loss = ddp(input_ids=batch, labels=batch).loss
                    (loss / config.grad_accumulation).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        evaluate()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"wall": wall, "cpu": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss_before / 1024}


def _env_and_agent(rank: int, world_size: int, init_method: str, options: dict[str, Any]) -> dict[str, Any]:
    """(b): MixingEnv + holistic reward + hds on the distributed backend."""
    import stable_baselines3  # noqa: F401
    import torch

    from mixgym.agents import make_agent
    from mixgym.envs import MixingEnv
    from mixgym.llm_backend.distributed import serve, session

    torch.set_num_threads(1)
    decisions = -(-options["steps"] // STEPS_PER_ACTION)
    with session(init_method=init_method, rank=rank, world_size=world_size, timeout_s=600):
        # the backend's data and tokenizer are built here, outside the timed region, as (a)'s
        env = MixingEnv(backend="hf", reward="holistic", steps_per_action=STEPS_PER_ACTION, eval_every=decisions, **_backend_options(options))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu_start = time.perf_counter(), time.process_time()
        if rank == 0:
            agent = make_agent("hds", env, seed=options["seed"])
            agent.learn(total_timesteps=env.num_decisions)
            extra = {"env_timings": env.timings["total"]}
        else:
            serve(env.backend)
            extra = {}
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"wall": wall, "cpu": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss_before / 1024, **extra}


def _run(kind: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    function = _plain_loop if kind == "plain" else _env_and_agent
    outcomes = launch(function, world_size=2, timeout_s=3600, options=options)
    for rank, outcome in enumerate(outcomes):
        if "result" not in outcome:
            raise RuntimeError(f"{kind} rank {rank} failed: {outcome.get('traceback', outcome)}")
    return [outcome["result"] for outcome in outcomes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-tiny", help="preset (default pythia-tiny)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default 100 = 20 decisions)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch-size", type=int, default=8, help="global: 4 sequences per process")
    parser.add_argument("--grad-accumulation", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="a/b pairs, alternating (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = {
        "model": args.model, "steps": args.steps, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch_size,
        "grad_accumulation": args.grad_accumulation, "seed": args.seed,
    }
    pairs = []
    loads = []
    for repeat in range(args.repeats):
        pair = {}
        for kind in ("plain", "env"):
            loads.append(os.getloadavg()[0])
            pair[kind] = _run(kind, options)
            print(f"repeat {repeat} {kind}: rank 0 {pair[kind][0]['wall']:.1f} s, peak RSS {[round(r['peak_rss_mb']) for r in pair[kind]]} MB, load {loads[-1]:.1f}", flush=True)
        pairs.append(pair)

    def ratio(key: str, rank: int) -> list[float]:
        return [p["env"][rank][key] / p["plain"][rank][key] for p in pairs]

    median = statistics.median
    tokens = args.steps * args.grad_accumulation * args.micro_batch_size * args.seq_len
    print(f"\n## Distributed: plain DDP loop (a) vs MixingEnv + holistic reward + SAC on the distributed backend (b), 2 processes\n")
    print(f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), gloo, one torch thread per process; load average {min(loads):.1f} to {max(loads):.1f} during the runs.  ")
    print(
        f"{args.model}, the sample corpus, {args.steps} optimizer steps of {args.grad_accumulation} micro-batches x {args.micro_batch_size} "
        f"sequences x {args.seq_len} tokens ({tokens:,} tokens), {-(-args.steps // STEPS_PER_ACTION)} decisions of {STEPS_PER_ACTION} steps; "
        f"{args.repeats} alternating a/b pairs, each run a fresh pair of processes.\n"
    )
    print("| pair | wall a (s) | wall b (s) | wall b/a | CPU b/a rank 0 | CPU b/a rank 1 | peak RSS a (MB, rank 0 / 1) | peak RSS b | RSS b/a rank 0 | RSS b/a rank 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, p in enumerate(pairs):
        a, b = p["plain"], p["env"]
        print(
            f"| {i} | {a[0]['wall']:.1f} | {b[0]['wall']:.1f} | {b[0]['wall'] / a[0]['wall']:.3f} | {b[0]['cpu'] / a[0]['cpu']:.3f} "
            f"| {b[1]['cpu'] / a[1]['cpu']:.3f} | {a[0]['peak_rss_mb']:.0f} / {a[1]['peak_rss_mb']:.0f} | {b[0]['peak_rss_mb']:.0f} / {b[1]['peak_rss_mb']:.0f} "
            f"| {b[0]['peak_rss_mb'] / a[0]['peak_rss_mb']:.3f} | {b[1]['peak_rss_mb'] / a[1]['peak_rss_mb']:.3f} |"
        )
    print(
        f"| **median** | | | **{median(ratio('wall', 0)):.3f}** | **{median(ratio('cpu', 0)):.3f}** | **{median(ratio('cpu', 1)):.3f}** "
        f"| | | **{median(ratio('peak_rss_mb', 0)):.3f}** | **{median(ratio('peak_rss_mb', 1)):.3f}** |"
    )
    timings = {key: median(p["env"][0]["env_timings"][key] for p in pairs) for key in pairs[0]["env"][0]["env_timings"]}
    print("\n(b) rank 0's median split inside `MixingEnv.step`: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()) + ".")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
