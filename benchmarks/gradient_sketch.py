"""Exact vs sketched per-domain gradient signal: memory, error, time (issue 14).

1. Memory, from the shapes (nothing run): K per-domain sums of the chosen matrices (AC-ODM/HDS:
   three MLP output matrices), exact (K x D float32) or sketched (K x r float64), at
   pythia-small and at AC-ODM's 1B shape (three 2048 x 8192 matrices), with the bytes each
   decision's all-reduce moves.
2. Error, measured: pythia-small trained on the sample corpus with exact sums; at a few
   decisions the exact (K, D) rows are sketched by `HashedProjection` at several r (10 seeds
   of the projection each) and compared with the exact ones: the Gram matrix's error in units
   of ||g_i|| ||g_j|| (against the stated sqrt(2/r)), the alignment scores' relative error
   ||s_hat - s|| / ||s||, the largest change of their z-scores (what AC-ODM's critic and the
   observation see), and whether the top domain stays on top. The domains' gradient cosines
   are reported too: the sketch's error is relative to ||g_i|| ||g_j||, so nearly orthogonal
   gradients (small cosines, small scores) are the hard case.
3. Time, measured: one micro-batch's forward and backward pass of pythia-small with no signal,
   with exact sums, and with the sketch (its hashing is O(D) per micro-batch, whatever r), in
   CPU seconds of the one-threaded process.

    python benchmarks/gradient_sketch.py                       # ~10 minutes on 2 cores
    python benchmarks/gradient_sketch.py --steps 4 --decisions-at 2,4 --seeds 2   # smoke run
    python benchmarks/gradient_sketch.py --parts memory,time                    # no training
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import numpy as np
import torch

from mixgym.envs.rewards import alignment_scores, zscore
from mixgym.llm_backend.gradient_signal import AUTO_EXACT_LIMIT_BYTES, AUTO_SKETCH_DIM, DomainGradients, HashedProjection
from mixgym.llm_backend.hf import HFBackend

SHAPES = {
    "pythia-small (3 x 1536 x 384)": 3 * 1536 * 384,
    "pythia-1B / AC-ODM 1B (3 x 8192 x 2048)": 3 * 8192 * 2048,
}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def memory_table(widths: list[int]) -> None:
    print("### Memory of the signal, from the shapes\n")
    print("| chosen matrices | D | K | exact K x D x 4 B | " + " | ".join(f"sketch r={r}" for r in widths) + f" | all-reduced per decision, exact / r={AUTO_SKETCH_DIM} |")
    print("|---|---|---|---|" + "---|" * len(widths) + "---|")
    for name, dim in SHAPES.items():
        for k in (5, 22):
            exact = k * dim * 4
            sketches = " | ".join(_mib(k * r * 8) for r in widths)
            print(f"| {name} | {dim:,} | {k} | {_mib(exact)} | {sketches} | {_mib(exact)} / {_mib(k * AUTO_SKETCH_DIM * 8)} |")
    print(
        f"\n(Sketch sums are float64; the hashing works on blocks of 2^20 coordinates, ~50 MB of temporaries. "
        f"\"auto\" = exact up to {_mib(AUTO_EXACT_LIMIT_BYTES)}, else r = {AUTO_SKETCH_DIM}.)\n"
    )


def collect(args: argparse.Namespace) -> list[tuple[int, np.ndarray]]:
    """Exact per-domain gradients of pythia-small at the chosen decisions."""
    backend = HFBackend(
        model="pythia-small", total_steps=args.steps, seq_len=args.seq_len, micro_batch_size=args.micro_batch_size,
        grad_accumulation=args.grad_accumulation, gradient_sketch_dim=None,
    )
    uniform = np.full(len(backend.domains), 1 / len(backend.domains))
    captured = []
    for decision in range(1, max(args.decisions_at) + 1):
        start = time.perf_counter()
        backend.train(uniform, args.steps_per_action)
        if decision in args.decisions_at:
            captured.append((backend.step, backend.domain_gradients()))
        print(f"decision {decision}: {time.perf_counter() - start:.1f} s", flush=True)
    return captured


def error_table(captured: list[tuple[int, np.ndarray]], widths: list[int], seeds: int) -> None:
    print("### Error of the sketch on real gradients (pythia-small, K=5, exact rows sketched)\n")
    print("| step | mean abs cosine between domains | r | Gram RMS error / (abs g_i abs g_j) | stated sqrt(2/r) | alignment rel. error (median, max) | max z-score change (median) | top domain kept |")
    print("|---|---|---|---|---|---|---|---|")
    for step, rows in captured:
        gram = rows @ rows.T
        norms = np.sqrt(np.diag(gram))
        cosines = gram / np.outer(norms, norms)
        mean_cos = np.abs(cosines[~np.eye(len(rows), dtype=bool)]).mean()
        exact_scores = alignment_scores(rows)
        tensor = torch.from_numpy(rows)
        for width in widths:
            gram_errors, relative, z_changes, kept = [], [], [], []
            for seed in range(seeds):
                sketch = HashedProjection(rows.shape[1], width, seed=seed).project(tensor).numpy()
                gram_errors.append(((sketch @ sketch.T - gram) / np.outer(norms, norms)) ** 2)
                scores = alignment_scores(sketch)
                relative.append(np.linalg.norm(scores - exact_scores) / np.linalg.norm(exact_scores))
                z_changes.append(np.abs(zscore(scores) - zscore(exact_scores)).max())
                kept.append(np.argmax(scores) == np.argmax(exact_scores))
            rms = np.sqrt(np.mean(gram_errors))
            print(
                f"| {step} | {mean_cos:.3f} | {width} | {rms:.4f} | {np.sqrt(2 / width):.4f} | "
                f"{np.median(relative):.1%}, {np.max(relative):.1%} | {np.median(z_changes):.2f} | {np.mean(kept):.0%} |"
            )
    print()


def timing_table(args: argparse.Namespace, widths: list[int]) -> None:
    """CPU seconds (one thread: what the process itself spent, unlike wall time on a shared
    machine) of a micro-batch's forward and backward pass, the signals taking turns."""
    backend = HFBackend(model="pythia-small", total_steps=2, seq_len=args.seq_len, micro_batch_size=args.micro_batch_size, gradient_mode="off")
    stats = backend.train(np.full(len(backend.domains), 1 / len(backend.domains)), 1)
    batch = torch.from_numpy(stats.token_ids[: args.micro_batch_size])
    params = [backend.model.get_parameter(name) for name in backend.weight_stats().names]
    signals = {"no signal": None, "exact sums": DomainGradients(params, 5, None), f"sketch r={widths[-1]}": DomainGradients(params, 5, widths[-1])}
    times: dict[str, list[float]] = {name: [] for name in signals}
    for _ in range(args.timing_repeats):
        for name, signal in signals.items():
            start = time.process_time()
            loss = backend.model(input_ids=batch, labels=batch).loss
            with signal.recording(0) if signal is not None else contextlib.nullcontext():
                loss.backward()
            times[name].append(time.process_time() - start)
    print(
        f"### Time of one micro-batch ({args.micro_batch_size} x {args.seq_len} tokens) forward and backward, pythia-small, "
        f"CPU seconds, median of {args.timing_repeats} (the signals taking turns)\n"
    )
    print("| signal | CPU seconds | vs no signal |")
    print("|---|---|---|")
    base = float(np.median(times["no signal"]))
    for name, values in times.items():
        print(f"| {name} | {np.median(values):.3f} | {np.median(values) / base - 1:+.1%} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimizer-step budget of the pythia-small run")
    parser.add_argument("--steps-per-action", type=int, default=5)
    parser.add_argument("--decisions-at", default="1,4,8", help="decisions whose gradients are sketched")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--grad-accumulation", type=int, default=4)
    parser.add_argument("--widths", default="1024,4096,16384,65536,262144", help="sketch dimensions r")
    parser.add_argument("--seeds", type=int, default=10, help="projections per r")
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--parts", default="memory,error,time", help="which of memory, error, time to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    args.decisions_at = [int(d) for d in args.decisions_at.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    torch.set_num_threads(1)
    print(f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__} on 1 thread; load {os.getloadavg()[0]:.1f}\n")
    if "memory" in parts:
        memory_table(widths)
    if "error" in parts:
        error_table(collect(args), widths, args.seeds)
    if "time" in parts:
        timing_table(args, widths)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
