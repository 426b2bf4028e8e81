"""Sample efficiency of every agent on the default toy task (issue 6).

    python benchmarks/toy_agents.py                      # the recorded run (~15 min, 1 thread)
    python benchmarks/toy_agents.py --train-decisions 300 --seeds 2   # a quick look

Target: the default toy task (K=5: easy, hard, noise, redundant, conflict; student width 32;
1,000 optimizer steps = 100 decisions). Every agent plays the same 5 target runs (seeds
100-104) and is compared with the oracle static mixture on those runs (regret) and with the
uniform mixture (decisions needed to reach uniform's final held-out loss).

- static mixtures, ODM's bandits, DoReMi (online, and its static protocol) and AC-ODM's
  released frozen actor act on the target directly (the bandits and DoReMi adapt online
  within each run);
- RL presets run in proxy mode: they learn for ``--train-decisions`` decisions (30 runs by
  default, as benchmarks/configs/toy.yaml) on a proxy toy with a smaller student (width 16,
  same domains), then act deterministically on the target. Each learns once with its paper's
  reward (acodm: alignment, hds: holistic; td3 and ppo: the env's default, alignment) and
  once with the plain ``eval_loss`` reward (decrease of held-out loss), and one tuned variant
  (acodm with eval_loss and exploration noise 0.3 instead of 1e-3) shows what the machinery
  can learn when the reward and the exploration fit the task;
- acodm and hds also run non-proxy (``online``): a fresh agent learns during each target run.

Writes a Markdown report (``--out``, overwritten: the committed report adds a hand-written
reading below the generated table), a CSV and a PNG of mixtures and loss curves beside it,
and every contender's per-decision results under ``--runs``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from mixgym.agents.compare import Contender, compare, markdown

RL = ("acodm", "hds", "td3", "ppo")


def contenders(seed: int) -> list[Contender]:
    static = [Contender(name) for name in ("natural", "odm", "exp3", "doremi", "doremi-static")]
    static.append(Contender("acodm-frozen-actor", overrides={"seed": seed}))
    static.append(Contender("random", overrides={"seed": seed}))
    proxy = [Contender(name, "proxy", {"seed": seed}) for name in RL]
    proxy += [Contender(name, "proxy", {"seed": seed}, reward="eval_loss") for name in RL]
    tuned = Contender(
        "acodm", "proxy", {"seed": seed, "noise_sigma": 0.3}, reward="eval_loss", label="acodm (eval_loss, noise 0.3)"
    )
    online = [Contender(name, "online", label=f"{name} (online)") for name in ("acodm", "hds")]
    return static + proxy + [tuned] + online


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="target runs per agent (default 5)")
    parser.add_argument("--train-decisions", type=int, default=3000, help="proxy learning budget (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the agents' learning (default 0)")
    parser.add_argument("--out", default="benchmarks/results/toy_agents.md", help="Markdown report")
    parser.add_argument("--runs", default="runs/toy_agents", help="per-contender results and policies")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="LABEL", help="run only these contenders (and uniform, oracle)"
    )
    args = parser.parse_args(argv)
    chosen = contenders(args.seed)
    if args.only is not None:
        unknown = sorted(set(args.only) - {c.name for c in chosen})
        if unknown:
            parser.error(f"unknown contender(s) {unknown}; known: {[c.name for c in chosen]}")
        chosen = [c for c in chosen if c.name in args.only]
    torch.set_num_threads(1)

    started = time.perf_counter()
    target = {"total_steps": 1000, "hidden_dim": 32}
    proxy = {"total_steps": 1000, "hidden_dim": 16}

    def progress(label: str, total: int) -> None:
        """Log each contender's start; no per-decision ticks (this script runs unattended)."""
        print(f"[{time.perf_counter() - started:6.0f} s] {label} ({total} decisions)", file=sys.stderr, flush=True)
        return None

    comparison = compare(
        chosen,
        target,
        proxy,
        seeds=args.seeds,
        train_decisions=args.train_decisions,
        save_dir=args.runs,
        progress=progress,
    )
    summary = comparison.summary()
    out = Path(args.out)
    figure = comparison.plot(out.with_suffix(".png"), dpi=60)
    command = " ".join(["python benchmarks/toy_agents.py", *(sys.argv[1:] if argv is None else argv)])
    header = [
        "# Agents on the toy task (issue 6)",
        "",
        f"`PYTHONPATH=. {command}` (total {time.perf_counter() - started:.0f} s), {date.today().isoformat()}.",
        f"Machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, "
        f"numpy {np.__version__}, one torch thread; wall times are from a machine shared with other work.",
        f"Target: toy {target}, {args.seeds} runs (seeds 100-{99 + args.seeds}); proxy {proxy}; "
        f"proxy learning {args.train_decisions} decisions. Figure: [{figure.name}]({figure.name}).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + markdown(summary) + "\n")
    summary.to_csv(out.with_suffix(".csv"), index=False)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
