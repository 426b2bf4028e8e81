"""What the toy pays for reporting the weight norms after every optimizer step (issue 11).

    python benchmarks/step_norms_overhead.py

`ToyBackend.train` keeps a copy of the parameters after each step and computes the three
matrices' norms once per call (`TrainStats.step_weight_norms`, for HDS's per-step stability).
This times that extra work alone (the copies and the norms of a 10-step call) and a whole
10-step ``train`` call, which includes it, alternately in one process; their ratio is the
share of a decision's training time the feature costs.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from mixgym.llm_backend.toy import ToyBackend

STEPS = 10


def main() -> int:
    backend = ToyBackend(total_steps=10**7)
    backend.reset(seed=0)
    mixture = np.full(5, 0.2)
    theta = backend._theta

    def extra() -> None:
        history = np.empty((STEPS + 1, theta.size), dtype=np.float32)
        history[0] = theta
        for t in range(STEPS):
            history[t + 1] = theta
        backend._layer_norms(history)

    def call() -> None:
        backend.train(mixture, STEPS)

    best = {"extra": np.inf, "train": np.inf}
    for _ in range(7):
        for name, function in (("extra", extra), ("train", call)):
            start = time.perf_counter()
            for _ in range(500):
                function()
            best[name] = min(best[name], (time.perf_counter() - start) / 500)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"{platform.node()}, load average {load}: per 10-step call, best of 7 x 500")
    print(f"| per-step norms (copies + norms) | {best['extra'] * 1e6:.1f} us |")
    print(f"| whole train call (includes them) | {best['train'] * 1e6:.1f} us |")
    print(f"| share | {100 * best['extra'] / best['train']:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
