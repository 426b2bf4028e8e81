"""Where AC-ODM's released (never-updated) actor puts its mixtures, and where mixgym's do (issue 11).

    python benchmarks/frozen_actor_tv.py            # ~3 min on one core

Total variation from uniform, ``0.5 * sum |m - 1/K|``, mean over actor seeds (and states):

1. AC-ODM's ``PolicyNet`` (DANG-ai/AC-ODM ``megatron/data/agent.py:106-135``) built in PyTorch
   with its default initialisation, width 1024, on random AC-ODM states (3K + 19 features:
   z-scores clipped to [-3, 3], progress x 100 in [0, 100]);
2. `mixgym.agents.acodm.ReleasedActor` (numpy, the same initialisation) on the same states;
3. ``acodm-frozen-actor`` on real toy observations (uniform-mixture runs, after its warm-up);
4. the former ``acodm-frozen-actor``: DDPG's tanh actor at its initialisation (now
   ``acodm`` with ``freeze_actor=True``), through the env's ``softmax(a / 0.5)`` map with a 5%
   floor, on the same real observations.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mixgym.agents import make_agent
from mixgym.agents.acodm import ReleasedActor
from mixgym.agents.compare import env_for


def total_variation(mixtures: np.ndarray) -> np.ndarray:
    k = mixtures.shape[-1]
    return 0.5 * np.abs(mixtures - 1.0 / k).sum(axis=-1)


def policy_net(state_dim: int, k: int, width: int) -> nn.Module:
    layers: list[nn.Module] = []
    for fan_in in [state_dim] + [width] * 4:
        layers += [nn.Linear(fan_in, width), nn.LayerNorm(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, k), nn.Softmax(dim=-1))


def random_states(k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    states = np.clip(rng.standard_normal((count, 3 * k + 19)), -3, 3)
    states[:, -1] = rng.uniform(0, 100, count)
    return states


def observations(k: int, seeds: int) -> np.ndarray:
    """Observations of uniform-mixture toy runs (100 decisions each)."""
    env = env_for("uniform", {"num_domains": k, "total_steps": 1000})
    out = []
    for seed in range(seeds):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            out.append(obs)
            obs, _, done, _, _ = env.step(np.full(k, 1.0 / k))
    return np.array(out)


def measure(k: int, actor_seeds: int, width: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(k)
    torch_tv, numpy_tv, frozen_tv, tanh_tv = [], [], [], []
    states = random_states(k, 8, rng)
    real = observations(k, 2)
    for seed in range(actor_seeds):
        torch.manual_seed(seed)
        with torch.no_grad():
            torch_tv.append(total_variation(policy_net(states.shape[1], k, width)(torch.as_tensor(states, dtype=torch.float32)).numpy()).mean())
        actor = ReleasedActor(states.shape[1], k, width, 5, seed + 10_000)
        numpy_tv.append(total_variation(np.array([actor(s) for s in states])).mean())
        env = env_for("acodm-frozen-actor", {"num_domains": k, "total_steps": 1000})
        agent = make_agent("acodm-frozen-actor", env, seed=seed, net_width=width, warmup_fraction=0.0)
        frozen_tv.append(total_variation(np.array([agent.predict(o)[0] for o in real])).mean())
        ddpg_env = env_for("acodm", {"num_domains": k, "total_steps": 1000})
        ddpg = make_agent("acodm", ddpg_env, seed=seed, net_width=256, freeze_actor=True, behaviour_cloning=False)
        actions = ddpg.predict(real.astype(np.float32), deterministic=True)[0]
        tanh_tv.append(total_variation(np.array([ddpg_env.action_mapper(a) for a in actions])).mean())
    return {
        name: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v))))
        for name, v in (
            ("AC-ODM PolicyNet (PyTorch init), random states", torch_tv),
            ("ReleasedActor (numpy), random states", numpy_tv),
            ("acodm-frozen-actor, toy observations", frozen_tv),
            ("former frozen actor: DDPG tanh 5x256 + softmax(a/0.5), toy observations", tanh_tv),
        )
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actor-seeds", type=int, default=20, help="actors per row (default 20)")
    parser.add_argument("--width", type=int, default=1024, help="hidden width of the AC-ODM actors (default 1024)")
    parser.add_argument("--out", default="benchmarks/results/frozen_actor_tv.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["| K | actor | TV from uniform (mean ± s.e. over actor seeds) |", "|---|---|---|"]
    for k in (5, 22):
        for name, (mean, se) in measure(k, args.actor_seeds, args.width).items():
            lines.append(f"| {k} | {name} | {mean:.3f} ± {se:.3f} |")
            print(lines[-1], flush=True)
    load = Path("/proc/loadavg").read_text().split()[0]
    text = (
        f"`python benchmarks/frozen_actor_tv.py --actor-seeds {args.actor_seeds} --width {args.width}` on "
        f"{platform.node()}, 1 torch thread, load average {load}\n\n" + "\n".join(lines) + "\n"
    )
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
