"""What does driving pretraining through MixingEnv and an RL agent cost? (issue 3)

Same model, corpus, seed and number of optimizer steps, run

(a) as a plain training loop: `HFBackend.train` on a fixed uniform mixture every
    `steps_per_action` steps, gradients off (``gradient_mode="off"``);
(b) through `MixingEnv` with the holistic reward (HDS), driven by the ``hds`` agent
    (`mixgym.agents.make_agent("hds", env)`: stock SB3 SAC as HDS configured it, gamma 0.95,
    tau 0.001, buffer 10k, batch 32, lr 1e-4, one update per decision, the first 2% of the
    decisions acting with a fixed prior mixture; SB3's MLP networks stand in for HDS's
    transformer-based ones). Per-domain gradients come
    from the training micro-batches (tensor hooks, the default), weight norms and the tokens trained on feed
    the reward.

Both evaluate the held-out loss at the start and the end only (b: ``eval_every`` = the
episode's decisions), so the difference is what the environment, its signals, the reward and
the agent add. (b)'s timed region includes building the agent and SB3's automatic reset at
the end of the episode (a fresh model and an evaluation), because a user pays for them.

Each run is a fresh Python process (a then b, repeated), so that its peak resident memory
(``ru_maxrss``) is its own; both processes import the same libraries (torch, transformers,
datasets, stable-baselines3) before anything is measured. Reported: wall-clock and peak
memory ratios b/a (also CPU-time ratios: a busy neighbour on a shared machine inflates wall
time), where (b)'s time goes, the cost of the per-domain gradient signal alone, and tokens per
second of the plain loop for each preset.

    python benchmarks/hf_overhead.py                 # about 6 minutes on 2 CPU cores
    python benchmarks/hf_overhead.py --repeats 1 --steps 20 --presets pythia-tiny   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

RESULT_MARK = "RESULT "


def _worker(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """One measured run in this process; returns its numbers."""
    import numpy as np
    import stable_baselines3  # noqa: F401  (imported by both kinds: same baseline memory)
    import torch

    torch.set_num_threads(options["threads"])

    from mixgym.envs import MixingEnv
    from mixgym.llm_backend.hf import HFBackend

    backend_options = {
        "model": options["model"],
        "corpus": options["corpus"],
        "total_steps": options["steps"],
        "seq_len": options["seq_len"],
        "micro_batch_size": options["micro_batch_size"],
        "grad_accumulation": options["grad_accumulation"],
    }
    spa, seed = options["steps_per_action"], options["seed"]
    if kind == "signal":
        # The per-domain gradient signal alone: a micro-batch's forward and backward pass with
        # the hooks adding its gradient to a domain's row, against the same pass without.
        import contextlib

        from mixgym.llm_backend.gradient_signal import DomainGradients

        backend = HFBackend(gradient_mode="off", **backend_options)
        batch = torch.from_numpy(backend.train(np.full(len(backend.domains), 1 / len(backend.domains)), 1).token_ids[: options["micro_batch_size"]])
        params = [backend.model.get_parameter(name) for name in backend.weight_stats().names]
        signal = DomainGradients(params, len(backend.domains), sketch_dim=None)

        def seconds_per_pass(recording: Any) -> float:
            start = time.perf_counter()
            for _ in range(10):
                loss = backend.model(input_ids=batch, labels=batch).loss
                with recording():
                    loss.backward()
            return (time.perf_counter() - start) / 10

        plain, hooked = seconds_per_pass(contextlib.nullcontext), seconds_per_pass(lambda: signal.recording(0))
        return {"plain": plain, "hooked": hooked, "dim": signal.dim}
    if kind == "plain":
        backend = HFBackend(gradient_mode="off", **backend_options)
        uniform = np.full(len(backend.domains), 1.0 / len(backend.domains))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu_start = time.perf_counter(), time.process_time()
        backend.reset(seed)
        backend.evaluate()
        while backend.step < backend.total_steps:
            backend.train(uniform, min(spa, backend.total_steps - backend.step))
        backend.evaluate()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        extra: dict[str, Any] = {}
    else:
        import gymnasium as gym

        from mixgym.agents import make_agent

        class TimedResets(gym.Wrapper):
            """Times every reset (the env's own timings cover its steps, across resets)."""

            resets: list[float] = []

            def reset(self, **kwargs: Any) -> Any:
                start = time.perf_counter()
                out = self.env.reset(**kwargs)
                self.resets.append(time.perf_counter() - start)
                return out

        decisions = -(-options["steps"] // spa)
        # evaluate at reset and at the end only, as (a) does
        unwrapped = MixingEnv(backend="hf", reward="holistic", steps_per_action=spa, eval_every=decisions, **backend_options)
        env = TimedResets(unwrapped)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu_start = time.perf_counter(), time.process_time()
        agent = make_agent("hds", env, seed=seed)
        agent.learn(total_timesteps=unwrapped.num_decisions)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        extra = {"env_timings": unwrapped.timings["total"], "resets": TimedResets.resets}
    return {
        "kind": kind,
        "wall": wall,
        "cpu": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before / 1024,
        "tokens": options["steps"] * options["grad_accumulation"] * options["micro_batch_size"] * options["seq_len"],
        **extra,
    }


def _run(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run `_worker` in a fresh interpreter and read its result line."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--options", json.dumps(options)]
    out = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


def _machine(threads: int) -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), torch {torch.__version__} run with {threads} thread(s), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-tiny", help="preset for the a/b comparison (default pythia-tiny)")
    parser.add_argument("--corpus", default=None, help="corpus folder (default: the packaged sample)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default 100)")
    parser.add_argument("--steps-per-action", type=int, default=5, help="optimizer steps per decision (default 5)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--grad-accumulation", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="a/b pairs, alternating (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: on a shared machine, more threads than free cores stall torch's thread pool)",
    )
    parser.add_argument("--presets", default="pythia-tiny,gpt2-tiny,llama-tiny,pythia-small", help="presets for tokens/s")
    parser.add_argument("--throughput-steps", type=int, default=10, help="optimizer steps per tokens/s run (default 10)")
    parser.add_argument("--worker", choices=["plain", "env", "signal"], help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_MARK + json.dumps(_worker(args.worker, json.loads(args.options))), flush=True)
        return 0

    options = {
        "model": args.model,
        "corpus": args.corpus,
        "steps": args.steps,
        "steps_per_action": args.steps_per_action,
        "seq_len": args.seq_len,
        "micro_batch_size": args.micro_batch_size,
        "grad_accumulation": args.grad_accumulation,
        "seed": args.seed,
        "threads": args.threads,
    }
    rows = []
    for repeat in range(args.repeats):
        for kind in ("plain", "env"):
            result = _run(kind, options)
            rows.append((repeat, result))
            print(f"repeat {repeat} {kind}: {result['wall']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB", file=sys.stderr)
    plain = [r for _, r in rows if r["kind"] == "plain"]
    env = [r for _, r in rows if r["kind"] == "env"]
    ratios = {
        key: [b[key] / a[key] for a, b in zip(plain, env)] for key in ("wall", "cpu", "peak_rss_mb")
    }
    ratios["growth"] = [(b["peak_rss_mb"] - b["rss_before_mb"]) / max(a["peak_rss_mb"] - a["rss_before_mb"], 1e-9) for a, b in zip(plain, env)]
    median = statistics.median

    decisions = -(-args.steps // args.steps_per_action)
    tokens_per_step = args.seq_len * args.micro_batch_size * args.grad_accumulation
    print("## HFBackend: plain training loop (a) vs MixingEnv + holistic reward + SB3 SAC (b)\n")
    print(f"Machine: {_machine(args.threads)}.  ")
    print(
        f"Model {args.model}, {args.corpus or 'the sample corpus'}, seed {args.seed}, {args.steps} optimizer steps of "
        f"{tokens_per_step} tokens (seq_len {args.seq_len} x micro-batch {args.micro_batch_size} x accumulation "
        f"{args.grad_accumulation}), {decisions} decisions of {args.steps_per_action} steps; {args.repeats} alternating "
        "a/b pairs, each run a fresh process.\n"
    )
    print("| pair | wall a (s) | wall b (s) | wall b/a | CPU a (s) | CPU b (s) | CPU b/a | peak RSS a (MB) | peak RSS b (MB) | RSS b/a | RSS growth b/a |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, (a, b) in enumerate(zip(plain, env)):
        print(
            f"| {i} | {a['wall']:.2f} | {b['wall']:.2f} | {ratios['wall'][i]:.3f} | {a['cpu']:.2f} | {b['cpu']:.2f} "
            f"| {ratios['cpu'][i]:.3f} | {a['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} | {ratios['peak_rss_mb'][i]:.3f} "
            f"| {ratios['growth'][i]:.2f} |"
        )
    print(
        f"| **median** | {median(r['wall'] for r in plain):.2f} | {median(r['wall'] for r in env):.2f} "
        f"| **{median(ratios['wall']):.3f}** | {median(r['cpu'] for r in plain):.2f} | {median(r['cpu'] for r in env):.2f} "
        f"| **{median(ratios['cpu']):.3f}** | {median(r['peak_rss_mb'] for r in plain):.0f} "
        f"| {median(r['peak_rss_mb'] for r in env):.0f} | **{median(ratios['peak_rss_mb']):.3f}** | {median(ratios['growth']):.2f} |"
    )
    timings = {key: median(r["env_timings"][key] for r in env) for key in env[0]["env_timings"]}
    parts = ", ".join(f"{key} {value:.2f} s" for key, value in timings.items())
    resets = [median(r["resets"][i] for r in env) for i in range(2)]
    sb3 = median(r["wall"] - sum(r["env_timings"].values()) - sum(r["resets"]) for r in env)
    outside = timings["signals"] + timings["reward"] + sb3 + resets[1]
    spread = (max(r["wall"] for r in plain) - min(r["wall"] for r in plain)) / median(r["wall"] for r in plain)
    print(
        f"\n(b)'s median split: in `MixingEnv.step` (from `env.timings`) {parts}; the episode's reset "
        f"{resets[0]:.2f} s (a resets and evaluates too); SB3's automatic reset after the last decision "
        f"{resets[1]:.2f} s (a fresh model and an evaluation, which (a) does not do); the rest, {sb3:.2f} s, is SB3 "
        "(agent construction, action selection, SAC updates, replay buffer).  "
    )
    print(
        f"Time (b) spends beyond training and (a)'s evaluations (signals, reward, SB3, the extra reset): {outside:.2f} s, "
        f"{outside / median(r['wall'] for r in plain):.2%} of (a). Run-to-run spread of (a) alone: {spread:.1%} of its "
        "wall time.  "
    )
    cost = _run("signal", options)
    print(
        f"Per-domain gradient signal (tensor hooks inside `train`, exact sums of {cost['dim']:,} weights of 3 MLP output "
        f"matrices): a micro-batch's forward and backward pass takes {cost['hooked'] * 1e3:.1f} ms with it, "
        f"{cost['plain'] * 1e3:.1f} ms without ({cost['hooked'] / cost['plain'] - 1:+.2%}).  "
    )
    print("RSS growth = (peak RSS - RSS after imports and backend set-up) of b over the same of a.\n")

    print("### Tokens per second of the plain loop (a), per preset\n")
    print("| preset | parameters | tokens/s | s / optimizer step |")
    print("|---|---|---|---|")
    for preset in [p for p in args.presets.split(",") if p]:
        result = _run("plain", {**options, "model": preset, "steps": args.throughput_steps, "steps_per_action": args.throughput_steps})
        params = _parameter_count(preset)
        print(f"| {preset} | {params / 1e6:.2f}M | {result['tokens'] / result['wall']:,.0f} | {result['wall'] / args.throughput_steps:.3f} |")
    print(f"\n({args.throughput_steps} optimizer steps of {tokens_per_step} tokens each, including a reset and two evaluations.)")
    return 0


def _parameter_count(preset: str) -> int:
    from transformers import AutoModelForCausalLM

    from mixgym.llm_backend.hf import preset_config
    from mixgym.llm_backend.tokenizer import DEFAULT_VOCAB_SIZE

    return sum(p.numel() for p in AutoModelForCausalLM.from_config(preset_config(preset, DEFAULT_VOCAB_SIZE)).parameters())


if __name__ == "__main__":
    sys.exit(main())
