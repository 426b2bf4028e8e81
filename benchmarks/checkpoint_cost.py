"""What does a checkpoint cost? Time and size of one, and its share of a run's time (issue 5).

For each backend: an `hds` agent (SAC with its replay buffer, the largest agent state) learns
for `--decisions` decisions, then one checkpoint -- `mixgym.experiment.experiment_state` plus
`CheckpointStore.save` (pickle, SHA-256, fsync'd atomic write) -- is timed `--repeats` times.
Share = checkpoint time / (interval x mean decision time), at the default interval of 50
decisions. Goal: under 1%.

    python benchmarks/checkpoint_cost.py                    # toy and pythia-small
    python benchmarks/checkpoint_cost.py --backends toy     # seconds
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from mixgym.agents import make_agent
from mixgym.agents.compare import env_for
from mixgym.checkpoint import CheckpointStore
from mixgym.experiment import ExperimentConfig, experiment_state

BACKENDS = {
    "toy": {"backend": "toy", "total_steps": 100_000},
    "pythia-small": {"backend": "hf", "model": "pythia-small", "total_steps": 10_000, "steps_per_action": 5},
}


def measure(name: str, decisions: int, repeats: int) -> dict[str, float]:
    env = env_for("hds", BACKENDS[name])
    agent = make_agent("hds", env, seed=0)
    start = time.perf_counter()
    agent.learn(decisions)
    per_decision = (time.perf_counter() - start) / decisions
    store = CheckpointStore(tempfile.mkdtemp(), keep=1)
    times, size = [], 0
    for i in range(repeats):
        start = time.perf_counter()
        path = store.save({"decisions": decisions, **experiment_state(agent, env)}, i)
        times.append(time.perf_counter() - start)
        size = path.stat().st_size
    checkpoint = sorted(times)[len(times) // 2]
    interval = ExperimentConfig.__dataclass_fields__["checkpoint_every"].default
    return {"per_decision": per_decision, "checkpoint": checkpoint, "size_mb": size / 2**20, "share": checkpoint / (interval * per_decision), "interval": interval}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="toy,pythia-small", help="comma-separated: toy, pythia-small")
    parser.add_argument("--decisions", type=int, default=20, help="decisions learned before measuring (fills the buffer)")
    parser.add_argument("--repeats", type=int, default=5, help="checkpoints timed (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__} on 1 thread, Python {platform.python_version()}\n")
    print("| backend | s / decision | checkpoint s (median) | checkpoint MB | share of run time at 1 per 50 decisions |")
    print("|---|---|---|---|---|")
    for name in args.backends.split(","):
        r = measure(name, args.decisions, args.repeats)
        print(f"| {name} | {r['per_decision']:.4f} | {r['checkpoint']:.4f} | {r['size_mb']:.1f} | {r['share']:.2%} |")


if __name__ == "__main__":
    main()
