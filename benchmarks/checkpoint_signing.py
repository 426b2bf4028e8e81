"""What signing a checkpoint costs: `mixgym.checkpoint.encode` (pickle + SHA-256 + HMAC-SHA256
under the local key) against pickle + SHA-256 alone (the checksum-only format before signing),
and `decode` (both digests checked before unpickling) against the checksum-only check.

Payloads are float32 arrays of the given sizes (a pythia-small checkpoint with AdamW states is
about 170 MB). Best of 5 timings per size.

    python benchmarks/checkpoint_signing.py [MB ...]
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("MIXGYM_KEY_FILE", os.path.join(tempfile.mkdtemp(), "signing.key"))

from mixgym.checkpoint import decode, encode  # noqa: E402


def best(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(sizes: list[int]) -> None:
    print("| payload | checksum only: write | signed: write | ratio | checksum only: read | signed: read | ratio |")
    print("|---|---|---|---|---|---|---|")
    for mb in sizes:
        payload = {"weights": np.random.default_rng(0).random(mb * 2**18, dtype=np.float32)}

        def plain_encode() -> bytes:
            body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            return hashlib.sha256(body).hexdigest().encode() + b"\n" + body

        plain = plain_encode()

        def plain_decode() -> object:
            digest, _, body = plain.partition(b"\n")
            assert hashlib.sha256(body).hexdigest().encode() == digest
            return pickle.loads(body)

        signed = encode(payload)
        times = [best(plain_encode), best(lambda: encode(payload)), best(plain_decode), best(lambda: decode(signed))]
        print(f"| {mb} MB | {times[0] * 1e3:.0f} ms | {times[1] * 1e3:.0f} ms | {times[1] / times[0]:.2f} "
              f"| {times[2] * 1e3:.0f} ms | {times[3] * 1e3:.0f} ms | {times[3] / times[2]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [1, 16, 170])
