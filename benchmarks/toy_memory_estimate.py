"""How close `ToyConfig.memory_bytes` comes to the peak memory of building a toy backend.

For each K, a fresh process builds ``ToyBackend(num_domains=K)``, resets it, trains one decision
and takes the per-domain gradients; its peak resident set (``ru_maxrss``, minus the same process'
peak before building) is compared with the estimate. The estimate is what the memory check
refuses on; it should be above the measured peak (refuse too early rather than too late) and
within a small factor of it.

    python benchmarks/toy_memory_estimate.py [K ...]
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, resource, sys
import numpy as np
from mixgym.llm_backend.toy import ToyBackend, ToyConfig
k = int(sys.argv[1])
config = ToyConfig(num_domains=k)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
backend = ToyBackend(config)
backend.reset(0)
backend.train(np.full(k, 1 / k), 10)
backend.domain_gradients()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"k": k, "estimate": config.memory_bytes(), "measured": peak - before}))
"""


def main(ks: list[int]) -> None:
    print("| K | estimate (MiB) | measured peak (MiB) | estimate / measured |")
    print("|---|---|---|---|")
    for k in ks:
        out = subprocess.run([sys.executable, "-c", CHILD, str(k)], capture_output=True, text=True, check=True).stdout
        row = json.loads(out)
        ratio = row["estimate"] / row["measured"]
        print(f"| {k} | {row['estimate'] / 2**20:.0f} | {row['measured'] / 2**20:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main([int(k) for k in sys.argv[1:]] or [5, 22, 50, 100, 150])
