"""Toy-backend throughput: env steps per second for every reward, against the floor set by
the toy's own training, and the env's share of an SB3 SAC run.

Goal (issue 9): at least 5,000 env steps/s at K=5 and 2,000 at K=22 for every reward,
``steps_per_action=10``, reward included, random actions, resets included, one process.

The floor: a decision trains 10 SGD steps, which no environment can skip. The script times
``ToyBackend.train`` alone (drawing the batches and the 10 SGD steps, on the same mixtures
the env was given) and reports ``env step time / train time``: 1.0 would mean evaluation,
gradients, features, reward and info cost nothing. Env and floor are timed in alternating
slices of the same run, so load from other processes hits both alike.

    python benchmarks/toy_throughput.py [--seconds 4] [--rounds 8] [--sac-steps 2000]

Prints a Markdown table; BENCHMARKS.md records the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import numpy as np

from mixgym.envs import MixingEnv
from mixgym.llm_backend import ToyBackend

GOALS = {5: 5000, 22: 2000}
REWARDS = ("alignment", "holistic", "eval_loss")


def measure(num_domains: int, reward: str, seconds: float, rounds: int) -> tuple[float, float]:
    """(env steps per second, floor: seconds of `ToyBackend.train` per decision), timed in
    `rounds` alternating slices of ``seconds / rounds / 2`` each."""
    env = MixingEnv(num_domains=num_domains, reward=reward, steps_per_action=10)
    env.reset(seed=0)
    floor = ToyBackend(num_domains=num_domains)
    floor.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (1000, num_domains)).astype(np.float32)
    mixtures = [env.action_mapper(a) for a in actions]
    slice_seconds = seconds / rounds / 2
    env_time = floor_time = 0.0
    env_steps = floor_calls = 0
    for _ in range(rounds):
        start = time.perf_counter()
        while time.perf_counter() - start < slice_seconds:
            _, _, terminated, _, _ = env.step(actions[env_steps % len(actions)])
            env_steps += 1
            if terminated:
                env.reset()
        env_time += time.perf_counter() - start
        start = time.perf_counter()
        while time.perf_counter() - start < slice_seconds:
            if floor.step >= floor.total_steps:
                floor.reset(seed=floor_calls)
            floor.train(mixtures[floor_calls % len(mixtures)], 10)
            floor_calls += 1
        floor_time += time.perf_counter() - start
    return env_steps / env_time, floor_time / floor_calls


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
    from stable_baselines3 import SAC

    env = _TimedStep(MixingEnv(reward="alignment"))
    model = SAC("MlpPolicy", env, learning_starts=100, seed=0, device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    total = time.perf_counter() - start
    return env.seconds / total, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per cell, env and floor together")
    parser.add_argument("--rounds", type=int, default=8, help="alternating env/floor slices per cell")
    parser.add_argument("--sac-steps", type=int, default=2000, help="SAC timesteps for the share measurement (0: skip)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| K | reward | env steps/s | goal | vs goal | env step (us) | train alone (us) | env / train |")
    print("|---|---|---|---|---|---|---|---|")
    for k, goal in GOALS.items():
        for reward in REWARDS:
            rate, floor = measure(k, reward, args.seconds, args.rounds)
            step = 1e6 / rate
            print(
                f"| {k} | {reward} | {rate:,.0f} | {goal:,} | {rate / goal:.2f}x | {step:,.0f} | {floor * 1e6:,.0f} "
                f"| {step / (floor * 1e6):.2f} |",
                flush=True,
            )
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.sac_steps:
        share, total = sac_env_share(args.sac_steps)
        print(f"SB3 SAC, K=5, {args.sac_steps} steps: {total:.1f} s, env share {share:.1%}")


if __name__ == "__main__":
    main()
