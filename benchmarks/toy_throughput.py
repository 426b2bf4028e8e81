"""Toy-backend throughput: env steps per second, and the env's share of an SB3 SAC run.

Goal (issue 2): at least 2,000 env steps/s at K=5, steps_per_action=10, reward included,
so that the RL algorithm, not the environment, is the bottleneck.

    python benchmarks/toy_throughput.py [--seconds 5]

Prints a Markdown table; BENCHMARKS.md records the results.
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np
from stable_baselines3 import SAC

from mixgym.envs import MixingEnv


def steps_per_second(num_domains: int, reward: str, seconds: float) -> float:
    """Random-action env steps per second in one process, resets included."""
    env = MixingEnv(num_domains=num_domains, reward=reward, steps_per_action=10)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (1000, num_domains)).astype(np.float32)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, _, _ = env.step(actions[count % len(actions)])
        count += 1
        if terminated:
            env.reset()
    return count / (time.perf_counter() - start)


class _TimedStep(gym.Wrapper):
    """Sums the wall time spent inside the wrapped env's step and reset."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def step(self, action):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = self.env.step(action)
        self.seconds += time.perf_counter() - start
        return out

    def reset(self, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - start
        return out


def sac_env_share(timesteps: int) -> tuple[float, float]:
    """(env share of wall time, total seconds) for SB3 SAC learning `timesteps` steps at K=5."""
    env = _TimedStep(MixingEnv(reward="alignment"))
    model = SAC("MlpPolicy", env, learning_starts=100, seed=0, device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    total = time.perf_counter() - start
    return env.seconds / total, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per cell (default 5)")
    parser.add_argument("--sac-steps", type=int, default=2000, help="SAC timesteps for the share measurement")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}\n")
    print("| K | reward | env steps/s | vs goal 2000 |")
    print("|---|---|---|---|")
    for k in (5, 22):
        for reward in ("alignment", "holistic", "eval_loss"):
            rate = steps_per_second(k, reward, args.seconds)
            print(f"| {k} | {reward} | {rate:,.0f} | {rate / 2000:.2f}x |")
    share, total = sac_env_share(args.sac_steps)
    print(f"\nSB3 SAC, K=5, {args.sac_steps} steps: {total:.1f} s, env share {share:.1%}")


if __name__ == "__main__":
    main()
